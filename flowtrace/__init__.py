"""flowtrace: follow one connection across packet captures through kube-proxy's NAT.

The public API: ``read_packets`` (captures -> packets table), ``flows`` (-> flows table),
``analyze`` (captures -> an Analysis: connections, hops, clocks, conntrack tables,
findings) and ``inspect_captures``.

Names are imported on first use (PEP 562), so that ``import flowtrace.decode...`` costs
no pandas import: the command line starts decoding a large capture in a second process
before its own imports are done (flowtrace.launch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "flows": "flowtrace.flows",
    "Analysis": "flowtrace.analysis",
    "CaptureError": "flowtrace.errors",
    "CaptureFormatError": "flowtrace.errors",
    "CaptureOpenError": "flowtrace.errors",
    "CaptureWarning": "flowtrace.errors",
    "FlowtraceError": "flowtrace.errors",
    "InputError": "flowtrace.errors",
    "LabError": "flowtrace.errors",
    "analyze": "flowtrace.pipeline",
    "inspect_captures": "flowtrace.pipeline",
    "read_packets": "flowtrace.pipeline",
    "CONNECTIONS": "flowtrace.schema",
    "FLOWS": "flowtrace.schema",
    "HOPS": "flowtrace.schema",
    "PACKETS": "flowtrace.schema",
    "SCHEMA_VERSION": "flowtrace.schema",
}

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

if TYPE_CHECKING:
    from flowtrace import flows
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


def __getattr__(name: str) -> object:
    """The public name ``name``, imported from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flowtrace' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"flowtrace.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
