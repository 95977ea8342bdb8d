"""flowtrace: follow one connection across packet captures through kube-proxy's NAT.

The public API: ``read_packets`` (captures -> packets table), ``flows`` (-> flows table)
and ``inspect_captures``.
"""

from flowtrace.errors import (
    CaptureError,
    CaptureFormatError,
    CaptureOpenError,
    CaptureWarning,
    FlowtraceError,
    InputError,
    LabError,
)

# ``flows`` (the function) is bound after flowtrace.pipeline has imported the flowtrace.flows
# package, so the attribute is the function; import the package's names with
# ``from flowtrace.flows import build``.
from flowtrace.pipeline import flows, inspect_captures, read_packets
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
