"""Traffic programs run inside lab namespaces (standard library only).

Run as ``ip netns exec NS python3 -m flowtrace.lab.traffic COMMAND ...``:

- ``tcp-server``: an HTTP/1.1-shaped request/response server. The request line
  ``GET /bytes/M?conn=ID`` asks for a response of M bytes in all (headers included);
  the server sends it and closes first (its FIN), so the client's port is free again at
  once. Prints ``{"event": "ready"}`` when it listens, then one JSON line per connection.
- ``tcp-client``: opens N connections (at most C at a time, non-blocking sockets on one
  selector), sends an N-byte request, reads to EOF, and prints one JSON line per
  connection: its own tuple, the peer it got, start/connect/end times (ns, CLOCK_REALTIME,
  the clock of the captures), bytes, ok and the error (``ECONNREFUSED``,
  ``connect-timeout``, ``read-timeout``...). ``--close rst`` closes with SO_LINGER 0.
- ``dns-server``: answers A and AAAA queries (DNS wire format) with fixed addresses.
- ``dns-client``: per lookup one UDP socket that sends the A and the AAAA query back to
  back (as glibc does) and waits for both answers, resending unanswered ones after the
  timeout; prints one JSON line per lookup with the address each answer came from.

Every loop is bounded in count and time; nothing here runs without a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

RESPONSE_HEAD = "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\nX-Pod: {pod}\r\n\r\n"


def now_ns() -> int:
    """Wall-clock time in ns (the clock tcpdump stamps packets with)."""
    return time.time_ns()


def emit(record: dict[str, Any]) -> None:
    """Print one JSON line and flush (the orchestrator reads it as it comes)."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _plain(addr: str) -> str:
    return addr[7:] if addr.startswith("::ffff:") else addr


