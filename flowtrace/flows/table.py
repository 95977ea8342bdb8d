"""Assemble per-flow arrays into the declared flows table, and give each flow its uid."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowtrace.hashing import GOLDEN, splitmix64
from flowtrace.schema import CONN_STATES, DIRECTIONS, ENCAPSULATIONS, FLOWS, SENDERS

if TYPE_CHECKING:
    import pandas as pd

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


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowColumns:
    """The flows table as numpy arrays, before it is a DataFrame: ``columns`` holds every
    column of ``flowtrace.schema.FLOWS`` in order, values in their declared dtype, text
    columns as object arrays of str, and categorical columns as int64 codes into their
    ``categories``. ``frame()`` makes the DataFrame; the conn.log writer reads either."""

    columns: dict[str, np.ndarray]
    categories: dict[str, list[str]]
    rows: int

    def __len__(self) -> int:
        return self.rows

    def frame(self) -> pd.DataFrame:
        """The flows table as a DataFrame on these arrays (``FLOWS.empty()`` without rows)."""
        import pandas as pd

        if not self.rows:
            return FLOWS.empty()
        out: dict[str, object] = {}
        for name, values in self.columns.items():
            if name in self.categories:
                dtype = pd.CategoricalDtype(self.categories[name])
                out[name] = pd.Categorical.from_codes(values, dtype=dtype, validate=False)
            elif values.dtype == object:
                # a Series of dtype object, so that pandas does not infer its string dtype
                out[name] = pd.Series(values, dtype=object, copy=False)
            else:
                out[name] = values
        return pd.DataFrame(out, copy=False)


def column_parts(flows: pd.DataFrame | FlowColumns, name: str) -> tuple[np.ndarray, list[str] | None]:
    """Column ``name`` of a flows table or its FlowColumns, as the writers read it: (its
    codes, -1 missing, and its categories' texts) for a categorical, (its values, None)
    otherwise."""
    if isinstance(flows, FlowColumns):
        cats = flows.categories.get(name)
        return flows.columns[name], cats
    col = flows[name]
    if col.dtype.name == "category":
        return col.cat.codes.to_numpy(), [str(c) for c in col.cat.categories]
    return col.to_numpy(), None


def assemble(pf: dict, *, captures: Sequence[str], interfaces: Sequence[str], addresses: Sequence[str],
             outer_addresses: Sequence[str]) -> FlowColumns:
    """The flows table from per-flow arrays ``pf`` (codes into the packets' categories).

    ``captures``, ``interfaces`` and ``addresses`` are the categories the ``capture``,
    ``interface`` and ``orig_h``/``resp_h`` codes refer to, ``outer_addresses`` those of
    ``outer_orig_h``/``outer_resp_h``.
    """
    n = len(pf["ts_ns"])
    if not n:
        return FlowColumns(columns={c.name: np.zeros(0, dtype=object if c.dtype == "str" else np.int64
                                                     if c.dtype == "category" else c.dtype)
                                    for c in FLOWS.columns}, categories={}, rows=0)
    captures, interfaces = [str(c) for c in captures], [str(c) for c in interfaces]
    categories = {
        "capture": captures, "interface": interfaces, "orig_direction": list(DIRECTIONS),
        "encap": list(ENCAPSULATIONS), "outer_orig_h": list(outer_addresses), "outer_resp_h": list(outer_addresses),
        "orig_h": list(addresses), "resp_h": list(addresses), "conn_state": list(CONN_STATES),
        "fin_sender": list(SENDERS), "rst_sender": list(SENDERS),
    }
    cols: dict[str, object] = {"flow_id": np.arange(n, dtype=np.int64), "history": pf["history"]}
    for name in categories:
        cols[name] = np.asarray(pf[name], dtype=np.int64)
    for c in FLOWS.columns:
        if c.name not in cols and c.name != "uid":
            cols[c.name] = pf[c.name]
    cols["uid"] = uids(
        capture=pf["capture"], interface=pf["interface"], ifindex=pf["ifindex"], direction=pf["orig_direction"],
        proto=pf["proto"], orig_h=pf["orig_h"], orig_p=pf["orig_p"], resp_h=pf["resp_h"], resp_p=pf["resp_p"],
        ts_ns=pf["ts_ns"], icmp_id=pf["icmp_id"], vni=pf["vni"], captures=captures, interfaces=interfaces,
        addresses=addresses)
    out: dict[str, np.ndarray] = {}
    for c in FLOWS.columns:
        v = cols[c.name]
        if c.dtype == "str":
            out[c.name] = np.asarray(v, dtype=object)
        elif c.dtype == "category":
            out[c.name] = np.asarray(v)
        else:
            out[c.name] = np.asarray(v).astype(c.dtype, copy=False)
    return FlowColumns(columns=out, categories=categories, rows=n)
