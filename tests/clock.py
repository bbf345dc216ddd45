"""The one fake clock of the test suite: time that moves only when a test moves it.

Usable wherever the code takes a ``clock`` callable (``MemoryStore``,
``SessionManager``, ``ToolTokens``, ...) and as the ``ExpiryControl`` of the store
conformance suite (``await clock.advance(seconds)``).
"""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Returns ``now`` when called; tests set ``now`` or call ``advance``/``tick``."""

    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (the awaitable form ``ExpiryControl`` needs)."""
        self.now += seconds
