"""The lab's scenarios: what each one builds, runs, and expects.

A scenario is data: the network (pods, overlay, MTU and hairpin tweaks), the Services
kube-proxy programs, extra rules that create the failure, the client programs to run,
the expected path of a connection per endpoint, and the anomaly codes (ANOMALIES.md)
that a correct analysis reports. :mod:`flowtrace.lab.runner` executes them.

Path hops name a host, an interface (``veth:<pod>`` is that pod's node-side veth), the
direction seen there, and a *stage*: the request tuple after that many conntrack entries
of the connection's NAT chain (stage 0 = as the client sent it); a response hop shows the
reverse of that stage's tuple. ``icmp`` hops carry an ICMP error quoting the tuple,
``vxlan`` hops carry it inside VXLAN.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from flowtrace.lab import topology as topo
from flowtrace.lab.kubeproxy import Endpoint, Service, ServicePort
from flowtrace.lab.topology import NetworkSpec, PodSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """One expected observation point of a connection's packets."""

    host: str
    iface: str
    direction: str
    stage: int
    icmp: bool = False
    vxlan: bool = False
    dst_stage: int | None = None
    """When set, the destination half of the tuple comes from this stage (a hop where
    netfilter has done only one of the two rewrites, e.g. a node's cni0 between the
    bridge's PREROUTING and the routing decision)."""
    dst: tuple[str, int] | None = None
    """A fixed destination (address, port) for a rewrite conntrack never confirmed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStep:
    """A client program run in one namespace."""

    host: str
    kind: str
    """``tcp`` (request/response) or ``dns`` (A + AAAA lookups)."""
    dst: str
    port: int
    connections: int = 3
    concurrency: int = 1
    request_bytes: int = 200
    response_bytes: int = 3000
    connect_timeout: float = 3.0
    timeout: float = 5.0
    interval: float = 0.2
    close: str = "fin"
    scalable: bool = False
    """``--connections`` replaces ``connections`` for this step."""
    port_range: tuple[int, int] | None = None
    """``net.ipv4.ip_local_port_range`` in the client's namespace (forces port reuse)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Everything one scenario needs."""

    name: str
    summary: str
    """One line for ``flowtrace lab list``."""
    story: str
    """What happens, in a few sentences (truth file, docs)."""
    network: NetworkSpec
    services: tuple[Service, ...] = ()
    clients: tuple[ClientStep, ...] = ()
    paths: dict[str, tuple[tuple[Hop, ...], tuple[Hop, ...]]] = field(default_factory=dict)
    """Endpoint pod name (or ``*``) -> (request hops, response hops)."""
    expected_anomalies: tuple[str, ...] = ()
    acceptable_anomalies: tuple[str, ...] = ("offload_artifact",)
    masquerade_external: bool = True
    extra_rules: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    """(host, command argv, why) run after kube-proxy's rules."""
    capture_pods: tuple[str, ...] = ()
    dumpcap: bool = True
    """Also capture each node with dumpcap into pcapng/NODE.pcapng."""
    node_snaplen: int = 0
    """Snapshot length of the node captures (0 = whole packets)."""
    conntrack_events: str = "NEW,UPDATE,DESTROY"
    """Event types ``conntrack -E -e`` records."""
    derived_from: str | None = None
    clock_offsets_ns: dict[str, int] = field(default_factory=dict)
    """Derived scenarios: host -> clock offset applied to its captures."""


def H(host: str, iface: str, direction: str, stage: int, *, icmp: bool = False, vxlan: bool = False,
      dst_stage: int | None = None, dst: tuple[str, int] | None = None) -> Hop:
    """Shorthand for a Hop."""
    return Hop(host=host, iface=iface, direction=direction, stage=stage, icmp=icmp, vxlan=vxlan,
               dst_stage=dst_stage, dst=dst)


WEB_0 = PodSpec(name="web-0", node="node1", ipv4="10.244.1.5", ipv6="fd00:10:244:1::5", app="web")
WEB_1 = PodSpec(name="web-1", node="node2", ipv4="10.244.2.7", ipv6="fd00:10:244:2::7", app="web")
DNS_0 = PodSpec(name="coredns-0", node="node1", ipv4="10.244.1.3", ipv6="fd00:10:244:1::3",
                app="kube-dns", namespace="kube-system")
