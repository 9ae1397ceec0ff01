"""The staging plan: every directory, file and link the image gets, decided before any write.

Each path the loader opens is added *as spelt*: every symbolic link met on the way (``/lib ->
usr/lib``, ``libz.so.1 -> libz.so.1.2.13``) becomes a link entry and its target is added in
turn, so the image holds each byte once and the loader finds every path it was resolved at.
Files that are hard links of each other stay hard links. Problems (missing libraries, special
files, setuid bits) are found here, so a run that cannot succeed writes nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from bundler.errors import IncompleteClosure, ScratchpackError, UsageError
from bundler.loader.closure import Binary
from bundler.loader.ldso import NamedEnum
from bundler.loader.rootfs import MAX_SYMLINKS, FsRoot, SymlinkLoop

log = logging.getLogger(__name__)


class EntryType(NamedEnum):
    """What an entry is on disk (its value is what --json says)."""

    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


class EntryKind(NamedEnum):
    """What brought an entry into the image, in the manifest (``why`` says it in words)."""

    PROGRAM = "program"  # a PROGRAM named on the command line
    INTERPRETER = "interpreter"  # its PT_INTERP
    LIBRARY = "library"  # a library the loader maps
    EXTRA = "extra"  # --extra, --with, --user, --mkdir, and files scratchpack writes
    CONFIG = "config"  # the loader's configuration (ld.so.cache)
    TRACED = "traced"  # opened by a traced run
    METADATA = "metadata"  # what scanners read: status.d, md5sums, copyright, os-release
    PYTHON = "python"  # a Python interpreter's venv, standard library or distribution
    LINK = "link"  # a symbolic link met on the way to any of the above
    PARENT = "directory"  # a folder above any of the above


DIR, FILE, SYMLINK, HARDLINK = EntryType
PROGRAM, INTERPRETER, LIBRARY, EXTRA = (
    EntryKind.PROGRAM,
    EntryKind.INTERPRETER,
    EntryKind.LIBRARY,
    EntryKind.EXTRA,
)
LINK, PARENT = EntryKind.LINK, EntryKind.PARENT
SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID


HASH_BLOCK = 1 << 20  # bytes read at a time when a file is hashed


class Hash(Protocol):
    """What hashlib's digests have in common, as far as hashing content needs."""

    def update(self, data: bytes, /) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One thing in the image."""

    path: str  # in-image, absolute
    type: EntryType
    mode: int  # permission bits, special bits included when kept
    kind: EntryKind
    source: str | None = None  # FILE: host path to read
    target: str | None = None  # SYMLINK: the link text; HARDLINK: in-image path of its twin
    size: int = 0
    mtime: int = 0
    data: bytes | None = None  # FILE made by scratchpack (passwd, nsswitch.conf): its content
    uid: int = 0
    gid: int = 0
    # What brought it, for a person: the DT_NEEDED chain, the --extra argument as written (and
    # the links followed), the traced run and the call that opened it, the --with group... Not
    # part of what the entry is: two images holding the same file for different reasons share
    # its layer.
    why: str = field(default="", compare=False)


@dataclass(frozen=True)
class AllowedSecret:
    """A secret packed on purpose: the file, the rule it matched, the line (None: the path is
    the finding), and the --allow-secret GLOB that let it in."""

    path: str
    rule: str
    line: int | None
    glob: str

    def note(self) -> str:
        where = f"line {self.line}" if self.line is not None else "its path"
        return f"packed on purpose (--allow-secret {self.glob}): {self.rule} at {where}"


@dataclass
class Plan:
    """Entries by path, plus what the Dockerfile must know."""

    entries: dict[str, Entry] = field(default_factory=dict)
    programs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    platform: str | None = None  # linux/arm64/v8: what the programs' ELF machine runs on
    allowed_secrets: list[AllowedSecret] = field(default_factory=list)  # --allow-secret

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[p] for p in sorted(self.entries)]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.type == FILE)

    def content_of(self, entry: Entry) -> Entry:
        """The entry that holds ``entry``'s bytes: itself, or the twin a hard link names."""
        while entry.type == HARDLINK and entry.target in self.entries:
            entry = self.entries[entry.target]
        return entry

    def hash_content(self, entry: Entry, *digests: Hash) -> None:
        """Feed ``entry``'s bytes (generated, or read from its source a block at a time) to
        every digest at once."""
        content = self.content_of(entry)
        if content.data is not None:
            for digest in digests:
                digest.update(content.data)
        elif content.source is not None:
            with open(content.source, "rb") as handle:
                for block in iter(lambda: handle.read(HASH_BLOCK), b""):
                    for digest in digests:
                        digest.update(block)


