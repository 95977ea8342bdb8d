"""Opening capture files: compression detection, naming, and expanding directory arguments."""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from flowtrace.errors import CaptureFormatError, CaptureOpenError

if TYPE_CHECKING:
    from typing_extensions import Buffer

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",  # microseconds, little / big endian
    b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",  # nanoseconds
    b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34",  # Kuznetzov's modified pcap
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

COMPRESSIONS = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp", ".ntar", ".trace")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSource:
    """A capture to read: its name in the tables and its path."""

    name: str
    """Capture name: NAME from NAME=PATH, else the file stem without capture suffixes."""
    path: Path
    """File to read."""


def capture_name(path: Path) -> str:
    """The default capture name of ``path``: its name without compression and capture suffixes."""
    name = path.name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in CAPTURE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def looks_like_capture(path: Path) -> bool:
    """True when the first bytes of ``path`` are a pcap/pcapng magic, possibly compressed."""
    try:
        with open_compressed(path) as (f, _):
            head = f.read(4)
    except (OSError, CaptureOpenError):
        return False
    return head in PCAP_MAGICS or head == PCAPNG_MAGIC


def expand_sources(args: list[str]) -> list[CaptureSource]:
    """Turn command-line capture arguments into sources.

    Each argument is a file, ``NAME=PATH``, or a directory (every capture file in it,
    sorted by name, recognised by its magic bytes; other files are ignored). Raises
    CaptureOpenError for a missing path or a directory without captures, and
    CaptureOpenError when two files would get the same name; the same file named the same
    twice is one source.
    """
    sources: list[CaptureSource] = []
    for arg in args:
        name: str | None = None
        text = str(arg)
        if "=" in text and not Path(text).exists():
            name, text = text.split("=", 1)
            if not name:
                raise CaptureOpenError(text, "empty capture name before '='")
        path = Path(text)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if p.is_file() and looks_like_capture(p)]
            if not found:
                raise CaptureOpenError(path, "directory holds no pcap or pcapng capture")
            sources.extend(CaptureSource(name=capture_name(p), path=p) for p in found)
            continue
        if not path.exists():
            raise CaptureOpenError(path, "no such file")
        sources.append(CaptureSource(name=name or capture_name(path), path=path))
    # The same file under the same name (a directory and a file in it, or one given twice)
    # is read once.
    seen: dict[str, CaptureSource] = {}
    unique = []
    for s in sources:
        first = seen.get(s.name)
        if first is None:
            seen[s.name] = s
            unique.append(s)
        elif first.path.resolve() != s.path.resolve():
            raise CaptureOpenError(
                s.path, f"capture name {s.name!r} is also used by {first.path}; name one with NAME=PATH"
            )
    return unique


class DecompressedStream(io.RawIOBase):
    """A gzip, bzip2 or xz file read through an incremental decompressor.

    Unlike gzip.GzipFile, a stream cut short yields every byte decompressed before the
    cut (``truncated`` becomes True) instead of failing the read that meets the end;
    concatenated gzip members are read one after the other. Corrupt data raises OSError.
    """

    def __init__(self, raw: BinaryIO, compression: str) -> None:
        self.raw = raw
        self.compression = compression
        self.truncated = False
        self._pending = b""
        self._done = False
        self._dec = self._new()

    def _new(self) -> object:
        if self.compression == "gzip":
            return zlib.decompressobj(wbits=31)
        if self.compression == "bzip2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Buffer) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        want = len(view)
        got = 0
        while got < want:
            if self._pending:
                n = min(len(self._pending), want - got)
                view[got : got + n] = self._pending[:n]
                self._pending = self._pending[n:]
                got += n
                continue
            if self._done:
                break
            self._pending = self._step(want - got)
        return got

    def _step(self, want: int) -> bytes:
        dec = self._dec
        try:
            if dec.eof:  # type: ignore[attr-defined]
                rest = dec.unused_data  # type: ignore[attr-defined]
                if self.compression != "gzip" or not rest.strip(b"\0"):
                    self._done = True
                    return b""
                self._dec = dec = self._new()
                return dec.decompress(rest, max(want, 1 << 16))  # type: ignore[attr-defined]
            if self.compression == "gzip" and dec.unconsumed_tail:  # type: ignore[attr-defined]
                return dec.decompress(dec.unconsumed_tail, max(want, 1 << 16))  # type: ignore[attr-defined]
            if self.compression != "gzip" and not dec.needs_input:  # type: ignore[attr-defined]
                return dec.decompress(b"", max(want, 1 << 16))  # type: ignore[attr-defined]
            chunk = self.raw.read(1 << 20)
            if not chunk:
                self._done = True
                self.truncated = True
                return b""
            return dec.decompress(chunk, max(want, 1 << 16))  # type: ignore[attr-defined]
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as e:
            self._done = True
            raise OSError(f"corrupt {self.compression} data: {e}") from None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        buf = bytearray(n)
        got = self.readinto(buf)
        return bytes(buf[:got])


class open_compressed:
    """Context manager yielding ``(binary file, compression or None)`` for ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._raw: BinaryIO | None = None

    def __enter__(self) -> tuple[BinaryIO, str | None]:
        if self.path.is_dir():
            raise CaptureOpenError(self.path, "is a directory")
        try:
            raw = open(self.path, "rb")
        except FileNotFoundError:
            raise CaptureOpenError(self.path, "no such file") from None
        except PermissionError:
            raise CaptureOpenError(self.path, "permission denied") from None
        except OSError as e:
            raise CaptureOpenError(self.path, e.strerror or str(e)) from None
        self._raw = raw
        head = raw.read(6)
        raw.seek(0)
        compression = next((c for m, c in COMPRESSIONS.items() if head.startswith(m)), None)
        if compression is None:
            return raw, None
        return DecompressedStream(raw, compression), compression  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        if self._raw is not None:
            self._raw.close()


def read_exact(f: BinaryIO, n: int, path: Path, what: str, offset: int) -> bytes:
    """Read exactly ``n`` bytes or raise CaptureFormatError naming ``what`` was cut."""
    try:
        data = f.read(n)
    except OSError as e:
        raise CaptureFormatError(path, f"cannot decompress: {e}", offset=offset) from None
    if len(data) < n:
        if offset == 0 and not data:
            raise CaptureFormatError(path, "empty file")
        raise CaptureFormatError(path, f"file ends inside the {what}", offset=offset + len(data))
    return data


def file_size(path: Path) -> int:
    """Size of ``path`` on disk in bytes (compressed size for compressed files)."""
    return os.stat(path).st_size
