"""Tool tokens: wire format, SignalWire interop, tampering (zero false accepts), secrets, debug."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import string
import warnings

import pytest
from hypothesis import given, settings, strategies as st
from signalwire_agents.core.security.session_manager import SessionManager as SWManager

from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.sessions import tool_tokens as tool_token
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.tool_tokens import (
    ENV_API_SECRET,
    ENV_SECRET,
    KDF_LABEL,
    InsecureSecretWarning,
    ToolTokens,
    derive_secret,
)
from tests.clock import FakeClock
from tests.strategies import examples

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
OTHER = "other-secret-0123456789abcdef0123456789abcde"
NOW = 1_795_000_000.25

pytestmark = [pytest.mark.unit, pytest.mark.clock(NOW)]

B64URL = string.ascii_letters + string.digits + "-_"


@pytest.fixture
def tokens(clock: FakeClock) -> ToolTokens:
    return ToolTokens(secret_key=SECRET, clock=clock)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SECRET, raising=False)
    monkeypatch.delenv(ENV_API_SECRET, raising=False)


def plain(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def encode(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode()


def sign(secret: str, call: str, func: str, expiry: str, nonce: str) -> str:
    msg = f"{call}:{func}:{expiry}:{nonce}".encode()
    sig = hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
    return encode(f"{call}.{func}.{expiry}.{nonce}.{sig}")


# -- wire format --------------------------------------------------------------------


def test_wire_format_matches_signalwire(tokens: ToolTokens) -> None:
    token = tokens.generate_token("get_time", "call-1")
    assert len(token) % 4 == 0
    assert set(token) <= set(B64URL + "=")
    fields = plain(token).split(".")
    assert len(fields) == 5
    call, func, expiry, nonce, sig = fields
    assert (call, func) == ("call-1", "get_time")
    assert expiry == str(int(NOW) + 900)
    assert len(nonce) == 16
    assert set(nonce) <= set("0123456789abcdef")
    msg = f"{call}:{func}:{expiry}:{nonce}".encode()
    assert sig == hmac.new(SECRET.encode(), msg, hashlib.sha256).hexdigest()
    assert len(token) == 144  # the size SignalWire's Python edition produces for this input


def test_nonces_differ(tokens: ToolTokens) -> None:
    assert len({plain(tokens.generate_token("f", "c")).split(".")[3] for _ in range(50)}) == 50


def test_aliases_and_argument_orders(tokens: ToolTokens) -> None:
    token = tokens.create_tool_token("lookup", "call-9")
    assert tokens.validate_token("call-9", "lookup", token) is True
    assert tokens.validate_tool_token("lookup", token, "call-9") is True
    assert tokens.validate_tool_token("call-9", token, "lookup") is False


def test_dotted_and_unicode_call_ids(tokens: ToolTokens) -> None:
    for call in ("root.2", "a.b.c.d.e.f", "caller-é✓", "."):
        token = tokens.generate_token("f", call)
        assert tokens.validate_token(call, "f", token) is True
        assert tokens.validate_token(call + "x", "f", token) is False


def test_unpadded_input_is_accepted(tokens: ToolTokens) -> None:
    seen_unpadded = False
    for i in range(8):  # call ids of several lengths, so every padding length occurs
        call = "c" * (i + 1)
        token = tokens.generate_token("f", call)
        stripped = token.rstrip("=")
        seen_unpadded |= stripped != token
        assert tokens.validate_token(call, "f", stripped) is True
    assert seen_unpadded


@pytest.mark.parametrize(
    ("function_name", "call_id", "exc"),
    [
        ("a:b", "c", ValueError),
        ("a.b", "c", ValueError),
        ("", "c", ValueError),
        ("f", "", ValueError),
        ("f", "a:b", ValueError),
        ("f", None, TypeError),
        (None, "c", TypeError),
        (b"f", "c", TypeError),
    ],
)
def test_generate_rejects_ambiguous_or_missing_fields(
    tokens: ToolTokens, function_name: object, call_id: object, exc: type[Exception]
) -> None:
    with pytest.raises(exc) as info:
        tokens.generate_token(function_name, call_id)  # type: ignore[arg-type]
    assert "function_name" in str(info.value) or "call_id" in str(info.value)


# -- expiry -------------------------------------------------------------------------


def test_expiry_boundary_uses_one_rule(tokens: ToolTokens, clock: FakeClock) -> None:
    token = tokens.generate_token("f", "c")
    expiry = int(NOW) + 900
    clock.now = expiry - 0.001
    assert tokens.validate_token("c", "f", token) is True
    tokens.debug_mode = True
    assert tokens.debug_token(token)["status"]["is_expired"] is False
    clock.now = expiry
    assert tokens.validate_token("c", "f", token) is False
    assert tokens.debug_token(token)["status"] == {
        "current_time": expiry,
        "is_expired": True,
        "expires_in_seconds": 0,
    }


def test_token_expiry_secs_setter_applies_to_new_tokens(tokens: ToolTokens) -> None:
    tokens.token_expiry_secs = 5
    assert plain(tokens.generate_token("f", "c")).split(".")[2] == str(int(NOW) + 5)


@pytest.mark.parametrize("bad", [1.5, True, float("nan")])
def test_token_expiry_secs_must_be_an_int(bad: object) -> None:
    with pytest.raises(ValueError, match="token_expiry_secs"):
        ToolTokens(secret_key=SECRET, token_expiry_secs=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("secs", [0, -1, -3600, -(10**15)])
def test_expiry_of_zero_or_less_mints_tokens_born_expired(secs: int, clock: FakeClock) -> None:
    """As SignalWire's SDKs: valid nowhere, debug_token says expired with 0 seconds left."""
    tokens = ToolTokens(secret_key=SECRET, token_expiry_secs=secs, clock=clock, debug_mode=True)
    token = tokens.generate_token("transfer", "call-1")
    assert not tokens.validate_token("call-1", "transfer", token)
    live = ToolTokens(secret_key=SECRET, token_expiry_secs=secs)  # the real clock, as SignalWire's
    assert not SWManager(secret_key=SECRET).validate_token(
        "call-1", "transfer", live.generate_token("transfer", "call-1")
    )
    expiry = plain(token).split(".")[2]
    assert expiry.isdigit()  # never a negative number in the wire format
    status = tokens.debug_token(token)["status"]
    assert status["is_expired"] is True
    assert status["expires_in_seconds"] == 0


