"""flowtrace: follow one connection across packet captures through kube-proxy's NAT.

The public API: ``read_packets`` (captures -> packets table), ``flows`` (-> flows table)
and ``inspect_captures``.
"""

from flowtrace import flows  # the flows stage; callable: flowtrace.flows(packets) -> flows table
from flowtrace.errors import (
    CaptureError,
    CaptureFormatError,
    CaptureOpenError,
    CaptureWarning,
    FlowtraceError,
    InputError,
    LabError,
)
from flowtrace.pipeline import inspect_captures, read_packets
from flowtrace.schema import FLOWS, PACKETS, SCHEMA_VERSION

__version__ = "0.1.0"

__all__ = [
    "FLOWS",
    "PACKETS",
    "SCHEMA_VERSION",
    "CaptureError",
    "CaptureFormatError",
    "CaptureOpenError",
    "CaptureWarning",
    "FlowtraceError",
    "InputError",
    "LabError",
    "__version__",
    "flows",
    "inspect_captures",
    "read_packets",
]
