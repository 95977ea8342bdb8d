"""Sightings: weak groups split in time, and the sighting table in the order the split made."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flowtrace.correlate.link import link_flows
from flowtrace.correlate.path import sighting_table
from flowtrace.correlate.sightings import build_sightings, split_groups
from flowtrace.flows import build as build_flows
from flowtrace.pipeline import read_packets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"


@pytest.mark.parametrize("scenario", ["cross-node-skewed", "dns", "snat-timewait-collision"])
def test_the_sighting_table_reuses_the_order_split_groups_sorted_by(scenario):
    packets = read_packets(str(FIXTURES / scenario))
    fs = build_flows(packets)
    s = build_sightings(packets)
    # Shifted times, as clock offsets make them, and a window that splits weak groups.
    ts = s.ts + (s.capture.astype(np.int64) % 2) * 2_500_000_000
    split = split_groups(s, ts, 1_000_000)
    assert split.time_order is not None
    # Some packets outside any flow: their sightings are left out of the table.
    flow_id = np.where(np.arange(fs.flow_id.size) % 7 == 3, -1, fs.flow_id)
    links = link_flows(split, flow_id, fs.from_orig, len(fs.flows))
    args = (flow_id, fs.from_orig, links.connection, links.flipped)
    reused = sighting_table(split, ts, *args)
    sorted_again = sighting_table(replace(split, time_order=None), ts, *args)
    assert 100 < len(reused) < len(split)
    assert reused.equals(sorted_again)


@pytest.mark.parametrize("scenario", ["cross-node", "asymmetric-return", "cross-node-vxlan"])
def test_inside_a_group_sightings_go_by_capture_time_and_frame_even_where_clocks_step_back(scenario):
    from flowtrace.correlate.signature import NONE, packet_signatures

    packets = read_packets(str(FIXTURES / scenario)).copy()
    # Jitter of ±5 ms: each capture's clock now steps back here and there, as per-CPU
    # stamps of a `-i any` capture do.
    ts = packets["ts_ns"].to_numpy() + np.random.default_rng(7).integers(-5_000_000, 5_000_000, len(packets))
    packets["ts_ns"] = ts
    s = build_sightings(packets)
    sig, strength = packet_signatures(packets)
    keep = np.flatnonzero(strength != NONE)
    group = np.unique(sig[keep], return_inverse=True)[1].reshape(-1)
    capture = packets["capture"].cat.codes.to_numpy()[keep]
    order = np.lexsort((packets["frame"].to_numpy()[keep], ts[keep], capture, group))
    assert np.array_equal(s.row, keep[order])
    assert np.array_equal(s.group, group[order])
    assert np.array_equal(s.ts, ts[keep][order])
