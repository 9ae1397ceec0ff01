"""Which dynamic loader a program gets, and how that loader was built.

A program names its loader in PT_INTERP. What that loader does depends on facts compiled into
it, so they are read from the root's own loader file rather than assumed:

- glibc: its release (see ``glibc_release``: glibc-hwcaps folders from 2.33, legacy hwcap
  folders up to 2.36, ld.so.cache filtering per release), its system directories (Debian's
  ``/lib/x86_64-linux-gnu/ /usr/lib/x86_64-linux-gnu/ /lib/ /usr/lib/``, Fedora's ``/lib64/
  /usr/lib64/``), which also give ``$LIB``; the root's ld.so.cache; the hwcaps subdirectories
  for this CPU.
- musl: its architecture name and the ``etc/ld-musl-$ARCH.path`` file beside its prefix.

Libraries have no PT_INTERP; they get the loader their libc implies, as ``ldd`` does.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cache, cached_property

from bundler.errors import ScratchpackError
from bundler.loader import hwcaps
from bundler.loader.elf import (
    EM_386,
    EM_AARCH64,
    EM_ARM,
    EM_PPC64,
    EM_RISCV,
    EM_S390,
    EM_X86_64,
    ElfIdent,
    ElfInfo,
    read_elf,
)
from bundler.loader.ldconfig import (
    DEFAULT_GLIBC,
    X86_PLATFORMS,
    LdCache,
    cache_arch_flags,
    read_ld_cache,
)
from bundler.loader.rootfs import FsRoot

log = logging.getLogger(__name__)



class NamedEnum(str, Enum):
    """An enum whose members are their values wherever text is made (--json, logs)."""

    def __str__(self) -> str:
        return str(self.value)


class Flavor(NamedEnum):
    """Whose dynamic loader a program gets."""

    GLIBC = "glibc"
    MUSL = "musl"


GLIBC, MUSL = Flavor.GLIBC, Flavor.MUSL

# The loader each glibc port installs, keyed by (e_machine, ELF class).
GLIBC_INTERPRETERS: dict[tuple[int, int], str] = {
    (EM_X86_64, 64): "/lib64/ld-linux-x86-64.so.2",
    (EM_X86_64, 32): "/libx32/ld-linux-x32.so.2",
    (EM_386, 32): "/lib/ld-linux.so.2",
    (EM_AARCH64, 64): "/lib/ld-linux-aarch64.so.1",
    (EM_ARM, 32): "/lib/ld-linux-armhf.so.3",
    (EM_PPC64, 64): "/lib64/ld64.so.2",
    (EM_S390, 64): "/lib/ld64.so.1",
    (EM_RISCV, 64): "/lib/ld-linux-riscv64-lp64d.so.1",
}
MUSL_ARCHES: dict[tuple[int, int], str] = {
    (EM_X86_64, 64): "x86_64",
    (EM_386, 32): "i386",
    (EM_AARCH64, 64): "aarch64",
    (EM_ARM, 32): "armhf",
    (EM_PPC64, 64): "powerpc64le",
    (EM_S390, 64): "s390x",
    (EM_RISCV, 64): "riscv64",
}
MUSL_DEFAULT_PATH = ("/lib", "/usr/local/lib", "/usr/lib")

_VERSION = re.compile(rb"release version (\d+)\.(\d+)")
# ld-2.31.so: the file every glibc up to 2.33 installed its loader as (2.34 dropped it).
_LOADER_FILE = re.compile(r"^ld-(\d+)\.(\d+)\.so$")
_GLIBC_NODE = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.\d+)?$")
# SYSTEM_DIRS in glibc's trusted-dirs.h: NUL-separated absolute directories, each ending in '/'.
_SYSTEM_DIRS = re.compile(rb"(?:/[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*/\x00){2,}")


@dataclass(frozen=True)
class SearchSettings:
    """Everything outside the root that changes a search; read once at the CLI's edge."""

    ld_library_path: str | None = None  # raw, as in the environment
    cpu_flags: frozenset[str] = frozenset()  # the host CPU's, from /proc/cpuinfo
    # e_machine values the host runs natively, whose loaders see cpu_flags; None: every one.
    host_machines: frozenset[int] | None = None
    cpu_features: frozenset[str] | None = None  # --cpu-features: the target CPU, any machine
    hwcaps: tuple[str, ...] | None = None  # glibc-hwcaps levels; None: what cpu_flags support
    cwd: str = "/"  # relative search directories are relative to the process's directory
    # Beyond DT_NEEDED: .note.dlopen entries of these priorities, and libgcc_s.so.1, which
    # glibc's libc dlopen()s for pthread_cancel and unwinding.
    dlopen_priorities: frozenset[str] = frozenset({"required", "recommended"})
    libgcc_s: bool = True


