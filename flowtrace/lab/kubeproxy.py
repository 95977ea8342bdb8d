"""kube-proxy's iptables mode, rendered for the lab's nodes.

In: Services with their ports and endpoints. Out: the ``iptables-restore`` input that
kube-proxy (pkg/proxy/iptables/proxier.go, v1.28+) writes on a node, for one IP family:
the jump rules from the built-in chains, KUBE-SERVICES, KUBE-EXT-<hash> (masquerade for
external destinations), KUBE-SVC-<hash> with ``-m statistic --mode random --probability``
per endpoint, KUBE-SEP-<hash> (hairpin ``-s <pod> -j KUBE-MARK-MASQ`` and ``DNAT
--to-destination``), KUBE-MARK-MASQ (``--or-mark 0x4000``), KUBE-POSTROUTING (RETURN
unless marked, ``--xor-mark``, ``MASQUERADE --random-fully``), KUBE-NODEPORTS, and for
a Service without endpoints the filter-table REJECT rules (KUBE-SERVICES for the
ClusterIP, KUBE-EXTERNAL-SERVICES for LoadBalancer IPs and NodePorts). Chain names use
kube-proxy's hash: base32(sha256(servicePortName + protocol))[:16].
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

MASQ_MARK = "0x4000"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One ready endpoint of a Service (an EndpointSlice address)."""

    ip: str
    """Pod IP."""
    pod: str
    """Pod name (targetRef)."""
    node: str
    """Node that hosts the pod (nodeName)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    """One port of a Service."""

    name: str
    """Port name (``http``, ``dns``)."""
    protocol: str
    """``TCP`` or ``UDP``."""
    port: int
    """Service port (ClusterIP and LoadBalancer IP)."""
    target_port: int
    """Container port on the endpoints."""
    node_port: int | None = None
    """NodePort, for NodePort and LoadBalancer Services."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A Service of one IP family as kube-proxy sees it."""

    name: str
    namespace: str
    type: str
    """``ClusterIP``, ``NodePort`` or ``LoadBalancer``."""
    family: int
    """4 or 6."""
    cluster_ip: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[Endpoint, ...]
    load_balancer_ips: tuple[str, ...] = ()
    external_traffic_policy: str = "Cluster"
    health_check_node_port: int | None = None
    """kube-proxy's health check port of an externalTrafficPolicy=Local Service."""
    selector_app: str = ""
    """Value of the ``app`` label the Service selects."""

    def port_name(self, port: ServicePort) -> str:
        """kube-proxy's ServicePortName string: ``namespace/name:port``."""
        return f"{self.namespace}/{self.name}:{port.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyOptions:
    """Node-level kube-proxy settings, and the lab's deliberate deviations."""

    cluster_cidr: str
    """``--cluster-cidr`` of this family (local traffic detection)."""
    masquerade_external: bool = True
    """False removes KUBE-EXT's KUBE-MARK-MASQ rule (the asymmetric-return deviation)."""
    random_fully: bool = True
    """Append ``--random-fully`` to MASQUERADE (kube-proxy does when iptables has it)."""
    node_name: str = ""
    """The node these rules are for (which endpoints are local, for Local traffic policy)."""


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's portProtoHash: the 16-character chain suffix of a service port."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """kube-proxy's KUBE-SEP chain name for ``endpoint`` (``ip:port`` or ``[ip6]:port``)."""
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return "KUBE-SEP-" + base64.b32encode(digest).decode()[:16]


def endpoint_string(ip: str, port: int) -> str:
    """net.JoinHostPort: ``10.244.2.7:8080`` or ``[fd00::7]:8080``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _q(text: str) -> str:
    return f'"{text}"' if " " in text else text


