"""Vectorised field reads: one numpy gather per field for a whole batch of frames.

A FrameView exposes a batch buffer as overlapping, unaligned views (a big-endian
uint32 starting at every byte, and so on), so that reading a field of n frames at
n positions is a single fancy-indexing gather. Positions are clipped to the buffer;
whether a field lies inside its frame is the caller's test (``fits``).
"""

from __future__ import annotations

import numpy as np

from flowtrace.capture.reader import strided


class FrameView:
    """Gathers fixed-width big- or little-endian fields at arrays of byte positions."""

    __slots__ = ("_be16", "_be32", "_be64", "_le16", "_le32", "_le64", "_limit", "data")

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self._limit = max(data.shape[0] - 8, 0)
        self._be16 = strided(data, ">u2")
        self._be32 = strided(data, ">u4")
        self._be64 = strided(data, ">u8")
        self._le16 = strided(data, "<u2")
        self._le32 = strided(data, "<u4")
        self._le64 = strided(data, "<u8")

    def _clip(self, pos: np.ndarray) -> np.ndarray:
        return np.minimum(pos, self._limit)

    def u8(self, pos: np.ndarray) -> np.ndarray:
        """uint8 at each position."""
        return self.data[self._clip(pos)]

    def u16(self, pos: np.ndarray) -> np.ndarray:
        """Big-endian uint16 at each position."""
        return self._be16[self._clip(pos)].astype(np.uint16)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        """Big-endian uint32 at each position."""
        return self._be32[self._clip(pos)].astype(np.uint32)

    def u64(self, pos: np.ndarray) -> np.ndarray:
        """Big-endian uint64 at each position."""
        return self._be64[self._clip(pos)].astype(np.uint64)

    def le16(self, pos: np.ndarray) -> np.ndarray:
        """Little-endian uint16 at each position."""
        return self._le16[self._clip(pos)].astype(np.uint16)

    def le32(self, pos: np.ndarray) -> np.ndarray:
        """Little-endian uint32 at each position."""
        return self._le32[self._clip(pos)].astype(np.uint32)

    def le64(self, pos: np.ndarray) -> np.ndarray:
        """Little-endian uint64 at each position."""
        return self._le64[self._clip(pos)].astype(np.uint64)
