"""Findings as the anomalies table (schema ANOMALIES), for exports and reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flowtrace.detect.evidence import evidence_text
from flowtrace.detect.finding import Finding
from flowtrace.schema import ANOMALIES


def findings_table(findings: Sequence[Finding]) -> pd.DataFrame:
    """One row per finding with the columns of ``flowtrace.schema.ANOMALIES``, in the
    order given; an empty list gives an empty table with every column."""
    if not findings:
        return ANOMALIES.empty()
    data = {
        "code": [f.code for f in findings],
        "severity": [f.severity for f in findings],
        "connection": np.array([-1 if f.connection is None else f.connection for f in findings], dtype=np.int64),
        "direction": [f.direction for f in findings],
        "hop": np.array([-1 if f.hop is None else f.hop for f in findings], dtype=np.int32),
        "segment": [f.segment or "" for f in findings],
        "capture": [f.capture for f in findings],
        "evidence": [evidence_text(f.evidence) for f in findings],
        "message": [f.message for f in findings],
        "causes": ["; ".join(f.causes) for f in findings],
    }
    return ANOMALIES.conform(pd.DataFrame(data))
