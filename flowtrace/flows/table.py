"""Assemble per-flow arrays into the declared flows table, and give each flow its uid."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from flowtrace.hashing import GOLDEN, splitmix64
from flowtrace.schema import CONN_STATES, DIRECTIONS, ENCAPSULATIONS, FLOWS, SENDERS

_B62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 copy of ``x``."""
    with np.errstate(over="ignore"):
        return splitmix64(x.astype(np.uint64))


def _text_hash(values: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash of each text (uint64)."""
    return np.array([int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
                     for v in values] or [0], dtype=np.uint64)


def uids(*, capture: np.ndarray, interface: np.ndarray, ifindex: np.ndarray, direction: np.ndarray,
         proto: np.ndarray, orig_h: np.ndarray, orig_p: np.ndarray, resp_h: np.ndarray,
         resp_p: np.ndarray, ts_ns: np.ndarray, icmp_id: np.ndarray, vni: np.ndarray,
         captures: Sequence[str], interfaces: Sequence[str], addresses: Sequence[str]) -> np.ndarray:
    """Zeek-style uids: 'C' + 17 base62 characters from a hash of the flow's identity.

    ``capture``, ``interface``, ``orig_h`` and ``resp_h`` are codes into ``captures``,
    ``interfaces`` and ``addresses``; the hash uses the texts, so equal flows get equal
    uids on every run and machine whatever the codes. Returns an object array of str.
    """
    n = ts_ns.size
    if not n:
        return np.zeros(0, dtype=object)

    def h(codes: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        used = np.unique(codes)
        table = np.zeros(len(texts) + 1, dtype=np.uint64)
        table[used] = _text_hash([texts[i] if i >= 0 else "" for i in used.tolist()])
        return table[codes]

    acc = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for part in (h(capture, captures), h(interface, interfaces), h(orig_h, addresses), h(resp_h, addresses),
                     ifindex.astype(np.int64).astype(np.uint64), direction.astype(np.uint64),
                     proto.astype(np.int64).astype(np.uint64), orig_p.astype(np.int64).astype(np.uint64),
                     resp_p.astype(np.int64).astype(np.uint64), ts_ns.astype(np.int64).astype(np.uint64),
                     icmp_id.astype(np.int64).astype(np.uint64), vni.astype(np.int64).astype(np.uint64)):
            acc = _mix(acc ^ part) + GOLDEN
    h1, h2 = _mix(acc), _mix(acc ^ np.uint64(0xD6E8FEB86659FD93))
    digits = np.empty((n, 18), dtype=np.uint8)
    digits[:, 0] = ord("C")
    for j in range(9):
        digits[:, 1 + j] = _B62[(h1 % np.uint64(62)).astype(np.int64)]
        h1 = h1 // np.uint64(62)
    for j in range(8):
        digits[:, 10 + j] = _B62[(h2 % np.uint64(62)).astype(np.int64)]
        h2 = h2 // np.uint64(62)
    return np.ascontiguousarray(digits).view("S18").ravel().astype(str).astype(object)


def assemble(pf: dict, *, packets: pd.DataFrame, addresses: Sequence[str],
             outer_addresses: Sequence[str]) -> pd.DataFrame:
    """The flows table from per-flow arrays ``pf`` (codes into the packets' categories).

    ``addresses`` are the categories ``orig_h``/``resp_h`` codes refer to, and
    ``outer_addresses`` those of ``outer_orig_h``/``outer_resp_h``.
    """
    n = len(pf["ts_ns"])
    if not n:
        return FLOWS.empty()
    captures = [str(c) for c in packets["capture"].cat.categories]
    interfaces = [str(c) for c in packets["interface"].cat.categories]
    addr_dtype = pd.CategoricalDtype(list(addresses))
    outer_dtype = pd.CategoricalDtype(list(outer_addresses))

    def cat(codes: np.ndarray, dtype: pd.CategoricalDtype) -> pd.Categorical:
        return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int64), dtype=dtype, validate=False)

    cap_dtype = pd.CategoricalDtype(captures)
    if_dtype = pd.CategoricalDtype(interfaces)
    cols: dict[str, object] = {
        "flow_id": np.arange(n, dtype=np.int64),
        "capture": cat(pf["capture"], cap_dtype),
        "interface": cat(pf["interface"], if_dtype),
        "ifindex": pf["ifindex"],
        "orig_direction": cat(pf["orig_direction"], pd.CategoricalDtype(list(DIRECTIONS))),
        "encap": cat(pf["encap"], pd.CategoricalDtype(list(ENCAPSULATIONS))),
        "outer_orig_h": cat(pf["outer_orig_h"], outer_dtype),
        "outer_resp_h": cat(pf["outer_resp_h"], outer_dtype),
        "orig_h": cat(pf["orig_h"], addr_dtype),
        "resp_h": cat(pf["resp_h"], addr_dtype),
        "conn_state": cat(pf["conn_state"], pd.CategoricalDtype(list(CONN_STATES))),
        "fin_sender": cat(pf["fin_sender"], pd.CategoricalDtype(list(SENDERS))),
        "rst_sender": cat(pf["rst_sender"], pd.CategoricalDtype(list(SENDERS))),
        "history": np.asarray(pf["history"], dtype=object),
    }
    for c in FLOWS.columns:
        if c.name not in cols and c.name != "uid":
            cols[c.name] = pf[c.name]
    cols["uid"] = uids(
        capture=pf["capture"], interface=pf["interface"], ifindex=pf["ifindex"], direction=pf["orig_direction"],
        proto=pf["proto"], orig_h=pf["orig_h"], orig_p=pf["orig_p"], resp_h=pf["resp_h"], resp_p=pf["resp_p"],
        ts_ns=pf["ts_ns"], icmp_id=pf["icmp_id"], vni=pf["vni"], captures=captures, interfaces=interfaces,
        addresses=addresses)
    out: dict[str, object] = {}
    for c in FLOWS.columns:
        v = cols[c.name]
        if c.dtype == "str":
            # a Series of dtype object, so that pandas does not infer its string dtype
            out[c.name] = pd.Series(np.asarray(v, dtype=object), dtype=object, copy=False)
        elif c.dtype == "category":
            out[c.name] = v
        else:
            out[c.name] = np.asarray(v).astype(c.dtype, copy=False)
    return pd.DataFrame(out, copy=False)
