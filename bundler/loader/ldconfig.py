"""ld.so.conf and ld.so.cache, read the way glibc 2.36's ldconfig and ld.so read them.

Two halves:

* ``read_ld_so_conf`` follows ``elf/ldconfig.c:parse_conf``: ``#`` comments, ``include`` lines
  with several glob patterns each (sorted matches, relative patterns taken from the including
  file's folder), ``hwcap`` lines ignored, old-style ``dir=TYPE`` suffixes cut off.
* ``parse_ld_cache`` reads both binary formats (``elf/cache.c`` writes them,
  ``sysdeps/generic/dl-cache.h`` defines them) and ``LdCache.lookup`` answers like
  ``elf/dl-cache.c:search_cache`` of the loader's release (up to 2.32, 2.33-2.36, 2.37 on),
  glibc-hwcaps extension included.

The loader itself never reads ld.so.conf; only the cache matters for resolution. The conf is
still useful to explain where a cached directory came from.

Every file is read through ``FsRoot``, so nothing outside ``--root`` is ever touched.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from bundler.errors import BadLoaderConfig
from bundler.loader.elf import (
    EM_AARCH64,
    EM_ARM,
    EM_IA_64,
    EM_LOONGARCH,
    EM_MIPS,
    EM_PPC64,
    EM_RISCV,
    EM_S390,
    EM_SPARCV9,
    EM_X86_64,
)
from bundler.loader.rootfs import FsRoot, SymlinkLoop

# The glibc release assumed where none can be read (an unreadable loader cannot run anything;
# a current glibc is assumed for the listing), and the default of every rule that depends on it.
DEFAULT_GLIBC = (2, 36)

log = logging.getLogger(__name__)

# ldconfig's FLAG_* values (sysdeps/generic/ldconfig.h): low byte = library type,
# high byte = the ABI the object needs.
FLAG_TYPE_MASK = 0x00FF
FLAG_LIBC4 = 0x0000
FLAG_ELF = 0x0001
FLAG_ELF_LIBC5 = 0x0002
FLAG_ELF_LIBC6 = 0x0003
FLAG_REQUIRED_MASK = 0xFF00
FLAG_SPARC_LIB64 = 0x0100
FLAG_IA64_LIB64 = 0x0200
FLAG_X8664_LIB64 = 0x0300
FLAG_S390_LIB64 = 0x0400
FLAG_POWERPC_LIB64 = 0x0500
FLAG_MIPS64_LIBN32 = 0x0600
FLAG_MIPS64_LIBN64 = 0x0700
FLAG_X8664_LIBX32 = 0x0800
FLAG_ARM_LIBHF = 0x0900
FLAG_AARCH64_LIB64 = 0x0A00
FLAG_ARM_LIBSF = 0x0B00
FLAG_MIPS_LIB32_NAN2008 = 0x0C00
FLAG_MIPS64_LIBN32_NAN2008 = 0x0D00
FLAG_MIPS64_LIBN64_NAN2008 = 0x0E00
FLAG_RISCV_FLOAT_ABI_SOFT = 0x0F00
FLAG_RISCV_FLOAT_ABI_DOUBLE = 0x1000
FLAG_LARCH_FLOAT_ABI_SOFT = 0x1100
FLAG_LARCH_FLOAT_ABI_DOUBLE = 0x1200

# What `ldconfig -p` prints after the type for each required-ABI byte (elf/cache.c print_entry).
_REQUIRED_NAMES = {
    0: "",
    FLAG_SPARC_LIB64: ",64bit",
    FLAG_IA64_LIB64: ",IA-64",
    FLAG_X8664_LIB64: ",x86-64",
    FLAG_S390_LIB64: ",64bit",
    FLAG_POWERPC_LIB64: ",64bit",
    FLAG_MIPS64_LIBN32: ",N32",
    FLAG_MIPS64_LIBN64: ",64bit",
    FLAG_X8664_LIBX32: ",x32",
    FLAG_ARM_LIBHF: ",hard-float",
    FLAG_AARCH64_LIB64: ",AArch64",
    FLAG_ARM_LIBSF: ",soft-float",
    FLAG_MIPS_LIB32_NAN2008: ",nan2008",
    FLAG_MIPS64_LIBN32_NAN2008: ",N32,nan2008",
    FLAG_MIPS64_LIBN64_NAN2008: ",64bit,nan2008",
    FLAG_RISCV_FLOAT_ABI_SOFT: ",soft-float",
    FLAG_RISCV_FLOAT_ABI_DOUBLE: ",double-float",
    FLAG_LARCH_FLOAT_ABI_SOFT: ",soft-float",
    FLAG_LARCH_FLOAT_ABI_DOUBLE: ",double-float",
}
_TYPE_NAMES = {
    FLAG_LIBC4: "libc4",
    FLAG_ELF: "ELF",
    FLAG_ELF_LIBC5: "libc5",
    FLAG_ELF_LIBC6: "libc6",
}


# hwcap field bits of a new-format entry (sysdeps/generic/dl-cache.h).
DL_CACHE_HWCAP_EXTENSION = 1 << 62
_HWCAP_TLS_MASK = 1 << 63
_ISA_LEVEL_MASK = (1 << 10) - 1
_X86_PLATFORM_FIRST = 48  # _DL_FIRST_PLATFORM on x86
X86_PLATFORMS = ("i586", "i686", "haswell", "xeon_phi")

# e_machine numbers used by cache_arch_flags.

_OLD_MAGIC = b"ld.so-1.7.0"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_HEADER = 16  # magic[11], pad, uint32 nlibs
_OLD_ENTRY = 12  # int32 flags, uint32 key, uint32 value
_NEW_HEADER = 48  # see struct cache_file_new
_NEW_ENTRY = 24  # int32 flags, uint32 key, value, osversion, uint64 hwcap
_EXTENSION_MAGIC = 0xEAA42174  # (uint32_t) -358342284
_EXT_TAG_GENERATOR = 0
_EXT_TAG_GLIBC_HWCAPS = 1
_ENDIAN_INVALID, _ENDIAN_LITTLE, _ENDIAN_BIG = 1, 2, 3

# ----------------------------------------------------------------------------- ld.so.conf


@dataclass(frozen=True)
class LdSoConf:
    """The directories ld.so.conf names, in ldconfig's order, each once."""

    directories: tuple[str, ...]
    files_read: tuple[str, ...]


