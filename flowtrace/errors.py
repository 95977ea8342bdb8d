"""The exception tree of flowtrace.

::

    FlowtraceError
    ├── CaptureError              a capture file cannot be used
    │   ├── CaptureOpenError      missing, unreadable, a directory without captures
    │   └── CaptureFormatError    not a capture, empty, unknown link type, corrupt header
    ├── InputError                a non-capture input is wrong (manifest, dump, snapshot)
    └── LabError                  the lab cannot build or run a scenario

    CaptureWarning (UserWarning)  a capture was read but something is off (cut mid-record)

Every error carries its context as attributes (``path``, ``offset``) and a message that
names the file, so that the CLI can print ``str(error)`` as one line and exit 2.
Malformed *packets* are never errors: they get a ``decode_status`` in the packets table.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any


class FlowtraceError(Exception):
    """Root of every error flowtrace raises on purpose."""


class CaptureError(FlowtraceError):
    """A capture file cannot be used.

    Attributes:
        path: the file concerned.
        offset: byte offset in the (decompressed) file where the problem is, if known.
        reason: what is wrong, without the file name.
    """

    def __init__(self, path: str | Path, reason: str, *, offset: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}: {reason}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors raised in a forked child travel back pickled (flowtrace.fork).
        return partial(type(self), offset=self.offset), (self.path, self.reason)


class CaptureOpenError(CaptureError):
    """The file is missing, unreadable, or a directory holds no capture."""


class CaptureFormatError(CaptureError):
    """The file is not a capture flowtrace can read (bad magic, empty, unknown link type)."""


class InputError(FlowtraceError):
    """A manifest, conntrack dump or Kubernetes snapshot is missing or malformed.

    Attributes:
        path: the file concerned (may be empty for command-line values).
        reason: what is wrong.
    """

    def __init__(self, path: str | Path, reason: str, *, line: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f" (line {line})" if line is not None else ""
        prefix = f"{self.path}: " if self.path else ""
        super().__init__(f"{prefix}{reason}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return partial(type(self), line=self.line), (self.path, self.reason)


class LabError(FlowtraceError):
    """The lab cannot build or run a scenario (missing privilege or tool, failed command)."""


class CaptureWarning(UserWarning):
    """A capture was read, but not whole: cut in the middle of a record, trailing garbage."""
