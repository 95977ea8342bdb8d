"""Interning IP addresses into categorical codes, shared by every capture of one read."""

from __future__ import annotations

import ipaddress

import numpy as np


class AddressBook:
    """Maps IPv4 and IPv6 addresses to dense integer codes and back to their text form.

    Only the distinct addresses of a batch pass through Python; a batch of n packets
    costs one ``np.unique`` and one gather.
    """

    def __init__(self) -> None:
        self._codes: dict[tuple[int, int], int] = {}
        self.texts: list[str] = []
        self._v4_keys = np.zeros(0, dtype=np.uint32)
        self._v4_codes = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.texts)

    def _code(self, key: tuple[int, int]) -> int:
        code = self._codes.get(key)
        if code is None:
            code = len(self.texts)
            self._codes[key] = code
            if key[0] == 4:
                self.texts.append(str(ipaddress.IPv4Address(key[1])))
            else:
                self.texts.append(str(ipaddress.IPv6Address(key[1])))
        return code

    def keys(self) -> list[tuple[int, int]]:
        """The interned addresses as (IP version, integer value), in code order (picklable)."""
        return list(self._codes)

    def intern(self, keys: list[tuple[int, int]]) -> np.ndarray:
        """int32 codes in this book of another book's ``keys()``: the translation of its codes."""
        return np.fromiter((self._code(k) for k in keys), dtype=np.int32, count=len(keys))

    def v4(self, addrs: np.ndarray) -> np.ndarray:
        """int32 codes of uint32 IPv4 addresses (host-order integers of the dotted quad)."""
        if addrs.size == 0:
            return np.zeros(0, dtype=np.int32)
        keys = self._v4_keys
        if keys.size:
            pos = np.minimum(np.searchsorted(keys, addrs), keys.size - 1)
            if (keys[pos] == addrs).all():
                return self._v4_codes[pos]
        # New addresses: intern the distinct ones, then refresh the sorted lookup.
        uniq, inverse = np.unique(addrs, return_inverse=True)
        lut = np.fromiter((self._code((4, int(a))) for a in uniq.tolist()), dtype=np.int32, count=uniq.size)
        merged = np.sort(np.concatenate([keys.astype(uniq.dtype), uniq]))  # not union1d: it loads numpy.ma
        merged = merged[np.append(True, merged[1:] != merged[:-1])]
        self._v4_codes = np.fromiter((self._codes[(4, int(a))] for a in merged.tolist()), dtype=np.int32,
                                     count=merged.size)
        self._v4_keys = merged.astype(np.uint32)
        return lut[inverse.reshape(-1)]

    def v6(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """int32 codes of IPv6 addresses given as two uint64 halves (most significant first)."""
        if hi.size == 0:
            return np.zeros(0, dtype=np.int32)
        pairs = np.empty(hi.size, dtype=[("hi", np.uint64), ("lo", np.uint64)])
        pairs["hi"] = hi
        pairs["lo"] = lo
        uniq, inverse = np.unique(pairs, return_inverse=True)
        lut = np.fromiter(
            (self._code((6, (int(h) << 64) | int(lw))) for h, lw in zip(uniq["hi"].tolist(), uniq["lo"].tolist(), strict=True)),
            dtype=np.int32,
            count=uniq.size,
        )
        return lut[inverse.reshape(-1)]