# C isspace() / isblank(): Python's str.strip() would also eat Unicode and \x1c-\x1f.
_C_SPACE = " \t\n\v\f\r"
_C_BLANK = " \t"


@dataclass
class _ConfReader:
    root: FsRoot
    directories: list[str] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)
    seen_dirs: set[str] = field(default_factory=set)
    # Files being parsed right now: glibc has no guard and recurses until it runs out of
    # file descriptors; we stop at the first repeat instead.
    active: set[str] = field(default_factory=set)

    def parse(self, path: str) -> None:
        try:
            key = self.root.realpath(path)
        except SymlinkLoop:
            log.warning("%s: too many levels of symbolic links, ignored", path)
            return
        if key in self.active:
            log.warning("%s: include cycle, not read again", path)
            return
        if not self.root.is_file(path):
            # ldconfig is silent about a missing file (ENOENT); a directory reads as empty.
            log.debug("%s: no such configuration file", path)
            return
        try:
            data = self.root.read_bytes(path)
        except OSError as exc:
            log.warning("%s: ignoring configuration file that cannot be opened: %s", path, exc)
            return
        self.files_read.append(path)
        self.active.add(key)
        try:
            for lineno, raw in enumerate(data.split(b"\n"), start=1):
                self._line(path, lineno, os.fsdecode(raw))
        finally:
            self.active.discard(key)

    def _line(self, path: str, lineno: int, line: str) -> None:
        # getline() hands C strings around: a NUL ends the line, then '#' starts a comment.
        line = line.split("\0", 1)[0].split("#", 1)[0].lstrip(_C_SPACE)
        if not line:
            return
        if line.startswith("include") and line[7:8] in tuple(_C_BLANK):
            for pattern in re.split("[ \t]", line[8:]):
                if pattern:
                    self._include(path, pattern)
        elif line[:5].lower() == "hwcap" and line[5:6] in tuple(_C_BLANK):
            log.info("%s:%d: hwcap directive ignored", path, lineno)
        else:
            self._add_dir(path, lineno, line)

    def _include(self, conf_path: str, pattern: str) -> None:
        if not pattern.startswith("/"):
            pattern = posixpath.dirname(conf_path) + "/" + pattern
        for match in self.root.glob(pattern):
            self.parse(match)

    def _add_dir(self, conf_path: str, lineno: int, line: str) -> None:
        # add_dir_1: cut an old "dir=TYPE" suffix, then trailing blanks and slashes.
        directory = line.split("=", 1)[0].rstrip(_C_SPACE).rstrip("/")
        if not directory:
            return
        directory = _normalise(directory)
        try:
            key = self.root.realpath(directory)
        except SymlinkLoop:
            key = None
        if key is None or not self.root.is_dir(directory):
            # ldconfig drops what it cannot stat.
            log.debug("%s:%d: cannot stat %s, skipped", conf_path, lineno, directory)
            return
        if key in self.seen_dirs:
            log.debug("%s:%d: %s given more than once", conf_path, lineno, directory)
            return
        self.seen_dirs.add(key)
        self.directories.append(directory)


