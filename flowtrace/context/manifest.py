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
    except UnicodeDecodeError:
        raise InputError(p, "not a text file (a manifest is YAML)") from None
    except yaml.YAMLError as e:
        raise InputError(p, f"not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return Manifest()
    if not isinstance(data, dict):
        raise InputError(p, "a manifest is a mapping with 'captures', 'reference', 'same_clock'")
    unknown = set(data) - {"captures", "reference", "same_clock"}
    if unknown:
        raise InputError(p, f"unknown key(s): {', '.join(sorted(unknown))}")
    listed = data.get("captures") or {}
    if not isinstance(listed, dict):
        raise InputError(p, "captures must be a mapping of capture names")
    captures: dict[str, CaptureInfo] = {}
    for name, info in listed.items():
        if info is None:
            info = {}
        if not isinstance(info, dict):
            raise InputError(p, f"captures.{name} must be a mapping")
        role = info.get("role")
        if role is not None and role not in ROLES:
            raise InputError(p, f"captures.{name}.role must be one of {', '.join(ROLES)}, not {role!r}")
        extra = set(info) - {"role", "host", "pod"}
        if extra:
            raise InputError(p, f"captures.{name}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        host, pod = (_name(p, f"captures.{name}.{key}", info.get(key)) for key in ("host", "pod"))
        captures[str(name)] = CaptureInfo(role=role, host=host, pod=pod)
    groups = data.get("same_clock") or []
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        raise InputError(p, "same_clock must be a list of lists of capture names")
    same = [{n for c in group if (n := _name(p, "same_clock", c)) is not None} for group in groups]
    by_host: dict[str, set[str]] = {}
    for name, info in captures.items():
        if info.host:
            by_host.setdefault(info.host, set()).add(name)
    same.extend(group for group in by_host.values() if len(group) > 1)
    ref = _name(p, "reference", data.get("reference"))
    return Manifest(captures=captures, reference=ref, same_clock=same)


def _name(path: Path, key: str, value: object) -> str | None:
    """``value`` as a name (YAML may read ``node1`` as text, ``2`` as a number); None when
    absent. Raises InputError for a list or mapping."""
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        raise InputError(path, f"{key} must be a name, not {type(value).__name__} {value!r}")
    return str(value)
