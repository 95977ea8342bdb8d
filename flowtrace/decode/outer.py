"""Outer UDP ports of tunnelled packets (VXLAN, Geneve), read again from their capture.

The packets table keeps a tunnelled packet's inner headers with the tunnel's kind, outer
addresses and VNI, but not its outer UDP ports: two more columns on every packet for the
few that are tunnelled. The conntrack entries of the tunnel's own UDP flows need them
(flowtrace.correlate.underlay), so they are read again here, for the frames asked only,
decoding each frame no further than its outermost tunnel.
"""

from __future__ import annotations

import warnings

import numpy as np

from flowtrace.capture.files import CaptureSource
from flowtrace.capture.reader import CaptureFile
from flowtrace.decode.addresses import AddressBook
from flowtrace.decode.batch import decode_batch
from flowtrace.decode.state import BatchState


def tunnel_ports(source: CaptureSource, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outer UDP (source port, destination port) of ``frames`` (``packets.frame``
    numbers of ``source``): two int32 arrays aligned with ``frames``, -1 where a frame is
    not inside a UDP tunnel or is not in the file.

    Batches holding none of ``frames`` are skipped undecoded and reading stops after the
    last. Warnings the first read gave (a cut file) are not given again. Raises
    CaptureError when the file cannot be opened or read again, OSError when it is gone.
    """
    want = np.asarray(frames, dtype=np.int64)
    sport = np.full(want.size, -1, dtype=np.int32)
    dport = np.full(want.size, -1, dtype=np.int32)
    if not want.size:
        return sport, dport
    order = np.argsort(want, kind="stable")
    wanted = want[order]
    last = int(wanted[-1])
    book = AddressBook()
    with warnings.catch_warnings(), CaptureFile(source) as reader:
        warnings.simplefilter("ignore")
        for batch in reader.batches():
            first = batch.first_frame
            lo, hi = np.searchsorted(wanted, (first, first + len(batch)))
            if lo < hi:
                st = BatchState(batch)
                st.tunnel_ports = []
                decode_batch(batch, reader.interfaces, book, st, outermost=True)
                for rows, sp, dp in st.tunnel_ports:
                    found = rows.astype(np.int64) + first
                    at = lo + np.searchsorted(wanted[lo:hi], found)
                    hit = at < hi
                    hit[hit] = wanted[at[hit]] == found[hit]
                    sport[order[at[hit]]] = sp[hit]
                    dport[order[at[hit]]] = dp[hit]
            if first + len(batch) > last:
                break
    return sport, dport
