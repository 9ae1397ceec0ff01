"""Bytecode that stays valid in the image: timestamp pycs rewritten as checked-hash pycs.

A timestamp pyc (PEP 3147 ``__pycache__/NAME.TAG.pyc``) records its source's mtime and size;
the outputs clamp every mtime to SOURCE_DATE_EPOCH, so in the image each one is stale: Python
recompiles the module at every start, and on a read-only rootfs cannot even keep the result.

A PEP 552 hash-based pyc records a SipHash of the source instead, which no mtime changes. Only
the 16-byte header changes: the code object after it is the one the root's own interpreter
compiled from that source (its header says so: the recorded mtime and size are the source's),
so nothing is compiled here and the magic number stays the interpreter's.

The mode is *checked*: the interpreter hashes the source beside the pyc at each import (a
SipHash over the file, microseconds for a module) and recompiles when they differ. An
unchecked pyc would be a little faster but would silently run old code under a source that a
later ``COPY`` layer or a bind mount replaced; the source stays for tracebacks anyway.

The key of the hash is the pyc's own magic number, and the function is the one of the
interpreter that reads it: SipHash-1-3 from CPython 3.11 on, SipHash-2-4 before (3.7 to
3.10), so a root's Python 3.9 gets the hashes its interpreter computes, not ours.
"""

from __future__ import annotations

import _imp
import importlib.util
import logging
import posixpath
import struct
from dataclasses import dataclass, replace

from bundler.errors import ScratchpackError
from bundler.loader.rootfs import MAX_SYMLINKS
from bundler.staging.plan import FILE, HARDLINK, SYMLINK, Entry, Plan

log = logging.getLogger(__name__)

HEADER = 16
FLAG_HASH_BASED, FLAG_CHECK_SOURCE = 0b01, 0b10
CHECKED_HASH = FLAG_HASH_BASED | FLAG_CHECK_SOURCE
FIRST_HASH_PYC = 3390  # CPython 3.7: PEP 552 begins
FIRST_SIPHASH13 = 3450  # CPython 3.11a1: _Py_KeyedHash moved from SipHash-2-4 to SipHash-1-3
_MASK = (1 << 64) - 1
_RUNNING_MAGIC = struct.unpack("<H", importlib.util.MAGIC_NUMBER[:2])[0]


@dataclass(frozen=True)
class PycReport:
    """What became of the plan's pycs."""

    rewritten: int = 0  # timestamp pycs now checked-hash pycs
    already: int = 0  # hash-based pycs left as they were
    stale: tuple[str, ...] = ()  # timestamp pycs that did not match their source in the root
    orphans: int = 0  # pycs whose source is not packed (Python never reads them): left out


def magic_of(header: bytes) -> int | None:
    """The pyc format number of a header (3495 for CPython 3.11), None when not a pyc's."""
    if len(header) < HEADER or header[2:4] != b"\r\n":
        return None
    return int(struct.unpack("<H", header[:2])[0])


def source_hash(magic: int, source: bytes) -> bytes:
    """The 8 bytes a hash-based pyc of format ``magic`` records for ``source``, as that
    interpreter's ``importlib.util.source_hash`` computes them."""
    key = int.from_bytes(struct.pack("<H", magic) + b"\r\n", "little")
    compression = 1 if magic >= FIRST_SIPHASH13 else 2
    running = 1 if _RUNNING_MAGIC >= FIRST_SIPHASH13 else 2
    if compression == running:
        return bytes(_imp.source_hash(key, source))  # the same function, in C
    return siphash(key, 0, source, compression, 4 if compression == 2 else 3).to_bytes(8, "little")


