"""Kubernetes names on addresses: reading snapshots, naming rules, table columns, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.context.k8s import add_name_columns, build_names, read_snapshot
from flowtrace.errors import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcaps"
runner = CliRunner()


def test_lab_snapshot_names_services_pods_nodes():
    n = read_snapshot(FIXTURES / "cross-node" / "k8s.json")
    assert n.label("203.0.113.10", 80, 6) == "203.0.113.10:80 (svc default/web:http)"  # LB ingress
    assert n.label("10.96.45.10", 80, 6) == "10.96.45.10:80 (svc default/web:http)"  # clusterIP
    assert n.label("10.96.45.10", 81, 6) == "10.96.45.10:81 (svc default/web)"  # not a Service port
    assert n.label("10.244.2.7", 8080, 6) == "10.244.2.7:8080 (pod default/web-1)"
    assert n.label("fd00:10:244:2::7", 8080, 6) == "[fd00:10:244:2::7]:8080 (pod default/web-1)"
    assert n.label("10.0.1.11") == "10.0.1.11 (node node1)"
    assert n.label("10.0.1.11", 30080, 6) == "10.0.1.11:30080 (node node1, svc default/web:http)"  # nodePort
    assert n.label("10.244.1.0", 23600, 6) == "10.244.1.0:23600 (node node1)"  # flannel.1 in node1's podCIDR
    assert n.label("198.51.100.10", 45300, 6) == "198.51.100.10:45300"
    assert n.name("not an address") is None and n.name(None) is None


def test_service_port_names_depend_on_the_protocol():
    n = read_snapshot(FIXTURES / "dns" / "k8s.json")
    assert n.name("10.96.0.10", 53, 17) == "svc kube-system/kube-dns:dns"
    assert n.name("10.96.0.10", 53, 6) == "svc kube-system/kube-dns:dns-tcp"
    assert n.name("10.244.2.3") == "pod kube-system/coredns-1"


def test_endpointslice_target_and_host_network_pods():
    items = [
        {"kind": "Node", "metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP",
                                                                               "address": "10.0.0.1"}]}},
        {"kind": "Pod", "metadata": {"name": "kube-proxy-x", "namespace": "kube-system"},
         "spec": {"hostNetwork": True}, "status": {"podIP": "10.0.0.1"}},
        {"kind": "EndpointSlice", "metadata": {"name": "s", "namespace": "shop"},
         "endpoints": [{"addresses": ["10.1.0.9"], "targetRef": {"kind": "Pod", "name": "cart-0",
                                                                  "namespace": "shop"}}]},
        {"kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
         "spec": {"clusterIP": "10.2.0.1", "externalIPs": ["192.0.2.1"],
                  "ports": [{"port": 443, "protocol": "TCP"}]}},
        {"kind": "ConfigMap", "metadata": {"name": "ignored"}},
    ]
    n = build_names(items)
    assert n.name("10.0.0.1") == "node n1"  # the host-network pod does not take the node's address
    assert n.name("10.1.0.9") == "pod shop/cart-0"
    assert n.name("192.0.2.1", 443, 6) == "svc shop/cart:443"  # unnamed port: its number


def test_names_column_is_vectorised_and_equal_to_the_scalar_lookup():
    n = read_snapshot(FIXTURES / "cross-node" / "k8s.json")
    addrs = pd.Series(pd.Categorical(["203.0.113.10", "10.244.2.7", None, "198.51.100.10", "10.0.1.11",
                                      "203.0.113.10", "10.0.1.11"]))
    ports = pd.Series([80, 8080, -1, 4000, 30080, 8080, 22])
    protos = pd.Series([6] * 7)
    col = n.names_column(addrs, ports, protos)
    assert isinstance(col.dtype, pd.CategoricalDtype)
    expected = [n.name(a, p, 6) for a, p in zip(addrs, ports, strict=True)]
    assert [None if pd.isna(x) else x for x in col] == expected
    assert expected[0] == "svc default/web:http" and expected[5] == "svc default/web"


def test_add_name_columns_puts_each_name_after_its_address():
    n = read_snapshot(FIXTURES / "cross-node" / "k8s.json")
    hops = pd.DataFrame({"proto": [6], "src": pd.Categorical(["10.0.1.11"]), "sport": [1],
                         "dst": pd.Categorical(["10.244.2.7"]), "dport": [8080]})
    out = add_name_columns("hops", hops, n)
    assert list(out.columns) == ["proto", "src", "src_name", "sport", "dst", "dst_name", "dport"]
    assert list(hops.columns) == ["proto", "src", "sport", "dst", "dport"]  # the caller's frame is untouched
    assert add_name_columns("anomalies", hops, n) is hops


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a JSON Kubernetes snapshot"),
    ('{"kind": "List", "items": []}', "no pods, services"),
    ('"just a string"', "not a Kubernetes snapshot"),
    ('{"items": [{"kind": "Pod", "metadata": {"name": "p"}, "status": {"podIP": "nope"}}]}', "no pods, services"),
])
def test_bad_snapshots_are_input_errors(tmp_path, content, message):
    p = tmp_path / "k8s.json"
    p.write_text(content)
    with pytest.raises(InputError, match=message) as e:
        read_snapshot(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_yaml_snapshot_and_missing_file(tmp_path):
    doc = json.loads((FIXTURES / "cross-node" / "k8s.json").read_text())
    import yaml

    p = tmp_path / "k8s.yaml"
    p.write_text(yaml.safe_dump(doc))
    assert read_snapshot(p).name("10.244.2.7") == "pod default/web-1"
    with pytest.raises(InputError, match="cannot read"):
        read_snapshot(tmp_path / "absent.json")


@pytest.mark.parametrize("command", ["analyze", "trace", "export"])
def test_cli_bad_snapshot_is_one_line_exit_2(tmp_path, command):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    args = [command, str(FIXTURES / "cross-node"), "--k8s", str(bad)]
    if command == "export":
        args += ["-o", str(tmp_path / "out")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "bad.json" in r.output and "Traceback" not in r.output
