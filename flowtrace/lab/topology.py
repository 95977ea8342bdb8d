"""The lab's network: address plan, the hosts of a scenario, and building them in namespaces.

The topology (one per scenario run)::

    client ──eth0── router(VPC) ──eth1── node1 ──cni0── veth── pod (eth0)
     198.51.100.10     │    └────eth2── node2 ──cni0── veth── pod (eth0)
                       └─ routes: LB/Service IP → node1, pod CIDRs → nodes

The router is the VPC: it answers ARP (proxy_arp) and NDP (proxy_ndp) for the whole
node subnet on each node-facing port, so node1 and node2 share 10.0.1.0/24 while every
packet between them is routed (and can meet a smaller MTU). With ``overlay="vpc-routes"``
the router carries the pod CIDRs (cloud route tables); with ``overlay="vxlan"`` the
nodes reach each other's pod CIDR over a flannel-style ``flannel.1`` VXLAN device (VNI 1,
UDP 8472) and the router knows no IPv4 pod route. Only documentation and private ranges
are used, and no namespace is ever connected to the host's own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from flowtrace.lab.netns import Sandbox

CLIENT_V4, CLIENT_V6 = "198.51.100.10", "2001:db8:100::10"
ROUTER_CLIENT_V4, ROUTER_CLIENT_V6 = "198.51.100.1", "2001:db8:100::1"
ROUTER_NODE_V4, ROUTER_NODE_V6 = "10.0.1.1", "fd00:10:0:1::1"
NODE_V4 = {"node1": "10.0.1.11", "node2": "10.0.1.12"}
NODE_V6 = {"node1": "fd00:10:0:1::11", "node2": "fd00:10:0:1::12"}
NODE_PORT_ON_ROUTER = {"node1": "eth1", "node2": "eth2"}
POD_CIDR_V4 = {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24"}
POD_CIDR_V6 = {"node1": "fd00:10:244:1::/64", "node2": "fd00:10:244:2::/64"}
CLUSTER_CIDR_V4, CLUSTER_CIDR_V6 = "10.244.0.0/16", "fd00:10:244::/56"
SERVICE_CIDR_V4, SERVICE_CIDR_V6 = "10.96.0.0/16", "fd00:10:96::/112"
LB_V4, LB_V6 = "203.0.113.10", "2001:db8:203::10"
NODES = ("node1", "node2")
VXLAN_PORT, VXLAN_VNI = 8472, 1


def gateway_v4(node: str) -> str:
    """The node's cni0 address: the first address of its pod CIDR (10.244.N.1)."""
    return POD_CIDR_V4[node].rsplit(".", 1)[0] + ".1"


def gateway_v6(node: str) -> str:
    """The node's cni0 IPv6 address (fd00:10:244:N::1)."""
    return POD_CIDR_V6[node].split("/")[0] + "1"


def flannel_v4(node: str) -> str:
    """The node's flannel.1 address: the network address of its pod CIDR (10.244.N.0)."""
    return POD_CIDR_V4[node].split("/")[0]


