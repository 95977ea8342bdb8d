"""conntrack's text formats: parsing ``conntrack -L`` / ``-E`` output (any ``-o`` variant,
XML included) and printing entries in the exact ``conntrack -L`` line layout.

Layout (conntrack-tools, libnetfilter_conntrack's snprintf_default)::

    [ipv4     2 ]tcp      6 117 TIME_WAIT src=A dst=B sport=P dport=Q [packets= bytes=]
    [UNREPLIED] src=B' dst=A' sport=Q' dport=P' [packets= bytes=] [ASSURED] mark=0 [zone=] use=1

``-E`` prefixes ``[NEW]``/``[UPDATE]``/``[DESTROY]`` (right-aligned in 10 columns) and with
``-o timestamp`` ``[SEC.USEC]`` where USEC is printed without zero padding.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from flowtrace.errors import InputError
from flowtrace.frozen import maker

L4_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "dccp": 33, "udplite": 136,
              "gre": 47, "unknown": 255}
L4_NAMES = {v: k for k, v in L4_NUMBERS.items()}
TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
              "TIME_WAIT", "CLOSE", "SYN_SENT2")
FLAGS = ("UNREPLIED", "ASSURED", "OFFLOAD", "HW_OFFLOAD", "UNKNOWN")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuple:
    """One direction of a conntrack entry."""

    src: str
    """Source address, text form."""
    dst: str
    """Destination address."""
    sport: int | None = None
    """TCP/UDP/SCTP source port."""
    dport: int | None = None
    """TCP/UDP/SCTP destination port."""
    icmp_type: int | None = None
    """ICMP type (ICMP entries)."""
    icmp_code: int | None = None
    """ICMP code."""
    icmp_id: int | None = None
    """ICMP identifier."""

    def text(self) -> str:
        """The tuple as conntrack prints it."""
        base = f"src={self.src} dst={self.dst}"
        if self.icmp_type is not None:
            return f"{base} type={self.icmp_type} code={self.icmp_code} id={self.icmp_id}"
        if self.sport is not None:
            return f"{base} sport={self.sport} dport={self.dport}"
        return base

    def key(self) -> tuple:
        """What identifies the tuple (for comparisons)."""
        return (self.src, self.dst, self.sport, self.dport, self.icmp_type, self.icmp_code, self.icmp_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConntrackEntry:
    """One conntrack entry (or event), as the kernel lists it or as flowtrace reconstructs it."""

    family: str
    """ipv4 or ipv6."""
    proto: str
    """Layer-4 protocol name as conntrack prints it (tcp, udp, icmp, icmpv6, …, unknown)."""
    orig: Tuple
    """The original direction: as the initiator sent it, before NAT."""
    reply: Tuple
    """The reply direction: what a reply looks like arriving at the NAT point, after NAT."""
    timeout_s: int | None = None
    """Seconds left before the entry expires (None in DESTROY events)."""
    state: str | None = None
    """TCP (or SCTP/DCCP) state; None for stateless protocols."""
    flags: frozenset[str] = frozenset()
    """UNREPLIED, ASSURED, OFFLOAD, …"""
    mark: int | None = 0
    """Connection mark; None where the line has no ``mark=`` (``conntrack -E`` prints it only
    when set)."""
    use: int | None = 1
    """Reference count; None where the line has no ``use=`` (``conntrack -E`` events)."""
    zone: int | None = None
    """Conntrack zone, when one is set."""
    event: str | None = None
    """NEW, UPDATE or DESTROY for ``-E`` lines; None for ``-L``."""
    ts_ns: int | None = None
    """Event time from ``-o timestamp``."""
    node: str = ""
    """Where the entry lives (capture or host name)."""
    counters: tuple[tuple[int, int], tuple[int, int]] | None = None
    """((orig packets, orig bytes), (reply packets, reply bytes)) with accounting on."""
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    """Other key=value fields of the line (id=, secctx=, labels=, …)."""
    line: int | None = field(default=None, compare=False)
    """Line number in the file it was read from."""
    protonum: int | None = None
    """IP protocol number where the name does not give it: conntrack tracks protocols it has
    no module for (IGMP, OSPF, …) as ``unknown`` with their own number (``unknown  2``)."""

    @property
    def proto_number(self) -> int:
        """IP protocol number."""
        return self.protonum if self.protonum is not None else L4_NUMBERS.get(self.proto, 255)

    @property
    def dnat(self) -> bool:
        """True when the reply comes from elsewhere than the original destination."""
        return self.reply.src != self.orig.dst or self.reply.sport != self.orig.dport

    @property
    def snat(self) -> bool:
        """True when the reply goes elsewhere than the original source."""
        return self.reply.dst != self.orig.src or self.reply.dport != self.orig.sport

    def key(self) -> tuple:
        """Identity for comparing reconstructions with dumps: protocol and both tuples."""
        return (self.family, self.proto, self.proto_number, self.orig.key(), self.reply.key())

    def format(self, *, extended: bool = False) -> str:
        """The ``conntrack -L`` line (``-o extended`` adds the layer-3 prefix)."""
        parts = []
        if extended:
            parts.append(f"{self.family:<8} {2 if self.family == 'ipv4' else 10} ")
        parts.append(f"{self.proto:<8} {self.proto_number} ")
        if self.timeout_s is not None:
            parts.append(f"{self.timeout_s} ")
        if self.state:
            parts.append(f"{self.state} ")
        extra = self.extra
        parts.append(self.orig.text() + " ")
        if "zone-orig" in extra:
            parts.append(f"zone-orig={extra['zone-orig']} ")
        if self.counters:
            parts.append(f"packets={self.counters[0][0]} bytes={self.counters[0][1]} ")
        if "UNREPLIED" in self.flags:
            parts.append("[UNREPLIED] ")
        parts.append(self.reply.text() + " ")
        if "zone-reply" in extra:
            parts.append(f"zone-reply={extra['zone-reply']} ")
        if self.counters:
            parts.append(f"packets={self.counters[1][0]} bytes={self.counters[1][1]} ")
        for flag in ("ASSURED", "OFFLOAD", "HW_OFFLOAD"):
            if flag in self.flags:
                parts.append(f"[{flag}] ")
        if self.mark is not None:
            parts.append(f"mark={self.mark} ")
        if extra:
            parts.extend(f"{k}={extra[k]} " for k in ("secmark", "secctx") if k in extra)
        if self.zone is not None:
            parts.append(f"zone={self.zone} ")
        if extra:
            parts.extend(_BRACKETED.get(k, "{}={} ").format(k, extra[k])
                         for k in ("delta-time", "start", "stop", "helper") if k in extra)
        if self.use is not None:
            parts.append(f"use={self.use} ")
        if extra:
            parts.extend(f"{k}={v} " for k, v in extra.items() if k not in _PLACED)
        if "USERSPACE" in self.flags:  # conntrack's own addition to events a command caused
            parts.append("[USERSPACE] ")
            if "portid" in extra:
                parts.append(f"portid={extra['portid']} ")
        return "".join(parts)[:-1]

    def event_line(self, *, extended: bool = False) -> str:
        """The ``conntrack -E`` line of this event: its kind's prefix (``    [NEW] ``, `` [UPDATE] ``,
        ``[DESTROY] ``; NEW when ``event`` is None), then ``format``."""
        return EVENT_PREFIX[self.event or "NEW"] + self.format(extended=extended)

    def __str__(self) -> str:
        return self.format()


EVENT_PREFIX = {"NEW": "    [NEW] ", "UPDATE": " [UPDATE] ", "DESTROY": "[DESTROY] "}
"""What ``conntrack -E`` prints before an event of each kind (``%9s `` of ``[KIND]``)."""

_PLACED = frozenset({"zone-orig", "zone-reply", "secmark", "secctx", "delta-time", "start", "stop", "helper",
                     "portid"})
"""Fields of ``ConntrackEntry.extra`` that conntrack prints before ``use=``. It prints
``id=`` (``-o id``) and ``labels=`` after it; fields it may add later follow them, in the
order read. conntrack itself ends an event a command caused (``conntrack -F``, ``-D``)
with ``[USERSPACE] portid=``."""
_BRACKETED = {"start": "[{}={}] ", "stop": "[{}={}] "}
"""Fields printed in brackets (``-o ktimestamp``: ``[start=Sat Nov 28 19:36:09 2026]``)."""


make_tuple = maker(Tuple)
"""``Tuple(...)`` for values already checked, at half the cost (flowtrace.frozen): for the
tens of thousands a dump or a rebuilt table holds."""
make_entry = maker(ConntrackEntry)
"""``ConntrackEntry(...)`` for values already checked, at half the cost."""


_EVENT = re.compile(r"^\s*(?:\[(\d+)\.(\d+)\s*\]\s*)?(?:\[(NEW|UPDATE|DESTROY)\]\s*)?")
_KV = re.compile(r"^([a-z_\-]+)=(.*)$")
_STAMP = re.compile(r"\[(start|stop)=([^\]]*)\]")


_ADDRESS = r"[0-9a-fA-F.:]+"
_IS_ADDRESS = re.compile(_ADDRESS)
_PORTS = (r"(src=(" + _ADDRESS + r")\s+dst=(" + _ADDRESS + r")\s+sport=(\d+)\s+dport=(\d+))"
          r"(?:\s+packets=(\d+)\s+bytes=(\d+))?"
          r"((?:\s+\[[A-Z_]+\])*)")
_COMMON = re.compile(
    r"\s*(?:\[(\d+)\.(\d+)\s*\]\s*)?(?:\[(NEW|UPDATE|DESTROY)\]\s*)?(?:(ipv4|ipv6)\s+\d+\s+)?"
    r"([a-z]+)\s+(\d+)\s+(?:(\d+)\s+)?(?:([A-Z][A-Z_0-9]*)\s+)?"
    + _PORTS + r"\s+" + _PORTS + r"(?:\s+mark=(\d+))?(?:\s+zone=(\d+))?(?:\s+use=(\d+))?\s*"
)
"""The shape of almost every line (ports, optional counters, flags, mark, zone, use): parsed in
one match; anything else (ICMP, ``-o id``, secctx, labels ...) goes through the general path."""


@dataclass(slots=True)
class _Interned:
    """Tuples and flag sets already made while reading one dump: a connection's NEW, UPDATE
    and DESTROY lines repeat its tuples, and the objects are immutable, so they are shared."""

    tuples: dict[str, Tuple] = field(default_factory=dict)
    flags: dict[str, frozenset[str]] = field(default_factory=dict)

    def tuple(self, text: str, src: str, dst: str, sport: str, dport: str) -> Tuple | None:
        """The tuple of ``text``; None when a port is out of range."""
        t = self.tuples.get(text)
        if t is None:
            sp, dp = int(sport), int(dport)
            if sp > 65535 or dp > 65535:
                return None
            t = self.tuples[text] = make_tuple(src=src, dst=dst, sport=sp, dport=dp)
        return t

    def flag_set(self, text: str) -> frozenset[str]:
        f = self.flags.get(text)
        if f is None:
            f = self.flags[text] = frozenset(word[1:-1] for word in text.split())
        return f


def _parse_common(text: str, line: int | None, node: str, seen: _Interned) -> ConntrackEntry | None:
    m = _COMMON.fullmatch(text)
    if m is None:
        return None
    (sec, usec, event, family, proto, num, timeout, state, t1, s1, d1, sp1, dp1, p1, b1, f1,
     t2, s2, d2, sp2, dp2, p2, b2, f2, mark, zone, use) = m.groups()
    if family is None:
        family = "ipv6" if ":" in s1 else "ipv4"
    elif family == "ipv4" and ":" in s1:
        family = "ipv6"
    orig, reply = seen.tuple(t1, s1, d1, sp1, dp1), seen.tuple(t2, s2, d2, sp2, dp2)
    if orig is None or reply is None:
        return None  # the general parser says what is wrong
    return make_entry(
        family=family, proto=proto, orig=orig, reply=reply,
        timeout_s=int(timeout) if timeout is not None else None, state=state, flags=seen.flag_set(f1 + f2),
        mark=int(mark) if mark is not None else None, use=int(use) if use is not None else None,
        zone=int(zone) if zone is not None else None, event=event,
        ts_ns=int(sec) * 1_000_000_000 + int(usec) * 1000 if sec is not None else None, node=node,
        counters=((int(p1), int(b1)), (int(p2), int(b2))) if p1 is not None and p2 is not None else None,
        extra={}, line=line, protonum=_number(proto, num),
    )


def _number(proto: str, number: str | None) -> int | None:
    """``number`` as ``ConntrackEntry.protonum``: None where the name ``proto`` gives it."""
    if number is None or not number.isdigit():
        return None
    n = int(number)
    return None if L4_NUMBERS.get(proto) == n else n


def parse_line(text: str, *, line: int | None = None, node: str = "") -> ConntrackEntry | None:
    """Parse one line of ``conntrack -L`` or ``-E`` output; None for lines that are not entries
    (blank, the ``conntrack v1.4.7 …`` summary). Raises InputError for a malformed entry line."""
    return _parse(text, line, node, _Interned())


def _parse(text: str, line: int | None, node: str, seen: _Interned) -> ConntrackEntry | None:
    entry = _parse_common(text, line, node, seen)
    if entry is not None:
        return entry
    try:
        return _parse_general(text, line, node)
    except InputError:
        raise
    except ValueError:  # a number that is not one (sport=80], mark=x, packets=1e3)
        raise InputError("", f"not a conntrack entry: {text.strip()[:80]!r}", line=line) from None


def _parse_general(text: str, line: int | None, node: str) -> ConntrackEntry | None:
    """parse_line for any layout: token by token."""
    stripped = text.strip()
    if not stripped or stripped.startswith("conntrack v") or stripped.startswith("#"):
        return None
    m = _EVENT.match(text)
    ts_ns = None
    event = None
    if m:
        if m.group(1):
            ts_ns = int(m.group(1)) * 1_000_000_000 + int(m.group(2)) * 1000
        event = m.group(3)
        text = text[m.end():]
    extra: dict[str, str] = {}
    if "[st" in text:  # -o ktimestamp: [start=Sat Nov 28 19:36:09 2026], spaces inside
        for stamp in _STAMP.finditer(text):
            extra[stamp.group(1)] = stamp.group(2)
        text = _STAMP.sub(" ", text)
    tokens = text.split()
    if not tokens:
        return None
    family = "ipv4"
    if tokens[0] in ("ipv4", "ipv6"):
        family = tokens[0]
        tokens = tokens[2:]
    if len(tokens) < 2 or not tokens[1].isdigit():
        raise InputError("", f"not a conntrack entry: {stripped[:80]!r}", line=line)
    proto, number = tokens[0], tokens[1]
    rest = tokens[2:]
    timeout = None
    if rest and rest[0].isdigit():
        timeout = int(rest[0])
        rest = rest[1:]
    state = None
    if rest and "=" not in rest[0] and not rest[0].startswith("["):
        state = rest[0]
        rest = rest[1:]
    tuples: list[dict[str, str]] = [{}, {}]
    counters: list[list[int]] = [[], []]
    flags: set[str] = set()
    current = -1
    mark: int | None = None
    use: int | None = None
    zone = None
    for tok in rest:
        if tok.startswith("[") and tok.endswith("]"):
            flags.add(tok[1:-1])
            continue
        kv = _KV.match(tok)
        if not kv:
            continue
        k, v = kv.group(1), kv.group(2)
        if k == "src":
            current += 1
            if current > 1:
                raise InputError("", f"more than two tuples: {stripped[:80]!r}", line=line)
        # id= is the ICMP tuple's after its type and code; another (-o id) is the entry's.
        if k in ("src", "dst", "sport", "dport", "type", "code", "id") and 0 <= current <= 1 and \
                not (k == "id" and ("type" not in tuples[current] or "id" in tuples[current])):
            tuples[current][k] = v
        elif k in ("packets", "bytes") and 0 <= current <= 1:
            counters[current].append(int(v))
        elif k == "mark":
            mark = int(v, 0)
        elif k == "use":
            use = int(v)
        elif k == "zone":
            zone = int(v)
        else:
            extra[k] = v
    if current < 1:
        raise InputError("", f"conntrack entry without a reply tuple: {stripped[:80]!r}", line=line)
    orig, reply = (_tuple(t, line, stripped) for t in tuples)
    if family == "ipv4" and ":" in orig.src:
        family = "ipv6"
    return ConntrackEntry(
        family=family, proto=proto, orig=orig, reply=reply, timeout_s=timeout, state=state,
        flags=frozenset(flags), mark=mark, use=use, zone=zone, event=event, ts_ns=ts_ns, node=node,
        counters=((counters[0][0], counters[0][1]), (counters[1][0], counters[1][1]))
        if len(counters[0]) == 2 and len(counters[1]) == 2 else None,
        extra=extra, line=line, protonum=_number(proto, number),
    )


def _tuple(t: dict[str, str], line: int | None, text: str) -> Tuple:
    if "src" not in t or "dst" not in t:
        raise InputError("", f"tuple without src/dst: {text[:80]!r}", line=line)
    for key in ("src", "dst"):
        if not _IS_ADDRESS.fullmatch(t[key]):
            raise InputError("", f"{key}={t[key]} is not an address: {text[:80]!r}", line=line)

    def num(key: str, limit: int) -> int | None:
        if key not in t:
            return None
        if not t[key].isdecimal():
            raise InputError("", f"{key}={t[key]} is not a number: {text[:80]!r}", line=line)
        value = int(t[key])
        if value > limit:
            raise InputError("", f"{key}={t[key]} is out of range: {text[:80]!r}", line=line)
        return value

    return Tuple(src=t["src"], dst=t["dst"], sport=num("sport", 65535), dport=num("dport", 65535),
                 icmp_type=num("type", 255), icmp_code=num("code", 255), icmp_id=num("id", 65535))


def _parse_xml(text: str, path: Path, node: str) -> list[ConntrackEntry]:
    try:
        root = ET.fromstring(text if text.lstrip().startswith("<?xml") or "<conntrack" in text[:200]
                             else f"<conntrack>{text}</conntrack>")
    except ET.ParseError as e:
        raise InputError(path, f"not a conntrack XML dump: {e}") from None
    try:
        return _xml_entries(root, node)
    except InputError as e:
        raise InputError(path, e.reason) from None
    except ValueError as e:  # a number that is not one
        raise InputError(path, f"not a conntrack XML dump: {e}") from None


def _xml_entries(root: ET.Element, node: str) -> list[ConntrackEntry]:
    """The entries of a parsed ``conntrack -o xml`` document."""
    out = []
    for i, flow in enumerate(root.iter("flow"), start=1):
        flags: set[str] = set()
        timeout: int | None = None
        state: str | None = None
        mark, use = 0, 1
        tuples: dict[str, Tuple] = {}
        family, proto, number = "ipv4", "unknown", None
        for meta in flow.findall("meta"):
            direction = meta.get("direction")
            if direction in ("original", "reply"):
                l3 = meta.find("layer3")
                l4 = meta.find("layer4")
                family = (l3.get("protoname") if l3 is not None else None) or family
                proto = (l4.get("protoname") if l4 is not None else None) or proto
                number = (l4.get("protonum") if l4 is not None else None) or number

                def val(parent: ET.Element | None, tag: str) -> str | None:
                    el = parent.find(tag) if parent is not None else None
                    return el.text if el is not None else None

                fields = {key: val(l3 if key in ("src", "dst") else l4, key)
                          for key in ("src", "dst", "sport", "dport", "type", "code", "id")}
                tuples[direction] = _tuple({k: v for k, v in fields.items() if v}, None, f"flow {i}")
            elif direction == "independent":
                for child in meta:
                    if child.tag == "timeout" and child.text:
                        timeout = int(child.text)
                    elif child.tag == "state" and child.text:
                        state = child.text
                    elif child.tag == "mark" and child.text:
                        mark = int(child.text)
                    elif child.tag == "use" and child.text:
                        use = int(child.text)
                    elif child.tag == "assured":
                        flags.add("ASSURED")
                    elif child.tag == "unreplied":
                        flags.add("UNREPLIED")
        if "original" in tuples and "reply" in tuples:
            out.append(ConntrackEntry(
                family=family, proto=proto, orig=tuples["original"], reply=tuples["reply"],
                timeout_s=timeout, state=state, flags=frozenset(flags), mark=mark, use=use,
                event=(flow.get("type") or "").upper() or None, node=node, protonum=_number(proto, number)))
    return out


def read_dump(path: str | Path, *, node: str = "") -> list[ConntrackEntry]:
    """Every entry of a ``conntrack -L`` or ``-E`` dump file (text or XML, any ``-o`` variant).

    Raises InputError naming the file and line for anything that is not conntrack output.
    """
    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as e:
        raise InputError(p, e.strerror or str(e)) from None
    if text.lstrip().startswith("<"):
        return _parse_xml(text, p, node)
    out = []
    seen = _Interned()
    for i, raw in enumerate(text.splitlines(), start=1):
        try:
            entry = _parse(raw, i, node, seen)
        except InputError as e:
            raise InputError(p, e.reason, line=i) from None
        if entry is not None:
            out.append(entry)
    return out


def looks_like_dump(path: str | Path) -> bool:
    """True when the first entry-like line of ``path`` parses as conntrack output (or XML)."""
    try:
        with open(path, errors="replace") as f:
            for _, raw in zip(range(50), f, strict=False):
                if not raw.strip() or raw.startswith("conntrack v"):
                    continue
                if raw.lstrip().startswith("<?xml") or raw.lstrip().startswith("<conntrack"):
                    return True
                return parse_line(raw) is not None
    except (OSError, InputError):
        return False
    return False


def created_entries(entries: list[ConntrackEntry]) -> list[ConntrackEntry]:
    """The entries a dump says were created: NEW events of ``-E`` output, or every ``-L`` entry."""
    if any(e.event for e in entries):
        return [e for e in entries if e.event == "NEW"]
    return list(entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Reconstructed entries against a dump."""

    matched: list[tuple[ConntrackEntry, ConntrackEntry]]
    """(reconstructed, dumped) pairs with the same protocol and tuples."""
    missing_in_dump: list[ConntrackEntry]
    """Reconstructed entries the dump does not have."""
    missing_in_reconstruction: list[ConntrackEntry]
    """Dumped entries flowtrace did not reconstruct."""
    differing: list[tuple[ConntrackEntry, ConntrackEntry, list[str]]]
    """Pairs with the same original tuple but a different reply tuple, state or flags."""
    events: Comparison | None = None
    """For a ``conntrack -E`` dump with UPDATE or DESTROY lines: those events against the
    rebuilt entries' (``compare_events``); None otherwise."""

    @property
    def agrees(self) -> bool:
        """Nothing differs, is missing on either side, or differs among the events."""
        return not (self.differing or self.missing_in_dump or self.missing_in_reconstruction) and (
            self.events is None or self.events.agrees)

    @property
    def precision(self) -> float:
        """Share of reconstructed entries found in the dump."""
        total = len(self.matched) + len(self.missing_in_dump) + len(self.differing)
        return len(self.matched) / total if total else 1.0

    @property
    def recall(self) -> float:
        """Share of dumped entries reconstructed."""
        total = len(self.matched) + len(self.missing_in_reconstruction) + len(self.differing)
        return len(self.matched) / total if total else 1.0


