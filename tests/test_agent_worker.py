"""run_worker / settings_problem: one clear line instead of a traceback when LiveKit is out of reach."""

from __future__ import annotations

import socket

import pytest

from livekit.plugins.metadata.agent.worker import DEV_SETTINGS, run_worker, settings_problem

pytestmark = pytest.mark.unit

KEYS = {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "a-secret-never-shown"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "LIVEKIT_URL is not set"),
        ({"LIVEKIT_URL": "127.0.0.1:7880", **KEYS}, "LIVEKIT_URL is not a LiveKit URL"),
        ({"LIVEKIT_URL": "ftp://127.0.0.1", **KEYS}, "LIVEKIT_URL is not a LiveKit URL"),
        ({"LIVEKIT_URL": "ws://127.0.0.1:7880"}, "LIVEKIT_API_KEY / LIVEKIT_API_SECRET"),
    ],
)
def test_each_missing_setting_is_named(env: dict[str, str], problem: str) -> None:
    found = settings_problem(env)
    assert found is not None
    assert found.startswith(problem)


def test_a_server_that_does_not_answer_is_named_without_the_secret() -> None:
    port = _closed_port()
    found = settings_problem({"LIVEKIT_URL": f"ws://127.0.0.1:{port}", **KEYS}, timeout=1)
    assert found == f"nothing answers at LIVEKIT_URL (127.0.0.1:{port})"
    assert KEYS["LIVEKIT_API_SECRET"] not in found


def test_run_worker_stops_with_one_line_in_a_connecting_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    with pytest.raises(SystemExit) as stopped:
        run_worker(object(), ["agent.py", "dev"])  # type: ignore[arg-type]
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: LIVEKIT_URL is not set; {DEV_SETTINGS}\n"