def test_signalwire_tokens_born_expired_are_refused_here(clock: FakeClock) -> None:
    sw = SWManager(token_expiry_secs=0, secret_key=SECRET)
    token = sw.generate_token("transfer", "call-1")
    assert not ToolTokens(secret_key=SECRET).validate_token("call-1", "transfer", token)


def test_token_expiry_secs_type() -> None:
    with pytest.raises(TypeError, match="token_expiry_secs"):
        ToolTokens(secret_key=SECRET, token_expiry_secs="900")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "expiry", [" 1795000900", "1795_000_900", "+1795000900", "１７９５", "9" * 30, ""]
)
def test_expiry_must_be_ascii_digits(tokens: ToolTokens, expiry: str) -> None:
    token = sign(SECRET, "c", "f", expiry, "0123456789abcdef")
    assert tokens.validate_token("c", "f", token) is False


def test_correctly_signed_handmade_token_validates(tokens: ToolTokens) -> None:
    # The control for the test above: the same construction with a good expiry.
    token = sign(SECRET, "c", "f", str(int(NOW) + 10), "0123456789abcdef")
    assert tokens.validate_token("c", "f", token) is True


# -- interop with signalwire-agents --------------------------------------------------


def test_signalwire_tokens_validate_here() -> None:
    sw = SWManager(secret_key=SECRET)
    ours = ToolTokens(secret_key=SECRET)
    for i in range(30):
        call = f"call-{i}" * (i % 4 + 1)
        token = sw.generate_token("get_weather", call)
        assert ours.validate_token(call, "get_weather", token) is True
        assert ours.validate_token(call, "other", token) is False
        # The TypeScript edition emits the same text unpadded.
        assert ours.validate_token(call, "get_weather", token.rstrip("=")) is True