DNS_1 = PodSpec(name="coredns-1", node="node2", ipv4="10.244.2.3", ipv6="fd00:10:244:2::3",
                app="kube-dns", namespace="kube-system")
CLIENT_POD = PodSpec(name="client-0", node="node1", ipv4="10.244.1.9", ipv6="fd00:10:244:1::9", app="client")
WEB_CLUSTER_IP, WEB_CLUSTER_IP6, DNS_CLUSTER_IP = "10.96.45.10", "fd00:10:96::2d0a", "10.96.0.10"
HTTP = ServicePort(name="http", protocol="TCP", port=80, target_port=8080, node_port=30080)


def web_service(*pods: PodSpec, family: int = 4, type: str = "LoadBalancer") -> Service:
    """The ``default/web`` Service selecting ``pods``."""
    v6 = family == 6
    eps = tuple(Endpoint(ip=p.ipv6 if v6 else p.ipv4, pod=p.name, node=p.node) for p in pods)
    lb = () if type == "ClusterIP" else ((topo.LB_V6 if v6 else topo.LB_V4),)
    port = HTTP if type != "ClusterIP" else ServicePort(name="http", protocol="TCP", port=80, target_port=8080)
    return Service(name="web", namespace="default", type=type, family=family,
                   cluster_ip=WEB_CLUSTER_IP6 if v6 else WEB_CLUSTER_IP, ports=(port,), endpoints=eps,
                   load_balancer_ips=lb if type == "LoadBalancer" else (), selector_app="web")


DNS_SERVICE = Service(
    name="kube-dns", namespace="kube-system", type="ClusterIP", family=4, cluster_ip=DNS_CLUSTER_IP,
    ports=(ServicePort(name="dns", protocol="UDP", port=53, target_port=53),
           ServicePort(name="dns-tcp", protocol="TCP", port=53, target_port=53)),
    endpoints=(Endpoint(ip=DNS_0.ipv4, pod=DNS_0.name, node="node1"),
               Endpoint(ip=DNS_1.ipv4, pod=DNS_1.name, node="node2")),
    selector_app="kube-dns")


def _same_node(pod: PodSpec) -> tuple[tuple[Hop, ...], tuple[Hop, ...]]:
    """client -> node1 (DNAT+SNAT) -> pod on node1."""
    n, v = pod.node, f"veth:{pod.name}"
    req = (H("client", "eth0", "out", 0), H(n, "eth0", "in", 0), H(n, "cni0", "out", 1),
           H(n, v, "out", 1), H(pod.name, "eth0", "in", 1))
    # br_netfilter undoes the SNAT in the bridge's PREROUTING; the DNAT is undone later,
    # in POSTROUTING: on cni0 the reply already goes to the client but still comes from the pod.
    resp = (H(pod.name, "eth0", "out", 1), H(n, v, "in", 1), H(n, "cni0", "in", 1, dst_stage=0),
            H(n, "eth0", "out", 0), H("client", "eth0", "in", 0))
    return req, resp


def _cross(entry: str, pod: PodSpec, *, vxlan: bool = False) -> tuple[tuple[Hop, ...], tuple[Hop, ...]]:
    """client -> entry node (DNAT+SNAT) -> pod's node (no NAT) -> pod."""
    n, v = pod.node, f"veth:{pod.name}"
    if vxlan:
        mid_req: tuple[Hop, ...] = (H(entry, "flannel.1", "out", 1), H(entry, "eth0", "out", 1, vxlan=True),
                   H(n, "eth0", "in", 2, vxlan=True), H(n, "flannel.1", "in", 2))
        mid_resp: tuple[Hop, ...] = (H(n, "flannel.1", "out", 2), H(n, "eth0", "out", 2, vxlan=True),
                    H(entry, "eth0", "in", 1, vxlan=True), H(entry, "flannel.1", "in", 1))
    else:
        mid_req = (H(entry, "eth0", "out", 1), H(n, "eth0", "in", 2))
        mid_resp = (H(n, "eth0", "out", 2), H(entry, "eth0", "in", 1))
    req = (H("client", "eth0", "out", 0), H(entry, "eth0", "in", 0), *mid_req,
           H(n, "cni0", "out", 2), H(n, v, "out", 2), H(pod.name, "eth0", "in", 2))
    resp = (H(pod.name, "eth0", "out", 2), H(n, v, "in", 2), H(n, "cni0", "in", 2), *mid_resp,
            H(entry, "eth0", "out", 0), H("client", "eth0", "in", 0))
    return req, resp