def _normalise(directory: str) -> str:
    """Drop empty and '.' components; '..' stays, since lexical folding breaks on symlinks."""
    parts = [p for p in directory.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)




def read_ld_so_conf(root: FsRoot, path: str = "/etc/ld.so.conf") -> LdSoConf:
    """The directories of ``path`` and every file it includes; empty when it is missing.

    ldconfig also always adds the system directories (``/lib/<triplet>`` and
    ``/usr/lib/<triplet>`` on Debian); those are not part of this answer.
    """
    reader = _ConfReader(root)
    reader.parse(path)
    return LdSoConf(tuple(reader.directories), tuple(reader.files_read))


# ----------------------------------------------------------------------------- ld.so.cache


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: str
    flags: int
    hwcap: int
    hwcaps_subdir: str | None


def flag_description(flags: int) -> str:
    """The text `ldconfig -p` shows in parentheses for ``flags``, e.g. ``libc6,x86-64``."""
    kind = _TYPE_NAMES.get(flags & FLAG_TYPE_MASK, "unknown")
    required = flags & FLAG_REQUIRED_MASK
    return kind + _REQUIRED_NAMES.get(required, f",{required}")


def _libcmp_key(name: str) -> str:
    """A form equal for two names exactly when glibc's _dl_cache_libcmp says they are equal.

    _dl_cache_libcmp compares runs of digits as numbers, so "libfoo.so.01" matches "libfoo.so.1".
    """
    return re.sub(r"[0-9]+", lambda m: str(int(m.group())), name)


def _hwcap_is_extension(hwcap: int) -> bool:
    """dl_cache_hwcap_extension: bit 62 alone in the upper half, ISA-level bits aside."""
    return ((hwcap >> 32) & ~_ISA_LEVEL_MASK) == (DL_CACHE_HWCAP_EXTENSION >> 32)


def _default_id(arch_flags: int) -> int:
    """_DL_CACHE_DEFAULT_ID: 32-bit ARM keeps the generic value and checks the float ABI apart."""
    if arch_flags & FLAG_REQUIRED_MASK in (FLAG_ARM_LIBHF, FLAG_ARM_LIBSF):
        return FLAG_ELF_LIBC6
    return arch_flags


def _check_flags(flags: int, arch_flags: int) -> bool:
    """_dl_cache_check_flags for the loader whose cache id is ``arch_flags``."""
    if flags == arch_flags:
        return True
    if arch_flags == FLAG_ELF_LIBC6:
        # The generic dl-cache.h (i386 and every arch without its own) also takes plain ELF.
        return flags == FLAG_ELF
    # ARM accepts unmarked objects for either float ABI.
    return _default_id(arch_flags) == FLAG_ELF_LIBC6 and flags == FLAG_ELF_LIBC6