def _jump_rules(family: int) -> tuple[list[str], list[str]]:
    """Jump rules kube-proxy prepends to the built-in chains, in their final order."""
    new = "-m conntrack --ctstate NEW"
    filt = [
        f'-A INPUT {new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        f'-A INPUT {new} -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        f'-A FORWARD {new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        f'-A FORWARD {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        f'-A FORWARD {new} -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        f'-A OUTPUT {new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        f'-A OUTPUT {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    ]
    if family == 4:
        filt.insert(0, "-A INPUT -j KUBE-FIREWALL")
        filt.append("-A OUTPUT -j KUBE-FIREWALL")
    nat = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    ]
    return filt, nat


def render(services: list[Service], *, family: int, options: ProxyOptions) -> str:
    """Return the iptables-restore input kube-proxy would write for ``family`` (4 or 6).

    Only Services of that family are rendered; the base chains are always there.
    """
    filter_chains = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD",
                     "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY"]
    if family == 4:
        filter_chains.append("KUBE-FIREWALL")
    nat_chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
                  "KUBE-PROXY-CANARY"]
    filter_jumps, nat_jumps = _jump_rules(family)
    filter_rules: list[str] = []
    nat_rules = [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE" + (" --random-fully" if options.random_fully else ""),
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    if family == 4:
        filter_rules.append(
            '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" '
            "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        )
    service_rules: list[str] = []
    for svc in services:
        if svc.family != family:
            continue
        for port in svc.ports:
            _service_port(svc, port, options, nat_chains, service_rules, filter_rules)
    nodeports_dst = "-m addrtype --dst-type LOCAL" + (" ! -d ::1/128" if family == 6 else "")
    service_rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
        f'the last rule in this chain" {nodeports_dst} -j KUBE-NODEPORTS'
    )
    filter_rules += [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    lines = ["*mangle", ":KUBE-PROXY-CANARY - [0:0]", "COMMIT", "*filter"]
    lines += [f":{c} - [0:0]" for c in filter_chains]
    lines += filter_jumps + filter_rules + ["COMMIT", "*nat"]
    lines += [f":{c} - [0:0]" for c in nat_chains]
    lines += nat_jumps + nat_rules + service_rules + ["COMMIT"]
    return "\n".join(lines) + "\n"


def _service_port(
    svc: Service,
    port: ServicePort,
    options: ProxyOptions,
    nat_chains: list[str],
    nat_rules: list[str],
    filter_rules: list[str],
) -> None:
    name = svc.port_name(port)
    proto = port.protocol.lower()
    h = port_proto_hash(name, proto)
    svc_chain, ext_chain = f"KUBE-SVC-{h}", f"KUBE-EXT-{h}"
    match = f"-m {proto} -p {proto}"
    externally = bool(svc.load_balancer_ips or port.node_port)
    if not svc.endpoints:
        no_ep = _q(f"{name} has no endpoints")
        filter_rules.append(f"-A KUBE-SERVICES -m comment --comment {no_ep} {match} "
                            f"-d {svc.cluster_ip} --dport {port.port} -j REJECT")
        for lb in svc.load_balancer_ips:
            filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {no_ep} {match} "
                                f"-d {lb} --dport {port.port} -j REJECT")
        if port.node_port:
            filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {no_ep} "
                                f"-m addrtype --dst-type LOCAL {match} --dport {port.node_port} -j REJECT")
        return
    cluster_comment = _q(f"{name} cluster IP")
    nat_rules.append(f"-A KUBE-SERVICES -m comment --comment {cluster_comment} {match} "
                     f"-d {svc.cluster_ip} --dport {port.port} -j {svc_chain}")
    for lb in svc.load_balancer_ips:
        nat_rules.append(f"-A KUBE-SERVICES -m comment --comment {_q(f'{name} loadbalancer IP')} "
                         f"{match} -d {lb} --dport {port.port} -j {ext_chain}")
    if port.node_port:
        nat_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {_q(name)} {match} "
                         f"--dport {port.node_port} -j {ext_chain}")
    local = svc.external_traffic_policy == "Local"
    local_eps = tuple(ep for ep in svc.endpoints if ep.node == options.node_name)
    svl_chain = f"KUBE-SVL-{h}"
    if externally:
        nat_chains.append(ext_chain)
        if not local:
            if options.masquerade_external:
                comment = _q(f"masquerade traffic for {name} external destinations")
                nat_rules.append(f"-A {ext_chain} -m comment --comment {comment} -j KUBE-MARK-MASQ")
            nat_rules.append(f"-A {ext_chain} -j {svc_chain}")
        else:
            nat_rules += [
                f"-A {ext_chain} -m comment --comment {_q(f'pod traffic for {name} external destinations')} "
                f"-s {options.cluster_cidr} -j {svc_chain}",
                f"-A {ext_chain} -m comment --comment {_q(f'masquerade LOCAL traffic for {name} external destinations')} "
                "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                f"-A {ext_chain} -m comment --comment {_q(f'route LOCAL traffic for {name} external destinations')} "
                f"-m addrtype --src-type LOCAL -j {svc_chain}",
            ]
            if local_eps:
                nat_rules.append(f"-A {ext_chain} -j {svl_chain}")
            else:
                no_local = _q(f"{name} has no local endpoints")
                for lb in svc.load_balancer_ips:
                    filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {no_local} {match} "
                                        f"-d {lb} --dport {port.port} -j DROP")
                if port.node_port:
                    filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {no_local} "
                                        f"-m addrtype --dst-type LOCAL {match} --dport {port.node_port} -j DROP")
            if svc.health_check_node_port:
                filter_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {_q(f'{name} health check node port')} "
                                    f"-m tcp -p tcp --dport {svc.health_check_node_port} -j ACCEPT")
    nat_chains.append(svc_chain)
    nat_rules.append(f"-A {svc_chain} -m comment --comment {cluster_comment} {match} "
                     f"-d {svc.cluster_ip} --dport {port.port} ! -s {options.cluster_cidr} -j KUBE-MARK-MASQ")
    nat_rules += _balance(svc_chain, name, proto, port, svc.endpoints)
    if local and externally and local_eps:
        nat_chains.append(svl_chain)
        nat_rules += _balance(svl_chain, name, proto, port, local_eps)
    for ep in svc.endpoints:
        ep_str = endpoint_string(ep.ip, port.target_port)
        sep = endpoint_chain(name, proto, ep_str)
        nat_chains.append(sep)
        nat_rules.append(f"-A {sep} -m comment --comment {_q(name)} -s {ep.ip} -j KUBE-MARK-MASQ")
        nat_rules.append(f"-A {sep} -m comment --comment {_q(name)} {match} -j DNAT --to-destination {ep_str}")


def _balance(chain: str, name: str, proto: str, port: ServicePort, eps: tuple[Endpoint, ...]) -> list[str]:
    """writeServiceToEndpointRules: one jump per endpoint, 1/(n-i) probabilities, last one certain."""
    rules, n = [], len(eps)
    for i, ep in enumerate(eps):
        ep_str = endpoint_string(ep.ip, port.target_port)
        stat = f" -m statistic --mode random --probability {1.0 / (n - i):0.10f}" if i < n - 1 else ""
        rules.append(f"-A {chain} -m comment --comment {_q(f'{name} -> {ep_str}')}{stat} "
                     f"-j {endpoint_chain(name, proto, ep_str)}")
    return rules
