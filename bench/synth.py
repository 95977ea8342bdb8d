"""Synthetic captures for benchmarks: many TCP connections through a kube-proxy-like node.

``python bench/synth.py OUT.pcap --packets 600000 --link ethernet|sll2``

Ethernet: what a client sees (client <-> Service IP). SLL2: what a node's
``tcpdump -i any`` sees: every packet twice, in before NAT on eth0 and out after
DNAT/SNAT on the pod-facing interface (and the reverse for replies). Checksums are
correct, sequence numbers advance, responses span several MSS-sized segments.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from pathlib import Path

CLIENT_NET = 0xC6336400  # 198.51.100.0
SERVICE = (0xCB00710A, 80)  # 203.0.113.10:80
NODE = 0x0A00010B  # 10.0.1.11
POD_NET = 0x0AF40200  # 10.244.2.0
MSS = 1448


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_ip(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes, ip_id: int, ttl: int, tsval: int, tsecr: int) -> bytes:
    """An IPv4+TCP packet with the timestamp option and correct checksums."""
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, tsecr)
    if flags & 0x02:
        opts = struct.pack("!BBH", 2, 4, MSS) + b"\x04\x02" + b"\x08\x0a" + struct.pack("!II", tsval, tsecr) + b"\x01\x03\x03\x07"
    thl = 20 + len(opts)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (thl // 4) << 4, flags, 64240, 0, 0) + opts + payload
    pseudo = struct.pack("!IIBBH", src, dst, 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), ip_id & 0xFFFF, 0x4000, ttl, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + tcp


def connections(count: int, rng: random.Random):
    """Yield per connection a list of (direction, seq/ack/flags/payload) packet specs in time order."""
    for i in range(count):
        client = CLIENT_NET + 10 + (i % 200)
        sport = 32768 + (i * 7) % 28000
        pod = POD_NET + 2 + (i % 3)
        req = rng.randint(80, 400)
        resp = rng.choice((300, 1500, 3000, 6000, 12000, 24000))
        cisn, sisn = rng.getrandbits(32), rng.getrandbits(32)
        yield i, client, sport, pod, cisn, sisn, req, resp


def packets_of(conn, rng: random.Random):
    """The packets of one connection as (from_client, seq, ack, flags, payload_len)."""
    _i, _client, _sport, _pod, cisn, sisn, req, resp = conn
    out = [(True, cisn, 0, 0x02, 0), (False, sisn, cisn + 1, 0x12, 0), (True, cisn + 1, sisn + 1, 0x10, 0),
           (True, cisn + 1, sisn + 1, 0x18, req), (False, sisn + 1, cisn + 1 + req, 0x10, 0)]
    sent = 0
    while sent < resp:
        seg = min(MSS, resp - sent)
        out.append((False, sisn + 1 + sent, cisn + 1 + req, 0x18 if sent + seg == resp else 0x10, seg))
        sent += seg
        if (sent // MSS) % 2 == 0 or sent == resp:
            out.append((True, cisn + 1 + req, sisn + 1 + sent, 0x10, 0))
    out.append((True, cisn + 1 + req, sisn + 1 + resp, 0x11, 0))
    out.append((False, sisn + 1 + resp, cisn + 2 + req, 0x11, 0))
    out.append((True, cisn + 2 + req, sisn + 2 + resp, 0x10, 0))
    return out


def write(path: Path, target: int, link: str, seed: int = 7) -> int:
    """Write a capture of about ``target`` frames; returns the frame count."""
    rng = random.Random(seed)
    linktype = 1 if link == "ethernet" else 276
    frames = 0
    ts = 1_764_000_000_000_000  # µs
    live: list = []
    gen = connections(10**9, rng)
    payload = bytes(rng.getrandbits(8) for _ in range(MSS))
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        ip_id = 1
        while frames < target:
            while len(live) < 64:
                conn = next(gen)
                live.append([conn, packets_of(conn, rng), 0, 1000 + rng.randint(0, 10**6)])
            k = rng.randrange(len(live))
            state = live[k]
            conn, pkts, idx, tsv = state
            _i, client, sport, pod, *_ = conn
            from_client, seq, ack, flags, plen = pkts[idx]
            data = payload[:plen] if plen <= MSS else payload
            tsval = tsv + idx
            if link == "ethernet":
                if from_client:
                    ip = tcp_ip(client, SERVICE[0], sport, SERVICE[1], seq, ack, flags, data, ip_id, 64, tsval, tsval)
                else:
                    ip = tcp_ip(SERVICE[0], client, SERVICE[1], sport, seq, ack, flags, data, ip_id, 62, tsval, tsval)
                frame_list = [b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip]
            else:
                nat_port = 1024 + (sport * 13) % 60000
                if from_client:
                    pre = tcp_ip(client, SERVICE[0], sport, SERVICE[1], seq, ack, flags, data, ip_id, 64, tsval, tsval)
                    post = tcp_ip(NODE, pod, nat_port, 8080, seq, ack, flags, data, ip_id, 63, tsval, tsval)
                    frame_list = [_sll2(2, 0, pre), _sll2(5, 4, post)]
                else:
                    pre = tcp_ip(pod, NODE, 8080, nat_port, seq, ack, flags, data, ip_id, 64, tsval, tsval)
                    post = tcp_ip(SERVICE[0], client, SERVICE[1], sport, seq, ack, flags, data, ip_id, 63, tsval, tsval)
                    frame_list = [_sll2(5, 0, pre), _sll2(2, 4, post)]
            ip_id += 1
            for fr in frame_list:
                ts += rng.randint(1, 40)
                f.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(fr), len(fr)))
                f.write(fr)
                frames += 1
            state[2] += 1
            if state[2] >= len(pkts):
                live.pop(k)
    return frames


def _sll2(ifindex: int, pkttype: int, ip: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", 0x0800, 0, ifindex, 1, pkttype, 6, b"\x02\x00\x00\x00\x00\x05\x00\x00") + ip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--packets", type=int, default=600_000)
    ap.add_argument("--link", choices=("ethernet", "sll2"), default="ethernet")
    args = ap.parse_args()
    n = write(args.out, args.packets, args.link)
    print(f"{args.out}: {n} frames", file=sys.stderr)


if __name__ == "__main__":
    main()