def _platform_bits(arch_flags: int, platform: str | None) -> tuple[int, int]:
    """(_DL_HWCAP_PLATFORM, the loader's platform bit) for legacy platform entries.

    Only x86 has platforms (sysdeps/x86/dl-procinfo.h); elsewhere the mask is 0 and any
    platform bit is simply excluded, as on an architecture without _DL_PLATFORMS_COUNT.
    """
    if arch_flags in (FLAG_X8664_LIB64 | FLAG_ELF_LIBC6, FLAG_X8664_LIBX32 | FLAG_ELF_LIBC6):
        count, start = 4, 2  # x86-64 knows haswell and xeon_phi
    elif arch_flags == FLAG_ELF_LIBC6:
        count, start = 2, 0  # i386 knows i586 and i686
    else:
        return 0, 0
    mask = ((1 << count) - 1) << _X86_PLATFORM_FIRST
    if platform in X86_PLATFORMS[start:count]:
        return mask, 1 << (_X86_PLATFORM_FIRST + X86_PLATFORMS.index(platform))
    return mask, -1  # unknown platform: ld.so uses (uint64_t) -1, which matches nothing


def _isa_levels(hwcaps_priority: Sequence[str]) -> int:
    """The CPU's x86 ISA level bits (baseline always), as implied by the usable subdirectories."""
    levels = 1
    for level in (2, 3, 4):
        if f"x86-64-v{level}" in hwcaps_priority:
            levels |= 1 << (level - 1)
    return levels


@dataclass(frozen=True)
class LdCache:
    """A parsed ld.so.cache: the entries the loader would use, in file order."""

    entries: tuple[CacheEntry, ...]
    format: str
    generator: str | None = None
    _index: dict[str, tuple[CacheEntry, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        groups: dict[str, list[CacheEntry]] = {}
        for entry in self.entries:
            groups.setdefault(_libcmp_key(entry.key), []).append(entry)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in groups.items()})

    def lookup(
        self,
        name: str,
        *,
        arch_flags: int,
        hwcaps_priority: Sequence[str],
        hwcap: int = 0,
        platform: str | None = None,
        glibc: tuple[int, int] = DEFAULT_GLIBC,
    ) -> str | None:
        """The path ld.so takes from the cache for ``name``, or None.

        ``arch_flags`` is the loader's cache id (see ``cache_arch_flags``); ``hwcaps_priority``
        the glibc-hwcaps subdirectories it uses, best first. ``hwcap`` and ``platform`` only
        matter for entries from legacy hwcap subdirectories: ``hwcap`` is the loader's
        ``GLRO(dl_hwcap) & hwcap_mask`` (``HWCAP_X86_64`` on x86-64), ``platform`` its
        AT_PLATFORM name (``"haswell"``...). ``glibc`` is the loader's release, whose
        search_cache the lookup follows: before 2.33 no glibc-hwcaps entries (their bit 62 is
        excluded like any unknown hwcap bit); from 2.37 no entry with any legacy bit, TLS
        and platform bits included.
        """
        group = self._index.get(_libcmp_key(name))
        if not group:
            return None
        if glibc < (2, 33):
            return _search_before_hwcaps(group, arch_flags, hwcap, platform)
        if self.format == "old":
            return _search_old(group, arch_flags)
        return _search_new(group, arch_flags, hwcaps_priority, hwcap, platform, glibc)


def _search_old(group: Sequence[CacheEntry], arch_flags: int) -> str | None:
    """search_cache with the 12-byte entries from glibc 2.33 on: the last usable one, unless an
    exact id stops it (older loaders keep the first, see _search_before_hwcaps)."""
    best = None
    for entry in group:
        if _check_flags(entry.flags, arch_flags):
            best = entry.path
            if entry.flags == _default_id(arch_flags):
                break
    return best


