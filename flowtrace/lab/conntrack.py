"""Parsing ``conntrack -E`` / ``conntrack -L`` output (conntrack-tools 1.4.x).

In: lines such as ``[1700000000.5     ]\\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT
src=... dst=... sport=... dport=... [UNREPLIED] src=... dst=... sport=... dport=...``.
Out: :class:`CtEntry` records with the original and reply tuples as the kernel printed
them. The timestamp's microseconds are printed left-justified without zero padding, so
both parts are parsed as integers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_TS = re.compile(r"^\[(\d+)\.(\d+)\s*\]\s*")
_EVENT = re.compile(r"^\[(NEW|UPDATE|DESTROY)\]\s*")
_TUPLE_KEYS = ("src", "dst", "sport", "dport", "type", "code", "id")


@dataclass(slots=True)
class CtEntry:
    """One conntrack line: an event (``-E``) or a table entry (``-L``)."""

    line_no: int
    """1-based line number in its file."""
    event: str | None
    """``NEW``, ``UPDATE``, ``DESTROY``; None for ``-L`` lines."""
    ts_ns: int | None
    """Event time (``-o timestamp``) in ns; None when absent."""
    family: str
    """``ipv4`` or ``ipv6``."""
    proto: str
    """``tcp``, ``udp``, ``icmp``, ``icmpv6`` ..."""
    state: str | None
    """TCP state, None for other protocols."""
    orig: dict[str, str] = field(default_factory=dict)
    reply: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    raw: str = ""

    def orig_tuple(self) -> tuple[str, str, int, str, int]:
        """(proto, src, sport, dst, dport) of the original direction."""
        o = self.orig
        return (self.proto, o.get("src", ""), int(o.get("sport", 0)), o.get("dst", ""), int(o.get("dport", 0)))

    def reply_tuple(self) -> tuple[str, str, int, str, int]:
        """(proto, src, sport, dst, dport) of the reply direction."""
        r = self.reply
        return (self.proto, r.get("src", ""), int(r.get("sport", 0)), r.get("dst", ""), int(r.get("dport", 0)))

    @property
    def dnat(self) -> bool:
        """The destination was rewritten (reply.src != orig.dst or ports differ)."""
        return self.reply.get("src") != self.orig.get("dst") or self.reply.get("sport") != self.orig.get("dport")

    @property
    def snat(self) -> bool:
        """The source was rewritten (reply.dst != orig.src or ports differ)."""
        return self.reply.get("dst") != self.orig.get("src") or self.reply.get("dport") != self.orig.get("sport")


def parse_line(line: str, line_no: int = 0) -> CtEntry | None:
    """Parse one conntrack line; None for blank lines and tool messages."""
    text = line.rstrip("\n")
    rest = text.strip()
    ts_ns = None
    m = _TS.match(rest)
    if m:
        ts_ns = int(m.group(1)) * 1_000_000_000 + int(m.group(2)) * 1000
        rest = rest[m.end():]
    event = None
    m = _EVENT.match(rest)
    if m:
        event = m.group(1)
        rest = rest[m.end():]
    tokens = rest.split()
    if len(tokens) < 4:
        return None
    if tokens[0] in ("ipv4", "ipv6"):
        family, tokens = tokens[0], tokens[2:]
    else:
        family = "ipv6" if any(t.startswith("src=") and ":" in t for t in tokens) else "ipv4"
    if not tokens[1].isdigit():
        return None
    proto, tokens = tokens[0], tokens[2:]
    if tokens and tokens[0].isdigit():
        tokens = tokens[1:]  # timeout
    state = None
    if tokens and "=" not in tokens[0] and not tokens[0].startswith("["):
        state, tokens = tokens[0], tokens[1:]
    entry = CtEntry(line_no=line_no, event=event, ts_ns=ts_ns, family=family, proto=proto,
                    state=state, raw=text)
    current = None
    for tok in tokens:
        if tok.startswith("["):
            entry.flags.append(tok.strip("[]"))
            continue
        key, _, value = tok.partition("=")
        if key == "src":
            current = entry.orig if current is None else entry.reply
        if key in _TUPLE_KEYS and current is not None:
            current.setdefault(key, value)
    if not entry.orig:
        return None
    return entry


def parse_file(path: Path) -> list[CtEntry]:
    """Parse every conntrack line of ``path`` (a ``-E`` or ``-L`` dump)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            e = parse_line(line, i)
            if e is not None:
                out.append(e)
    return out
