"""The record batch and interface records that capture readers hand to the decoder."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD = 256
"""Zero bytes appended to every batch buffer so that fixed-width gathers never run off it."""

DIR_UNKNOWN = 0
DIR_IN = 1
DIR_OUT = 2


@dataclass(slots=True, kw_only=True)
class RecordBatch:
    """Consecutive frames of one capture, as arrays over one byte buffer.

    Frames are located by ``offset`` into ``data``; bytes past ``offset + caplen`` belong
    to the next record (or the zero padding) and must not be read as part of the frame.
    """

    data: np.ndarray
    """uint8 buffer holding the records, followed by PAD zero bytes."""
    offset: np.ndarray
    """int64 position of each frame's first byte in ``data``."""
    caplen: np.ndarray
    """int64 captured length of each frame."""
    wirelen: np.ndarray
    """int64 original length of each frame on the wire."""
    ts_ns: np.ndarray
    """int64 timestamp, ns since the epoch."""
    interface: np.ndarray
    """int32 capture-wide interface number (index into CaptureReader.interfaces)."""
    direction: np.ndarray
    """int8 direction from the capture format (pcapng epb_flags): DIR_* values."""
    first_frame: int
    """Frame number of the first frame of the batch (frames count from 1)."""

    def __len__(self) -> int:
        return int(self.offset.shape[0])


@dataclass(slots=True, kw_only=True)
class InterfaceStats:
    """Counters of a pcapng Interface Statistics Block; None where the block omits one."""

    ifrecv: int | None = None
    """Packets received by the interface (isb_ifrecv)."""
    ifdrop: int | None = None
    """Packets dropped by the interface for lack of resources (isb_ifdrop)."""
    filteraccept: int | None = None
    """Packets accepted by the capture filter (isb_filteraccept)."""
    osdrop: int | None = None
    """Packets dropped by the operating system (isb_osdrop)."""
    usrdeliv: int | None = None
    """Packets delivered to the user (isb_usrdeliv)."""

    def as_dict(self) -> dict[str, int | None]:
        """The counters by their pcapng option names (without ``isb_``)."""
        return {
            "ifrecv": self.ifrecv,
            "ifdrop": self.ifdrop,
            "osdrop": self.osdrop,
            "filteraccept": self.filteraccept,
            "usrdeliv": self.usrdeliv,
        }


@dataclass(slots=True, kw_only=True)
class Interface:
    """One interface of a capture: the pcap file itself, or one pcapng IDB."""

    id: int
    """Capture-wide interface number, in IDB order across sections."""
    section: int
    """pcapng section number, from 0 (0 for pcap)."""
    local_id: int
    """Interface id inside its section, as EPBs reference it."""
    link_type: int
    """LINKTYPE_* value."""
    snaplen: int
    """Snapshot length; 0 means no limit."""
    name: str = ""
    """if_name, or '' when absent."""
    description: str = ""
    """if_description, or ''."""
    tsresol: int = 6
    """if_tsresol byte: bit 7 clear = 10^-n s, set = 2^-n s."""
    ts_offset_s: int = 0
    """if_tsoffset seconds added to every timestamp."""
    stats: InterfaceStats | None = None
    """Counters from the interface's last ISB."""
    packets: int = 0
    """Frames read on this interface."""
    label: str = field(default="")
    """The value of packets.interface for its frames."""

    @property
    def time_resolution(self) -> str:
        """Human label of the timestamp resolution: us, ns, ms, s, 10^-n s or 2^-n s."""
        return resolution_label(self.tsresol)


def resolution_label(tsresol: int) -> str:
    """Label for an if_tsresol byte: ``s``, ``ms``, ``us``, ``ns``, ``10^-n s``, ``2^-n s``."""
    if tsresol & 0x80:
        return f"2^-{tsresol & 0x7F} s"
    return {0: "s", 3: "ms", 6: "us", 9: "ns"}.get(tsresol, f"10^-{tsresol} s")


def ticks_to_ns(ticks: np.ndarray, tsresol: int) -> np.ndarray:
    """Convert uint64 timestamp ticks in the if_tsresol unit to int64 nanoseconds."""
    t = ticks.astype(np.uint64, copy=False)
    if tsresol & 0x80:
        k = tsresol & 0x7F
        if k == 0:
            return (t * np.uint64(10**9)).astype(np.int64)
        if k > 34:
            return np.array([(int(v) * 10**9) >> k for v in t], dtype=np.int64)
        whole = t >> np.uint64(k)
        frac = t & np.uint64((1 << k) - 1)
        return (whole * np.uint64(10**9) + ((frac * np.uint64(10**9)) >> np.uint64(k))).astype(np.int64)
    if tsresol <= 9:
        return (t * np.uint64(10 ** (9 - tsresol))).astype(np.int64)
    return (t // np.uint64(10 ** (tsresol - 9))).astype(np.int64)
