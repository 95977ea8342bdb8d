"""Flows from PacketArrays (what the flows command builds, without pandas) equal flows from the
packets DataFrame; numpy group numbering partitions rows as a hash factorisation does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from craft import T0, Rec, ether, pcap
from scapy.all import ICMP, IP, TCP, UDP

from flowtrace.capture.files import expand_sources
from flowtrace.flows import build
from flowtrace.flows.assign import LOOKUP_RANGE, dense_ids, factorize_rows
from flowtrace.flows.zeek import conn_log
from flowtrace.pipeline import flow_set, read_arrays
from flowtrace.schema import FLOWS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pcaps"


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ids ``a`` and ``b`` group the rows alike."""
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


@pytest.mark.parametrize("seed", range(12))
def test_dense_ids_group_rows_as_pandas_factorize_does(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    k = int(rng.integers(1, 3000))
    kind = seed % 4
    if kind == 0:  # few integers close together: the lookup table
        distinct = rng.integers(-50, 500, k)
    elif kind == 1:  # 64-bit keys: the open-addressing table
        distinct = rng.integers(-(2**63), 2**63 - 1, k, dtype=np.int64)
    elif kind == 2:  # keys differing in their high bits only (the hash multiplies, then keeps the top bits)
        distinct = rng.integers(0, 1 << 20, k).astype(np.int64) << np.int64(40)
    else:  # just beyond the lookup table's range
        distinct = np.unique(np.append(rng.integers(0, 10, k), LOOKUP_RANGE + 5))
    values = distinct[rng.integers(0, distinct.size, n)]
    ids, count = dense_ids(values)
    codes, uniques = pd.factorize(values)
    assert ids.dtype == np.int64 and count == len(uniques)
    assert ids.min() == 0 and ids.max() == count - 1
    assert _same_partition(ids, codes)


def test_factorize_rows_combines_columns_and_skips_constant_ones():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**40, 3000) * 1_000_003
    b = rng.integers(0, 3, 3000)
    const = np.full(3000, 5)
    ids = factorize_rows([a, const, b])
    codes, _ = pd.factorize(pd.MultiIndex.from_arrays([a, b]))
    assert _same_partition(ids, codes)
    assert dense_ids(np.zeros(0, dtype=np.int64))[1] == 0
    with pytest.raises(ValueError):
        factorize_rows([])


def _arrays_and_frame(captures: list[str]):
    arrays, _ = read_arrays(expand_sources(captures))
    return arrays, arrays.frame()


def _assert_same_flows(arrays, frame) -> None:
    from_arrays, from_frame = build(arrays), build(frame)
    pd.testing.assert_frame_equal(from_arrays.flows, from_frame.flows)
    for name in ("flow_id", "from_orig", "related"):
        assert np.array_equal(getattr(from_arrays, name), getattr(from_frame, name)), name
    assert conn_log(from_arrays.table, open_time=0, close_time=0) == conn_log(from_frame.flows, open_time=0,
                                                                                close_time=0)


@pytest.mark.parametrize("scenario", ["no-endpoints", "mtu-blackhole", "cross-node-vxlan", "ipv6", "dns"])
def test_flows_from_arrays_equal_flows_from_the_frame(scenario):
    arrays, frame = _arrays_and_frame([str(FIXTURES / scenario)])
    assert len(arrays) == len(frame)
    _assert_same_flows(arrays, frame)


def test_fragments_and_icmp_errors_from_arrays(write_capture):
    datagram = bytes(UDP(sport=12345, dport=9999) / (b"F" * 1992))
    frames = [IP(src="10.0.0.1", dst="10.0.0.2", id=7, proto=17, flags="MF") / datagram[:1480],
              IP(src="10.0.0.1", dst="10.0.0.2", id=7, proto=17, frag=185) / datagram[1480:],
              IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="S"),
              IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3)
              / bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="S"))[:28]]
    path = write_capture("c.pcap", pcap([Rec(ether(bytes(f)), T0, i * 1000) for i, f in enumerate(frames)]))
    arrays, frame = _arrays_and_frame([str(path)])
    _assert_same_flows(arrays, frame)
    built = build(arrays)
    assert built.flow_id.tolist() == [0, 0, 1, 1] and built.related.tolist() == [False, False, False, True]


def test_frame_of_the_arrays_is_the_packets_table():
    import flowtrace

    arrays, frame = _arrays_and_frame([str(FIXTURES / "cross-node")])
    pd.testing.assert_frame_equal(frame, flowtrace.read_packets(str(FIXTURES / "cross-node")))
    for name, values in arrays.columns.items():  # the frame holds the same arrays, not copies
        column = frame[name].array
        stored = column.codes if isinstance(column, pd.Categorical) else column.to_numpy()
        assert np.shares_memory(stored, values), name


def test_flows_table_is_made_once_and_equals_its_arrays():
    _, built = flow_set(str(FIXTURES / "dns"))
    assert built.flows is built.flows
    pd.testing.assert_frame_equal(built.table.frame(), built.flows)
    assert list(built.flows.columns) == FLOWS.names


def test_a_capture_without_packets(write_capture):
    path = write_capture("empty.pcap", pcap([]))
    packets, built = flow_set(str(path))
    assert len(packets) == 0 and len(built.table) == 0
    assert list(built.flows.columns) == FLOWS.names and len(built.flows) == 0
    assert conn_log(built.table).count("\n") == 9  # header lines and #close only


def test_point_direction_equals_the_bitwise_or_formulation():
    from flowtrace.flows.assign import lower_direction, point_direction

    rng = np.random.default_rng(5)
    for _ in range(100):
        n = int(rng.integers(1, 2000))
        group = rng.integers(0, int(rng.integers(1, 40)), n)
        direction = rng.integers(0, 3, n).astype(np.int8)
        lower = rng.random(n) < 0.5
        expected = lower_direction(direction, lower)
        seen = np.zeros(int(group.max()) + 1, dtype=np.int64)
        np.bitwise_or.at(seen, group, np.int64(1) << (lower.astype(np.int64) * 3 + direction.astype(np.int64)))
        one_way = (seen == 0b001_001) | (seen == 0b010_010)
        expected[one_way[group]] = 2
        assert np.array_equal(point_direction(group, direction, lower), expected)
