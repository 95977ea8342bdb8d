"""flowtrace: follow one connection across packet captures through kube-proxy's NAT.

The public API: ``read_packets`` (captures -> packets table), ``flows`` (-> flows table),
``analyze`` (captures -> an Analysis: connections, hops, clocks, conntrack tables,
findings) and ``inspect_captures``.
"""

from flowtrace import flows  # the flows stage; callable: flowtrace.flows(packets) -> flows table
from flowtrace.analysis import Analysis
from flowtrace.errors import (
    CaptureError,
    CaptureFormatError,
    CaptureOpenError,
    CaptureWarning,
    FlowtraceError,
    InputError,
    LabError,
)
from flowtrace.pipeline import analyze, inspect_captures, read_packets
from flowtrace.schema import CONNECTIONS, FLOWS, HOPS, PACKETS, SCHEMA_VERSION

__version__ = "0.1.0"

__all__ = [
    "CONNECTIONS",
    "FLOWS",
    "HOPS",
    "PACKETS",
    "SCHEMA_VERSION",
    "Analysis",
    "CaptureError",
    "CaptureFormatError",
    "CaptureOpenError",
    "CaptureWarning",
    "FlowtraceError",
    "InputError",
    "LabError",
    "__version__",
    "analyze",
    "flows",
    "inspect_captures",
    "read_packets",
]
