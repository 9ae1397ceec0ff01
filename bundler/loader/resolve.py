"""Resolution: the file the dynamic loader maps for every DT_NEEDED name, in load order.

This follows glibc's ``_dl_map_object`` (elf/dl-load.c, 2.36) and musl's ``load_library``
(ldso/dynlink.c) rule for rule; the docstrings of the search functions cite the order. It is a
pure function of the ELF facts, the root and the SearchSettings: nothing here reads the
environment, and every file access goes through the FsRoot.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from bundler.errors import BadElf, ScratchpackError
from bundler.loader.elf import ET_DYN, ET_EXEC, ElfInfo, RawHeader, is_elf, peek_header, read_elf
from bundler.loader.ldconfig import LdSoConf, read_ld_so_conf
from bundler.loader.ldso import (
    Flavor,
    Loader,
    LoaderFactory,
    SearchSettings,
    implied_interpreter,
)
from bundler.loader.rootfs import FsRoot, SymlinkLoop

log = logging.getLogger(__name__)

ELFOSABI_SYSV, ELFOSABI_GNU = 0, 3
LIBC_ABI_MAX = 4  # glibc 2.35+: default, unique, ifunc, absolute
# "lib" followed by one of these is musl's libc itself, whatever the rest of the name.
MUSL_RESERVED = ("c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet.")


@dataclass(frozen=True)
class Library:
    """One DT_NEEDED name and the file the loader uses for it."""

    name: str
    path: str | None  # image path as the loader opens it; None when not found
    needed_by: str
    chain: tuple[str, ...]  # needed_by, its loader, ... up to the program
    error: str | None = None  # the loader would stop at this file (e.g. "invalid ELF header")
    via: str = ""  # rpath, LD_LIBRARY_PATH, runpath, ld.so.cache, default, path, loader;
    # "dlopen via ..." / "libc dlopen via ..." for what is loaded at run time

    @property
    def ok(self) -> bool:
        return self.path is not None and self.error is None


@dataclass(frozen=True)
class Closure:
    """Everything the loader maps to start one program."""

    program: str  # image path
    info: ElfInfo
    interpreter: str | None
    flavor: Flavor | None  # None for static programs
    libraries: tuple[Library, ...]
    default_dirs: tuple[str, ...] = ()  # where this loader looks without any configuration


class _Object:
    """A loaded object while one program is resolved (glibc's link_map, musl's dso)."""

    __slots__ = ("info", "loader", "origin", "path")

    def __init__(self, path: str, info: ElfInfo, loader: _Object | None, origin: str) -> None:
        self.path = path
        self.info = info
        self.loader = loader
        self.origin = origin

    def chain(self) -> tuple[str, ...]:
        links: list[str] = []
        node: _Object | None = self
        while node is not None:
            links.append(node.path)
            node = node.loader
        return tuple(links)


class _Skip:
    """A candidate the loader passes over (absent, other ELF class or machine)."""


SKIP = _Skip()
Candidate = tuple[str, ElfInfo] | tuple[str, str] | _Skip  # (path, info) | (path, error) | SKIP


class Resolver:
    """Resolves programs inside one root. Reuse it: ELF facts and searches are cached."""

    def __init__(self, root: FsRoot, settings: SearchSettings) -> None:
        self.root = root
        self.settings = settings
        self.loaders = LoaderFactory(root, settings)
        self._elf: dict[str, ElfInfo | BadElf] = {}
        self._searches: dict[tuple[object, ...], Candidate] = {}
        self._conf: LdSoConf | None = None

    # -- ELF facts, cached by resolved path ------------------------------------------------

    def elf(self, image_path: str) -> ElfInfo:
        """ELF facts of the file an image path names (links followed inside the root)."""
        resolved = self.root.realpath(image_path)
        found = self._elf.get(resolved)
        if found is None:
            try:
                found = read_elf(self.root.host_path(resolved), image_path)
            except BadElf as exc:
                found = exc
            except OSError as exc:
                found = BadElf(image_path, exc.strerror or str(exc))
            self._elf[resolved] = found
        if isinstance(found, BadElf):
            raise BadElf(image_path, found.reason)
        return found

    def loader_of(self, program: str) -> Loader | None:
        """The loader a program (or a library, by its libc) runs under; None when static."""
        info = self.elf(program)
        interpreter = info.interpreter or implied_interpreter(info)
        return self.loaders.get(interpreter, info.ident) if interpreter else None

    def find_library(self, name: str, program: str) -> str | None:
        """Where dlopen(name) from the C library finds a file in a process of ``program``:
        LD_LIBRARY_PATH, ld.so.cache, the default directories (libc has no RPATH/RUNPATH)."""
        loader = self.loader_of(program)
        if loader is None:
            return None
        ld_path = self.settings.ld_library_path
        steps: list[tuple[str, ...] | None] = []
        if ld_path:
            separators = ":\n" if loader.is_musl else ":;"
            steps.append(tuple(p for p in _split(ld_path, separators) if p.startswith("/")))
        if not loader.is_musl:
            steps.append(None)
        steps.append(loader.system_dirs)
        for dirs in steps:
            found = (
                self.search_cache(name, loader, False)
                if dirs is None
                else self.search_dirs(name, dirs, loader)
            )
            if not isinstance(found, _Skip):
                path, outcome = found
                return path if not isinstance(outcome, str) else None
        return None

    def conf_hint(self, name: str, program: str) -> str | None:
        """Why a missing library may be missing: ld.so.conf names a directory that holds one
        the program's loader would accept, but the loader reads only ld.so.cache, which is
        absent or older than that directory."""
        if self._conf is None:
            self._conf = read_ld_so_conf(self.root)
        loader = self.loader_of(program)
        if "/" in name or loader is None:
            return None
        for directory in self._conf.directories:
            try:
                found = self.verify(posixpath.join(directory, name), loader)
            except ScratchpackError:
                continue  # a malformed file there is no answer either
            if not isinstance(found, _Skip) and not isinstance(found[1], str):
                return (
                    f"{directory} (in ld.so.conf) has {name}, but ld.so.cache does not list it: "
                    f"run ldconfig{' -r ROOT' if not self.root.is_host else ''} first"
                )
        return None

    def prime(self, infos: dict[str, ElfInfo]) -> None:
        """Accept ELF facts read elsewhere (by worker processes), keyed by resolved path."""
        self._elf.update(infos)

    # -- one program ---------------------------------------------------------------------------

    def resolve(self, program: str) -> Closure:
        """The closure of an ELF program or library at image path ``program``."""
        info = self.elf(program)
        if info.ident.file_type not in (ET_EXEC, ET_DYN):
            kind = {1: "a relocatable object", 4: "a core dump"}.get(info.ident.file_type, "")
            raise BadElf(program, f"{kind or 'an ELF file'} is not a program or library")
        interpreter = info.interpreter or (implied_interpreter(info) if info.needed else None)
        if interpreter is None:
            return Closure(program, info, None, None, ())
        loader = self.loaders.get(interpreter, info.ident)
        main = _Object(program, info, None, posixpath.dirname(self.root.realpath(program)))
        return _Walk(self, loader, main).run()

    # -- searching ---------------------------------------------------------------------------

    def verify(self, path: str, loader: Loader) -> Candidate:
        """What the loader does with a candidate file: use it, skip it, or stop with an error."""
        try:
            st = self.root.stat(path)
        except SymlinkLoop:
            return SKIP
        if st is None:
            return SKIP
        try:
            header = peek_header(self.root.real_host_path(path))
        except OSError as exc:
            return (path, f"cannot read file data: {_strerror(exc)}")
        verdict = (_musl_verdict if loader.is_musl else _glibc_verdict)(header, loader)
        if verdict is not None:
            return SKIP if isinstance(verdict, _Skip) else (path, verdict)
        # The loader would map this file; if it is malformed past the header, that is bad input
        # (a one-line error naming it), not a library the loader merely skips.
        info = self.elf(path)
        if info.ident.file_type == ET_EXEC and not loader.is_musl:
            return (path, "cannot dynamically load executable")
        return (path, info)

    def search_dirs(self, name: str, dirs: tuple[str, ...], loader: Loader) -> Candidate:
        """The first acceptable ``DIR/SUBDIR/name``, hwcaps subdirectories first (open_path)."""
        key = ("dirs", name, dirs, loader)
        found = self._searches.get(key)
        if found is None:
            found = SKIP
            subdirs = ("",) if loader.is_musl else loader.subdirs
            for directory in dirs:
                for sub in subdirs:
                    base = f"{directory}/{sub}" if sub else directory
                    found = self.verify(_join(base, name), loader)
                    if found is not SKIP:
                        break
                if found is not SKIP:
                    break
            self._searches[key] = found
        return found

    def search_cache(self, name: str, loader: Loader, nodeflib: bool) -> Candidate:
        """ld.so.cache; under DF_1_NODEFLIB an entry in a system directory is not used."""
        key = ("cache", name, loader, nodeflib)
        found = self._searches.get(key)
        if found is None:
            found = SKIP
            cached = (
                loader.cache.lookup(
                    name,
                    arch_flags=loader.cache_flags,
                    hwcaps_priority=loader.cache_hwcaps,
                    hwcap=loader.cache_hwcap,
                    platform=loader.cache_platform,
                    glibc=loader.version,
                )
                if loader.cache is not None
                else None
            )
            if (
                cached
                and nodeflib
                and any(cached.startswith(d.rstrip("/") + "/") for d in loader.system_dirs)
            ):
                cached = None
            if cached:
                found = self.verify(cached, loader)
            self._searches[key] = found
        return found


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if directory != "/" else f"/{name}"


def _strerror(exc: OSError) -> str:
    # ld.so has no strerror table; it prints "Error 21" where libc would say "Is a directory".
    return f"Error {exc.errno}" if exc.errno else str(exc)


def _glibc_verdict(header: RawHeader, loader: Loader) -> str | _Skip | None:
    """glibc's open_verify (2.36), check for check and in its order.

    Returns None to go on and use the file, SKIP when the search passes over it (another
    class or machine: 32- and 64-bit libraries share directories), or the message with which
    the load stops."""
    le = loader.little_endian
    data = header.data
    if header.size < _ehdr_size(loader) or len(data) < _ehdr_size(loader):
        return "file too short"
    elf_class = 2 if loader.elf_class == 64 else 1
    osabi, abiversion = data[7], data[8]
    abi_ok = abiversion == 0 or (osabi == ELFOSABI_GNU and abiversion < LIBC_ABI_MAX)
    ident_ok = (
        is_elf(data)
        and data[4] == elf_class
        and data[5] == (1 if le else 2)
        and data[6] == 1
        and osabi in (ELFOSABI_SYSV, ELFOSABI_GNU)
        and abi_ok
        and header.padding_zero
    )
    machine = header.field(18, 2, le)
    if not ident_ok:
        return _bad_ident(data, elf_class, le, machine != loader.machine, abi_ok, header)
    if header.field(20, 4, le) != 1:
        return "ELF file version does not match current one"
    if machine != loader.machine:
        return SKIP
    if header.field(16, 2, le) not in (ET_DYN, ET_EXEC):
        return "only ET_DYN and ET_EXEC can be loaded"
    if not _phentsize_ok(header, loader):
        return "ELF file's phentsize not the expected size"
    return None


def _ehdr_size(loader: Loader) -> int:
    return 64 if loader.elf_class == 64 else 52


def _phentsize_ok(header: RawHeader, loader: Loader) -> bool:
    """e_phentsize is the loader's Phdr size (another ELF class has another one)."""
    offset, size = (54, 56) if loader.elf_class == 64 else (42, 32)
    return header.field(offset, 2, loader.little_endian) == size