def compare(reconstructed: list[ConntrackEntry], dumped: list[ConntrackEntry], *,
            check_state: bool = False) -> Comparison:
    """Match entries one to one by (family, proto, orig, reply); list what is left over.

    Entries whose original tuples agree but whose reply tuples (or, with ``check_state``,
    state and flags) differ are reported as differing rather than as two misses.
    """
    pool: dict[tuple, list[ConntrackEntry]] = {}
    for d in dumped:
        pool.setdefault(d.key(), []).append(d)
    matched, left = [], []
    for r in reconstructed:
        candidates = pool.get(r.key())
        if candidates:
            d = candidates.pop(0)
            if check_state and _state_differences(r, d):
                left.append(r)
                candidates.insert(0, d)
                continue
            matched.append((r, d))
        else:
            left.append(r)
    rest = [d for ds in pool.values() for d in ds]
    by_orig: dict[tuple, list[ConntrackEntry]] = {}
    for d in rest:
        by_orig.setdefault((d.family, d.proto, d.proto_number, d.orig.key()), []).append(d)
    differing, missing_dump = [], []
    used: set[int] = set()
    for r in left:
        candidates = by_orig.get((r.family, r.proto, r.proto_number, r.orig.key()), [])
        if candidates:
            d = candidates.pop(0)
            used.add(id(d))
            what = [f"reply {r.reply.text()} != {d.reply.text()}"] if r.reply.key() != d.reply.key() else []
            differing.append((r, d, what + _state_differences(r, d)))
        else:
            missing_dump.append(r)
    missing_rec = [d for d in rest if id(d) not in used]
    return Comparison(matched=matched, missing_in_dump=missing_dump,
                      missing_in_reconstruction=missing_rec, differing=differing)


