"""Pipeline stage: flows. One row per connection per observation point, with Zeek semantics.

``flowtrace.flows(source)`` returns the flows table; ``build(packets)`` returns a FlowSet
(the flows table plus each packet's flow and side) for the stages downstream. See
docs/flows.md. This package is callable, so that ``flowtrace.flows(...)`` is the function
and ``flowtrace.flows.build`` / ``import flowtrace.flows.zeek`` are its modules, both at once.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING

from flowtrace.flows.builder import FlowSet, build
from flowtrace.flows.timeouts import CONNTRACK_TIMEOUTS, KUBE_PROXY_TIMEOUTS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CONNTRACK_TIMEOUTS", "KUBE_PROXY_TIMEOUTS", "FlowSet", "build"]


class _CallableModule(types.ModuleType):
    def __call__(self, source: pd.DataFrame | str | PathLike[str] | Sequence[str | PathLike[str]], *,
                 timeouts: Mapping[str, float] | None = None, ignore_checksums: bool = False) -> pd.DataFrame:
        """The flows table of ``source`` (a packets table, or captures): see
        ``flowtrace.pipeline.flows``."""
        from flowtrace.pipeline import flows

        return flows(source, timeouts=timeouts, ignore_checksums=ignore_checksums)


sys.modules[__name__].__class__ = _CallableModule