def test_our_tokens_validate_in_signalwire() -> None:
    sw = SWManager(secret_key=SECRET)
    ours = SessionManager(secret_key=SECRET)
    for i in range(30):
        call = f"call-{i}" * (i % 4 + 1)
        token = ours.generate_token("get_weather", call)
        assert sw.validate_token(call, "get_weather", token) is True
        assert sw.validate_tool_token("get_weather", token, call) is True
        assert sw.validate_token(call + "x", "get_weather", token) is False


def test_signalwire_with_other_secret_does_not_interoperate() -> None:
    sw = SWManager(secret_key=OTHER)
    ours = ToolTokens(secret_key=SECRET)
    assert ours.validate_token("c", "f", sw.generate_token("f", "c")) is False
    assert sw.validate_token("c", "f", ours.generate_token("f", "c")) is False


# -- tampering: zero false accepts ----------------------------------------------------


def _accepts(tokens: ToolTokens, candidates: list[str], call: str, func: str) -> list[str]:
    return [c for c in candidates if tokens.validate_token(call, func, c)]


def test_every_single_character_change_of_the_token_is_rejected(tokens: ToolTokens) -> None:
    token = tokens.generate_token("get_time", "call.7")
    assert tokens.validate_token("call.7", "get_time", token)
    alphabet = B64URL + "=+/ !*.\n\x00é"
    changed = [
        token[:i] + c + token[i + 1 :] for i in range(len(token)) for c in alphabet if c != token[i]
    ]
    assert len(changed) > 100 * len(alphabet)
    assert _accepts(tokens, changed, "call.7", "get_time") == []


def test_every_single_byte_change_of_the_plain_token_is_rejected(tokens: ToolTokens) -> None:
    raw = plain(tokens.generate_token("get_time", "call-7")).encode()
    changed = [
        encode(raw[:i] + bytes([b]) + raw[i + 1 :])
        for i in range(len(raw))
        for b in range(256)
        if b != raw[i]
    ]
    assert _accepts(tokens, changed, "call-7", "get_time") == []


def test_insertions_and_deletions_are_rejected(tokens: ToolTokens) -> None:
    token = tokens.generate_token("f", "call-1")
    deleted = [token[:i] + token[i + 1 :] for i in range(len(token))]
    inserted = [token[:i] + c + token[i:] for i in range(len(token) + 1) for c in "A_-=!\n "]
    # Dropping all the padding gives the unpadded form of the same token, accepted by design.
    candidates = [c for c in deleted + inserted if c != token.rstrip("=")]
    assert _accepts(tokens, candidates, "call-1", "f") == []


def test_truncations_are_rejected(tokens: ToolTokens) -> None:
    token = tokens.generate_token("f", "call-1")
    raw = plain(token)
    cut = [token[:i] for i in range(len(token))] + [encode(raw[:i]) for i in range(len(raw))]
    cut = [c for c in cut if c != token.rstrip("=")]  # the unpadded form: accepted by design
    assert len(cut) >= len(token) + len(raw) - 1
    assert _accepts(tokens, cut, "call-1", "f") == []


def test_field_swaps_are_rejected(tokens: ToolTokens) -> None:
    fields = plain(tokens.generate_token("f", "call-1")).split(".")
    swapped = [encode(".".join(p)) for p in itertools.permutations(fields) if list(p) != fields]
    assert len(swapped) == 119
    for call, func in [("call-1", "f")] + [(p[0], p[1]) for p in itertools.permutations(fields, 2)]:
        assert _accepts(tokens, swapped, call, func) == []


