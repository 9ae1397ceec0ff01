"""ELF facts: the only module that talks to pyelftools.

It reads just what the dynamic loader reads before it maps a file: the ELF header, the program
headers, PT_INTERP, the PT_DYNAMIC array and the few strings of the dynamic string table that
DT_NEEDED, DT_SONAME, DT_RPATH and DT_RUNPATH point at. Section headers are never touched (the
loader does not use them, and stripped or hostile files may have none).

pyelftools' ``ELFFile`` builds its struct parsers anew for every file; here one ``ELFStructs``
per (class, byte order) is built once and reused. The arrays read for every file (program
headers, dynamic entries) are unpacked with a ``struct.Struct`` compiled from pyelftools' own
field definitions, so the layouts stay pyelftools' while a whole /usr/lib reads in well under a
second (construct's per-field parsing costs about 10 us an entry).

Every bound is checked against the file size before anything is read, so forged counts and
offsets give a ``BadElf`` naming the file, never a huge read or a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.construct.core import ConstructError
from elftools.elf.enums import ENUM_D_TAG_COMMON, ENUM_E_MACHINE
from elftools.elf.structs import ELFStructs

from bundler.errors import BadElf

ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1
ET_EXEC, ET_DYN = 2, 3


def _machine(name: str) -> int:
    return int(ENUM_E_MACHINE[name])


# e_machine numbers, as pyelftools names them: the one place the rest of scratchpack takes them.
EM_SPARC, EM_386, EM_MIPS = map(_machine, ("EM_SPARC", "EM_386", "EM_MIPS"))
EM_PPC, EM_PPC64, EM_S390, EM_ARM = map(_machine, ("EM_PPC", "EM_PPC64", "EM_S390", "EM_ARM"))
EM_SPARCV9, EM_IA_64, EM_X86_64 = map(_machine, ("EM_SPARCV9", "EM_IA_64", "EM_X86_64"))
EM_AARCH64, EM_RISCV, EM_LOONGARCH = map(_machine, ("EM_AARCH64", "EM_RISCV", "EM_LOONGARCH"))
DF_1_NODEFLIB = 0x800

# No real program has more; a larger count is forged, and would make us read megabytes.
MAX_PROGRAM_HEADERS = 4096
MAX_DYNAMIC_ENTRIES = 65536
MAX_STRING = 65536
MAX_INTERP = 4096  # PATH_MAX: the kernel would not take a longer PT_INTERP path either


@dataclass(frozen=True)
class ElfIdent:
    """The fields of e_ident and the ELF header that decide whether a loader accepts a file."""

    elf_class: int  # 32 or 64
    little_endian: bool
    machine: int
    file_type: int  # e_type: ET_EXEC, ET_DYN, ...
    flags: int  # e_flags (ABI variants on some architectures)


@dataclass(frozen=True)
class DlopenDependency:
    """One entry of a .note.dlopen note: libraries the object dlopen()s for a feature."""

    feature: str
    priority: str  # "required", "recommended" or "suggested"
    sonames: tuple[str, ...]  # alternatives, tried in order
    description: str = ""


@dataclass(frozen=True)
class VersionNeed:
    """One symbol version an object needs from a library (.gnu.version_r): ``GLIBC_2.34``
    from ``libc.so.6``. A weak need does not stop the loader when it is missing."""

    file: str  # the DT_NEEDED name it is needed from
    version: str
    weak: bool = False


@dataclass(frozen=True)
class ElfInfo:
    """What the dynamic loader needs to know about one ELF file."""

    ident: ElfIdent
    interpreter: str | None  # PT_INTERP, None for static programs and most libraries
    needed: tuple[str, ...]
    soname: str | None
    rpath: str | None  # DT_RPATH, as written (':'-separated, with $ORIGIN & co.)
    runpath: str | None  # DT_RUNPATH
    flags_1: int  # DT_FLAGS_1
    dlopen: tuple[DlopenDependency, ...] = ()  # from .note.dlopen (FDO dlopen metadata)
    version_needs: tuple[VersionNeed, ...] = ()  # DT_VERNEED: what it needs from whom
    # DT_VERDEF: the versions it defines; None when it has no version definitions at all
    # (the loader then accepts any need, and says "no version information available").
    version_defs: frozenset[str] | None = None

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)

    @property
    def is_static(self) -> bool:
        """No interpreter and nothing to load: static and static-pie programs."""
        return self.interpreter is None and not self.needed


def is_elf(header: bytes) -> bool:
    return header[:4] == ELF_MAGIC


@dataclass(frozen=True)
class RawHeader:
    """The first bytes of a candidate, undecoded: loaders judge a file on these alone, before
    trusting its byte order (glibc reads e_machine in its own byte order, whatever EI_DATA says).
    """

    data: bytes  # up to the first 64 bytes
    size: int  # the file's size

    def field(self, offset: int, width: int, little_endian: bool) -> int:
        chunk = self.data[offset : offset + width]
        return int.from_bytes(chunk, "little") if little_endian else int.from_bytes(chunk, "big")

    @property
    def padding_zero(self) -> bool:
        return self.data[9:16] == bytes(7)


def _open_regular(host_path: str) -> int | None:
    """An fd of a regular file, or None for a FIFO, socket or device node, which is never
    opened: a FIFO without a writer would block open() forever, and opening a device can act
    (a tape rewinds, a tty becomes ours). A directory raises IsADirectoryError, as open() does.
    O_NONBLOCK guards the window between stat and open; it changes nothing for regular files.
    """
    st = os.stat(host_path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), host_path)
    if not stat.S_ISREG(st.st_mode):
        return None
    fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the stat
        os.close(fd)
        return None
    return fd


def peek_header(host_path: str) -> RawHeader:
    """Read the ELF header bytes of a file (raises OSError, e.g. IsADirectoryError).

    A file that is not regular reads as empty (the loader's "file too short"), unopened.
    """
    fd = _open_regular(host_path)
    if fd is None:
        return RawHeader(b"", 0)
    try:
        return RawHeader(os.pread(fd, 64, 0), os.fstat(fd).st_size)
    finally:
        os.close(fd)


@cache
def _structs(elf_class: int, little_endian: bool) -> ELFStructs:
    structs = ELFStructs(little_endian=little_endian, elfclass=elf_class)
    structs.create_basic_structs()
    structs.create_advanced_structs(e_type="ET_DYN", e_machine=None, e_ident_osabi=None)
    return structs


@dataclass(frozen=True)
class _Layout:
    """A pyelftools struct compiled to one struct.Struct: its field names and packer."""

    names: tuple[str, ...]
    packer: struct.Struct

    def unpack_all(self, raw: bytes) -> Iterator[dict[str, int]]:
        for values in self.packer.iter_unpack(raw):
            yield dict(zip(self.names, values, strict=True))


def _compile(construct_struct: Any, little_endian: bool, skip: tuple[str, ...] = ()) -> _Layout:
    names: list[str] = []
    formats: list[str] = []
    for field in construct_struct.subcons:
        if field.name in skip:
            continue
        while not hasattr(field, "packer") and hasattr(field, "subcon"):
            field = field.subcon  # unwrap enum adapters down to the raw integer field
        if not hasattr(field, "packer"):
            continue  # computed values (Value) take no bytes
        names.append(field.name)
        formats.append(field.packer.format.lstrip("<>=!@"))
    return _Layout(tuple(names), struct.Struct(("<" if little_endian else ">") + "".join(formats)))


@cache
def _layouts(elf_class: int, little_endian: bool) -> tuple[_Layout, _Layout, _Layout]:
    """(ELF header after e_ident, program header, dynamic entry) layouts."""
    structs = _structs(elf_class, little_endian)
    return (
        _compile(structs.Elf_Ehdr, little_endian, skip=("e_ident",)),
        _compile(structs.Elf_Phdr, little_endian),
        _compile(structs.Elf_Dyn, little_endian),
    )


@cache
def _note_layout(elf_class: int, little_endian: bool) -> _Layout:
    return _compile(_structs(elf_class, little_endian).Elf_Nhdr, little_endian)


PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
# The UAPI group's dlopen metadata note (uapi-group.org/specifications/specs/elf_dlopen_metadata)
NOTE_DLOPEN_OWNER, NOTE_DLOPEN_TYPE = b"FDO", 0x407C0C0A
DLOPEN_PRIORITIES = ("required", "recommended", "suggested")
MAX_NOTE_BYTES = 1 << 20
DT_NULL = ENUM_D_TAG_COMMON["DT_NULL"]
_DT_WANTED = ("DT_NEEDED", "DT_SONAME", "DT_RPATH", "DT_RUNPATH", "DT_STRTAB", "DT_FLAGS_1")
_DT_VERSIONS = ("DT_VERNEED", "DT_VERNEEDNUM", "DT_VERDEF", "DT_VERDEFNUM")
_DT_NAMES: dict[int, str] = {
    value: name for name, value in ENUM_D_TAG_COMMON.items() if name in _DT_WANTED + _DT_VERSIONS
}
# Bounds on version records: glibc's own libc defines fewer than 60 versions, and no object
# needs versions from more than a few dozen libraries; more is a forged count.
MAX_VERSION_RECORDS = 4096
VER_FLG_BASE, VER_FLG_WEAK = 0x1, 0x2


class _Reader:
    """Bounded reads from one open file; every failure becomes BadElf(path)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.size = os.fstat(fd).st_size

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BadElf(self.path, f"{what} lies past the end of the file")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise BadElf(self.path, f"{what} could not be read in full")
        return data

    def cstring(self, offset: int, what: str) -> str:
        if offset < 0 or offset >= self.size:
            raise BadElf(self.path, f"{what} lies past the end of the file")
        chunk = os.pread(self.fd, min(MAX_STRING, self.size - offset), offset)
        end = chunk.find(b"\0")
        if end < 0:
            raise BadElf(self.path, f"{what} is not NUL-terminated")
        return os.fsdecode(chunk[:end])


def read_elf(host_path: str, display_path: str | None = None) -> ElfInfo:
    """Read the loader-relevant facts of the ELF file at ``host_path``.

    ``display_path`` (the image path) names the file in errors. Raises BadElf for anything that
    is not a well-formed ELF file, and OSError when the file cannot be opened.
    """
    name = display_path or host_path
    fd = _open_regular(host_path)
    if fd is None:
        raise BadElf(name, "not a regular file")
    try:
        return _parse(_Reader(fd, name))
    except (
        ConstructError,
        ELFError,
        struct.error,
        KeyError,
        ValueError,
        OverflowError,
        RecursionError,  # e.g. str() of a deeply nested .note.dlopen value
    ) as exc:
        raise BadElf(name, f"malformed ELF file ({exc.__class__.__name__})") from None
    finally:
        os.close(fd)


def _parse(reader: _Reader) -> ElfInfo:
    ident = reader.read(0, 16, "ELF identification") if reader.size >= 16 else b""
    if not is_elf(ident):
        raise BadElf(reader.path, "not an ELF file")
    if ident[4] not in (ELFCLASS32, ELFCLASS64):
        raise BadElf(reader.path, f"unknown ELF class {ident[4]}")
    if ident[5] not in (ELFDATA2LSB, ELFDATA2MSB):
        raise BadElf(reader.path, f"unknown ELF data encoding {ident[5]}")
    elf_class, little_endian = (32 if ident[4] == ELFCLASS32 else 64), ident[5] == ELFDATA2LSB
    ehdr, phdr, dyn = _layouts(elf_class, little_endian)
    raw_header = reader.read(EI_NIDENT, ehdr.packer.size, "ELF header")
    header = next(ehdr.unpack_all(raw_header))
    elf_ident = ElfIdent(
        elf_class=elf_class,
        little_endian=little_endian,
        machine=header["e_machine"],
        file_type=header["e_type"],
        flags=header["e_flags"],
    )
    segments = list(_program_headers(reader, phdr, header))
    interpreter = _interpreter(reader, segments)
    dynamic = next((s for s in segments if s["p_type"] == PT_DYNAMIC), None)
    if dynamic is None:
        return ElfInfo(elf_ident, interpreter, (), None, None, None, 0)
    entries = _dynamic_entries(reader, dyn, dynamic)
    info = _with_dynamic(reader, elf_ident, interpreter, segments, entries)
    notes = _dlopen_notes(reader, _note_layout(elf_class, little_endian), segments)
    return replace(info, dlopen=notes) if notes else info


def _program_headers(
    reader: _Reader, layout: _Layout, header: dict[str, int]
) -> Iterator[dict[str, int]]:
    count, entsize = header["e_phnum"], header["e_phentsize"]
    if count == 0:
        return
    if entsize != layout.packer.size:
        raise BadElf(reader.path, f"program header size {entsize} is wrong")
    if count > MAX_PROGRAM_HEADERS:
        raise BadElf(reader.path, f"{count} program headers is implausible")
    yield from layout.unpack_all(reader.read(header["e_phoff"], count * entsize, "program headers"))


def _interpreter(reader: _Reader, segments: list[dict[str, int]]) -> str | None:
    interp = next((s for s in segments if s["p_type"] == PT_INTERP), None)
    if interp is None:
        return None
    if interp["p_filesz"] > MAX_INTERP:  # the bound check alone lets a sparse file through
        raise BadElf(reader.path, f"PT_INTERP of {interp['p_filesz']} bytes is implausible")
    raw = reader.read(interp["p_offset"], interp["p_filesz"], "PT_INTERP")
    return os.fsdecode(raw.split(b"\0", 1)[0])


def _with_dynamic(
    reader: _Reader,
    ident: ElfIdent,
    interpreter: str | None,
    segments: list[dict[str, int]],
    entries: dict[str, list[int]],
) -> ElfInfo:
    strtab = _file_offset(reader, segments, entries.get("DT_STRTAB", [None])[0], "DT_STRTAB")

    def string(tag: str, value: int) -> str:
        if strtab is None:
            raise BadElf(reader.path, f"{tag} without a dynamic string table")
        return reader.cstring(strtab + value, f"{tag} string")

    def first(tag: str) -> str | None:
        values = entries.get(tag)
        return string(tag, values[0]) if values else None

    versions = _Versions(reader, ident, segments, entries, string)
    return ElfInfo(
        ident=ident,
        interpreter=interpreter,
        needed=tuple(string("DT_NEEDED", v) for v in entries.get("DT_NEEDED", [])),
        soname=first("DT_SONAME"),
        rpath=first("DT_RPATH"),
        runpath=first("DT_RUNPATH"),
        flags_1=entries.get("DT_FLAGS_1", [0])[0],
        version_needs=versions.needs(),
        version_defs=versions.definitions(),
    )


class _Versions:
    """.gnu.version_r and .gnu.version_d, found as the loader finds them: through DT_VERNEED
    and DT_VERDEF (addresses) with their counts, each record linked to the next by offset."""

    def __init__(
        self,
        reader: _Reader,
        ident: ElfIdent,
        segments: list[dict[str, int]],
        entries: dict[str, list[int]],
        string: Any,
    ) -> None:
        self.reader, self.segments, self.entries, self.string = reader, segments, entries, string
        structs = _structs(ident.elf_class, ident.little_endian)
        self.layouts = {
            name: _compile(getattr(structs, name), ident.little_endian)
            for name in ("Elf_Verneed", "Elf_Vernaux", "Elf_Verdef", "Elf_Verdaux")
        }

    def needs(self) -> tuple[VersionNeed, ...]:
        found: list[VersionNeed] = []
        for offset, record in self._chain("DT_VERNEED", "DT_VERNEEDNUM", "Elf_Verneed", "vn"):
            file = self.string("DT_VERNEED", record["vn_file"])
            aux = offset + record["vn_aux"]
            for _ in range(min(record["vn_cnt"], MAX_VERSION_RECORDS)):
                item = self._record("Elf_Vernaux", aux)
                name = self.string("DT_VERNEED", item["vna_name"])
                found.append(VersionNeed(file, name, bool(item["vna_flags"] & VER_FLG_WEAK)))
                if not item["vna_next"]:
                    break
                aux += item["vna_next"]
        return tuple(found)

    def definitions(self) -> frozenset[str] | None:
        if "DT_VERDEF" not in self.entries:
            return None
        names = set()
        for offset, record in self._chain("DT_VERDEF", "DT_VERDEFNUM", "Elf_Verdef", "vd"):
            if record["vd_flags"] & VER_FLG_BASE or not record["vd_cnt"]:
                continue  # the object's own name (its soname), not a version
            aux = self._record("Elf_Verdaux", offset + record["vd_aux"])
            names.add(self.string("DT_VERDEF", aux["vda_name"]))
        return frozenset(names)

    def _chain(
        self, tag: str, count_tag: str, layout: str, prefix: str
    ) -> Iterator[tuple[int, dict[str, int]]]:
        start = _file_offset(self.reader, self.segments, self.entries.get(tag, [None])[0], tag)
        if start is None:
            return
        count = self.entries.get(count_tag, [MAX_VERSION_RECORDS])[0]
        if count > MAX_VERSION_RECORDS:
            raise BadElf(self.reader.path, f"{count_tag} of {count} is implausible")
        offset = start
        for _ in range(count):
            record = self._record(layout, offset)
            yield offset, record
            if not record[f"{prefix}_next"]:
                return
            offset += record[f"{prefix}_next"]

    def _record(self, layout: str, offset: int) -> dict[str, int]:
        packer = self.layouts[layout]
        raw = self.reader.read(offset, packer.packer.size, layout.removeprefix("Elf_"))
        return next(packer.unpack_all(raw))


def _dynamic_entries(
    reader: _Reader, layout: _Layout, dynamic: dict[str, int]
) -> dict[str, list[int]]:
    """Tag -> values, in file order, up to DT_NULL (as the loader reads the array)."""
    count = min(dynamic["p_filesz"] // layout.packer.size, MAX_DYNAMIC_ENTRIES)
    raw = reader.read(dynamic["p_offset"], count * layout.packer.size, "dynamic section")
    entries: dict[str, list[int]] = {}
    for tag, value in layout.packer.iter_unpack(raw):
        if tag == DT_NULL:
            break
        name = _DT_NAMES.get(tag)
        if name is not None:
            entries.setdefault(name, []).append(value)
    return entries


def _file_offset(
    reader: _Reader, segments: list[dict[str, int]], vaddr: int | None, what: str
) -> int | None:
    """Map a virtual address to a file offset through the PT_LOAD segments, as mapped."""
    if vaddr is None:
        return None
    for seg in segments:
        if seg["p_type"] == PT_LOAD and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
            return vaddr - seg["p_vaddr"] + seg["p_offset"]
    raise BadElf(reader.path, f"{what} address {vaddr:#x} is in no loaded segment")


def _dlopen_notes(
    reader: _Reader, layout: _Layout, segments: list[dict[str, int]]
) -> tuple[DlopenDependency, ...]:
    found: list[DlopenDependency] = []
    budget = MAX_NOTE_BYTES  # for all notes together: 4096 forged PT_NOTE entries naming one
    for seg in segments:  # big note would otherwise read (and parse) it 4096 times
        if seg["p_type"] != PT_NOTE or seg["p_filesz"] > budget:
            continue
        budget -= seg["p_filesz"]
        raw = reader.read(seg["p_offset"], seg["p_filesz"], "PT_NOTE segment")
        align = 8 if seg["p_align"] == 8 else 4
        for owner, note_type, desc in _notes(raw, layout, align):
            if owner == NOTE_DLOPEN_OWNER and note_type == NOTE_DLOPEN_TYPE:
                found.extend(_parse_dlopen(reader.path, desc))
    return tuple(found)


def _notes(raw: bytes, layout: _Layout, align: int) -> Iterator[tuple[bytes, int, bytes]]:
    """(owner, type, descriptor) of each note; a truncated note ends the walk, as readelf's."""
    offset, size = 0, layout.packer.size
    while offset + size <= len(raw):
        namesz, descsz, note_type = layout.packer.unpack_from(raw, offset)
        name_start = offset + size
        desc_start = name_start + _round_up(namesz, align)
        end = desc_start + _round_up(descsz, align)
        if desc_start + descsz > len(raw):
            return
        yield (
            raw[name_start : name_start + namesz].rstrip(b"\0"),
            note_type,
            raw[desc_start : desc_start + descsz],
        )
        offset = end


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _parse_dlopen(path: str, desc: bytes) -> list[DlopenDependency]:
    try:
        document = json.loads(desc.rstrip(b"\0").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # "[[[[..." nested past the stack
        raise BadElf(path, ".note.dlopen holds no valid JSON") from None
    items = document if isinstance(document, list) else [document]  # older single-object form
    deps = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("soname"), list):
            raise BadElf(path, ".note.dlopen entry without a soname list")
        sonames = tuple(str(name) for name in item["soname"] if isinstance(name, str))
        priority = str(item.get("priority", "recommended"))
        if priority not in DLOPEN_PRIORITIES:
            priority = "recommended"
        deps.append(
            DlopenDependency(
                feature=str(item.get("feature", "")),
                priority=priority,
                sonames=sonames,
                description=str(item.get("description", "")),
            )
        )
    return deps
