"""Community ID v1: the spec's test vectors, and agreement with the communityid package."""

from __future__ import annotations

import random

import communityid
import numpy as np
import pytest
from flowpkts import T0, Tcp, icmp, table, udp

from flowtrace.flows import build
from flowtrace.flows.community_id import community_ids
from flowtrace.flows.key import address_ranks, flow_ports

VECTORS = [
    # proto, src, sport, dst, dport, expected (FORMATS.md)
    (6, "128.232.110.120", 34855, "66.35.250.204", 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (17, "192.168.1.52", 54585, "8.8.8.8", 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
]


@pytest.mark.parametrize(("proto", "src", "sport", "dst", "dport", "expected"), VECTORS)
def test_spec_vectors_both_directions(proto, src, sport, dst, dport, expected):
    for a, ap, b, bp in ((src, sport, dst, dport), (dst, dport, src, sport)):
        rank, packed = address_ranks([a, b])
        got = community_ids(proto=np.array([proto]), addr_a=np.array([0]), port_a=np.array([ap]),
                            addr_b=np.array([1]), port_b=np.array([bp]), one_way=np.array([False]),
                            rank=rank, packed=packed)
        assert got.tolist() == [expected]


def test_flows_table_carries_the_vector():
    c = Tcp(a=("128.232.110.120", 34855), b=("66.35.250.204", 80)).handshake()
    assert build(c.table()).flows.community_id.tolist() == ["1:LQU9qZlK+B5F3KDmev6m5PMibrg="]
    rows = [udp("192.168.1.52", 54585, "8.8.8.8", 53)]
    assert build(table(rows)).flows.community_id.tolist() == ["1:d/FP5EW3wiY1vCndhwleRRKHowQ="]


def _reference(proto, src, dst, pa, pb):
    cid = communityid.CommunityID()
    if proto in (6, 17, 132) or proto in (1, 58):
        tpl = communityid.FlowTuple(proto, src, dst, pa, pb)
    else:
        tpl = communityid.FlowTuple(proto, src, dst)
    return cid.calc(tpl)


def test_agrees_with_the_package_on_random_tuples():
    rng = random.Random(4)
    v4 = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(20)] + ["10.0.0.1"]
    v6 = [f"fd00::{rng.randrange(65536):x}" for _ in range(20)]
    rows = []
    for _ in range(300):
        fam = v6 if rng.random() < 0.3 else v4
        src, dst = rng.choice(fam), rng.choice(fam)
        proto = rng.choice((6, 17, 132, 1, 47))
        if proto == 1 and fam is v6:
            proto = 58
        itype = rng.choice((8, 0, 3, 11, 13, 128, 129, 135, 1))
        rows.append((proto, src, dst, rng.randrange(65536), rng.randrange(65536), itype, rng.randrange(4)))
    addrs = sorted({r[1] for r in rows} | {r[2] for r in rows})
    rank, packed = address_ranks(addrs)
    idx = {a: i for i, a in enumerate(addrs)}
    proto = np.array([r[0] for r in rows])
    ver = np.array([6 if ":" in r[1] else 4 for r in rows])
    pa, pb, one_way = flow_ports(proto, ver, np.array([r[3] for r in rows]), np.array([r[4] for r in rows]),
                                 np.array([r[5] for r in rows]), np.array([r[6] for r in rows]))
    got = community_ids(proto=proto, addr_a=np.array([idx[r[1]] for r in rows]), port_a=pa,
                        addr_b=np.array([idx[r[2]] for r in rows]), port_b=pb, one_way=one_way,
                        rank=rank, packed=packed)
    for r, g in zip(rows, got, strict=True):
        p, src, dst, sp, dp, it, code = r
        if p in (1, 58):
            expected = _reference(p, src, dst, it, code)
        elif p in (6, 17, 132):
            expected = _reference(p, src, dst, sp, dp)
        else:
            expected = _reference(p, src, dst, None, None)
        assert g == expected, r


def test_icmp_flows_match_the_package():
    rows = [icmp("10.0.0.1", "10.0.0.2", 8, icmp_id=1, ts_ns=T0), icmp("10.0.0.2", "10.0.0.1", 0, icmp_id=1, ts_ns=T0 + 1)]
    fl = build(table(rows)).flows
    assert fl.community_id.tolist() == [communityid.CommunityID().calc(
        communityid.FlowTuple.make_icmp("10.0.0.1", "10.0.0.2", 8, 0))]