def test_colon_dot_field_shift_attack_is_rejected() -> None:
    # SignalWire signs "a:b:c:exp:nonce" for (call "a:b", function "c"), which re-splits as
    # (call "a", function "b:c") under the same signature.
    sw = SWManager(secret_key=SECRET)
    ours = ToolTokens(secret_key=SECRET)
    original = sw.generate_token("c", "a:b")
    _call, _func, expiry, nonce, sig = plain(original).rsplit(".", 4)
    shifted = encode(f"a.b:c.{expiry}.{nonce}.{sig}")
    assert sw.validate_token("a", "b:c", shifted) is True  # the flaw is real upstream
    assert ours.validate_token("a", "b:c", shifted) is False
    assert ours.validate_token("a:b", "c", original) is False  # ':' in a call id: refused


def test_wrong_function_call_and_key(tokens: ToolTokens) -> None:
    token = tokens.generate_token("transfer", "call-1")
    assert tokens.validate_token("call-1", "transfer", token) is True
    assert tokens.validate_token("call-1", "Transfer", token) is False
    assert tokens.validate_token("call-2", "transfer", token) is False
    assert tokens.validate_token("", "transfer", token) is False
    assert tokens.validate_token(None, "transfer", token) is False  # type: ignore[arg-type]
    assert ToolTokens(secret_key=OTHER).validate_token("call-1", "transfer", token) is False


def test_uppercase_signature_is_rejected(tokens: ToolTokens) -> None:
    call, func, expiry, nonce, sig = plain(tokens.generate_token("f", "c")).split(".")
    assert sig != sig.upper()
    assert (
        tokens.validate_token("c", "f", encode(f"{call}.{func}.{expiry}.{nonce}.{sig.upper()}"))
        is False
    )


def test_rotated_keys(clock: FakeClock) -> None:
    old = ToolTokens(secret_key=OTHER, clock=clock)
    rotated = ToolTokens(secret_key=[SECRET, OTHER], clock=clock)
    new_only = ToolTokens(secret_key=SECRET, clock=clock)
    old_token = old.generate_token("f", "c")
    new_token = rotated.generate_token("f", "c")
    assert rotated.validate_token("c", "f", old_token) is True  # still accepted
    assert rotated.validate_token("c", "f", new_token) is True
    assert new_only.validate_token("c", "f", new_token) is True  # signed with the first
    assert old.validate_token("c", "f", new_token) is False
    assert new_only.validate_token("c", "f", old_token) is False  # retired key
    assert rotated.secret_key == SECRET


@pytest.mark.parametrize(
    "junk",
    [
        None,
        b"abc",
        42,
        3.5,
        [],
        {},
        object(),
        "",
        "=",
        "====",
        "invalid_token",
        "not_base64",
        "é" * 10,
        "A" * (tool_token.MAX_TOKEN_LENGTH + 4),
        encode("a.b.c.d"),
        encode("a.b.c.d.e.f"),
        encode(b"\xff\xfe.f.1.2.3"),
    ],
)
def test_malformed_tokens_return_false(tokens: ToolTokens, junk: object) -> None:
    result = tokens.validate_token("c", "f", junk)  # type: ignore[arg-type]
    assert result is False


@settings(max_examples=examples(150), deadline=None)
@given(st.text(max_size=300))
def test_validate_never_raises(token: str) -> None:
    t = ToolTokens(secret_key=SECRET)
    assert t.validate_token("c", "f", token) is False
    assert t.validate_token(token, token, token) is False


call_ids = st.text(min_size=1, max_size=40).filter(lambda s: ":" not in s)
function_names = st.text(min_size=1, max_size=30).filter(lambda s: ":" not in s and "." not in s)


@settings(max_examples=examples(150), deadline=None)
@given(call=call_ids, func=function_names, other=function_names)
def test_round_trip_property(call: str, func: str, other: str) -> None:
    t = ToolTokens(secret_key=SECRET)
    token = t.generate_token(func, call)
    assert t.validate_token(call, func, token) is True
    assert t.validate_token(call, func, token.rstrip("=")) is True
    assert t.validate_token(call, other, token) is (other == func)
    assert t.validate_token(call + "x", func, token) is False