def _bad_ident(
    data: bytes, elf_class: int, le: bool, other_machine: bool, abi_ok: bool, header: RawHeader
) -> str | _Skip:
    if not is_elf(data):
        return "invalid ELF header"
    if data[4] != elf_class or other_machine:
        return SKIP
    if data[5] != (1 if le else 2):
        return f"ELF file data encoding not {'little' if le else 'big'}-endian"
    if data[6] != 1:
        return "ELF file version ident does not match current one"
    if data[7] not in (ELFOSABI_SYSV, ELFOSABI_GNU):
        return "ELF file OS ABI invalid"
    if not abi_ok:
        return "ELF file ABI version invalid"
    if not header.padding_zero:
        return "nonzero padding in e_ident"
    return "internal error"


def _musl_verdict(header: RawHeader, loader: Loader) -> str | _Skip | None:
    """musl's map_library: no magic check; a short file, another e_type or program header size
    (another class) is ENOEXEC. Another machine is not checked at all."""
    if len(header.data) < _ehdr_size(loader):
        return "Exec format error"
    e_type = header.field(16, 2, loader.little_endian)
    if e_type not in (ET_DYN, ET_EXEC) or not _phentsize_ok(header, loader):
        return "Exec format error"
    return None


class _Walk:
    """One breadth-first load of a program's dependencies (_dl_map_object_deps / load_deps)."""

    def __init__(self, resolver: Resolver, loader: Loader, main: _Object) -> None:
        self.resolver = resolver
        self.root = resolver.root
        self.settings = resolver.settings
        self.loader = loader
        self.main = main
        self.objects: list[_Object] = [main]
        self.by_name: dict[str, _Object] = {}
        self.by_file: dict[str, _Object] = {}
        self.libraries: list[Library] = []
        self.missing_seen: set[tuple[str, str]] = set()
        # A program's PT_INTERP is its interpreter; a library's loader is only a library.
        self.interp_listed = main.info.interpreter is not None
        self._register(main, ())
        self._add_interpreter()

    def _add_interpreter(self) -> None:
        interp = self.loader.interpreter
        try:
            info = self.resolver.elf(interp) if self.root.is_file(interp) else None
        except BadElf:
            info = None
        if info is None:
            self.interp_object = None
            if self.interp_listed:
                self.libraries.append(Library(interp, None, self.main.path, self.main.chain()))
            return
        obj = _Object(interp, info, None, posixpath.dirname(interp))
        self.interp_object = obj
        # The loader is on the list from the start, under its PT_INTERP name and its SONAME;
        # musl's also answers to "libc.so" (ldso.shortname).
        self._register(obj, ("libc.so",) if self.loader.is_musl else ())

    def _register(self, obj: _Object, extra_names: tuple[str, ...]) -> None:
        names = (obj.path, obj.info.soname, *extra_names)
        if self.loader.is_musl:
            names = (obj.path, posixpath.basename(obj.path), *extra_names)
        for name in names:
            if name:
                self.by_name.setdefault(name, obj)
        self.by_file.setdefault(self._identity(obj.path), obj)

    def _identity(self, path: str) -> str:
        st = self.root.stat(path)
        return f"{st.st_dev}:{st.st_ino}" if st is not None else self.root.realpath(path)

    def run(self) -> Closure:
        """DT_NEEDED breadth first; then, object by object, what each one dlopen()s, whose own
        DT_NEEDED are loaded breadth first again."""
        index = dlopen_index = 0
        while index < len(self.objects) or dlopen_index < len(self.objects):
            if index < len(self.objects):
                obj = self.objects[index]
                index += 1
                for name in obj.info.needed:
                    self._need(name, obj)
                continue
            self._dlopen(self.objects[dlopen_index])
            dlopen_index += 1
        return Closure(
            program=self.main.path,
            info=self.main.info,
            interpreter=self.main.info.interpreter,
            flavor=self.loader.flavor,
            libraries=tuple(self.libraries),
            default_dirs=self.loader.system_dirs,
        )

    def _dlopen(self, obj: _Object) -> None:
        """dlopen() searches as DT_NEEDED does from the calling object; the first soname of an
        entry that loads satisfies it."""
        wanted = [d for d in obj.info.dlopen if d.priority in self.settings.dlopen_priorities]
        for dep in wanted:
            if not any(self._need(n, obj, via="dlopen", report=False) for n in dep.sonames):
                what = f"{' or '.join(dep.sonames)} ({dep.priority} by .note.dlopen"
                what += f", feature {dep.feature})" if dep.feature else ")"
                if dep.priority == "required":
                    self._missing(" or ".join(dep.sonames), obj, None, None)
                else:
                    log.warning("%s not found, dlopen()ed by %s", what, obj.path)
        if self._wants_libgcc_s(obj):
            self._need("libgcc_s.so.1", obj, via="libc dlopen", report=False)

    def _wants_libgcc_s(self, obj: _Object) -> bool:
        return (
            self.settings.libgcc_s
            and not self.loader.is_musl
            and obj.info.soname == "libc.so.6"
            and "libgcc_s.so.1" not in self.by_name
        )

    def _need(self, name: str, requester: _Object, via: str = "", report: bool = True) -> bool:
        """Load ``name`` for ``requester``; False when the loader would not find it."""
        known = self._known(name)
        if known is not None:
            if known is self.interp_object and not self.interp_listed:
                # A library has no PT_INTERP; its loader joins the closure once something
                # needs it by name (libc.so.6 needs ld-linux-x86-64.so.2), as ldd shows.
                self.interp_listed = True
                listed = Library(name, known.path, requester.path, requester.chain(), via="loader")
                self.libraries.append(listed)
            if not self.loader.is_musl:
                self.by_name.setdefault(name, known)
            return True
        found, how = self._search(name, requester)
        if isinstance(found, _Skip):
            if report:
                self._missing(name, requester, None, None)
            return False
        path, outcome = found
        if isinstance(outcome, str):
            if report:
                self._missing(name, requester, path, outcome)
            return False
        via = f"{via} via {how}" if via else how
        log.info("%s => %s (%s, needed by %s)", name, path, via, requester.path)
        same_file = self.by_file.get(self._identity(path))
        if same_file is not None:
            self.by_name.setdefault(name, same_file)
            return True
        origin = posixpath.dirname(path)
        obj = _Object(path, outcome, requester, origin)
        self.objects.append(obj)
        self._register(obj, (name,))
        self.libraries.append(Library(name, path, requester.path, requester.chain(), via=via))
        return True

    def _known(self, name: str) -> _Object | None:
        if self.loader.is_musl and _musl_reserved(name) and self.interp_object is not None:
            return self.interp_object
        return self.by_name.get(name)

    def _missing(self, name: str, requester: _Object, path: str | None, error: str | None) -> None:
        if (name, requester.path) in self.missing_seen:
            return
        self.missing_seen.add((name, requester.path))
        log.info("%s: %s, needed by %s", name, error or "not found", requester.path)
        self.libraries.append(Library(name, path, requester.path, requester.chain(), error))

    # -- the search order --------------------------------------------------------------------

    def _search(self, name: str, requester: _Object) -> tuple[Candidate, str]:
        """The file for a DT_NEEDED name and how it was found (for -v and for packing)."""
        if "/" in name:
            return self._by_path(name, requester), "path"
        if self.loader.is_musl and len(name) > 255:  # NAME_MAX
            return SKIP, ""
        steps = self._musl_steps(requester) if self.loader.is_musl else self._glibc_steps(requester)
        for via, dirs in steps:
            if dirs is None:
                found = self.resolver.search_cache(name, self.loader, requester.info.nodeflib)
            else:
                found = self.resolver.search_dirs(name, dirs, self.loader)
            if not isinstance(found, _Skip):
                return found, via
        return SKIP, ""

    def _by_path(self, name: str, requester: _Object) -> Candidate:
        if self.loader.is_musl:
            path = name
        else:
            expanded = self._expand(name, requester)
            if expanded is None:
                return SKIP
            path = expanded
        if not path.startswith("/"):
            path = posixpath.join(self.settings.cwd, path)
        return self.resolver.verify(path, self.loader)

    def _glibc_steps(self, requester: _Object) -> Iterator[tuple[str, tuple[str, ...] | None]]:
        """glibc's order: DT_RPATH of the requester and its loaders (only when the requester
        has no DT_RUNPATH), LD_LIBRARY_PATH, the requester's own DT_RUNPATH, ld.so.cache (None),
        then the system directories unless the requester is DF_1_NODEFLIB."""
        if requester.info.runpath is None:
            for obj in self._rpath_chain(requester):
                yield "rpath", self._dirs(obj.info.rpath or "", obj)
        if self.settings.ld_library_path:
            yield "LD_LIBRARY_PATH", self._dirs(self.settings.ld_library_path, self.main, ":;")
        if requester.info.runpath is not None:
            yield "runpath", self._dirs(requester.info.runpath, requester)
        yield "ld.so.cache", None
        if not requester.info.nodeflib:
            yield "default", self.loader.system_dirs

    def _rpath_chain(self, requester: _Object) -> Iterator[_Object]:
        """The requester, its loader, ... then the program itself; those with a usable RPATH.

        An object with DT_RUNPATH has its DT_RPATH ignored altogether (get-dynamic-info.h)."""
        node: _Object | None = requester
        seen_main = False
        while node is not None:
            seen_main |= node is self.main
            if node.info.rpath is not None and node.info.runpath is None:
                yield node
            node = node.loader
        if not seen_main and self.main.info.rpath is not None and self.main.info.runpath is None:
            yield self.main

    def _musl_steps(self, requester: _Object) -> Iterator[tuple[str, tuple[str, ...] | None]]:
        """musl's order: LD_LIBRARY_PATH, the RPATH/RUNPATH of the requester and each of its
        loaders in turn, then the sys_path (etc/ld-musl-ARCH.path or the built-in list)."""
        if self.settings.ld_library_path:
            yield "LD_LIBRARY_PATH", self._absolute(_split(self.settings.ld_library_path, ":\n"))
        node: _Object | None = requester
        while node is not None:
            rpath = _musl_rpath(node)
            if rpath is not None:
                yield "rpath", self._absolute(_split(rpath, ":\n"))
            node = node.loader
        yield "default", self.loader.system_dirs

    # -- directory lists ---------------------------------------------------------------------

    def _dirs(self, spec: str, owner: _Object, separators: str = ":") -> tuple[str, ...]:
        """glibc's fillin_rpath: split, expand $ORIGIN/$LIB/$PLATFORM, drop trailing '/'.

        An empty element is the current directory; an element whose token cannot be
        expanded is dropped."""
        if not spec:
            return ()
        dirs: list[str] = []
        for element in _split(spec, separators, keep_empty=True):
            expanded = self._expand(element or "./", owner)
            if expanded is None:
                continue
            expanded = expanded.rstrip("/") or "/"
            if expanded not in dirs:
                dirs.append(expanded)
        return self._absolute(dirs)

    def _absolute(self, dirs: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        cwd = self.settings.cwd
        return tuple(d if d.startswith("/") else posixpath.join(cwd, d) for d in dirs)

    def _expand(self, text: str, owner: _Object) -> str | None:
        return expand_tokens(
            text, origin=owner.origin, lib=self.loader.lib_token, platform=self.loader.platform
        )


def expand_tokens(text: str, *, origin: str | None, lib: str, platform: str) -> str | None:
    """glibc's _dl_dst_substitute: $ORIGIN, $LIB, $PLATFORM, plain or in braces.

    A name counts only when no identifier character follows it ("$ORIGINX" stays as it is);
    None when a token has no value (the element is then dropped)."""
    values = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform or None}
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        token, length = _dst_at(text, i + 1)
        if token is None:
            out.append("$")
            i += 1
            continue
        value = values[token]
        if value is None:
            return None
        out.append(value)
        i += 1 + length
    return "".join(out)