@dataclass(frozen=True)
class PlanOptions:
    extras: tuple[str, ...] = ()
    allow_missing: bool = False
    keep_setuid: bool = False
    exclude: tuple[str, ...] = ()  # host paths never to pack (the output folder)
    # --exclude GLOBs: in-image paths left out of --extra, --with and traces (the loader's
    # closure stays whole: an image without a needed library would not start).
    exclude_globs: tuple[str, ...] = ()
    # Files the container runtime bind-mounts into the build container (Docker's /etc/hosts,
    # /etc/resolv.conf, /etc/hostname): they describe that container, not the program.
    ephemeral: frozenset[str] = frozenset()


class Planner:
    """Builds a Plan inside one root."""

    def __init__(
        self,
        root: FsRoot,
        options: PlanOptions,
        hint: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.root = root
        self.options = options
        self.hint = hint  # explains a missing library (ld.so.conf vs ld.so.cache), if it can
        self.plan = Plan()
        self._inodes: dict[tuple[int, int], str] = {}
        self._why = ""
        # Programs brought by something else than the command line (NSS modules nsswitch.conf
        # names): their why, used when their closure is added.
        self.program_why: dict[str, str] = {}

    @contextlib.contextmanager
    def because(self, why: str) -> Iterator[None]:
        """Entries planned inside are there for ``why`` (the first reason a path gets stays)."""
        previous, self._why = self._why, why
        try:
            yield
        finally:
            self._why = previous

    # -- closures ------------------------------------------------------------------------------

    def add_binaries(self, binaries: Iterable[Binary]) -> None:
        listed = list(binaries)
        self._check_complete(listed)
        for binary in listed:
            why = self.program_why.get(binary.path) or self._why or "PROGRAM on the command line"
            with self.because(why):
                self.add_path(binary.path, PROGRAM)
            if binary.loader_file:
                with self.because(f"PT_INTERP of {binary.path}"):
                    self.add_path(binary.loader_file, INTERPRETER)
            for lib in binary.libraries:
                if lib.ok and lib.path:
                    with self.because(_needed_why(lib.name, lib.chain, lib.via)):
                        self.add_path(lib.path, LIBRARY)
                        self._add_hwcaps_name(lib.name, lib.path, lib.via)

    def _check_complete(self, binaries: list[Binary]) -> None:
        problems = [(b, lib) for b in binaries for lib in b.problems]
        misses = list(dict.fromkeys(m for b in binaries for m in b.version_misses))
        level = logging.WARNING if self.options.allow_missing else logging.ERROR
        for miss in misses:
            log.log(level, "%s", miss.message())
        if misses and not problems and not self.options.allow_missing:
            versions = sorted({m.version for m in misses})
            raise IncompleteClosure(
                f"{len(versions)} symbol version{'' if len(versions) == 1 else 's'} the loader "
                f"would not find ({', '.join(versions)}): the image would not start; nothing was "
                "written (--allow-missing packs anyway)"
            )
        if not problems:
            return
        for _binary, lib in problems:
            what = f"{lib.error} ({lib.path})" if lib.error else "not found"
            log.log(level, "%s: %s, needed by %s", lib.name, what, " <- ".join(lib.chain))
            hint = self.hint(lib.name, lib.chain[-1]) if self.hint and not lib.error else None
            if hint:
                log.log(level, "  hint: %s", hint)
        if not self.options.allow_missing:
            names = sorted({lib.name for _b, lib in problems})
            raise IncompleteClosure(
                f"{len(names)} librar{'y' if len(names) == 1 else 'ies'} the loader would not "
                f"load ({', '.join(names)}); nothing was written (--allow-missing packs anyway)"
            )

    def _add_hwcaps_name(self, name: str, path: str, via: str) -> None:
        """ld.so.cache may point into glibc-hwcaps/ at a file named for its version; without the
        cache the loader looks there by the needed name, so that name must exist too."""
        if not via.endswith("ld.so.cache") or "/glibc-hwcaps/" not in path or "/" in name:
            return
        directory, base = posixpath.split(path)
        # Entries live at link-free paths: /lib/x86_64-linux-gnu/... is /usr/lib/... here.
        alias = posixpath.join(self.root.realpath(directory), name)
        if base != name and alias not in self.plan.entries and self.root.lstat(alias) is None:
            self._put(Entry(alias, SYMLINK, 0o777, LINK, target=base))

    # -- extras --------------------------------------------------------------------------------

    def add_extras(
        self, specs: Iterable[str], option: str = "--extra", why: str | None = None
    ) -> list[str]:
        """Add --extra paths (files, directories recursively, globs); returns ELF files found.

        ``option`` names where the paths came from in errors (``--extra``, ``--with``, ...);
        ``why`` says what brought them (default: the option and the path as written)."""
        elf_files: list[str] = []
        for spec in specs:
            matches = self._expand_extra(spec)
            if not matches:
                where = (
                    ""
                    if self.root.is_host
                    else f" inside --root {self.root.top} (paths there are in-image paths; "
                    "nothing outside the root is packed)"
                )
                raise UsageError(f"{spec}: {option} matches nothing{where}")
            for match in matches:
                try:
                    elf_files.extend(self._add_extra_tree(match, why or f"{option} {spec}"))
                except ScratchpackError as exc:
                    # Name the argument as the user wrote it: a link deep inside a folder is
                    # found only by knowing which --extra led there.
                    raise UsageError(f"{option} {spec}: {exc}") from None
        return elf_files

    def _expand_extra(self, spec: str) -> list[str]:
        image = spec
        if not self.root.is_host:
            inside = self.root.image_path_of_host(spec) if spec.startswith(self.root.top) else None
            image = inside or spec
        if not image.startswith("/"):
            raise UsageError(f"{spec}: --extra takes absolute paths (in-image under --root)")
        if not any(ch in image for ch in "*?["):
            return [posixpath.normpath(image)] if self.root.lstat(image) is not None else []
        return sorted(self.root.glob(image))

    def _add_extra_tree(self, path: str, why: str) -> list[str]:
        """Add a path and, for a folder, everything below it; the ELF files met.

        A link stays a link, and what it names comes too: a link to a folder brings the folder
        with its content, whose own links are followed the same way (Debian's
        ``/usr/share/nginx/modules -> ../../lib/nginx/modules`` must arrive with the modules).
        """
        elf_files: list[str] = []
        with self.because(why):  # links packed as links only, not followed, say it too
            self._add_extra_item(path, True, set(), elf_files, why)
        return elf_files

    def _add_extra_item(
        self, item: str, named: bool, walked: set[str], elves: list[str], why: str
    ) -> None:
        """``named``: the path the user gave (not something found below it). ``walked``: the
        folders (resolved) whose content was added already, so each is walked once. ``why``:
        what brought it, with every link followed on the way."""
        st = self.root.lstat(item)
        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            target = self._followed_link(item, named)
            if target is None:
                return
            item_st = self.root.lstat(target)
            assert item_st is not None  # _followed_link checked it
            why = f"{why}, link {item} -> {target}"
        else:
            target, item_st = item, st
        if not self._packable(item, item_st.st_mode, target):
            return
        with self.because(why):
            self.add_path(item, EXTRA)  # a link with every link on the way, then what it names
        if stat.S_ISREG(item_st.st_mode) and self.is_elf(item):
            elves.append(item)
        if not stat.S_ISDIR(item_st.st_mode):
            return
        folder = self.root.realpath(target)
        if folder in walked:
            return
        walked.add(folder)
        for name in sorted(self.root.listdir(folder)):
            self._add_extra_item(posixpath.join(folder, name), False, walked, elves, why)

    def _followed_link(self, link: str, named: bool) -> str | None:
        """What a link under --extra names (a resolved image path), or None when only the link
        itself is packed: a link that leaves the root, a loop, a missing target."""
        parent = self.root.realpath(posixpath.dirname(link))
        text = self.root.readlink(link)
        if not self.root.is_host and _climbs_above_top(parent, text):
            log.warning(
                "%s: a link to %s, which leaves the root; packed as a link, not followed",
                link,
                text,
            )
            self._put_link_only(link)
            return None
        try:
            target = self.root.realpath(link)
        except SymlinkLoop:
            log.warning("%s: a loop of symbolic links; packed as a link, not followed", link)
            self._put_link_only(link)
            return None
        if self.root.lstat(target) is None:
            if named:
                raise UsageError(f"{link} is a link to {text}, which is not in the root")
            log.warning("%s: a link to %s, which is not in the root; packed as it is", link, text)
            self._put_link_only(link)
            return None
        if parent == target or parent.startswith(target.rstrip("/") + "/"):
            log.warning(
                "%s: a link to %s, a folder that holds the link itself; packed as a link, "
                "not followed",
                link,
                text,
            )
            self._put_link_only(link)
            return None
        return target

    def _packable(self, item: str, mode: int, target: str | None = None) -> bool:
        """Whether an --extra item (``mode``: of what it finally names, ``target``) goes in."""
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # A link is judged by what it names: a link to a FIFO is as unpackable as the FIFO.
            log.warning("%s: skipped, a %s is not packed", item, _special_name(mode))
            return False
        if self._excluded(item):
            return False
        glob = self.excluded_by(item, target)
        if glob is not None:
            log.info("%s: left out (--exclude %s)", item, glob)
            return False
        if item in self.options.ephemeral:
            log.info("%s: skipped, the build container's runtime mounted it", item)
            return False
        return True

    def excluded_by(self, *paths: str | None) -> str | None:
        """The --exclude GLOB that leaves a path out (as spelt, or what it names), if any."""
        for glob in self.options.exclude_globs:
            if any(path is not None and glob_matches(path, glob) for path in paths):
                return glob
        return None

    def _excluded(self, image_path: str) -> bool:
        return self.root.lies_in(self.root.realpath(image_path), self.options.exclude)

    def is_elf(self, image_path: str) -> bool:
        try:
            with open(self.root.real_host_path(image_path), "rb") as handle:
                return handle.read(4) == b"\x7fELF"
        except OSError:
            return False

    # -- paths, links and files ----------------------------------------------------------------

    def add_path(self, image_path: str, kind: EntryKind) -> None:
        """Add a path as spelt: each link on the way, then what it finally names."""
        self._add("/" + image_path.lstrip("/"), kind, 0)

    def _add(self, path: str, kind: EntryKind, hops: int) -> None:
        parts = [p for p in path.split("/") if p and p != "."]
        current = "/"
        for index, part in enumerate(parts):
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            st = self.root.lstat(candidate)
            if st is None:
                raise UsageError(f"{path}: no such file in the root")
            last = index == len(parts) - 1
            if stat.S_ISLNK(st.st_mode):
                target = self._put_link(candidate, st)
                if hops >= MAX_SYMLINKS:
                    raise SymlinkLoop(f"{path}: too many levels of symbolic links")
                # The target is walked in turn from the link's directory (or the top).
                base = "/" if target.startswith("/") else current
                rest = parts[index + 1 :]
                self._add(posixpath.join(base, target, *rest), kind, hops + 1)
                return
            if stat.S_ISDIR(st.st_mode):
                self._put_dir(candidate, st, kind if last else PARENT)
                current = candidate
                continue
            if not last:
                raise UsageError(f"{path}: {candidate} is not a directory")
            self._put_file(candidate, st, kind)

    def _put_link(self, path: str, st: os.stat_result) -> str:
        """A link entry for ``path`` (its parent already resolved); returns the link text."""
        target = os.readlink(self.root.host_path(path))
        mtime, uid, gid = int(st.st_mtime), st.st_uid, st.st_gid
        self._put(Entry(path, SYMLINK, 0o777, LINK, target=target, mtime=mtime, uid=uid, gid=gid))
        return target

    def _put_link_only(self, link: str) -> None:
        """The link as spelt, its folders included, without what it names."""
        parent = posixpath.dirname(link)
        if parent != "/":
            self.add_path(parent, PARENT)
        real = posixpath.join(self.root.realpath(parent), posixpath.basename(link))
        st = self.root.lstat(real)
        if st is not None and stat.S_ISLNK(st.st_mode):
            self._put_link(real, st)

    def _put_dir(self, path: str, st: os.stat_result, kind: EntryKind) -> None:
        if path not in self.plan.entries:
            mode = stat.S_IMODE(st.st_mode)
            mtime, uid, gid = int(st.st_mtime), st.st_uid, st.st_gid
            self._put(Entry(path, DIR, mode, kind, mtime=mtime, uid=uid, gid=gid))

    def _put_file(self, path: str, st: os.stat_result, kind: EntryKind) -> None:
        if path in self.plan.entries:
            return
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: a {_special_name(st.st_mode)} cannot be packed")
        mode = stat.S_IMODE(st.st_mode)
        if mode & SPECIAL_BITS and not self.options.keep_setuid:
            log.warning("%s: setuid/setgid bits dropped (--keep-setuid keeps them)", path)
            mode &= ~SPECIAL_BITS
        mtime = int(st.st_mtime)
        # Owners are kept (numerically, as COPY keeps them): a 0640 root:redis redis.conf must
        # stay readable by the redis user the image runs as.
        uid, gid = st.st_uid, st.st_gid
        twin = self._inodes.get((st.st_dev, st.st_ino))
        if twin is not None:
            self._put(Entry(path, HARDLINK, mode, kind, target=twin, mtime=mtime, uid=uid, gid=gid))
            return
        self._inodes[(st.st_dev, st.st_ino)] = path
        source = self.root.host_path(path)
        self._put(
            Entry(
                path,
                FILE,
                mode,
                kind,
                source=source,
                size=st.st_size,
                mtime=mtime,
                uid=uid,
                gid=gid,
            )
        )

    def _put(self, entry: Entry) -> None:
        if entry.path == "/":
            return
        if not entry.why and self._why:
            entry = replace(entry, why=self._why)
        self.plan.entries.setdefault(entry.path, entry)
        parent = posixpath.dirname(entry.path)
        if parent != "/" and parent not in self.plan.entries:
            st = self.root.lstat(parent)
            if st is not None and stat.S_ISDIR(st.st_mode):
                self._put_dir(parent, st, PARENT)

    # -- things the root does not have --------------------------------------------------------

    def add_generated(
        self, path: str, data: bytes, mode: int = 0o644, kind: EntryKind = EXTRA
    ) -> None:
        """A file scratchpack writes itself; it replaces a file of the root planned there."""
        real = self._new_path(path)
        entry = Entry(real, FILE, mode, kind, size=len(data), data=data, why=self._why)
        self.plan.entries[real] = entry

    def add_symlink(self, path: str, target: str) -> None:
        real = self._new_path(path)
        self.plan.entries[real] = Entry(real, SYMLINK, 0o777, LINK, target=target, why=self._why)

    def add_directory(self, path: str, mode: int, uid: int = 0, gid: int = 0) -> None:
        """An (empty) directory with its own mode and owner (--mkdir, /tmp)."""
        real = self._new_path(path)
        self.plan.entries[real] = Entry(real, DIR, mode, EXTRA, uid=uid, gid=gid, why=self._why)

    def _new_path(self, path: str) -> str:
        """Where a new path lands: its deepest existing ancestor is added as spelt (links and
        all, e.g. /var/run -> /run) and the rest is created below what that resolves to."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        parent = posixpath.dirname(path)
        existing = parent
        while existing != "/" and self.root.lstat(existing) is None:
            existing = posixpath.dirname(existing)
        if existing != "/":
            self.add_path(existing, PARENT)
        base = self.root.realpath(existing)
        real_parent = posixpath.join(base, posixpath.relpath(parent, existing))
        real_parent = posixpath.normpath(real_parent)
        self._ensure_dirs(real_parent)
        return posixpath.join(real_parent, posixpath.basename(path))

    def _ensure_dirs(self, directory: str) -> None:
        if directory == "/" or directory in self.plan.entries:
            return
        self._ensure_dirs(posixpath.dirname(directory))
        self.plan.entries[directory] = Entry(directory, DIR, 0o755, PARENT, why=self._why)


def glob_matches(path: str, pattern: str) -> bool:
    """Whether an in-image ``path`` is matched by an --exclude/--allow-secret ``pattern``.

    A pattern with a ``/`` is matched against the whole path (``/srv/app/*.log``; ``*`` crosses
    folders), one without against each name on the path (``.git``, ``*.pem``); a folder that
    matches takes everything below it, as in .dockerignore."""
    if "/" in pattern:
        pattern = "/" + pattern.strip("/")
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            if fnmatch.fnmatchcase(current, pattern):
                return True
        return False
    return any(fnmatch.fnmatchcase(part, pattern) for part in path.split("/") if part)


def _needed_why(name: str, chain: tuple[str, ...], via: str) -> str:
    """``DT_NEEDED /usr/bin/curl -> libcurl.so.4 -> libssl.so.3``; ``dlopen ...`` for a
    .note.dlopen entry, ``libc dlopen ...`` for what glibc itself loads."""
    steps = [posixpath.basename(p) if i else p for i, p in enumerate(reversed(chain))]
    how = via.split(" via ")[0] if "dlopen" in via else "DT_NEEDED"  # .note.dlopen, libc's own
    return f"{how} " + " -> ".join([*steps, name])


def _climbs_above_top(folder: str, text: str) -> bool:
    """Whether a relative link text in ``folder`` climbs with ``..`` above the top; chroot
    clamps it there, but such a link was meant for another tree (the host's, say)."""
    if text.startswith("/"):
        return False
    depth = len([p for p in folder.split("/") if p])
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _special_name(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device node"
    return "special file"