@settings(max_examples=examples(60), deadline=None)
@given(call=call_ids.filter(lambda s: "." not in s), func=function_names)
def test_interop_property(call: str, func: str) -> None:
    ours = ToolTokens(secret_key=SECRET)
    sw = SWManager(secret_key=SECRET)
    assert sw.validate_token(call, func, ours.generate_token(func, call)) is True
    assert ours.validate_token(call, func, sw.generate_token(func, call)) is True


# -- secrets ------------------------------------------------------------------------


def test_secret_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_SECRET, "lk-api-secret-0123456789abcdef0123456789")
    derived = ToolTokens()
    assert derived.secret_key == derive_secret("lk-api-secret-0123456789abcdef0123456789")
    assert "derived" in derived.secret_source
    monkeypatch.setenv(ENV_SECRET, "env-secret-0123456789abcdef0123456789abcdef")
    assert ToolTokens().secret_key == "env-secret-0123456789abcdef0123456789abcdef"
    assert ToolTokens(secret_key=SECRET).secret_key == SECRET


def test_derived_secret_is_shared_and_not_the_api_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    api = "lk-api-secret-0123456789abcdef0123456789"
    monkeypatch.setenv(ENV_API_SECRET, api)
    a, b = ToolTokens(), ToolTokens()
    assert a.validate_token("c", "f", b.generate_token("f", "c"))
    assert ToolTokens(secret_key=api).validate_token("c", "f", a.generate_token("f", "c")) is False
    assert len(a.secret_key) == 64
    assert api not in str(a.secret_key)
    assert derive_secret(api, label=b"other") != derive_secret(api)


def test_hkdf_matches_rfc5869_test_case_3() -> None:
    # RFC 5869 A.3: SHA-256, IKM = 0x0b * 22, no salt, no info; first 32 bytes of the OKM.
    okm = derive_secret(b"\x0b" * 22, label=b"")
    assert okm == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
    assert KDF_LABEL == b"livekit-plugins-metadata/tool-token/v1"


def test_random_secret_is_per_process_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    tool_token._process_secret = None
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.metadata"):
        a, b = ToolTokens(), ToolTokens()
    assert a.secret_key == b.secret_key
    assert len(a.secret_key) == 64
    assert a.validate_token("c", "f", b.generate_token("f", "c"))
    assert "random per-process secret" in caplog.text
    assert str(a.secret_key) not in caplog.text
    assert a.secret_source == "random per process"


def test_short_secret_warns() -> None:
    with pytest.warns(InsecureSecretWarning, match="8 bytes"):
        ToolTokens(secret_key="short-ky")
    with pytest.warns(InsecureSecretWarning):
        ToolTokens(secret_key=[SECRET, b"short"])


def test_short_env_secret_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SECRET, "short")
    with pytest.warns(InsecureSecretWarning, match=ENV_SECRET):
        ToolTokens()


def test_long_secret_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ToolTokens(secret_key=SECRET)
        ToolTokens(secret_key=b"\x01" * 32)


@pytest.mark.parametrize("bad", ["", b"", [], [SECRET, ""]])
def test_empty_secret_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        ToolTokens(secret_key=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [123, [SECRET, 5], {"a": 1}.keys()])
def test_secret_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match="secret_key"):
        ToolTokens(secret_key=bad)  # type: ignore[arg-type]


def test_bytes_secret() -> None:
    key = bytes(range(32))
    t = ToolTokens(secret_key=key)
    token = t.generate_token("f", "c")
    msg = ":".join(plain(token).split(".")[:4]).encode()
    assert plain(token).split(".")[4] == hmac.new(key, msg, hashlib.sha256).hexdigest()
    assert t.validate_token("c", "f", token)


def test_secret_never_in_repr() -> None:
    t = ToolTokens(secret_key=[SECRET, OTHER])
    sm = SessionManager(secret_key=SECRET)
    for text in (repr(t), str(t), repr(sm)):
        assert SECRET not in text
        assert OTHER not in text
        assert "<2 secret(s)" in text or "<1 secret(s)" in text


# -- debug_token --------------------------------------------------------------------


def test_debug_off_by_default(tokens: ToolTokens) -> None:
    assert tokens.debug_mode is False
    token = tokens.generate_token("f", "c")
    assert tokens.debug_token(token) == {"valid_format": False, "error": "debug mode not enabled"}