def mac_for(host: str, ifname: str) -> str:
    """A stable, locally administered MAC for ``host``'s ``ifname`` (same in every run)."""
    h = hashlib.sha256(f"{host}/{ifname}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSpec:
    """A pod: its own namespace with eth0 behind a veth on its node's cni0 bridge."""

    name: str
    """Pod name; also the lab host name of its namespace (``web-0``)."""
    node: str
    """The node that hosts it (``node1`` or ``node2``)."""
    ipv4: str
    """Pod IPv4 address inside the node's pod CIDR."""
    ipv6: str
    """Pod IPv6 address inside the node's IPv6 pod CIDR."""
    app: str
    """Value of the pod's ``app`` label (selects it into a Service)."""
    namespace: str = "default"
    """Kubernetes namespace of the pod."""

    @property
    def host_veth(self) -> str:
        """Name of the node-side veth, CNI style: ``veth`` + 8 hex digits."""
        return "veth" + hashlib.sha256(self.name.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSpec:
    """What a scenario needs from the network besides the fixed address plan."""

    pods: tuple[PodSpec, ...]
    """The pods to create."""
    overlay: str = "vpc-routes"
    """``vpc-routes`` (router routes pod CIDRs) or ``vxlan`` (flannel.1 between nodes)."""
    hairpin: bool = True
    """Hairpin mode of the pods' bridge ports (kubelet's hairpin-veth); off breaks hairpin."""
    pod_mtu: int | None = None
    """MTU of pod eth0 and the node veths; default 1500, 1450 with the VXLAN overlay."""
    router_mtu_to: dict[str, int] = field(default_factory=dict)
    """Lower MTU on the router's port toward a node, e.g. {"node1": 1400}."""
    vxlan_df: str = "unset"
    """The VXLAN device's outer DF policy (``unset``, ``set``, ``inherit``)."""


@dataclass(slots=True)
class HostInfo:
    """A built host as the kernel reports it (for the truth file)."""

    name: str
    role: str
    namespace: str
    node: str | None = None
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    ip_link: str = ""
    routes: list[str] = field(default_factory=list)
    sysctls: dict[str, str | None] = field(default_factory=dict)

    def ifindex(self, ifname: str) -> int:
        """Return the ifindex of ``ifname`` on this host; KeyError when absent."""
        for iface in self.interfaces:
            if iface["name"] == ifname:
                return int(iface["ifindex"])
        raise KeyError(f"{self.name} has no interface {ifname}")

    def mac(self, ifname: str) -> str:
        """Return the MAC address of ``ifname`` on this host."""
        for iface in self.interfaces:
            if iface["name"] == ifname:
                return str(iface["mac"])
        raise KeyError(f"{self.name} has no interface {ifname}")

    def to_json(self) -> dict[str, Any]:
        """The host as the truth file's ``topology.hosts[]`` entry."""
        d: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "namespace": self.namespace,
            "node": self.node,
            "interfaces": self.interfaces,
            "routes": self.routes,
            "sysctls": self.sysctls,
        }
        if self.role == "node":
            d["ifindex_names"] = {str(i["ifindex"]): i["name"] for i in self.interfaces}
            d["ip_link"] = self.ip_link
        return d


class Network:
    """Builds a NetworkSpec inside a Sandbox and reports what the kernel made of it."""

    def __init__(self, sandbox: Sandbox, spec: NetworkSpec) -> None:
        self.sb = sandbox
        self.spec = spec
        self.hosts: dict[str, HostInfo] = {}
        self.br_netfilter: dict[str, bool] = {}

    # -- building -------------------------------------------------------------------

    def build(self) -> None:
        """Create every namespace, device, address and route of the spec."""
        roles = {"client": "client", "router": "router", "node1": "node", "node2": "node"}
        roles.update({p.name: "pod" for p in self.spec.pods})
        for host, role in roles.items():
            self.sb.add_namespace(host)
            node = next((p.node for p in self.spec.pods if p.name == host), None)
            self.hosts[host] = HostInfo(name=host, role=role, namespace=self.sb.ns(host), node=node)
            self._base_sysctls(host, role)
        self._veth("router", "eth0", "client", "eth0")
        for node in NODES:
            self._veth("router", NODE_PORT_ON_ROUTER[node], node, "eth0")
        self._router()
        for node in NODES:
            self._node(node)
        for pod in self.spec.pods:
            self._pod(pod)
        if self.spec.overlay == "vxlan":
            self._vxlan()
        self._client()

    def _base_sysctls(self, host: str, role: str) -> None:
        sb = self.sb
        for scope in ("all", "default"):
            sb.sysctl(host, f"net.ipv6.conf.{scope}.accept_dad", 0)
            if role in ("router", "node"):
                sb.sysctl(host, f"net.ipv4.conf.{scope}.rp_filter", 2)
        if role in ("router", "node"):
            sb.sysctl(host, "net.ipv4.ip_forward", 1)
            sb.sysctl(host, "net.ipv6.conf.all.forwarding", 1)
        if role == "node":
            ok4 = sb.sysctl(host, "net.bridge.bridge-nf-call-iptables", 1, required=False)
            ok6 = sb.sysctl(host, "net.bridge.bridge-nf-call-ip6tables", 1, required=False)
            self.br_netfilter[host] = ok4 and ok6

    def _veth(self, host_a: str, if_a: str, host_b: str, if_b: str, *, mtu: int | None = None) -> None:
        """A veth pair created inside host_a's namespace with its peer born in host_b's."""
        args = ["link", "add", "name", if_a, "address", mac_for(host_a, if_a)]
        if mtu:
            args += ["mtu", str(mtu)]
        args += ["type", "veth", "peer", "name", if_b, "address", mac_for(host_b, if_b)]
        if mtu:
            args += ["mtu", str(mtu)]
        args += ["netns", self.sb.ns(host_b)]
        self.sb.ip(host_a, *args)

    def _addr(self, host: str, ifname: str, *cidrs: str) -> None:
        for cidr in cidrs:
            extra = ["nodad"] if ":" in cidr else []
            self.sb.ip(host, "addr", "add", cidr, "dev", ifname, *extra)

    def _up(self, host: str, *ifnames: str) -> None:
        for ifname in ifnames:
            self.sb.ip(host, "link", "set", ifname, "up")

    def _router(self) -> None:
        sb, r = self.sb, "router"
        self._addr(r, "eth0", f"{ROUTER_CLIENT_V4}/24", f"{ROUTER_CLIENT_V6}/64")
        self._up(r, "eth0")
        for node in NODES:
            port = NODE_PORT_ON_ROUTER[node]
            if node in self.spec.router_mtu_to:
                sb.ip(r, "link", "set", port, "mtu", str(self.spec.router_mtu_to[node]))
            self._addr(r, port, f"{ROUTER_NODE_V4}/32", f"{ROUTER_NODE_V6}/128")
            self._up(r, port)
            sb.sysctl(r, f"net.ipv4.conf.{port}.proxy_arp", 1)
            sb.sysctl(r, f"net.ipv6.conf.{port}.proxy_ndp", 1)
            # Proxy answers are delayed up to 0.8 s by default; a VPC answers at once.
            sb.sysctl(r, f"net.ipv4.neigh.{port}.proxy_delay", 0)
            sb.sysctl(r, f"net.ipv6.neigh.{port}.proxy_delay", 0)
            sb.ip(r, "route", "add", f"{NODE_V4[node]}/32", "dev", port, "src", ROUTER_NODE_V4)
            sb.ip(r, "-6", "route", "add", f"{NODE_V6[node]}/128", "dev", port)
            for other in NODES:
                if other != node:
                    sb.ip(r, "-6", "neigh", "add", "proxy", NODE_V6[other], "dev", port)
            if self.spec.overlay != "vxlan":
                sb.ip(r, "route", "add", POD_CIDR_V4[node], "via", NODE_V4[node])
            sb.ip(r, "-6", "route", "add", POD_CIDR_V6[node], "via", NODE_V6[node])
        sb.ip(r, "route", "add", f"{LB_V4}/32", "via", NODE_V4["node1"])
        sb.ip(r, "-6", "route", "add", f"{LB_V6}/128", "via", NODE_V6["node1"])

    def _node(self, node: str) -> None:
        sb = self.sb
        self._addr(node, "eth0", f"{NODE_V4[node]}/24", f"{NODE_V6[node]}/64")
        self._up(node, "eth0")
        sb.ip(node, "route", "add", "default", "via", ROUTER_NODE_V4)
        sb.ip(node, "-6", "route", "add", "default", "via", ROUTER_NODE_V6)
        sb.ip(node, "link", "add", "name", "cni0", "address", mac_for(node, "cni0"), "type", "bridge")
        cidr4, cidr6 = POD_CIDR_V4[node], POD_CIDR_V6[node]
        self._addr(node, "cni0", f"{gateway_v4(node)}/{cidr4.split('/')[1]}",
                   f"{gateway_v6(node)}/{cidr6.split('/')[1]}")
        self._up(node, "cni0")

    def _pod_mtu(self) -> int:
        if self.spec.pod_mtu:
            return self.spec.pod_mtu
        return 1450 if self.spec.overlay == "vxlan" else 1500

    def _pod(self, pod: PodSpec) -> None:
        sb, node = self.sb, pod.node
        mtu = self._pod_mtu()
        self._veth(node, pod.host_veth, pod.name, "eth0", mtu=mtu)
        sb.ip(node, "link", "set", pod.host_veth, "master", "cni0")
        sb.ip(node, "link", "set", pod.host_veth, "type", "bridge_slave",
              "hairpin", "on" if self.spec.hairpin else "off")
        self._up(node, pod.host_veth)
        self._addr(pod.name, "eth0", f"{pod.ipv4}/{POD_CIDR_V4[node].split('/')[1]}",
                   f"{pod.ipv6}/{POD_CIDR_V6[node].split('/')[1]}")
        self._up(pod.name, "eth0")
        sb.ip(pod.name, "route", "add", "default", "via", gateway_v4(node))
        sb.ip(pod.name, "-6", "route", "add", "default", "via", gateway_v6(node))

    def _vxlan(self) -> None:
        sb = self.sb
        for node in NODES:
            sb.ip(node, "link", "add", "name", "flannel.1", "address", mac_for(node, "flannel.1"),
                  "mtu", "1450", "type", "vxlan", "id", str(VXLAN_VNI), "local", NODE_V4[node],
                  "dev", "eth0", "dstport", str(VXLAN_PORT), "nolearning", "df", self.spec.vxlan_df)
            self._addr(node, "flannel.1", f"{flannel_v4(node)}/32")
            self._up(node, "flannel.1")
        for node in NODES:
            for other in NODES:
                if other == node:
                    continue
                peer_mac = mac_for(other, "flannel.1")
                sb.ip(node, "route", "add", POD_CIDR_V4[other], "via", flannel_v4(other),
                      "dev", "flannel.1", "onlink")
                sb.ip(node, "neigh", "replace", flannel_v4(other), "lladdr", peer_mac,
                      "dev", "flannel.1", "nud", "permanent")
                sb.run(["bridge", "-n", sb.ns(node), "fdb", "append", peer_mac, "dev",
                        "flannel.1", "dst", NODE_V4[other]])

    def _client(self) -> None:
        self._addr("client", "eth0", f"{CLIENT_V4}/24", f"{CLIENT_V6}/64")
        self._up("client", "eth0")
        self.sb.ip("client", "route", "add", "default", "via", ROUTER_CLIENT_V4)
        self.sb.ip("client", "-6", "route", "add", "default", "via", ROUTER_CLIENT_V6)

    # -- reporting --------------------------------------------------------------------

    def inspect(self) -> None:
        """Fill every HostInfo from ``ip -j addr``, ``ip -o link`` and ``ip route`` there."""
        keys = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                "net.bridge.bridge-nf-call-iptables", "net.netfilter.nf_conntrack_tcp_loose",
                "net.netfilter.nf_conntrack_tcp_be_liberal", "net.ipv4.ip_local_port_range")
        for host, info in self.hosts.items():
            addrs = json.loads(self.sb.ip(host, "-j", "-d", "addr", "show").stdout)
            info.interfaces = [_iface_json(a) for a in addrs]
            info.ip_link = self.sb.ip(host, "-o", "link", "show").stdout
            routes = self.sb.ip(host, "-o", "route", "show").stdout.splitlines()
            routes += self.sb.ip(host, "-o", "-6", "route", "show").stdout.splitlines()
            info.routes = [r.strip() for r in routes if r.strip()]
            info.sysctls = {k: self.sb.read_sysctl(host, k) for k in keys}


def _iface_json(a: dict[str, Any]) -> dict[str, Any]:
    linkinfo = a.get("linkinfo", {})
    return {
        "name": a["ifname"],
        "ifindex": a["ifindex"],
        "mac": a.get("address"),
        "mtu": a.get("mtu"),
        "kind": linkinfo.get("info_kind") or a.get("link_type"),
        "master": a.get("master"),
        "addresses": [f"{x['local']}/{x['prefixlen']}" for x in a.get("addr_info", [])],
    }
