"""The 64-bit mixing that payload fingerprints, packet signatures and tuple keys share."""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""2**64 / phi: the odd multiplier that spreads consecutive values over 64 bits."""
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser applied to the uint64 array ``h`` in place; returns ``h``.
    Wrapping multiplication is intended (callers silence numpy's overflow warnings)."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h
