"""``opaque_encapsulation``: encrypted tunnels between nodes hide the packets inside."""

from __future__ import annotations

import numpy as np

from flowtrace.detect.base import Needs
from flowtrace.detect.context import Context
from flowtrace.detect.evidence import plural
from flowtrace.detect.finding import Finding

OPAQUE = {"wireguard": "WireGuard", "esp": "IPsec ESP"}


class OpaqueEncapsulation:
    """``opaque_encapsulation``: WireGuard or ESP on a capture; matching across that leg is
    by timing and length only."""

    code = "opaque_encapsulation"
    severity = "info"
    needs = Needs(vantage_points=1, where="node captures")
    supersedes: tuple[str, ...] = ()

    def detect(self, ctx: Context) -> list[Finding]:
        """One finding per capture and tunnel kind."""
        enc = ctx.analysis.packets["encap"]
        names = [str(c) for c in enc.cat.categories]
        codes = enc.cat.codes.to_numpy()
        cap = ctx.col("capture")
        src, dst = ctx.col("outer_src"), ctx.col("outer_dst")
        out = []
        for kind, label in OPAQUE.items():
            if kind not in names:
                continue
            sel = codes == names.index(kind)
            for c in np.unique(cap[sel]):
                rows = np.flatnonzero(sel & (cap == c))
                pairs = sorted({tuple(sorted((ctx.addr(int(a)), ctx.addr(int(b)))))
                                for a, b in zip(src[rows[:5000]], dst[rows[:5000]], strict=True)})
                between = ", ".join(f"{a} and {b}" for a, b in pairs[:3])
                name = ctx.capture_names[int(c)]
                out.append(Finding(
                    code=self.code, severity=self.severity, capture=name,
                    message=(f"Capture {name} carries {plural(rows.size, 'packet')} inside {label}"
                             f"{' between ' + between if between else ''}: the packets inside cannot be read, so "
                             "across that leg they are matched by timing and length only and verdicts there are "
                             "less certain."),
                    evidence=ctx.evidence(rows[:8], f"{label} packets"),
                    causes=(f"the CNI encrypts node-to-node traffic ({label}); capture inside the tunnel "
                            "(on the tunnel interface) to see the packets",),
                    details={"packets": int(rows.size), "tunnel": kind}))
        return out