def _dst_at(text: str, start: int) -> tuple[str | None, int]:
    for token in ("ORIGIN", "PLATFORM", "LIB"):
        if text.startswith("{" + token + "}", start):
            return token, len(token) + 2
        if text.startswith(token, start):
            after = text[start + len(token) : start + len(token) + 1]
            if not (after.isascii() and (after.isalnum() or after == "_")):
                return token, len(token)
    return None, 0


def _split(spec: str, separators: str, keep_empty: bool = False) -> list[str]:
    parts = [spec]
    for sep in separators:
        parts = [piece for part in parts for piece in part.split(sep)]
    return parts if keep_empty else [p for p in parts if p]


def _musl_rpath(obj: _Object) -> str | None:
    """musl's fixup_rpath: DT_RUNPATH wins over DT_RPATH; only $ORIGIN is understood, any
    other '$' makes the whole list unusable."""
    raw = obj.info.runpath if obj.info.runpath is not None else obj.info.rpath
    if raw is None:
        return None
    if "$" not in raw:
        return raw
    rest = raw.replace("${ORIGIN}", "").replace("$ORIGIN", "")
    if "$" in rest:
        return None
    return raw.replace("${ORIGIN}", obj.origin).replace("$ORIGIN", obj.origin)


def _musl_reserved(name: str) -> bool:
    return name.startswith("lib") and name[3:].startswith(MUSL_RESERVED)