COMPARED_FLAGS = ("ASSURED", "UNREPLIED")
"""The flags entries and events are compared by."""


def _state_differences(r: ConntrackEntry, d: ConntrackEntry) -> list[str]:
    """How reconstructed ``r`` and dumped ``d`` differ in state and compared flags, in words
    (empty when they agree)."""
    what = [f"state {r.state} != {d.state}"] if r.state != d.state else []
    return what + [f"[{flag}] {'only reconstructed' if flag in r.flags else 'only in dump'}"
                   for flag in COMPARED_FLAGS if (flag in r.flags) != (flag in d.flags)]


def compare_events(reconstructed: list[ConntrackEntry], dumped: list[ConntrackEntry]) -> Comparison:
    """Match ``conntrack -E`` events one to one by kind (UPDATE, DESTROY), protocol, both
    tuples, state and flags, each side in time order; not by time (the kernel stamps events
    when it delivers them, and reaps an expired entry up to seconds late) nor by timeout
    (whole seconds of a jiffies count: one more or less than flowtrace's). Events of one
    entry left over on both sides, in order, are reported as differing.
    """
    # Tuples are shared objects (a dump's lines of one entry, an entry's events): the key
    # of each is made once, and entries are keyed by their tuples' keys.
    keys: dict[int, tuple] = {}

    def entry_key(e: ConntrackEntry) -> tuple:
        o, r = e.orig, e.reply
        ko, kr = keys.get(id(o)), keys.get(id(r))
        if ko is None:
            ko = keys[id(o)] = o.key()
        if kr is None:
            kr = keys[id(r)] = r.key()
        return (e.event, e.family, e.proto, e.protonum, ko, kr)

    def key(e: ConntrackEntry) -> tuple:
        flags = e.flags
        return (entry_key(e), e.state, *(flag in flags for flag in COMPARED_FLAGS))

    def when(e: ConntrackEntry) -> int:
        return e.ts_ns if e.ts_ns is not None else 0

    pool: dict[tuple, list[ConntrackEntry]] = {}
    for d in sorted(dumped, key=when):
        pool.setdefault(key(d), []).append(d)
    matched, left = [], []
    for r in sorted(reconstructed, key=when):
        candidates = pool.get(key(r))
        if candidates:
            matched.append((r, candidates.pop(0)))
        else:
            left.append(r)
    rest: dict[tuple, list[ConntrackEntry]] = {}
    for ds in pool.values():
        for d in ds:
            rest.setdefault(entry_key(d), []).append(d)
    for ds in rest.values():
        ds.sort(key=when)
    differing, missing_dump = [], []
    for r in left:
        candidates = rest.get(entry_key(r))
        if candidates:
            d = candidates.pop(0)
            differing.append((r, d, _state_differences(r, d)))
        else:
            missing_dump.append(r)
    missing_rec = sorted((d for ds in rest.values() for d in ds), key=when)
    return Comparison(matched=matched, missing_in_dump=missing_dump, missing_in_reconstruction=missing_rec,
                      differing=differing)


def without_timeout(entry: ConntrackEntry) -> ConntrackEntry:
    """The entry with its timeout cleared (timeouts differ between any two readings)."""
    return replace(entry, timeout_s=None)