def _search_before_hwcaps(
    group: Sequence[CacheEntry], arch_flags: int, hwcap: int, platform: str | None
) -> str | None:
    """search_cache with the 24-byte entries of glibc up to 2.32 (elf/dl-cache.c): after a
    first usable entry only an exact id may still replace it."""
    platform_mask, platform_bit = _platform_bits(arch_flags, platform)
    exclude = ~(hwcap | platform_mask | _HWCAP_TLS_MASK)
    exact = _default_id(arch_flags)
    best: str | None = None
    for entry in group:
        if not _check_flags(entry.flags, arch_flags):
            continue
        if best is not None and entry.flags != exact:
            continue
        if entry.hwcap & exclude:
            continue  # a glibc-hwcaps entry of a newer ldconfig too (bit 62)
        plat = entry.hwcap & platform_mask
        if plat and plat != platform_bit:
            continue
        best = entry.path
        if entry.flags == exact:
            break
    return best


def _search_new(
    group: Sequence[CacheEntry],
    arch_flags: int,
    hwcaps_priority: Sequence[str],
    hwcap: int,
    platform: str | None,
    glibc: tuple[int, int] = DEFAULT_GLIBC,
) -> str | None:
    """search_cache with the 24-byte entries (glibc 2.33-2.41 elf/dl-cache.c), step for step."""
    priorities = {sub: rank for rank, sub in enumerate(hwcaps_priority, start=1)}
    isa_levels = _isa_levels(hwcaps_priority)
    platform_mask, platform_bit = _platform_bits(arch_flags, platform)
    # 2.37 removed the legacy hwcaps: an entry with any bit set (TLS too) is skipped.
    exclude = ~0 if glibc >= (2, 37) else ~(hwcap | platform_mask | _HWCAP_TLS_MASK)
    best: str | None = None
    best_priority = 0
    for entry in group:
        if not _check_flags(entry.flags, arch_flags):
            continue
        named = entry.hwcaps_subdir is not None
        if named:
            needed = 1 << ((entry.hwcap >> 32) & _ISA_LEVEL_MASK)
            if needed & isa_levels != needed:
                continue
        elif best is not None:
            break  # hwcaps entries come first; one of them already won
        elif entry.hwcap & exclude:
            continue
        plat = entry.hwcap & platform_mask
        if plat and plat != platform_bit:
            continue
        if named:
            rank = priorities.get(entry.hwcaps_subdir or "", 0)
            if rank == 0 or (best is not None and rank >= best_priority):
                continue
            best_priority = rank
        best = entry.path
        if not named and entry.flags == _default_id(arch_flags):
            break
    return best