def siphash(k0: int, k1: int, data: bytes, c_rounds: int, d_rounds: int) -> int:
    """SipHash-c-d of ``data`` with the 128-bit key (k0, k1), as CPython's pyhash.c has it."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = ((v1 << 13) | (v1 >> 51)) & _MASK
            v1 ^= v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _MASK
            v2 = (v2 + v3) & _MASK
            v3 = ((v3 << 16) | (v3 >> 48)) & _MASK
            v3 ^= v2
            v0 = (v0 + v3) & _MASK
            v3 = ((v3 << 21) | (v3 >> 43)) & _MASK
            v3 ^= v0
            v2 = (v2 + v1) & _MASK
            v1 = ((v1 << 17) | (v1 >> 47)) & _MASK
            v1 ^= v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _MASK

    whole = len(data) - len(data) % 8
    for (block,) in struct.iter_unpack("<Q", data[:whole]):
        v3 ^= block
        rounds(c_rounds)
        v0 ^= block
    last = int.from_bytes(data[whole:], "little") | ((len(data) & 0xFF) << 56)
    v3 ^= last
    rounds(c_rounds)
    v0 ^= last
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


def source_of(pyc: str) -> str | None:
    """The source a ``__pycache__`` pyc was compiled from (``d/__pycache__/m.cpython-311.pyc``
    and ``m.cpython-311.opt-1.pyc`` -> ``d/m.py``), None for a pyc elsewhere."""
    folder, name = posixpath.split(pyc)
    if posixpath.basename(folder) != "__pycache__" or not name.endswith(".pyc"):
        return None
    parts = name[: -len(".pyc")].split(".")
    if len(parts) < 2 or not parts[0]:
        return None
    return posixpath.join(posixpath.dirname(folder), parts[0] + ".py")


def hash_pycs(plan: Plan) -> PycReport:
    """Rewrite, in the plan, every packed timestamp pyc whose source is packed beside it and
    matches it as a checked-hash pyc of the same source (only the header changes); leave out
    the pycs whose source is not packed."""
    rewritten = already = orphans = 0
    stale: list[str] = []
    for path in sorted(plan.entries):
        entry = plan.entries[path]
        source_path = source_of(path)
        if source_path is None or entry.type != FILE or entry.data is not None:
            continue
        source = _content_entry(plan, source_path)
        if source is None:
            # PEP 3147: a __pycache__ pyc is read only beside its source; alone it is dead
            # weight (the source was left out, as turtle.py is without Tk).
            log.debug("%s: left out, its source %s is not packed", path, source_path)
            del plan.entries[path]
            orphans += 1
            continue
        header = _read(entry, HEADER)
        magic = magic_of(header)
        if magic is None or magic < FIRST_HASH_PYC:
            continue
        flags = struct.unpack("<I", header[4:8])[0]
        if flags & FLAG_HASH_BASED:
            already += 1
            continue
        mtime, size = struct.unpack("<II", header[8:16])
        if (mtime, size) != (source.mtime & 0xFFFFFFFF, source.size & 0xFFFFFFFF):
            stale.append(path)
            continue
        code = _read(entry)
        digest = source_hash(magic, _read(source))
        data = header[:4] + struct.pack("<I", CHECKED_HASH) + digest + code[HEADER:]
        plan.entries[path] = replace(entry, data=data, size=len(data))
        rewritten += 1
    if stale:
        log.info(
            "%d pycs do not match their sources in the root (left as they are; Python compiles "
            "those modules at start): %s",
            len(stale),
            ", ".join(stale[:5]) + (", ..." if len(stale) > 5 else ""),
        )
    report = PycReport(rewritten, already, tuple(stale), orphans)
    log.info(
        "pycs: %d rewritten as checked-hash pycs, %d hash-based already, %d stale, %d left out "
        "without their source",
        rewritten,
        already,
        len(stale),
        orphans,
    )
    return report


def _content_entry(plan: Plan, path: str) -> Entry | None:
    """The FILE entry holding ``path``'s bytes in the image, following its links (Debian's
    ``sitecustomize.py -> /etc/python3.11/sitecustomize.py``) and hard links as the
    interpreter's stat would; None when it is not packed."""
    real = _resolve(plan, path)
    entry = plan.entries.get(real) if real is not None else None
    while entry is not None and entry.type == HARDLINK and entry.target is not None:
        entry = plan.entries.get(entry.target)
    return entry if entry is not None and entry.type == FILE else None


def _resolve(plan: Plan, path: str) -> str | None:
    """``path`` with every link of the plan on its way followed (None: a loop or a gap)."""
    parts = [p for p in path.split("/") if p]
    current, hops = "/", 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = posixpath.dirname(current)
            continue
        if part == ".":
            continue
        candidate = posixpath.join(current, part)
        entry = plan.entries.get(candidate)
        if entry is not None and entry.type == SYMLINK and entry.target is not None:
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            base = "/" if entry.target.startswith("/") else current
            parts = [p for p in posixpath.join(base, entry.target).split("/") if p] + parts
            current = "/"
            continue
        current = candidate
    return current


def _read(entry: Entry, count: int = -1) -> bytes:
    if entry.data is not None:
        return entry.data if count < 0 else entry.data[:count]
    assert entry.source is not None
    try:
        with open(entry.source, "rb") as handle:
            return handle.read(count)
    except OSError as exc:
        raise PycUnreadable(f"{entry.path}: cannot be read ({exc.strerror})") from None


class PycUnreadable(ScratchpackError):
    """A planned pyc or its source could not be read."""
