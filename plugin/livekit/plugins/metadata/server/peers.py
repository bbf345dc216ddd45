"""Open connections per peer, counted in memory every forked worker shares."""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing

__all__ = ["SharedPeerCounts"]


class SharedPeerCounts:
    """A fixed open-addressing hash of ``slots`` (peer digest, count) behind one shared lock,
    made before the workers fork; a peer without a free entry is counted by its worker."""

    _PROBES = 32

    def __init__(self, slots: int = 1 << 16) -> None:
        if slots < 1:
            raise ValueError("slots must be positive")
        ctx = multiprocessing.get_context("fork")
        self._slots = slots
        self._keys = ctx.RawArray(ctypes.c_uint64, slots)
        self._counts = ctx.RawArray(ctypes.c_int64, slots)
        self._lock = ctx.Lock()

    @staticmethod
    def _digest(peer: str) -> int:
        h = int.from_bytes(hashlib.blake2b(peer.encode(), digest_size=8).digest(), "big")
        return h or 1  # 0 marks a never-used entry

    def _find(self, key: int, claim: bool) -> int | None:
        keys, counts, n = self._keys, self._counts, self._slots
        free = None
        for i in range(self._PROBES):
            at = (key + i) % n
            k = keys[at]
            if k == key:
                return at
            if free is None and counts[at] == 0:
                free = at
            if k == 0:
                break
        if claim and free is not None:
            keys[free] = key
            return free
        return None

    def admit(self, peer: str, cap: int) -> bool | None:
        """One more connection for ``peer`` unless ``cap`` are open (None: no entry)."""
        key = self._digest(peer)
        with self._lock:
            at = self._find(key, claim=True)
            if at is None:
                return None
            if self._counts[at] >= cap:
                return False
            self._counts[at] += 1
            return True

    def release(self, peer: str) -> None:
        key = self._digest(peer)
        with self._lock:
            at = self._find(key, claim=False)
            if at is not None and self._counts[at] > 0:
                self._counts[at] -= 1