class _Reader:
    """Bounds-checked access to the cache bytes; every failure names the file."""

    def __init__(self, data: bytes, origin: str, endian: str = "<") -> None:
        self.data = data
        self.origin = origin
        self.endian = endian

    def fail(self, reason: str) -> BadLoaderConfig:
        return BadLoaderConfig(f"{self.origin}: {reason}")

    def need(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise self.fail(f"{what} runs past the end of the file ({len(self.data)} bytes)")

    def unpack(self, fmt: str, offset: int, what: str) -> tuple[int, ...]:
        self.need(offset, struct.calcsize(self.endian + fmt), what)
        return struct.unpack_from(self.endian + fmt, self.data, offset)

    def string(self, offset: int, what: str) -> str:
        self.need(offset, 1, what)
        end = self.data.find(b"\0", offset)
        if end < 0:
            raise self.fail(f"{what} at offset {offset} is not NUL-terminated")
        return os.fsdecode(self.data[offset:end])


def _align8(value: int) -> int:
    return (value + 7) & ~7


def parse_ld_cache(data: bytes, *, origin: str) -> LdCache:
    """Parse an ld.so.cache in the old, new or old+new format.

    For old+new files the loader reads only the new part, so only its entries are kept.
    The endianness comes from the new header's flags (little when unset, as ldconfig < 2.33
    ran on the machine it wrote for); a cache marked invalid is ignored like ld.so ignores it.
    """
    reader = _Reader(data, origin)
    if data.startswith(_NEW_MAGIC):
        return _parse_new(reader, 0, "new")
    if not data.startswith(_OLD_MAGIC):
        raise reader.fail("not an ld.so.cache (unknown magic)")
    (nlibs,) = reader.unpack("I", len(_OLD_MAGIC) + 1, "old cache header")
    reader.need(_OLD_HEADER, nlibs * _OLD_ENTRY, f"old cache table of {nlibs} entries")
    new_at = _align8(_OLD_HEADER + nlibs * _OLD_ENTRY)
    if data[new_at : new_at + len(_NEW_MAGIC)] == _NEW_MAGIC and len(data) >= new_at + _NEW_HEADER:
        return _parse_new(reader, new_at, "old+new")
    return _parse_old(reader, nlibs)


def _parse_old(reader: _Reader, nlibs: int) -> LdCache:
    strings = _OLD_HEADER + nlibs * _OLD_ENTRY
    entries = []
    for i in range(nlibs):
        at = _OLD_HEADER + i * _OLD_ENTRY
        flags, key, value = reader.unpack("iII", at, f"old entry {i}")
        entries.append(
            CacheEntry(
                key=reader.string(strings + key, f"old entry {i} name"),
                path=reader.string(strings + value, f"old entry {i} path"),
                flags=flags,
                hwcap=0,
                hwcaps_subdir=None,
            )
        )
    return LdCache(tuple(entries), "old")


def _parse_new(reader: _Reader, base: int, fmt: str) -> LdCache:
    reader.need(base, _NEW_HEADER, "new cache header")
    endian_flag = reader.data[base + 28] & 3
    if endian_flag == _ENDIAN_INVALID:
        log.warning("%s: cache marked invalid, the loader ignores it", reader.origin)
        return LdCache((), fmt)
    reader.endian = ">" if endian_flag == _ENDIAN_BIG else "<"
    nlibs, _len_strings = reader.unpack("II", base + 20, "new cache header")
    (ext_offset,) = reader.unpack("I", base + 32, "new cache header")
    table = base + _NEW_HEADER
    reader.need(table, nlibs * _NEW_ENTRY, f"new cache table of {nlibs} entries")
    generator, subdirs = _parse_extensions(reader, ext_offset)
    entries = [_new_entry(reader, base, table + i * _NEW_ENTRY, i, subdirs) for i in range(nlibs)]
    return LdCache(tuple(entries), fmt, generator)


def _new_entry(
    reader: _Reader, base: int, at: int, i: int, subdirs: tuple[str, ...] | None
) -> CacheEntry:
    # String offsets count from the new header, which is the file start unless old+new.
    flags, key, value, _osversion, hwcap = reader.unpack("iIIIQ", at, f"entry {i}")
    subdir = None
    if _hwcap_is_extension(hwcap):
        index = hwcap & 0xFFFFFFFF
        if subdirs is None or index >= len(subdirs):
            raise reader.fail(
                f"entry {i} names glibc-hwcaps subdirectory #{index}, not in the file"
            )
        subdir = subdirs[index]
    return CacheEntry(
        key=reader.string(base + key, f"entry {i} name"),
        path=reader.string(base + value, f"entry {i} path"),
        flags=flags,
        hwcap=hwcap,
        hwcaps_subdir=subdir,
    )


def _parse_extensions(reader: _Reader, offset: int) -> tuple[str | None, tuple[str, ...] | None]:
    """cache_extension_load: (generator string, glibc-hwcaps subdirectory names)."""
    if offset == 0:
        return None, None
    if offset % 4:
        raise reader.fail(f"extension directory at misaligned offset {offset}")
    magic, count = reader.unpack("II", offset, "extension directory")
    if magic != _EXTENSION_MAGIC:
        raise reader.fail(f"extension directory at offset {offset} has a bad magic number")
    reader.need(offset + 8, count * 16, f"extension directory of {count} sections")
    generator: str | None = None
    subdirs: tuple[str, ...] | None = None
    for i in range(count):
        tag, _flags, sec_offset, size = reader.unpack("IIII", offset + 8 + 16 * i, "extension")
        reader.need(sec_offset, size, f"extension section {i}")
        if tag == _EXT_TAG_GENERATOR:
            generator = os.fsdecode(reader.data[sec_offset : sec_offset + size].rstrip(b"\0"))
        elif tag == _EXT_TAG_GLIBC_HWCAPS:
            subdirs = _hwcaps_section(reader, sec_offset, size)
    return generator, subdirs


def _hwcaps_section(reader: _Reader, offset: int, size: int) -> tuple[str, ...]:
    # An array of uint32 string offsets counted from the file start (glibc_hwcaps_compare).
    if size == 0 or offset % 4 or size % 4:
        raise reader.fail(f"glibc-hwcaps section at offset {offset} is misaligned or empty")
    count = size // 4
    indices = reader.unpack(f"{count}I", offset, "glibc-hwcaps section")
    return tuple(reader.string(i, "glibc-hwcaps subdirectory name") for i in indices)


def read_ld_cache(root: FsRoot, path: str = "/etc/ld.so.cache") -> LdCache | None:
    """The root's cache, or None when the loader would find none (absent, unreadable, empty)."""
    if not root.is_file(path):
        log.debug("%s: no ld.so.cache", path)
        return None
    try:
        data = root.read_bytes(path)
    except OSError as exc:
        log.warning("%s: cannot read, the loader would see no cache: %s", path, exc)
        return None
    if not data:
        log.warning("%s: empty, the loader ignores it", path)
        return None
    return parse_ld_cache(data, origin=path)


def cache_arch_flags(elf_class: int, machine: int, *, e_flags: int = 0) -> int:
    """The cache id (_DL_CACHE_DEFAULT_ID and the ldconfig flags) of a loader for this ELF kind.

    Architectures with no dl-cache.h of their own use the generic id, FLAG_ELF_LIBC6.
    """
    is64 = elf_class == 64
    if machine == EM_X86_64:
        return (FLAG_X8664_LIB64 if is64 else FLAG_X8664_LIBX32) | FLAG_ELF_LIBC6
    if machine == EM_ARM:
        hard = e_flags & 0x400  # EF_ARM_ABI_FLOAT_HARD
        return (FLAG_ARM_LIBHF if hard else FLAG_ARM_LIBSF) | FLAG_ELF_LIBC6
    if machine == EM_MIPS:
        return _mips_flags(is64, e_flags) | FLAG_ELF_LIBC6
    if machine == EM_RISCV:
        double = e_flags & 0x6 == 0x4  # EF_RISCV_FLOAT_ABI_DOUBLE
        return (FLAG_RISCV_FLOAT_ABI_DOUBLE if double else FLAG_RISCV_FLOAT_ABI_SOFT) | 3
    if machine == EM_LOONGARCH:
        double = e_flags & 0x7 == 0x3  # EF_LOONGARCH_ABI_DOUBLE_FLOAT
        return (FLAG_LARCH_FLOAT_ABI_DOUBLE if double else FLAG_LARCH_FLOAT_ABI_SOFT) | 3
    required = {
        EM_AARCH64: FLAG_AARCH64_LIB64,
        EM_PPC64: FLAG_POWERPC_LIB64,
        EM_S390: FLAG_S390_LIB64,
        EM_SPARCV9: FLAG_SPARC_LIB64,
        EM_IA_64: FLAG_IA64_LIB64,
    }.get(machine, 0)
    return (required if is64 else 0) | FLAG_ELF_LIBC6


def _mips_flags(is64: bool, e_flags: int) -> int:
    nan2008 = bool(e_flags & 0x400)  # EF_MIPS_NAN2008
    if is64:
        return FLAG_MIPS64_LIBN64_NAN2008 if nan2008 else FLAG_MIPS64_LIBN64
    if e_flags & 0x20:  # EF_MIPS_ABI2: n32
        return FLAG_MIPS64_LIBN32_NAN2008 if nan2008 else FLAG_MIPS64_LIBN32
    return FLAG_MIPS_LIB32_NAN2008 if nan2008 else 0
