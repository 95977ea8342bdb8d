"""Pipeline stage: flows. One row per connection per observation point, with Zeek semantics.

``build(packets)`` returns a FlowSet (the flows table plus each packet's flow and side);
``flows_table(packets)`` just the table. See docs/flows.md.
"""

from flowtrace.flows.builder import FlowSet, build
from flowtrace.flows.timeouts import CONNTRACK_TIMEOUTS, KUBE_PROXY_TIMEOUTS

__all__ = ["CONNTRACK_TIMEOUTS", "KUBE_PROXY_TIMEOUTS", "FlowSet", "build"]