def _tcp(dst: str, **kw: object) -> ClientStep:
    return ClientStep(host="client", kind="tcp", dst=dst, port=80, **kw)  # type: ignore[arg-type]


CLEAN = ("source_ip_masqueraded",)
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="same-node",
        summary="LoadBalancer IP -> node1 DNAT+SNAT -> endpoint pod on node1",
        story="The client connects to the LoadBalancer IP, routed to node1. kube-proxy on node1 "
              "DNATs to web-0 on the same node and masquerades the client to cni0's address "
              "(externalTrafficPolicy=Cluster). Every connection succeeds.",
        network=NetworkSpec(pods=(WEB_0,)), services=(web_service(WEB_0),),
        clients=(_tcp(topo.LB_V4),), paths={"*": _same_node(WEB_0)},
        expected_anomalies=CLEAN, capture_pods=("web-0",)),
    Scenario(
        name="cross-node",
        summary="LoadBalancer IP -> node1 DNAT+SNAT -> endpoint pod on node2 (VPC routes)",
        story="node1 DNATs the LoadBalancer IP to web-1 on node2 and masquerades the client to "
              "node1's address with --random-fully (new source port); the VPC router carries the "
              "pod CIDRs. The reply returns through node1, which reverses both translations.",
        network=NetworkSpec(pods=(WEB_1,)), services=(web_service(WEB_1),),
        clients=(_tcp(topo.LB_V4),), paths={"*": _cross("node1", WEB_1)},
        expected_anomalies=CLEAN, capture_pods=("web-1",)),
    Scenario(
        name="cross-node-vxlan",
        summary="as cross-node, over a flannel-style VXLAN overlay (flannel.1, UDP 8472)",
        story="node1 DNATs to web-1 on node2 and masquerades to its flannel.1 address "
              "(10.244.1.0); the packet crosses the underlay inside VXLAN (VNI 1, UDP 8472) "
              "between 10.0.1.11 and 10.0.1.12. The router knows no IPv4 pod route.",
        network=NetworkSpec(pods=(WEB_1,), overlay="vxlan"), services=(web_service(WEB_1),),
        clients=(_tcp(topo.LB_V4, response_bytes=6000),),
        paths={"*": _cross("node1", WEB_1, vxlan=True)},
        expected_anomalies=CLEAN, capture_pods=("web-1",)),
    Scenario(
        name="nodeport",
        summary="NodePort on node2 (no endpoint there) -> DNAT+SNAT -> endpoint pod on node1",
        story="The client connects to node2:30080. node2 has no endpoint: KUBE-NODEPORTS -> "
              "KUBE-EXT marks for masquerade, DNAT sends it to web-0 on node1, and node2 "
              "masquerades the client to 10.0.1.12.",
        network=NetworkSpec(pods=(WEB_0,)), services=(web_service(WEB_0),),
        clients=(ClientStep(host="client", kind="tcp", dst=topo.NODE_V4["node2"], port=30080),),
        paths={"*": _cross("node2", WEB_0)},
        expected_anomalies=CLEAN, capture_pods=("web-0",)),
    Scenario(
        name="asymmetric-return",
        summary="DNAT without SNAT: the pod on node2 replies straight to the client, which RSTs",
        story="Lab deviation: KUBE-EXT lacks its KUBE-MARK-MASQ rule, so node1 DNATs to web-1 on "
              "node2 but keeps the client's source. web-1 answers the client directly through "
              "node2 and the router: the client gets a SYN-ACK from 10.244.2.7, answers RST, and "
              "retransmits its SYN until connect() times out. node1's entry stays SYN_SENT "
              "[UNREPLIED].",
        network=NetworkSpec(pods=(WEB_1,)), services=(web_service(WEB_1),), masquerade_external=False,
        clients=(_tcp(topo.LB_V4, connections=2, interval=0.5, connect_timeout=3.5),),
        paths={"*": (_cross("node1", WEB_1)[0],
                     (H("web-1", "eth0", "out", 2), H("node2", "veth:web-1", "in", 2),
                      H("node2", "cni0", "in", 2), H("node2", "eth0", "out", 2),
                      H("client", "eth0", "in", 2)))},
        expected_anomalies=("asymmetric_return",),
        acceptable_anomalies=("missing_nat_reversal", "syn_retransmission", "connection_reset",
                              "no_reply", "offload_artifact"),
        capture_pods=("web-1",)),
    Scenario(
        name="policy-drop",
        summary="cross-node, but node2's FORWARD drops traffic to the pod (policy drop)",
        story="As cross-node, but a NetworkPolicy-like rule at the top of node2's filter FORWARD "
              "drops new connections to web-1:8080. The SYN reaches node2's eth0 and never "
              "reaches the pod; the client retransmits and connect() times out.",
        network=NetworkSpec(pods=(WEB_1,)), services=(web_service(WEB_1),),
        extra_rules=(("node2", ("iptables", "-I", "FORWARD", "1", "-d", f"{WEB_1.ipv4}/32", "-p", "tcp",
                                "--dport", "8080", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment",
                                "--comment", "lab: policy drop", "-j", "DROP"),
                      "policy drop of new connections to web-1 in node2's FORWARD"),),
        clients=(_tcp(topo.LB_V4, connections=2, interval=0.5, connect_timeout=3.5),),
        paths={"*": (_cross("node1", WEB_1)[0][:4], ())},
        expected_anomalies=("drop_between_hops", "syn_retransmission"),
        acceptable_anomalies=("no_reply", "source_ip_masqueraded", "offload_artifact"),
        capture_pods=("web-1",)),
    Scenario(
        name="no-endpoints",
        summary="Service without endpoints: kube-proxy's REJECT answers ICMP port unreachable",
        story="The web Service has no ready endpoints, so kube-proxy writes no nat rules for it "
              "and REJECTs its LoadBalancer IP in filter KUBE-EXTERNAL-SERVICES: node1 answers "
              "each SYN with ICMP port unreachable and connect() fails with ECONNREFUSED.",
        network=NetworkSpec(pods=()), services=(web_service(),),
        clients=(_tcp(topo.LB_V4, connections=2),),
        paths={"*": ((H("client", "eth0", "out", 0), H("node1", "eth0", "in", 0)),
                     (H("node1", "eth0", "out", 0, icmp=True), H("client", "eth0", "in", 0, icmp=True)))},
        expected_anomalies=("service_no_endpoints",), acceptable_anomalies=("offload_artifact",)),
    Scenario(
        name="mtu-blackhole",
        summary="VXLAN overlay over a 1400-byte underlay hop; ICMP frag-needed filtered",
        story="As cross-node-vxlan, but the router's port toward node1 has MTU 1400 while "
              "flannel.1 assumes 1450+50. flannel.1 sets DF on the outer header (df set), the "
              "router drops full-size VXLAN packets from node2 and the fragmentation-needed "
              "ICMP it would send is dropped by its own OUTPUT filter. Handshake and request "
              "pass; the large response never reaches node1, web-1 retransmits, the client's "
              "read times out.",
        network=NetworkSpec(pods=(WEB_1,), overlay="vxlan", router_mtu_to={"node1": 1400}, vxlan_df="set"),
        services=(web_service(WEB_1),),
        extra_rules=(("router", ("iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type",
                                 "fragmentation-needed", "-m", "comment", "--comment",
                                 "lab: ICMP fragmentation-needed filtered", "-j", "DROP"),
                      "the router never sends fragmentation-needed"),),
        clients=(_tcp(topo.LB_V4, connections=2, response_bytes=30000, timeout=4.0, interval=0.5),),
        paths={"*": _cross("node1", WEB_1, vxlan=True)},
        expected_anomalies=("mtu_blackhole",),
        acceptable_anomalies=("source_ip_masqueraded", "drop_between_hops", "offload_artifact"),
        capture_pods=("web-1",)),
    Scenario(
        name="hairpin",
        summary="a pod reaches itself through its Service; hairpin mode off, the SYN is dropped",
        story="web-0 connects to its own ClusterIP. node1 (bridge-nf-call-iptables=1) DNATs "
              "the SYN back to web-0 and, the new destination being on the same bridge, bridges "
              "it to the port it came from; hairpin mode is off on that port, so the bridge "
              "drops it: node1's capture shows the DNAT'd SYN (10.244.1.5 -> 10.244.1.5:8080, not "
              "masqueraded) on cni0 and nowhere after, and no conntrack entry is ever confirmed. "
              "web-0 retransmits its SYN and connect() times out.",
        network=NetworkSpec(pods=(WEB_0,), hairpin=False), services=(web_service(WEB_0, type="ClusterIP"),),
        clients=(ClientStep(host="web-0", kind="tcp", dst=WEB_CLUSTER_IP, port=80, connections=1,
                            connect_timeout=3.5),),
        paths={"*": ((H("web-0", "eth0", "out", 0), H("node1", "veth:web-0", "in", 0),
                      H("node1", "cni0", "in", 0, dst=(WEB_0.ipv4, 8080))), ())},
        expected_anomalies=("hairpin_failure", "syn_retransmission"),
        acceptable_anomalies=("no_reply", "drop_between_hops", "offload_artifact"),
        capture_pods=("web-0",)),
    Scenario(
        name="dns",
        summary="UDP DNS (A + AAAA from one socket) from a pod to kube-dns with two endpoints",
        story="client-0 on node1 resolves a name through the kube-dns ClusterIP: each lookup "
              "sends the A and the AAAA query from one socket. node1 DNATs each socket's flow "
              "to coredns-0 (node1) or coredns-1 (node2) at random; pod sources are not "
              "masqueraded (! -s 10.244.0.0/16).",
        network=NetworkSpec(pods=(CLIENT_POD, DNS_0, DNS_1)), services=(DNS_SERVICE,),
        clients=(ClientStep(host="client-0", kind="dns", dst=DNS_CLUSTER_IP, port=53, connections=6,
                            interval=0.1),),
        paths={
            # Bridged pod to pod: the frames also show on cni0 (DNAT'd on the way in,
            # not yet reversed on the way back).
            "coredns-0": ((H("client-0", "eth0", "out", 0), H("node1", "veth:client-0", "in", 0),
                           H("node1", "cni0", "in", 1),
                           H("node1", "veth:coredns-0", "out", 1), H("coredns-0", "eth0", "in", 1)),
                          (H("coredns-0", "eth0", "out", 1), H("node1", "veth:coredns-0", "in", 1),
                           H("node1", "cni0", "in", 1),
                           H("node1", "veth:client-0", "out", 0), H("client-0", "eth0", "in", 0))),
            "coredns-1": ((H("client-0", "eth0", "out", 0), H("node1", "veth:client-0", "in", 0),
                           H("node1", "cni0", "in", 1), H("node1", "eth0", "out", 1),
                           H("node2", "eth0", "in", 2), H("node2", "cni0", "out", 2),
                           H("node2", "veth:coredns-1", "out", 2), H("coredns-1", "eth0", "in", 2)),
                          (H("coredns-1", "eth0", "out", 2), H("node2", "veth:coredns-1", "in", 2),
                           H("node2", "cni0", "in", 2), H("node2", "eth0", "out", 2),
                           H("node1", "eth0", "in", 1), H("node1", "cni0", "out", 0),
                           H("node1", "veth:client-0", "out", 0), H("client-0", "eth0", "in", 0))),
        },
        expected_anomalies=(), capture_pods=("client-0", "coredns-0", "coredns-1")),
    Scenario(
        name="local-policy-blackhole",
        summary="externalTrafficPolicy=Local, LB IP sent to a node without endpoint: dropped",
        story="The web Service has externalTrafficPolicy=Local and its only endpoint, web-1, runs "
              "on node2, but the router sends the LoadBalancer IP to node1. node1 has no local "
              "endpoint: KUBE-EXT has no KUBE-SVL jump for outside sources and kube-proxy's "
              "filter rule 'has no local endpoints' DROPs the SYN in FORWARD. Nothing leaves "
              "node1, no ICMP, no RST; the client retransmits until connect() times out.",
        network=NetworkSpec(pods=(WEB_1,)),
        services=(replace(web_service(WEB_1), external_traffic_policy="Local", health_check_node_port=32000),),
        clients=(_tcp(topo.LB_V4, connections=2, interval=0.5, connect_timeout=3.5),),
        paths={"*": ((H("client", "eth0", "out", 0), H("node1", "eth0", "in", 0)), ())},
        expected_anomalies=("no_local_endpoint_blackhole", "syn_retransmission"),
        acceptable_anomalies=("no_reply", "drop_between_hops", "offload_artifact"),
        capture_pods=("web-1",)),
    Scenario(
        name="cross-node-snaplen",
        summary="cross-node with the nodes captured at snaplen 96 (headers only)",
        story="As cross-node, but tcpdump and dumpcap on the nodes keep only the first 96 bytes "
              "of each frame: headers survive, payloads are cut, so payload hashes are "
              "unavailable at the nodes while the client and the pod have whole packets.",
        network=NetworkSpec(pods=(WEB_1,)), services=(web_service(WEB_1),),
        clients=(_tcp(topo.LB_V4),), paths={"*": _cross("node1", WEB_1)},
        expected_anomalies=("source_ip_masqueraded", "capture_truncated"),
        capture_pods=("web-1",), node_snaplen=96),
    Scenario(
        name="ipv6",
        summary="IPv6: LoadBalancer IPv6 -> node1 ip6tables DNAT+MASQUERADE -> pod on node2",
        story="The IPv6 twin of cross-node: the client connects to 2001:db8:203::10, node1's "
              "ip6tables DNATs to [fd00:10:244:2::7]:8080 and masquerades to fd00:10:0:1::11.",
        network=NetworkSpec(pods=(WEB_1,)), services=(web_service(WEB_1, family=6),),
        clients=(_tcp(topo.LB_V6),), paths={"*": _cross("node1", WEB_1)},
        expected_anomalies=CLEAN, capture_pods=("web-1",)),
    Scenario(
        name="many-connections",
        summary="thousands of concurrent connections, two endpoints, client ports reused",
        story="The client opens many short connections (50 at a time) to the LoadBalancer IP "
              "from a 100-port ip_local_port_range, so every client tuple is reused many times; "
              "node1 spreads them over web-0 (node1) and web-1 (node2) with statistic random "
              "and masquerades each with --random-fully. The server closes first, so the "
              "client's ports are free at once; conntrack re-creates the entry on each reuse.",
        network=NetworkSpec(pods=(WEB_0, WEB_1)), services=(web_service(WEB_0, WEB_1),),
        clients=(_tcp(topo.LB_V4, connections=2000, concurrency=50, request_bytes=120,
                      response_bytes=400, interval=0.0, scalable=True, port_range=(40000, 40099)),),
        paths={"web-0": _same_node(WEB_0), "web-1": _cross("node1", WEB_1)},
        expected_anomalies=CLEAN, capture_pods=("web-0", "web-1"), dumpcap=False,
        conntrack_events="NEW,DESTROY"),
    Scenario(
        name="cross-node-skewed",
        summary="cross-node with shifted clocks: node2 +2.5 s, web-1 -0.75 s",
        story="Derived from cross-node: the captures (and conntrack event log) of node2 are "
              "shifted by +2.5 s and web-1's capture by -0.75 s, as if their clocks were off. "
              "Everything else is cross-node's.",
        network=NetworkSpec(pods=(WEB_1,)), services=(web_service(WEB_1),),
        expected_anomalies=("source_ip_masqueraded", "clock_skew"),
        derived_from="cross-node", clock_offsets_ns={"node2": 2_500_000_000, "web-1": -750_000_000},
        capture_pods=("web-1",)),
)

BY_NAME = {s.name: s for s in SCENARIOS}
