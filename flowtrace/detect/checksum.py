"""Bad transport checksums: a fault when received packets with them are the ones lost,
an offload artefact otherwise.

Linux leaves checksums unfilled on packets it sends with checksum offload (the NIC fills
them in), and virtual interfaces (veth, tunnels) hand packets over that way too, so a
capture of a container host shows "bad" checksums on packets that are perfectly fine.
The decoder recognises the unfilled field (only the pseudo-header sum: ``l4_checksum``
2); any other wrong value (0) is evidence only when the bad packets are the ones that
vanish (or get retransmitted) while packets with other checksums on the same path go
through.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtrace.detect.base import Needs
from flowtrace.detect.context import DIR_IN, DIR_OUT, Context
from flowtrace.detect.evidence import plural
from flowtrace.detect.finding import Finding

WRONG, PLACEHOLDER = 0, 2
"""packets.l4_checksum values: verified wrong; checksum offload's unfilled placeholder."""
MTU_MAX = 1500
"""IP packets larger than this are no single Ethernet frame: TSO/GSO/GRO super-segments."""


def received(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """bool per row: the capturing host received the packet (not sent it)."""
    multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
    cap = ctx.col("capture")[rows]
    pdir = ctx.pdir[rows]
    own = _own_mask(ctx, cap, ctx.col("dst")[rows])
    return (pdir == DIR_IN) | (~multi[cap] & (pdir != DIR_OUT) & own)


def sent(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """bool per row: the capturing host sent (or forwarded) the packet."""
    multi = np.array([n in ctx.multi_interface for n in ctx.capture_names] + [False], dtype=bool)
    cap = ctx.col("capture")[rows]
    pdir = ctx.pdir[rows]
    own = _own_mask(ctx, cap, ctx.col("src")[rows])
    return (pdir == DIR_OUT) | (~multi[cap] & (pdir != DIR_IN) & own)


def _own_mask(ctx: Context, cap: np.ndarray, addr: np.ndarray) -> np.ndarray:
    out = np.zeros(cap.size, dtype=bool)
    for i, name in enumerate(ctx.capture_names):
        codes = [ctx.addr_code(a) for a in ctx.own_addresses.get(name, ())]
        if codes:
            sel = cap == i
            out[sel] = np.isin(addr[sel], codes)
    return out


def bad_checksum_losses(ctx: Context) -> pd.DataFrame:
    """Received packets with a wrong checksum that were lost, selectively.

    Columns: row (the bad packet where it was last seen), connection, direction, how
    ('vanished': never seen at the next hop; 'retransmitted': the receiver's capture shows
    it, then the sender's retransmission with a good checksum), again (row of that
    retransmission, -1).
    """
    parts = [_vanished_bad(ctx), _retransmitted_bad(ctx)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({"row": [], "connection": [], "direction": [], "how": [], "again": []})
    return pd.concat(parts, ignore_index=True)


def _vanished_bad(ctx: Context) -> pd.DataFrame:
    v = ctx.vanished
    if v.empty:
        return pd.DataFrame()
    v = v[v["covered"].to_numpy()]
    rows = v["row"].to_numpy()
    bad = (ctx.col("l4_checksum")[rows] == WRONG) & received(ctx, rows)
    v = v[bad]
    if v.empty:
        return pd.DataFrame()
    keep = []
    lost_rows = set(ctx.vanished["row"].tolist())
    for hop, g in v.groupby("last_hop"):
        r = ctx.connection_rows([int(g["connection"].iloc[0])])
        r = r[ctx.analysis.packet_hop[r] == hop]
        passed = np.array([x not in lost_rows for x in r.tolist()], dtype=bool)
        chk = ctx.col("l4_checksum")[r[passed]]
        # Selective: nothing that went on from here had a wrong checksum.
        if chk.size and (chk != WRONG).all():
            keep.append(g)
    if not keep:
        return pd.DataFrame()
    g = pd.concat(keep)
    return pd.DataFrame({"row": g["row"].to_numpy(), "connection": g["connection"].to_numpy(),
                         "direction": g["direction"].to_numpy(), "how": "vanished",
                         "again": np.full(len(g), -1, dtype=np.int64)})


def _retransmitted_bad(ctx: Context) -> pd.DataFrame:
    a = ctx.analysis
    chk, proto, plen = ctx.col("l4_checksum"), ctx.col("proto"), ctx.col("payload_len")
    cap = ctx.col("capture")
    out = []
    for i, name in enumerate(ctx.capture_names):
        if name in ctx.multi_interface or not ctx.own_addresses.get(name):
            continue
        rows = np.flatnonzero((cap == i) & (proto == 6) & (plen > 0) & (a.packet_flow >= 0))
        if not rows.size:
            continue
        rows = rows[received(ctx, rows)]
        good = chk[rows] != WRONG
        if not good.any() or good.all():
            continue
        df = pd.DataFrame({"row": rows, "flow": a.packet_flow[rows], "seq": ctx.col("seq")[rows],
                           "chk": chk[rows], "ts": a.corrected_ts[rows]})
        first_bad = df[df["chk"] == WRONG].drop_duplicates(["flow", "seq"])
        later_good = df[df["chk"] != WRONG]
        m = first_bad.merge(later_good, on=["flow", "seq"], suffixes=("", "_again"))
        m = m[m["ts_again"] > m["ts"]].drop_duplicates("row")
        if m.empty:
            continue
        r = m["row"].to_numpy()
        out.append(pd.DataFrame({"row": r, "connection": ctx.packet_conn(r),
                                 "direction": a.packet_path_direction[r].astype(np.int64), "how": "retransmitted",
                                 "again": m["row_again"].to_numpy()}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


class BadChecksumReceived:
    """``bad_checksum_received``: received packets with a wrong L4 checksum are the ones that
    never get through (the sender retransmits), while good ones pass."""

    code = "bad_checksum_received"
    severity = "high"
    needs = Needs(vantage_points=1, where="the receiving node or pod")
    supersedes: tuple[str, ...] = ("drop_between_hops", "no_reply")

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per connection and direction."""
        lost = ctx.shared("bad_checksum_losses", bad_checksum_losses)
        out = []
        for (conn, direction), g in lost.groupby(["connection", "direction"], sort=True):
            rows = g["row"].to_numpy().astype(np.int64)
            again = g["again"].to_numpy().astype(np.int64)
            hop = ctx.analysis.packet_hop[rows[0]]
            where = ctx.hop_label(int(hop)) if hop >= 0 else ctx.capture_names[int(ctx.col("capture")[rows[0]])]
            how = ("and never got further" if (g["how"] == "vanished").any()
                   else "and were dropped by the receiver: the sender had to retransmit them")
            d = "request" if int(direction) == 0 else "response"
            out.append(Finding(
                code=self.code, severity=self.severity, connection=int(conn) if conn >= 0 else None,
                direction=d, hop=int(ctx.hop.pos[hop]) if hop >= 0 else None,
                message=(f"{plural(rows.size, 'packet')} of {ctx.connection_label(int(conn))} ({d}) arrived at "
                         f"{where} with a wrong TCP/UDP checksum {how}, while packets with good checksums passed: "
                         "something on the way corrupts or mis-offloads them."),
                evidence=ctx.evidence(np.r_[rows, again[again >= 0]], "received with a bad checksum (and the "
                                      "retransmission)"),
                causes=("checksum offload bug with VXLAN and MASQUERADE --random-fully (disable tx checksum "
                        "offload on the VXLAN device: ethtool -K flannel.1 tx-checksum-ip-generic off)",
                        "a NIC or driver corrupting packets", "a middlebox rewriting packets without fixing checksums"),
                details={"packets": int(rows.size)}))
        return out


class OffloadArtifact:
    """``offload_artifact``: bad checksums and oversized segments that are offloads, not faults."""

    code = "offload_artifact"
    severity = "info"
    needs = Needs(vantage_points=1, where="the sending host")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per capture with offload artefacts."""
        chk, cap = ctx.col("l4_checksum"), ctx.col("capture")
        ip_len, frag = ctx.col("ip_len"), ctx.col("ip_flags")
        lost = ctx.shared("bad_checksum_losses", bad_checksum_losses)
        lost_rows = lost["row"].to_numpy().astype(np.int64) if len(lost) else np.zeros(0, np.int64)
        bad_all = np.flatnonzero((chk == WRONG) | (chk == PLACEHOLDER))
        bad_all = bad_all[~np.isin(bad_all, lost_rows)]
        big_all = np.flatnonzero((ip_len > MTU_MAX) & ((frag & 0x06) == 0))
        out = []
        for i, name in enumerate(ctx.capture_names):
            bad = bad_all[cap[bad_all] == i]
            big = big_all[cap[big_all] == i]
            if not bad.size and not big.size:
                continue
            by_host = bad[sent(ctx, bad)]
            other = bad[~np.isin(bad, by_host)]
            wrong = other[chk[other] == WRONG]
            other = other[chk[other] != WRONG]
            parts = []
            if by_host.size:
                parts.append(f"{plural(by_host.size, 'packet')} it sent or forwarded with checksums not yet "
                             "filled in (checksum offload: the NIC does it)")
            if other.size:
                parts.append(f"{plural(other.size, 'received packet')} with unfilled checksums (virtual "
                             "interfaces hand packets over with partial checksums)")
            if wrong.size:
                parts.append(f"{plural(wrong.size, 'received packet')} with a wrong checksum that went on all "
                             "the same")
            other = np.r_[other, wrong]
            if big.size:
                parts.append(f"{plural(big.size, 'packet')} larger than any MTU, up to "
                             f"{int(ip_len[big].max())} bytes (TSO/GSO/GRO super-segments)")
            out.append(Finding(
                code=self.code, severity=self.severity, capture=name,
                message=f"Capture {name} shows " + "; ".join(parts) + ": normal, not a fault.",
                evidence=ctx.evidence(np.r_[by_host[:4], other[:4], big[:4]], "offload artefacts"),
                causes=("checksum and segmentation offload on the capturing host (ethtool -k)",),
                details={"bad_checksum_sent": int(by_host.size), "bad_checksum_received": int(other.size),
                         "super_segments": int(big.size)}))
        return out
