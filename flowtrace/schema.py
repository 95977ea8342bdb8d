"""Column declarations of every table flowtrace produces (name, dtype, unit, meaning).

Each table is declared exactly once here; docs/tables.md is generated from, and tested
against, these declarations. Missing values use a sentinel stated in the column's
``missing`` field (``-1`` for signed integers, ``0`` where the value cannot be 0, NaN for
categoricals) so that columns stay plain numpy arrays: compact and fast to join.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
"""Version of the table layouts and of the JSON documents built from them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    """One column of a table."""

    name: str
    """Column name; units and orientation are spelled in it (``ts_ns``, ``orig_bytes``)."""
    dtype: str
    """numpy dtype name, ``bool``, ``category`` (text categories), or ``str``."""
    unit: str
    """Unit of the values, or ``-`` for labels and identifiers."""
    meaning: str
    """What the value says, in one sentence."""
    missing: str = ""
    """The value used when the field does not apply or was not captured."""
    categories: tuple[str, ...] = ()
    """For a categorical with a fixed vocabulary: every allowed value, in order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    """A table's declaration: its name, purpose and columns in order."""

    name: str
    """Table name as used in the API, exports and docs."""
    description: str
    """What one row is."""
    columns: tuple[Column, ...]
    """The columns in their order in the DataFrame."""

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        """The declaration of column ``name``; raises KeyError if there is none."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def pandas_dtype(self, column: Column) -> object:
        """The pandas dtype object to use for ``column``."""
        import pandas as pd

        if column.dtype == "category":
            if column.categories:
                return pd.CategoricalDtype(list(column.categories))
            return "category"
        if column.dtype == "str":
            return object
        return np.dtype(column.dtype)

    def empty(self) -> pd.DataFrame:
        """An empty DataFrame with every column and its declared dtype."""
        import pandas as pd

        data = {}
        for c in self.columns:
            dt = self.pandas_dtype(c)
            if dt == "category":
                data[c.name] = pd.Categorical([])
            else:
                data[c.name] = pd.Series([], dtype=dt)
        return pd.DataFrame(data)

    def markdown(self) -> str:
        """The table's reference section for docs/tables.md (generated, checked by a test)."""
        lines = [f"## {self.name}", "", self.description, "",
                 "| column | dtype | unit | missing | meaning |", "|---|---|---|---|---|"]
        for c in self.columns:
            dtype = c.dtype + (f" ({', '.join(c.categories)})" if c.categories else "")
            lines.append(f"| `{c.name}` | {dtype} | {c.unit} | {c.missing or '-'} | {c.meaning} |")
        return "\n".join(lines) + "\n"

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` with exactly the declared columns, in order, with declared dtypes.

        Columns missing from ``df`` raise KeyError; extra columns are dropped. Casting
        only happens where the dtype differs, so a conforming frame is not copied.
        """
        import pandas as pd

        out = {}
        for c in self.columns:
            s = df[c.name]
            dt = self.pandas_dtype(c)
            if c.dtype == "category":
                if not isinstance(s.dtype, pd.CategoricalDtype):
                    s = s.astype(dt if c.categories else "category")
                elif c.categories and list(s.cat.categories) != list(c.categories):
                    s = s.cat.set_categories(list(c.categories))
            elif c.dtype == "str":
                if s.dtype != object:
                    s = s.astype(object)
            elif s.dtype != dt:
                s = s.astype(dt)
            out[c.name] = s
        return pd.DataFrame(out, index=df.index)


def _c(name: str, dtype: str, unit: str, meaning: str, missing: str = "",
       categories: tuple[str, ...] = ()) -> Column:
    return Column(name=name, dtype=dtype, unit=unit, meaning=meaning, missing=missing, categories=categories)


DIRECTIONS = ("in", "out", "unknown")
"""Values of ``packets.direction``: received by, sent by, or unknown to the capturing host."""

DECODE_STATUSES = ("ok", "truncated", "malformed", "unsupported")
"""Values of ``packets.decode_status``.

ok: every header up to the transport layer decoded. truncated: the capture stopped
inside a header (snaplen). malformed: a header is inconsistent (bad version, length
fields that contradict each other). unsupported: not IP (ARP, LLDP, …) or a protocol
flowtrace does not decode; the link layer fields are still filled.
"""

ENCAPSULATIONS = (
    "none", "vxlan", "geneve", "ipip", "ip6ip", "gre", "wireguard", "esp",
)
"""Values of ``packets.encap``: the outermost tunnel the innermost IP packet came through."""

TCP_OPT_MSS = 0x01
TCP_OPT_WSCALE = 0x02
TCP_OPT_SACK_PERM = 0x04
TCP_OPT_SACK = 0x08
TCP_OPT_TIMESTAMP = 0x10
TCP_OPT_FASTOPEN = 0x20

IP_FLAG_DF = 0x01
IP_FLAG_MF = 0x02
IP_FLAG_FRAGMENT = 0x04
IP_FLAG_OPTIONS = 0x08

PACKETS = Table(
    name="packets",
    description="One row per captured frame, decoded down to the innermost IP packet.",
    columns=(
        _c("capture", "category", "-", "Capture name: the file stem, or NAME from NAME=PATH."),
        _c("frame", "uint32", "-", "Frame number inside the capture, from 1, as Wireshark counts."),
        _c("ts_ns", "int64", "ns", "Capture timestamp, nanoseconds since the Unix epoch (pcapng if_tsoffset applied)."),
        _c("interface", "category", "-", "pcapng interface name (if_name), else '#N' for pcapng interface N; '' for pcap."),
        _c("ifindex", "int32", "-", "Linux interface index from an SLL2 header (tcpdump -i any).", "-1"),
        _c("direction", "category", "-", "in: received by the capturing host; out: sent by it (SLL packet type, pcapng epb_flags).", categories=DIRECTIONS),
        _c("caplen", "uint32", "bytes", "Bytes of the frame present in the capture."),
        _c("wirelen", "uint32", "bytes", "Length of the frame on the wire."),
        _c("vlan", "int16", "-", "Outermost 802.1Q/802.1ad VLAN identifier.", "-1"),
        _c("ethertype", "uint16", "-", "EtherType of the innermost link layer (SLL protocol; 0x0800/0x86dd for raw IP).", "0"),
        _c("encap", "category", "-", "Outermost tunnel around the innermost IP packet.", "none", categories=ENCAPSULATIONS),
        _c("outer_src", "category", "-", "Source address of the outermost IP header when tunnelled.", "NaN"),
        _c("outer_dst", "category", "-", "Destination address of the outermost IP header when tunnelled.", "NaN"),
        _c("vni", "int32", "-", "VXLAN or Geneve virtual network identifier.", "-1"),
        _c("ip_version", "uint8", "-", "4 or 6 for the innermost IP header.", "0"),
        _c("src", "category", "-", "Source address of the innermost IP header, in text form.", "NaN"),
        _c("dst", "category", "-", "Destination address of the innermost IP header, in text form.", "NaN"),
        _c("proto", "int16", "-", "IP protocol number of the innermost transport (after IPv6 extension headers).", "-1"),
        _c("sport", "int32", "-", "TCP/UDP/SCTP source port.", "-1"),
        _c("dport", "int32", "-", "TCP/UDP/SCTP destination port.", "-1"),
        _c("ip_id", "uint32", "-", "IPv4 identification; IPv6 fragment identification.", "0"),
        _c("ttl", "uint8", "hops", "IPv4 TTL or IPv6 hop limit.", "0"),
        _c("tos", "uint8", "-", "IPv4 TOS or IPv6 traffic class (DSCP << 2 | ECN).", "0"),
        _c("ip_len", "uint32", "bytes", "Length of the innermost IP packet per its header (wire length for TSO/GRO frames with length 0).", "0"),
        _c("ip_flags", "uint8", "-", "Bits: 1 DF, 2 MF, 4 is a fragment, 8 has IPv4 options or IPv6 extension headers.", "0"),
        _c("frag_offset", "uint16", "bytes", "Fragment offset.", "0"),
        _c("tcp_flags", "uint16", "-", "TCP flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80, AE 0x100).", "0"),
        _c("seq", "uint32", "-", "TCP sequence number.", "0"),
        _c("ack", "uint32", "-", "TCP acknowledgement number.", "0"),
        _c("window", "uint16", "-", "TCP window field, unscaled.", "0"),
        _c("tcp_opts", "uint8", "-", "TCP options present: 1 MSS, 2 window scale, 4 SACK permitted, 8 SACK, 16 timestamps, 32 fast open.", "0"),
        _c("mss", "uint16", "bytes", "TCP MSS option.", "0"),
        _c("wscale", "uint8", "-", "TCP window scale option (shift count).", "0"),
        _c("tsval", "uint32", "-", "TCP timestamp value (valid when tcp_opts has 16).", "0"),
        _c("tsecr", "uint32", "-", "TCP timestamp echo reply (valid when tcp_opts has 16).", "0"),
        _c("payload_len", "uint32", "bytes", "Transport payload length on the wire, from the IP length (not caplen).", "0"),
        _c("payload_hash", "uint32", "-", "32-bit fingerprint of the first min(payload_len, 32) bytes of the transport payload; equal prefixes of equal length hash equal.", "0 = no payload, or fewer bytes captured"),
        _c("l4_checksum", "int8", "-", "Transport checksum: 1 verified, 0 wrong, 2 checksum offload's placeholder (the field holds only the pseudo-header sum: sent by the capturing host or over a veth, not an error), -1 not verified (not captured whole, zero UDP checksum, fragment).", "-1"),
        _c("icmp_type", "int16", "-", "ICMP or ICMPv6 type.", "-1"),
        _c("icmp_code", "int16", "-", "ICMP or ICMPv6 code.", "-1"),
        _c("icmp_id", "uint16", "-", "ICMP echo identifier.", "0"),
        _c("icmp_seq", "uint16", "-", "ICMP echo sequence number.", "0"),
        _c("icmp_mtu", "uint32", "bytes", "Next-hop MTU of fragmentation-needed (3/4) or packet-too-big (ICMPv6 2).", "0"),
        _c("quoted_src", "category", "-", "Source address of the packet an ICMP error quotes.", "NaN"),
        _c("quoted_dst", "category", "-", "Destination address of the packet an ICMP error quotes.", "NaN"),
        _c("quoted_proto", "int16", "-", "IP protocol of the quoted packet.", "-1"),
        _c("quoted_sport", "uint16", "-", "Source port of the quoted TCP/UDP/SCTP packet.", "0 (quoted_proto says whether ports exist)"),
        _c("quoted_dport", "uint16", "-", "Destination port of the quoted TCP/UDP/SCTP packet.", "0"),
        _c("quoted_ip_id", "uint16", "-", "IPv4 identification of the quoted packet.", "0"),
        _c("quoted_seq", "uint32", "-", "TCP sequence number of the quoted packet.", "0"),
        _c("dns_id", "int32", "-", "DNS transaction id of a UDP packet to or from port 53/5353.", "-1"),
        _c("decode_status", "category", "-", "How far decoding got: ok, truncated, malformed, unsupported.", categories=DECODE_STATUSES),
    ),
)

CONN_STATES = (
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
)
"""Values of ``flows.conn_state``: Zeek's conn.log states (see docs/flows.md)."""

SENDERS = ("none", "orig", "resp", "both")
"""Values of ``flows.fin_sender`` and ``flows.rst_sender``."""

FLOWS = Table(
    name="flows",
    description="One row per connection per observation point (capture, interface, direction), "
    "oriented originator -> responder as seen there, with Zeek conn.log semantics.",
    columns=(
        _c("flow_id", "int64", "-", "Flow number in this table, 0.. in order of first packet; packets refer to it."),
        _c("uid", "str", "-", "Zeek-style connection uid (C + 17 base62 characters), a deterministic hash of the flow."),
        _c("capture", "category", "-", "Capture the flow was seen in."),
        _c("interface", "category", "-", "Interface label of the observation point (packets.interface)."),
        _c("ifindex", "int32", "-", "SLL2 interface index of the observation point.", "-1"),
        _c("orig_direction", "category", "-", "Direction in which the originator's packets crossed the interface; replies cross the other way, except on a loopback or bridge device, where both cross it the same way.", categories=DIRECTIONS),
        _c("encap", "category", "-", "Tunnel around the flow's packets.", "none", categories=ENCAPSULATIONS),
        _c("outer_orig_h", "category", "-", "Outer (tunnel) source address of the originator's packets.", "NaN"),
        _c("outer_resp_h", "category", "-", "Outer (tunnel) destination address of the originator's packets.", "NaN"),
        _c("vni", "int32", "-", "VXLAN/Geneve network identifier of the tunnel.", "-1"),
        _c("ip_version", "uint8", "-", "4 or 6."),
        _c("proto", "int16", "-", "IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP, …)."),
        _c("orig_h", "category", "-", "Originator address: the SYN sender, else the SYN-ACK receiver, else the first packet's sender."),
        _c("orig_p", "int32", "-", "Originator port; ICMP: the originator's message type (Zeek's id.orig_p).", "-1"),
        _c("resp_h", "category", "-", "Responder address."),
        _c("resp_p", "int32", "-", "Responder port; ICMP: the counterpart type, or the code for one-way types (Zeek's id.resp_p).", "-1"),
        _c("icmp_id", "int32", "-", "ICMP echo/timestamp/info/mask identifier, part of the flow key as in conntrack.", "-1"),
        _c("ts_ns", "int64", "ns", "Time of the first packet (Zeek's ts)."),
        _c("last_ts_ns", "int64", "ns", "Time of the last packet."),
        _c("duration_ns", "int64", "ns", "Zeek's duration: last packet before both sides closed (TCP) or last packet, minus ts_ns."),
        _c("orig_pkts", "int64", "packets", "Packets the originator sent."),
        _c("orig_bytes", "int64", "bytes", "Payload bytes the originator sent; TCP: from sequence numbers, as Zeek counts them."),
        _c("orig_ip_bytes", "int64", "bytes", "IP bytes the originator sent (sum of the IP length fields)."),
        _c("resp_pkts", "int64", "packets", "Packets the responder sent."),
        _c("resp_bytes", "int64", "bytes", "Payload bytes the responder sent."),
        _c("resp_ip_bytes", "int64", "bytes", "IP bytes the responder sent."),
        _c("missed_bytes", "int64", "bytes", "TCP stream bytes never seen although later data or an ACK covered them (content gaps)."),
        _c("conn_state", "category", "-", "Zeek's conn_state (S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH).", categories=CONN_STATES),
        _c("history", "str", "-", "Zeek's history letters (upper case originator, lower case responder).", "''"),
        _c("community_id", "str", "-", "Community ID v1 of the flow's tuple (seed 0).", "''"),
        _c("midstream", "bool", "-", "TCP without the originator's SYN in this capture: the flow started before it."),
        _c("orig_isn", "int64", "-", "Originator's initial sequence number (its SYN).", "-1 (no SYN seen)"),
        _c("resp_isn", "int64", "-", "Responder's initial sequence number (its SYN-ACK).", "-1 (no SYN-ACK seen)"),
        _c("handshake_rtt_ns", "int64", "ns", "Last SYN before the first SYN-ACK to that SYN-ACK, at this observation point.", "-1"),
        _c("ack_rtt_ns", "int64", "ns", "Last SYN-ACK to the originator's first ACK after it, at this observation point.", "-1"),
        _c("syn_retransmissions", "int32", "packets", "SYNs from the originator after its first (same ISN)."),
        _c("synack_retransmissions", "int32", "packets", "SYN-ACKs from the responder after its first."),
        _c("orig_retransmissions", "int64", "packets", "Originator packets with payload at or below sequence space already sent (Zeek's T)."),
        _c("resp_retransmissions", "int64", "packets", "Responder packets with payload at or below sequence space already sent (Zeek's t)."),
        _c("fin_sender", "category", "-", "Which side sent a FIN.", categories=SENDERS),
        _c("rst_sender", "category", "-", "Which side sent a RST.", categories=SENDERS),
        _c("icmp_error_count", "int32", "packets", "ICMP errors quoting a packet of this flow (attached to it, not counted in pkts or bytes)."),
        _c("icmp_error_types", "str", "-", "type/code of each attached ICMP error, comma-separated, in time order.", "''"),
        _c("icmp_error_frames", "str", "-", "Frame numbers of the attached ICMP errors, comma-separated.", "''"),
        _c("first_frame", "uint32", "-", "Frame number of the first packet."),
        _c("last_frame", "uint32", "-", "Frame number of the last packet."),
        _c("orig_first_tsval", "int64", "-", "TCP timestamp value of the originator's first packet that has one.", "-1"),
        _c("resp_first_tsval", "int64", "-", "TCP timestamp value of the responder's first packet that has one.", "-1"),
        _c("orig_first_ip_id", "int32", "-", "IPv4 identification of the originator's first packet.", "-1 (IPv6)"),
        _c("orig_ttl", "uint8", "hops", "TTL / hop limit of the originator's first packet."),
        _c("resp_ttl", "uint8", "hops", "TTL / hop limit of the responder's first packet.", "0 (no reply)"),
    ),
)


CONNECTION_STATUSES = ("closed", "established", "reset", "rejected", "no_reply", "replied", "partial")
"""Values of ``connections.status``: how the connection looked at the client's hop.

closed: handshake and both FINs (Zeek SF); established: handshake, not closed (S1, S2,
S3); reset: ended by RST (RSTO, RSTR, RSTOS0, RSTRH); rejected: the SYN was answered by
RST (REJ) or an ICMP error; no_reply: nothing came back (S0, SH); replied: a non-TCP
exchange with traffic both ways; partial: anything else (midstream, one-sided)."""

PATH_DIRECTIONS = ("request", "response")
"""Values of ``hops.direction``: the client-to-server or the server-to-client path."""

CONNECTIONS = Table(
    name="connections",
    description="One row per logical connection across every capture and observation point: "
    "the flows that carried the same packets, linked through NAT.",
    columns=(
        _c("connection", "int64", "-", "Connection number in this analysis."),
        _c("proto", "int16", "-", "IP protocol number."),
        _c("ip_version", "uint8", "-", "4 or 6."),
        _c("client_src", "category", "-", "Client's address as the client sent the request (first on-path request hop)."),
        _c("client_sport", "int32", "-", "Client's port there.", "-1"),
        _c("client_dst", "category", "-", "The address the client contacted (the Service / LB address)."),
        _c("client_dport", "int32", "-", "The port the client contacted.", "-1"),
        _c("client_capture", "category", "-", "Capture of the most upstream request hop."),
        _c("server_src", "category", "-", "Source address as the server received the request (last on-path request hop)."),
        _c("server_sport", "int32", "-", "Source port there.", "-1"),
        _c("server_dst", "category", "-", "Server (endpoint) address."),
        _c("server_dport", "int32", "-", "Server port.", "-1"),
        _c("server_capture", "category", "-", "Capture of the most downstream request hop."),
        _c("start_ts_ns", "int64", "ns", "First packet anywhere, in the reference capture's clock."),
        _c("end_ts_ns", "int64", "ns", "Last packet anywhere, in the reference capture's clock."),
        _c("duration_ns", "int64", "ns", "end_ts_ns - start_ts_ns."),
        _c("status", "category", "-", "closed, established, reset, rejected (a RST or an ICMP error answered the request), no_reply, replied or partial (see docs).", categories=CONNECTION_STATUSES),
        _c("client_state", "category", "-", "Zeek conn_state of the client's flow.", "NaN", categories=CONN_STATES),
        _c("request_hops", "int32", "hops", "Observation points on the request path."),
        _c("response_hops", "int32", "hops", "Observation points on the response path."),
        _c("flows", "int32", "flows", "Flows (per observation point) linked into this connection."),
        _c("captures", "str", "-", "Captures that saw the connection, comma-separated, in path order."),
        _c("changes", "int16", "-", "OR of the hops' change bits (1 DNAT, 2 DNAT port, 4 SNAT, 8 SNAT port, 16 encapsulation, 32 decapsulation, 64 routed)."),
        _c("dnat", "bool", "-", "The destination was translated on the way (Service/LB address to an endpoint)."),
        _c("snat", "bool", "-", "The source was translated on the way (masquerade)."),
        _c("nat", "str", "-", "The translations with where they happened, e.g. 'DNAT 203.0.113.10:80 -> 10.244.2.7:8080 at node1'.", "''"),
        _c("findings", "int32", "-", "Findings (anomalies) about this connection."),
    ),
)

HOPS = Table(
    name="hops",
    description="One row per (connection, direction, observation point, tuple) in path order: "
    "where the connection's packets were seen and what they looked like there.",
    columns=(
        _c("connection", "int64", "-", "Connection number (connections.connection)."),
        _c("direction", "category", "-", "request (client to server) or response.", categories=PATH_DIRECTIONS),
        _c("hop", "int32", "-", "Position along the path, 0 = most upstream."),
        _c("on_path", "bool", "-", "The direction's best-seen packet passed here; off-path hops saw other packets of the direction (e.g. a RST that took another route)."),
        _c("capture", "category", "-", "Capture of the observation point."),
        _c("interface", "category", "-", "Interface label (packets.interface)."),
        _c("ifindex", "int32", "-", "SLL2 interface index.", "-1"),
        _c("packet_direction", "category", "-", "How the packets crossed the interface (in, out, unknown).", categories=DIRECTIONS),
        _c("proto", "int16", "-", "IP protocol number."),
        _c("ip_version", "uint8", "-", "4 or 6."),
        _c("src", "category", "-", "Source address seen here."),
        _c("sport", "int32", "-", "Source port seen here.", "-1"),
        _c("dst", "category", "-", "Destination address seen here."),
        _c("dport", "int32", "-", "Destination port seen here.", "-1"),
        _c("ttl", "int16", "hops", "TTL / hop limit of the path's packet here."),
        _c("encap", "category", "-", "Tunnel around the packets here.", "none", categories=ENCAPSULATIONS),
        _c("outer_src", "category", "-", "Outer (tunnel) source address.", "NaN"),
        _c("outer_dst", "category", "-", "Outer (tunnel) destination address.", "NaN"),
        _c("vni", "int32", "-", "VXLAN/Geneve network identifier.", "-1"),
        _c("first_ts_ns", "int64", "ns", "First packet here, in the reference capture's clock."),
        _c("last_ts_ns", "int64", "ns", "Last packet here, in the reference capture's clock."),
        _c("delay_ns", "int64", "ns", "Median time behind the first sighting of the same packets anywhere (corrected clocks)."),
        _c("latency_ns", "int64", "ns", "delay_ns minus the previous on-path hop's: the time between the two points.", "0"),
        _c("packets", "int64", "packets", "Packets of this direction seen here."),
        _c("ip_bytes", "int64", "bytes", "Their IP bytes."),
        _c("flow", "int64", "-", "A flow (flows.flow_id) of this hop."),
        _c("flows", "int32", "flows", "Flows at this hop (more than one after resets and retries)."),
        _c("changes", "int16", "-", "What changed against the previous on-path hop (bits as in connections.changes)."),
        _c("change_labels", "str", "-", "The changes in words: DNAT, SNAT, reverse DNAT, encapsulation, routed, …", "''"),
        _c("changed_at", "str", "-", "Where the change happened: a capture (inside that host) or 'a -> b' (between two).", "''"),
        _c("missing", "int32", "packets", "Packets the previous on-path hop saw that never showed here (TCP: bytes not covered)."),
        _c("hop_id", "int64", "-", "Hop number in this analysis (packets map onto it)."),
        _c("first_row", "int64", "-", "Row of the first packet here in the analysis's packets table."),
        _c("first_frame", "uint32", "-", "Frame number of the first packet here in its capture."),
    ),
)

SEVERITIES = ("info", "low", "medium", "high", "critical")
"""Values of ``anomalies.severity``, in increasing order (flowtrace.detect.finding uses the same)."""

ANOMALIES = Table(
    name="anomalies",
    description="One row per finding of the anomaly catalog (docs/anomalies.md): what broke, where, "
    "and the packets that prove it.",
    columns=(
        _c("code", "category", "-", "Stable code from the catalog, e.g. asymmetric_return."),
        _c("severity", "category", "-", "info, low, medium, high or critical.", categories=SEVERITIES),
        _c("connection", "int64", "-", "Connection (connections.connection) it is about.", "-1 (capture-wide)"),
        _c("direction", "category", "-", "request or response, when it is about one direction.", "NaN",
           categories=PATH_DIRECTIONS),
        _c("hop", "int32", "-", "Hop (hops.hop) in that direction where it happened.", "-1"),
        _c("segment", "str", "-", "Where on the path, in words: 'inside node1', 'node1 -> node2'.", "''"),
        _c("capture", "category", "-", "Capture it is about, for capture-wide findings.", "NaN"),
        _c("evidence", "str", "-", "Packets that prove it: 'capture:frame,frame;capture:frame'.", "''"),
        _c("message", "str", "-", "One sentence a person on call understands."),
        _c("causes", "str", "-", "Likely causes, most likely first, separated by '; '.", "''"),
    ),
)

TABLES: dict[str, Table] = {PACKETS.name: PACKETS, FLOWS.name: FLOWS, CONNECTIONS.name: CONNECTIONS,
                            HOPS.name: HOPS, ANOMALIES.name: ANOMALIES}
"""Every declared table by name."""


TABLES_DOC_INTRO = """# Tables

Every stage of flowtrace hands the next one a table: a pandas DataFrame whose columns
are declared once in `flowtrace/schema.py` (name, dtype, unit, meaning, missing value).
This page is generated from those declarations and a test keeps it in sync:
`python -c "import flowtrace.schema as s; print(s.render_tables_doc(), end='')" > docs/tables.md`.

Conventions:

- Times are `int64` nanoseconds since the Unix epoch (`ts_ns`); durations end in `_ns`.
- Addresses are pandas categoricals of their text form (`"10.244.2.7"`, `"fd00::1"`), so
  `df[df.src == "10.244.2.7"]` works and stays compact; IPv6 is in RFC 5952 form.
- Missing values are sentinels stated per column (`-1` for signed integers, `0` where a
  column says so, NaN for categoricals), so that columns stay plain numpy arrays.
- Column names follow Zeek's orientation words where they apply (`orig_`, `resp_`).
- An empty input gives an empty table with every column, never `None`.

Schema version: {version}.
"""


def render_tables_doc() -> str:
    """The whole of docs/tables.md."""
    parts = [TABLES_DOC_INTRO.format(version=SCHEMA_VERSION)]
    parts.extend(t.markdown() for t in TABLES.values())
    return "\n".join(parts)
