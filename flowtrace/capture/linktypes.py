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


OTHER_NAMES: dict[int, str] = {
    3: "AX25", 6: "IEEE802_5", 7: "ARCNET_BSD", 8: "SLIP", 10: "FDDI", 100: "ATM_RFC1483",
    107: "FRELAY", 117: "PFLOG", 119: "PRISM_HEADER", 122: "IP_OVER_FC", 123: "SUNATM",
    129: "ARCNET_LINUX", 138: "APPLE_IP_OVER_IEEE1394", 140: "MTP2", 143: "DOCSIS",
    147: "USER0", 148: "USER1", 149: "USER2", 160: "USER13", 163: "IEEE802_11_AVS",
    165: "BACNET_MS_TP", 178: "JUNIPER_VP", 182: "JUNIPER_ST", 187: "BLUETOOTH_HCI_H4",
    189: "USB_LINUX", 195: "IEEE802_15_4_WITHFCS", 201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    220: "USB_LINUX_MMAPPED", 226: "IPNET", 227: "CAN_SOCKETCAN", 230: "IEEE802_15_4_NOFCS",
    231: "DBUS", 242: "IPOIB", 249: "USBPCAP", 253: "NETLINK", 258: "PKTAP",
    281: "DSA_TAG_BRCM", 282: "DSA_TAG_BRCM_PREPEND", 284: "DSA_TAG_DSA", 285: "DSA_TAG_EDSA",
    290: "VSOCK",
}
"""Names of link types flowtrace does not decode, for messages."""


def name(link_type: int) -> str:
    """The LINKTYPE_ name of ``link_type`` without its prefix, or ``LINKTYPE_<n>``."""
    return NAMES.get(link_type) or OTHER_NAMES.get(link_type, f"LINKTYPE_{link_type}")


def is_supported(link_type: int) -> bool:
    """True when flowtrace can decode frames of ``link_type`` down to IP."""
    return link_type in NAMES