def _errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _listen(kind: int, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    return s


def _stop_on_term() -> None:
    def handler(signum: int, frame: object) -> None:
        sys.stdout.flush()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- TCP ---------------------------------------------------------------------------------


def build_request(conn_id: int, request_bytes: int, response_bytes: int) -> bytes:
    """An HTTP-shaped request of exactly ``request_bytes`` bytes (at least its headers)."""
    head = f"GET /bytes/{response_bytes}?conn={conn_id} HTTP/1.1\r\nHost: web\r\nUser-Agent: flowtrace-lab\r\n"
    fixed = len(head) + len("X-Pad: \r\n\r\n")
    pad = max(0, request_bytes - fixed)
    return (head + "X-Pad: " + "p" * pad + "\r\n\r\n").encode()


def build_response(conn_id: int, response_bytes: int, pod: str) -> bytes:
    """A response of ``response_bytes`` bytes in all; the body is pseudo-random per conn_id."""
    head = RESPONSE_HEAD.format(length=0, pod=pod)
    length = max(0, response_bytes - len(head))
    head = RESPONSE_HEAD.format(length=length, pod=pod)
    length = max(0, response_bytes - len(head))
    head = RESPONSE_HEAD.format(length=length, pod=pod)
    return head.encode() + random.Random(conn_id).randbytes(length)


def _serve_one(conn: socket.socket, peer: tuple[Any, ...], pod: str, timeout: float) -> None:
    start = now_ns()
    conn.settimeout(timeout)
    data, err, sent, conn_id = b"", None, 0, -1
    try:
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        want = 0
        if line.startswith("GET /bytes/"):
            path = line.split()[1]
            want = int(path.split("/")[2].split("?")[0])
            if "conn=" in path:
                conn_id = int(path.split("conn=")[1])
        resp = build_response(conn_id, want, pod)
        conn.sendall(resp)
        sent = len(resp)
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and conn.recv(65536):
            pass
    except OSError as e:
        err = _errname(e.errno) if e.errno else type(e).__name__
    finally:
        conn.close()
    emit({"event": "conn", "conn": conn_id, "peer": _plain(peer[0]), "peer_port": peer[1],
          "bytes_in": len(data), "bytes_out": sent, "start_ns": start, "end_ns": now_ns(), "error": err})


def tcp_server(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or ``--lifetime`` seconds."""
    _stop_on_term()
    srv = _listen(socket.SOCK_STREAM, args.port)
    srv.listen(1024)
    srv.settimeout(0.5)
    emit({"event": "ready", "port": args.port, "pod": args.pod})
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        try:
            conn, peer = srv.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_serve_one, args=(conn, peer, args.pod, args.timeout), daemon=True).start()
    return 0


class _Conn:
    """One client connection's state on the selector."""

    def __init__(self, conn_id: int, sock: socket.socket, request: bytes, deadline: float) -> None:
        self.id, self.sock, self.out, self.deadline = conn_id, sock, request, deadline
        self.rec: dict[str, Any] = {"event": "conn", "id": conn_id, "proto": "tcp", "start_ns": now_ns(),
                                    "connected_ns": None, "ok": False, "error": None, "peer": None,
                                    "bytes_sent": 0, "bytes_received": 0}
        self.inbuf = bytearray()
        self.connected = False


def _finish(c: _Conn, sel: selectors.BaseSelector, *, error: str | None, rst: bool) -> dict[str, Any]:
    with contextlib.suppress(KeyError, ValueError):
        sel.unregister(c.sock)
    if rst:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()
    rec = c.rec
    rec["end_ns"] = now_ns()
    rec["bytes_received"] = len(c.inbuf)
    head, _, body = bytes(c.inbuf).partition(b"\r\n\r\n")
    if error is None:
        status = head.split(b"\r\n", 1)[0]
        length = None
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if not status.startswith(b"HTTP/1.1 200") or length is None or len(body) != length:
            error = "short-response"
    rec["ok"] = error is None
    rec["error"] = error
    return rec


def tcp_client(args: argparse.Namespace) -> int:
    """Run the connections; print one JSON line each; exit 0 (failures are data)."""
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    sel = selectors.DefaultSelector()
    pending = list(range(args.start_id, args.start_id + args.connections))
    active: dict[int, _Conn] = {}
    hard_deadline = time.monotonic() + args.connections * (args.timeout + args.interval) + 30
    next_start = time.monotonic()
    while (pending or active) and time.monotonic() < hard_deadline:
        now = time.monotonic()
        while pending and len(active) < args.concurrency and now >= next_start:
            cid = pending.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            c = _Conn(cid, sock, build_request(cid, args.request_bytes, args.response_bytes),
                      now + args.timeout)
            c.connect_deadline = now + args.connect_timeout  # type: ignore[attr-defined]
            code = sock.connect_ex((args.dst, args.port))
            local = sock.getsockname()
            c.rec.update(src=_plain(local[0]), sport=local[1], dst=args.dst, dport=args.port)
            if code not in (0, errno.EINPROGRESS):
                emit(_finish(c, sel, error=_errname(code), rst=False))
                continue
            sel.register(sock, selectors.EVENT_WRITE, c)
            active[cid] = c
            next_start = now + args.interval
        for key, mask in sel.select(timeout=0.01):
            c = key.data
            done, error = False, None
            try:
                if not c.connected:
                    code = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        done, error = True, _errname(code)
                    else:
                        c.connected = True
                        c.rec["connected_ns"] = now_ns()
                        c.rec["peer"] = _plain(c.sock.getpeername()[0])
                if c.connected and not done and c.out and mask & selectors.EVENT_WRITE:
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                    c.rec["bytes_sent"] += n
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                if c.connected and not done and mask & selectors.EVENT_READ:
                    chunk = c.sock.recv(262144)
                    if chunk:
                        c.inbuf += chunk
                    else:
                        done = True
            except OSError as e:
                done, error = True, _errname(e.errno) if e.errno else type(e).__name__
            if done:
                emit(_finish(c, sel, error=error, rst=args.close == "rst"))
                del active[c.id]
        now = time.monotonic()
        for cid, c in list(active.items()):
            if not c.connected and now > c.connect_deadline:  # type: ignore[attr-defined]
                emit(_finish(c, sel, error="connect-timeout", rst=False))
                del active[cid]
            elif now > c.deadline:
                emit(_finish(c, sel, error="read-timeout", rst=args.close == "rst"))
                del active[cid]
    for c in active.values():
        emit(_finish(c, sel, error="aborted", rst=False))
    return 0


# -- DNS ---------------------------------------------------------------------------------

QTYPES = {1: "A", 28: "AAAA"}


def dns_query(txid: int, name: str, qtype: int) -> bytes:
    """A DNS query (RD set) for ``name`` of ``qtype`` in wire format."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def _parse_question(msg: bytes) -> tuple[int, int, str, int, int]:
    """Return (txid, flags, name, qtype, offset after the question) of a DNS message."""
    txid, flags = struct.unpack_from("!HH", msg)
    off, labels = 12, []
    while msg[off]:
        n = msg[off]
        labels.append(msg[off + 1:off + 1 + n].decode(errors="replace"))
        off += n + 1
    qtype, _qclass = struct.unpack_from("!HH", msg, off + 1)
    return txid, flags, ".".join(labels) + ".", qtype, off + 5


def dns_answer(query: bytes, a: str, aaaa: str, ttl: int = 30) -> bytes:
    """The answer to ``query``: one A or AAAA record (name compressed to the question)."""
    txid, flags, _name, qtype, end = _parse_question(query)
    if qtype == 1:
        rdata = socket.inet_pton(socket.AF_INET, a)
    elif qtype == 28:
        rdata = socket.inet_pton(socket.AF_INET6, aaaa)
    else:
        return struct.pack("!HHHHHH", txid, 0x8184, 1, 0, 0, 0) + query[12:end]
    header = struct.pack("!HHHHHH", txid, 0x8180 | (flags & 0x0100), 1, 1, 0, 0)
    rr = struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(rdata)) + rdata
    return header + query[12:end] + rr


def dns_server(args: argparse.Namespace) -> int:
    """Answer queries until SIGTERM or ``--lifetime`` seconds; log one line per query."""
    _stop_on_term()
    s = _listen(socket.SOCK_DGRAM, args.port)
    s.settimeout(0.5)
    emit({"event": "ready", "port": args.port, "pod": args.pod})
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        try:
            msg, peer = s.recvfrom(4096)
        except TimeoutError:
            continue
        try:
            txid, _f, name, qtype, _end = _parse_question(msg)
            s.sendto(dns_answer(msg, args.a, args.aaaa), peer)
        except (struct.error, IndexError, OSError):
            continue
        emit({"event": "query", "peer": _plain(peer[0]), "peer_port": peer[1], "txid": txid,
              "qtype": QTYPES.get(qtype, qtype), "name": name, "ts_ns": now_ns()})
    return 0


def dns_client(args: argparse.Namespace) -> int:
    """Run ``--lookups`` lookups (A + AAAA from one socket each); print one line each."""
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    rng = random.Random(args.seed)
    for i in range(args.start_id, args.start_id + args.lookups):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        queries: list[dict[str, Any]] = []
        for qtype in (1, 28):
            txid = rng.randrange(1, 65536)
            queries.append({"qtype": QTYPES[qtype], "txid": txid, "sent_ns": [], "answered_ns": None,
                            "reply_from": None, "rcode": None, "wire": dns_query(txid, args.name, qtype)})
        rec: dict[str, Any] = {"event": "lookup", "id": i, "proto": "udp", "src": None,
                               "sport": s.getsockname()[1], "dst": args.dst, "dport": args.port,
                               "name": args.name, "start_ns": now_ns()}
        for _attempt in range(args.attempts):
            for q in queries:
                if q["answered_ns"] is None:
                    s.sendto(q["wire"], (args.dst, args.port))
                    q["sent_ns"].append(now_ns())
            deadline = time.monotonic() + args.timeout
            while any(q["answered_ns"] is None for q in queries) and time.monotonic() < deadline:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    msg, peer = s.recvfrom(4096)
                except TimeoutError:
                    break
                except OSError as e:
                    rec["error"] = _errname(e.errno) if e.errno else type(e).__name__
                    break
                txid = struct.unpack_from("!H", msg)[0]
                for q in queries:
                    if q["txid"] == txid and q["answered_ns"] is None:
                        q["answered_ns"], q["reply_from"] = now_ns(), _plain(peer[0])
                        q["rcode"] = msg[3] & 0x0F
            if all(q["answered_ns"] is not None for q in queries):
                break
        s.close()
        for q in queries:
            del q["wire"]
        rec.update(queries=queries, end_ns=now_ns(), ok=all(q["answered_ns"] for q in queries))
        rec.setdefault("error", None if rec["ok"] else "timeout")
        emit(rec)
        time.sleep(args.interval)
    return 0


def probe(args: argparse.Namespace) -> int:
    """Send one UDP datagram to port 9 of each --dst so that neighbours get resolved."""
    for dst in args.dst:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(b"flowtrace-lab warm-up", (dst, 9))
            except OSError:
                continue
    time.sleep(args.wait)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one traffic program."""
    p = argparse.ArgumentParser(prog="python3 -m flowtrace.lab.traffic")
    sub = p.add_subparsers(dest="cmd", required=True)
    ts = sub.add_parser("tcp-server")
    ts.add_argument("--port", type=int, default=8080)
    ts.add_argument("--pod", default="")
    ts.add_argument("--timeout", type=float, default=10.0)
    ts.add_argument("--lifetime", type=float, default=600.0)
    tc = sub.add_parser("tcp-client")
    tc.add_argument("--dst", required=True)
    tc.add_argument("--port", type=int, default=80)
    tc.add_argument("--connections", type=int, default=1)
    tc.add_argument("--concurrency", type=int, default=1)
    tc.add_argument("--request-bytes", type=int, default=128)
    tc.add_argument("--response-bytes", type=int, default=1024)
    tc.add_argument("--connect-timeout", type=float, default=3.0)
    tc.add_argument("--timeout", type=float, default=5.0)
    tc.add_argument("--interval", type=float, default=0.0)
    tc.add_argument("--start-id", type=int, default=0)
    tc.add_argument("--close", choices=("fin", "rst"), default="fin")
    ds = sub.add_parser("dns-server")
    ds.add_argument("--port", type=int, default=53)
    ds.add_argument("--pod", default="")
    ds.add_argument("--a", default="10.96.45.10")
    ds.add_argument("--aaaa", default="fd00:10:96::2d0a")
    ds.add_argument("--lifetime", type=float, default=600.0)
    dc = sub.add_parser("dns-client")
    dc.add_argument("--dst", required=True)
    dc.add_argument("--port", type=int, default=53)
    dc.add_argument("--name", default="web.default.svc.cluster.local.")
    dc.add_argument("--lookups", type=int, default=1)
    dc.add_argument("--timeout", type=float, default=1.0)
    dc.add_argument("--attempts", type=int, default=2)
    dc.add_argument("--interval", type=float, default=0.05)
    dc.add_argument("--start-id", type=int, default=0)
    dc.add_argument("--seed", type=int, default=1)
    pr = sub.add_parser("probe")
    pr.add_argument("--dst", action="append", default=[])
    pr.add_argument("--wait", type=float, default=0.2)
    args = p.parse_args(argv)
    return {"tcp-server": tcp_server, "tcp-client": tcp_client, "dns-server": dns_server,
            "dns-client": dns_client, "probe": probe}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
