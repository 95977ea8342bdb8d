"""A Kubernetes API snapshot of a lab scenario (``k8s.json``).

In: the scenario's pods and Services. Out: a ``List`` shaped like
``kubectl get pods,services,endpointslices,nodes -o json``: items of kind Pod, Service,
EndpointSlice and Node with the API's real field names (metadata.name/namespace,
spec.nodeName, status.podIP/podIPs/hostIP, spec.clusterIP(s)/ports/nodePort/type/
externalTrafficPolicy, endpoints[].addresses/conditions/nodeName/targetRef,
status.addresses). UIDs are derived from names, so the file is the same in every run.
"""

from __future__ import annotations

import uuid
from typing import Any

from flowtrace.lab import topology as topo
from flowtrace.lab.kubeproxy import Service
from flowtrace.lab.topology import PodSpec

CREATED = "2024-01-01T00:00:00Z"


def _uid(kind: str, namespace: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowtrace-lab/{kind}/{namespace}/{name}"))


def _pod(pod: PodSpec, ports: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    node_ip = topo.NODE_V4[pod.node]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": _uid("Pod", pod.namespace, pod.name),
                     "labels": {"app": pod.app}, "creationTimestamp": CREATED},
        "spec": {"nodeName": pod.node,
                 "containers": [{"name": pod.app, "image": "flowtrace-lab/traffic:latest",
                                 "ports": ports.get(pod.app, [])}]},
        "status": {"phase": "Running", "hostIP": node_ip,
                   "hostIPs": [{"ip": node_ip}, {"ip": topo.NODE_V6[pod.node]}],
                   "podIP": pod.ipv4, "podIPs": [{"ip": pod.ipv4}, {"ip": pod.ipv6}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _service(svc: Service) -> dict[str, Any]:
    ports = []
    for p in svc.ports:
        port: dict[str, Any] = {"name": p.name, "protocol": p.protocol, "port": p.port, "targetPort": p.target_port}
        if p.node_port:
            port["nodePort"] = p.node_port
        ports.append(port)
    spec: dict[str, Any] = {
        "type": svc.type, "clusterIP": svc.cluster_ip, "clusterIPs": [svc.cluster_ip],
        "ipFamilies": ["IPv6" if svc.family == 6 else "IPv4"], "ipFamilyPolicy": "SingleStack",
        "ports": ports, "selector": {"app": svc.selector_app}, "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
    }
    if svc.type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = svc.external_traffic_policy
        if svc.health_check_node_port:
            spec["healthCheckNodePort"] = svc.health_check_node_port
    status: dict[str, Any] = {"loadBalancer": {}}
    if svc.load_balancer_ips:
        status["loadBalancer"]["ingress"] = [{"ip": ip, "ipMode": "VIP"} for ip in svc.load_balancer_ips]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace,
                         "uid": _uid("Service", svc.namespace, svc.name), "creationTimestamp": CREATED},
            "spec": spec, "status": status}


def _endpoint_slice(svc: Service, pods: dict[str, PodSpec]) -> dict[str, Any]:
    name = f"{svc.name}-{_uid('EndpointSlice', svc.namespace, svc.name)[:5]}"
    endpoints = []
    for ep in svc.endpoints:
        pod = pods[ep.pod]
        endpoints.append({
            "addresses": [ep.ip],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": ep.node,
            "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace,
                          "uid": _uid("Pod", pod.namespace, pod.name)},
        })
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": svc.namespace,
                     "uid": _uid("EndpointSlice", svc.namespace, name), "creationTimestamp": CREATED,
                     "labels": {"kubernetes.io/service-name": svc.name,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc.name,
                                          "uid": _uid("Service", svc.namespace, svc.name)}]},
        "addressType": "IPv6" if svc.family == 6 else "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": p.name, "protocol": p.protocol, "port": p.target_port} for p in svc.ports],
    }


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": _uid("Node", "", name), "creationTimestamp": CREATED,
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                     "annotations": {"flannel.alpha.coreos.com/public-ip": topo.NODE_V4[name],
                                     "flannel.alpha.coreos.com/backend-type": "vxlan"}},
        "spec": {"podCIDR": topo.POD_CIDR_V4[name], "podCIDRs": [topo.POD_CIDR_V4[name], topo.POD_CIDR_V6[name]]},
        "status": {"addresses": [{"type": "InternalIP", "address": topo.NODE_V4[name]},
                                 {"type": "InternalIP", "address": topo.NODE_V6[name]},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "nodeInfo": {"kubeProxyVersion": "v1.30.0", "kubeletVersion": "v1.30.0",
                                "operatingSystem": "linux", "architecture": "amd64"}},
    }


def snapshot(pods: tuple[PodSpec, ...], services: tuple[Service, ...]) -> dict[str, Any]:
    """The ``kubectl get pods,services,endpointslices,nodes -o json`` List of a scenario."""
    ports: dict[str, list[dict[str, Any]]] = {}
    for svc in services:
        for p in svc.ports:
            entry = {"name": p.name, "containerPort": p.target_port, "protocol": p.protocol}
            if entry not in ports.setdefault(svc.selector_app, []):
                ports[svc.selector_app].append(entry)
    by_name = {p.name: p for p in pods}
    items: list[dict[str, Any]] = [_pod(p, ports) for p in pods]
    items += [_service(s) for s in services]
    items += [_endpoint_slice(s, by_name) for s in services]
    items += [_node(n) for n in topo.NODES]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