@dataclass(frozen=True)
class Loader:
    """One dynamic loader of the root, with the facts that steer its search."""

    flavor: Flavor
    interpreter: str  # image path, as PT_INTERP spells it
    machine: int
    elf_class: int
    little_endian: bool = True
    version: tuple[int, int] = (0, 0)  # glibc only
    version_from: str = ""  # where the release was read (see glibc_release)
    system_dirs: tuple[str, ...] = ()  # glibc: default dirs; musl: the sys_path
    lib_token: str = "lib"  # what $LIB expands to
    platform: str = ""  # what $PLATFORM expands to
    subdirs: tuple[str, ...] = ("",)  # hwcaps subdirectories tried in every directory, "" last
    cache: LdCache | None = field(default=None, compare=False)
    cache_flags: int = 0
    cache_hwcaps: tuple[str, ...] = ()
    cache_hwcap: int = 0  # AT_HWCAP & HWCAP_IMPORTANT: legacy cache entries taken (< 2.37)
    cache_platform: str | None = None  # a legacy platform name the cache knows ("i686")

    @property
    def is_musl(self) -> bool:
        return self.flavor == MUSL


def flavor_of(interpreter: str) -> Flavor:
    return MUSL if posixpath.basename(interpreter).startswith("ld-musl-") else GLIBC


def implied_interpreter(info: ElfInfo) -> str | None:
    """The loader ldd would use for an object without PT_INTERP (a shared library)."""
    key = (info.ident.machine, info.ident.elf_class)
    musl = any(n == "libc.so" or n.startswith("libc.musl-") for n in info.needed)
    if musl and key in MUSL_ARCHES:
        return f"/lib/ld-musl-{MUSL_ARCHES[key]}.so.1"
    return GLIBC_INTERPRETERS.get(key)


