"""Link-layer header types (LINKTYPE_* values) that flowtrace can read, with their names."""

from __future__ import annotations

ETHERNET = 1
LINUX_SLL = 113
LINUX_SLL2 = 276
RAW = 101
IPV4 = 228
IPV6 = 229
NULL = 0
LOOP = 108
PPP = 9
PPP_HDLC = 50
C_HDLC = 104
IEEE802_11 = 105
IEEE802_11_RADIOTAP = 127
PPI = 192
NFLOG = 239

NAMES: dict[int, str] = {
    NULL: "NULL",
    ETHERNET: "ETHERNET",
    PPP: "PPP",
    12: "RAW",  # DLT_RAW on OpenBSD and most others; LINKTYPE_RAW in a file
    14: "RAW",  # DLT_RAW on BSD/OS
    PPP_HDLC: "PPP_HDLC",
    RAW: "RAW",
    C_HDLC: "C_HDLC",
    IEEE802_11: "IEEE802_11",
    LOOP: "LOOP",
    LINUX_SLL: "LINUX_SLL",
    IEEE802_11_RADIOTAP: "IEEE802_11_RADIOTAP",
    PPI: "PPI",
    IPV4: "IPV4",
    IPV6: "IPV6",
    NFLOG: "NFLOG",
    LINUX_SLL2: "LINUX_SLL2",
}
"""Every link type flowtrace decodes (vectorised or through the per-packet fallback)."""

RAW_IP = frozenset({12, 14, RAW, IPV4, IPV6})
"""Link types whose frames start with the IP header."""

FALLBACK = frozenset({IEEE802_11, IEEE802_11_RADIOTAP, PPI, NFLOG})
"""Link types decoded per packet (dpkt, or a TLV walk for NFLOG) up to the IP header."""


def name(link_type: int) -> str:
    """The LINKTYPE_ name of ``link_type`` without its prefix, or ``LINKTYPE_<n>``."""
    return NAMES.get(link_type, f"LINKTYPE_{link_type}")


def is_supported(link_type: int) -> bool:
    """True when flowtrace can decode frames of ``link_type`` down to IP."""
    return link_type in NAMES
