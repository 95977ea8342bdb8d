"""The analysis manifest: a small YAML file naming what each capture is.

::

    reference: client            # the capture whose clock the others are aligned to
    captures:
      client: {role: client}
      node1:  {role: node, host: node1}
      web-1:  {role: pod, host: node2, pod: default/web-1}
    same_clock:                  # captures taken on one host (also implied by equal `host`)
      - [node2, web-1]

Roles are client, node, pod, router or other. Every key is optional; captures the
manifest does not name keep the roles flowtrace infers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import yaml

from flowtrace.errors import InputError

ROLES = ("client", "node", "pod", "router", "other")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureInfo:
    """What the manifest says about one capture."""

    role: str | None = None
    """client, node, pod, router or other."""
    host: str | None = None
    """Host the capture was taken on; captures of one host share a clock."""
    pod: str | None = None
    """namespace/name of the pod, for pod captures."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A parsed manifest."""

    captures: dict[str, CaptureInfo] = field(default_factory=dict)
    """By capture name."""
    reference: str | None = None
    """Reference capture for clock alignment."""
    same_clock: list[set[str]] = field(default_factory=list)
    """Groups of captures sharing a clock (listed, plus those with one host)."""


def read_manifest(path: str | PathLike[str]) -> Manifest:
    """Parse a manifest file; raises InputError naming the file for anything malformed."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InputError(p, e.strerror or str(e)) from None
    except yaml.YAMLError as e:
        raise InputError(p, f"not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return Manifest()
    if not isinstance(data, dict):
        raise InputError(p, "a manifest is a mapping with 'captures', 'reference', 'same_clock'")
    unknown = set(data) - {"captures", "reference", "same_clock"}
    if unknown:
        raise InputError(p, f"unknown key(s): {', '.join(sorted(unknown))}")
    captures: dict[str, CaptureInfo] = {}
    for name, info in (data.get("captures") or {}).items():
        if info is None:
            info = {}
        if not isinstance(info, dict):
            raise InputError(p, f"captures.{name} must be a mapping")
        role = info.get("role")
        if role is not None and role not in ROLES:
            raise InputError(p, f"captures.{name}.role must be one of {', '.join(ROLES)}, not {role!r}")
        extra = set(info) - {"role", "host", "pod"}
        if extra:
            raise InputError(p, f"captures.{name}: unknown key(s) {', '.join(sorted(extra))}")
        captures[str(name)] = CaptureInfo(role=role, host=info.get("host"), pod=info.get("pod"))
    same = [set(map(str, group)) for group in (data.get("same_clock") or [])]
    by_host: dict[str, set[str]] = {}
    for name, info in captures.items():
        if info.host:
            by_host.setdefault(info.host, set()).add(name)
    same.extend(group for group in by_host.values() if len(group) > 1)
    ref = data.get("reference")
    return Manifest(captures=captures, reference=str(ref) if ref is not None else None, same_clock=same)