class LoaderFactory:
    """Builds and caches the Loader of each interpreter path within one root."""

    def __init__(self, root: FsRoot, settings: SearchSettings) -> None:
        self.root = root
        self.settings = settings
        self._get = cache(self._build)

    def get(self, interpreter: str, ident: ElfIdent) -> Loader:
        key = (interpreter, ident.machine, ident.elf_class, ident.flags, ident.little_endian)
        loader: Loader = self._get(*key)
        return loader

    def _build(
        self, interpreter: str, machine: int, elf_class: int, e_flags: int, little_endian: bool
    ) -> Loader:
        if flavor_of(interpreter) == MUSL:
            loader = self._musl(interpreter, machine, elf_class)
        else:
            loader = self._glibc(interpreter, machine, elf_class, e_flags)
        return replace(loader, little_endian=little_endian)

    def _loader_bytes(self, interpreter: str) -> bytes:
        try:
            return self.root.read_bytes(interpreter) if self.root.is_file(interpreter) else b""
        except (OSError, ScratchpackError):
            return b""

    def _glibc(self, interpreter: str, machine: int, elf_class: int, e_flags: int) -> Loader:
        data = self._loader_bytes(interpreter)
        system_dirs = _system_dirs(data) or self._fallback_system_dirs(elf_class)
        version, source = self.glibc_release(interpreter, data, system_dirs)
        log.info("%s: glibc %d.%d, from %s", interpreter, *version, source)
        settings = self.settings
        cpu = hwcaps.target_features(
            machine, settings.cpu_flags, settings.host_machines, settings.cpu_features
        )
        levels = (
            settings.hwcaps
            if settings.hwcaps is not None
            else hwcaps.supported_subdirs(machine, cpu)
        )
        if version < (2, 33):
            levels = ()  # glibc-hwcaps subdirectories came with 2.33
        legacy = hwcaps.legacy_subdirs(hwcaps.legacy_names(machine, elf_class, version, cpu))
        subdirs = tuple(f"glibc-hwcaps/{name}" for name in levels) + (legacy or ("",))
        platform = hwcaps.at_platform(machine, elf_class, version, cpu)
        return Loader(
            flavor=GLIBC,
            interpreter=interpreter,
            machine=machine,
            elf_class=elf_class,
            version=version,
            version_from=source,
            system_dirs=system_dirs,
            lib_token=system_dirs[0].strip("/") if system_dirs else "lib",
            platform=platform,
            subdirs=subdirs,
            cache=self._ld_cache,
            cache_flags=cache_arch_flags(elf_class, machine, e_flags=e_flags),
            cache_hwcaps=levels,
            cache_hwcap=hwcaps.legacy_hwcap_mask(machine, elf_class, version, cpu),
            # Only x86 loaders know platform bits in the cache (i586, i686, haswell, xeon_phi).
            cache_platform=platform if platform in X86_PLATFORMS else None,
        )

    def glibc_release(
        self, interpreter: str, data: bytes, system_dirs: tuple[str, ...]
    ) -> tuple[tuple[int, int], str]:
        """The glibc release of a loader and where it was read, the first source that answers:

        1. the loader's own text "release version 2.36" (what ``ld.so --version`` prints;
           Debian's 2.36 and 2.41 loaders carry it, its 2.31 one does not);
        2. the file PT_INTERP finally names, ``ld-2.31.so`` (every glibc up to 2.33);
        3. the same text in ``libc.so.6`` of the first system directory holding one (every
           release: libc.so.6 prints it when run);
        4. the highest ``GLIBC_2.N`` that ``libc.so.6`` defines: a lower bound only, as not
           every release adds one (2.37 defines nothing new);
        5. DEFAULT_GLIBC.
        """
        found = _release_text(data)
        if found:
            return found, "the loader's text"
        found = self._release_of_file_name(interpreter)
        if found:
            return found, "the loader's file name"
        libcs = (f"{d}/libc.so.6" for d in system_dirs)
        libc = next((path for path in libcs if self.root.is_file(path)), None)
        if libc is not None:
            found = _release_text(self._loader_bytes(libc))
            if found:
                return found, f"{libc}'s text"
            found = self._highest_version_node(libc)
            if found:
                return found, f"the versions {libc} defines"
        return DEFAULT_GLIBC, "no source (assumed)"

    def _release_of_file_name(self, interpreter: str) -> tuple[int, int] | None:
        try:
            name = posixpath.basename(self.root.realpath(interpreter))
        except ScratchpackError:
            return None
        match = _LOADER_FILE.match(name)
        return (int(match.group(1)), int(match.group(2))) if match else None

    def _highest_version_node(self, libc: str) -> tuple[int, int] | None:
        try:
            defined = read_elf(self.root.real_host_path(libc), libc).version_defs or ()
        except (OSError, ScratchpackError):
            return None
        found = [_GLIBC_NODE.match(name) for name in defined]
        return max(((int(m.group(1)), int(m.group(2))) for m in found if m), default=None)

    @cached_property
    def _ld_cache(self) -> LdCache | None:
        """One root has one cache, whatever the number of loaders that read it."""
        return read_ld_cache(self.root)

    def _fallback_system_dirs(self, elf_class: int) -> tuple[str, ...]:
        """When the loader file is absent or unreadable: the layout the root itself shows."""
        if elf_class == 64 and self.root.is_dir("/usr/lib64"):
            return ("/lib64", "/usr/lib64")
        return ("/lib", "/usr/lib")

    def _musl(self, interpreter: str, machine: int, elf_class: int) -> Loader:
        name = posixpath.basename(interpreter)
        arch = name[len("ld-musl-") :].split(".so", 1)[0]
        return Loader(
            flavor=MUSL,
            interpreter=interpreter,
            machine=machine,
            elf_class=elf_class,
            system_dirs=self._musl_sys_path(interpreter, arch),
        )

    def _musl_sys_path(self, interpreter: str, arch: str) -> tuple[str, ...]:
        # musl reads PREFIX/etc/ld-musl-ARCH.path, PREFIX being its own path less two components
        # ("/lib/ld-musl-x86_64.so.1" -> ""); an existing but empty file means no directories.
        prefix = posixpath.dirname(posixpath.dirname(interpreter))
        prefix = "" if prefix == "/" else prefix
        path_file = f"{prefix}/etc/ld-musl-{arch}.path"
        if not self.root.is_file(path_file):
            return MUSL_DEFAULT_PATH
        text = self.root.read_bytes(path_file).decode("utf-8", "surrogateescape")
        log.debug("musl search path from %s", path_file)
        return tuple(p for p in re.split(r"[:\n]", text) if p)


def _release_text(data: bytes) -> tuple[int, int] | None:
    match = _VERSION.search(data)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _system_dirs(data: bytes) -> tuple[str, ...]:
    match = _SYSTEM_DIRS.search(data)
    if not match:
        return ()
    parts = match.group(0).split(b"\x00")
    return tuple(p.decode().rstrip("/") for p in parts if p)