def test_debug_shape(tokens: ToolTokens) -> None:
    tokens.debug_mode = True
    call = "call-0123456789"
    token = tokens.generate_token("get_time", call)
    _, _, expiry, nonce, sig = plain(token).split(".")
    info = tokens.debug_token(token)
    assert info == {
        "valid_format": True,
        "components": {
            "call_id": "call-012...",
            "function": "get_time",
            "expiry": expiry,
            "expiry_date": "2026-11-18T11:21:40Z",
            "nonce": nonce,
            "signature": sig[:8] + "...",
        },
        "status": {"current_time": int(NOW), "is_expired": False, "expires_in_seconds": 900},
    }
    assert sig not in str(info)
    assert SECRET not in str(info)


def test_debug_never_reveals_the_expected_signature(tokens: ToolTokens) -> None:
    tokens.debug_mode = True
    forged = encode(f"c.f.{int(NOW) + 100}.0123456789abcdef.{'0' * 64}")
    expected = plain(sign(SECRET, "c", "f", str(int(NOW) + 100), "0123456789abcdef")).split(".")[4]
    info = tokens.debug_token(forged)
    assert info["valid_format"] is True
    assert expected[:8] not in str(info)
    assert "valid" not in str(info["status"])


def test_debug_short_fields_and_bad_expiry(tokens: ToolTokens) -> None:
    tokens.debug_mode = True
    info = tokens.debug_token(encode("12345678.f.abc.n.ab"))
    assert info["components"]["call_id"] == "12345678"
    assert info["components"]["signature"] == "ab..."
    assert info["components"]["expiry_date"] is None
    assert info["status"]["is_expired"] is None
    assert info["status"]["expires_in_seconds"] is None
    huge = tokens.debug_token(encode("c.f." + "9" * 20 + ".n.s"))
    assert huge["valid_format"] is True
    assert huge["components"]["expiry_date"] is None


@pytest.mark.parametrize("junk", ["invalid_token", "not-valid", "abc!", None, 5])
def test_debug_malformed(tokens: ToolTokens, junk: object) -> None:
    tokens.debug_mode = True
    info = tokens.debug_token(junk)  # type: ignore[arg-type]
    assert info["valid_format"] is False
    assert "error" in info


def test_debug_parts_count(tokens: ToolTokens) -> None:
    tokens.debug_mode = True
    assert tokens.debug_token("") == {"valid_format": False, "parts_count": 1, "token_length": 0}
    three = encode("a.b.c")
    assert tokens.debug_token(three) == {
        "valid_format": False,
        "parts_count": 3,
        "token_length": len(three),
    }


def test_session_manager_debug_passthrough() -> None:
    sm = SessionManager(secret_key=SECRET)
    token = sm.generate_token("f", "c")
    assert sm.debug_token(token)["error"] == "debug mode not enabled"
    sm._debug_mode = True
    assert sm.debug_mode is True
    assert sm.tokens.debug_mode is True
    assert sm.debug_token(token)["valid_format"] is True
    sm.debug_mode = False
    assert sm._debug_mode is False
    assert sm.secret_key == SECRET
    assert sm.token_expiry_secs == 900
    assert sm.create_tool_token("f", "c") != token
    assert sm.validate_tool_token("f", token, "c") is True


@settings(max_examples=examples(60), deadline=None)
@given(key=st.binary(min_size=1, max_size=200), call=st.text(B64URL, min_size=1, max_size=40))
def test_signature_is_stdlib_hmac_for_any_key(key: bytes, call: str) -> None:
    """Keys shorter than, equal to and longer than the SHA-256 block sign as RFC 2104 says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSecretWarning)
        t = ToolTokens(secret_key=key)
    token = t.generate_token("f", call)
    fields = plain(token).split(".")
    msg = ":".join(fields[:4]).encode()
    assert fields[4] == hmac.new(key, msg, hashlib.sha256).hexdigest()
    assert t.validate_token(call, "f", token)
