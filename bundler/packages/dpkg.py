"""The root's dpkg database: installed packages, and which package owns each file.

Read as dpkg itself keeps it (``/var/lib/dpkg``): ``status`` holds one stanza per package,
``info/<pkg>[:<arch>].list`` the paths each installed, ``diversions`` the files one package
moved aside for another's (triplets of lines: the path, where it went, the diverting package,
``:`` for a local one). Paths are compared at their link-free parent folder: Debian 12 lists
``/lib/x86_64-linux-gnu/libc.so.6`` while merged-/usr puts it at ``/usr/lib/...``, and the
plan holds the latter, so both spellings meet in one key.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import marshal
import os
import posixpath
import re
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from bundler.errors import ScratchpackError
from bundler.loader.rootfs import FsRoot, SymlinkLoop
from bundler.staging.digests import STABLE_NS, identity

log = logging.getLogger(__name__)

DPKG = "/var/lib/dpkg"
STATUS = f"{DPKG}/status"
INFO = f"{DPKG}/info"
DIVERSIONS = f"{DPKG}/diversions"
# Debian's priorities, most basic first (a stable order for layers that many images share).
# What a memo of the database holds depends on this format and on the interpreter (marshal's
# format is the running Python's own).
MEMO_FORMAT = f"2 {sys.version}"
PRIORITIES = ("required", "important", "standard", "optional", "extra")
_FIELD = re.compile(r"^([!-9;-~]+):[ \t]*(.*)$")


@dataclass(frozen=True)
class Package:
    """One installed package: its control stanza as dpkg keeps it, fields in their order."""

    name: str
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        lowered = key.lower()
        return next((v for k, v in self.fields if k.lower() == lowered), default)

    @property
    def version(self) -> str:
        return self.get("Version")

    @property
    def architecture(self) -> str:
        return self.get("Architecture")

    @property
    def source(self) -> str:
        """The source package name (``Source: openssl (3.0.11-1)`` -> ``openssl``)."""
        return (self.get("Source") or self.name).split()[0]

    @property
    def priority_rank(self) -> int:
        priority = self.get("Priority", "optional")
        return PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)

    @property
    def installed(self) -> bool:
        return self.get("Status").split()[-1:] == ["installed"]


def parse_stanzas(text: str) -> Iterator[tuple[tuple[str, str], ...]]:
    """deb822 paragraphs: ``Key: value`` lines, continuation lines start with blank space."""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield tuple(fields)
                fields = []
            continue
        if line[0] in " \t" and fields:
            key, value = fields[-1]
            fields[-1] = (key, value + "\n" + line)
            continue
        match = _FIELD.match(line)
        if match:
            fields.append((match.group(1), match.group(2)))
    if fields:
        yield tuple(fields)


@dataclass
class Database:
    """The dpkg database of a root; ``None`` from ``open_database`` when it has none."""

    root: FsRoot
    packages: dict[str, Package] = field(default_factory=dict)
    _lists: dict[str, list[str]] = field(default_factory=dict, repr=False)
    # Folder -> its link-free spelling: thousands of listed paths share a few hundred folders.
    _parents: dict[str, str] = field(default_factory=dict, repr=False)

    def owner(self, image_path: str) -> str | None:
        """The package that lists IMAGE_PATH (by its link-free spelling), after diversions;
        where several list it (a shared folder), the first installed one."""
        key = self.key(image_path)
        if key in self._diverted:
            return self._diverted[key]
        folder, _, name = key.rpartition("/")
        for listed_folder, package in self._listings(name):
            # A link-free spelling resolves to itself: only other spellings need the walk.
            if listed_folder == folder or self._resolves_to(listed_folder, folder):
                return package
        return None

    def _resolves_to(self, listed_folder: str, folder: str) -> bool:
        try:
            return self._folder_key(listed_folder) == folder
        except SymlinkLoop:
            return False

    def _listings(self, name: str) -> list[tuple[str, str]]:
        """(folder as listed, package) of every listed path of file name NAME, in package
        order."""
        found = self._by_name.get(name)
        if not found:
            return []
        return [(f, p) for f, _, p in (line.partition("\0") for line in found.split("\n"))]

    @cached_property
    def _by_name(self) -> dict[str, str]:
        """File name -> "FOLDER\0PACKAGE" lines, every listed path in package order (one string
        a name: the index is kept between packs, and few objects load fast). Folders are
        resolved only when a lookup meets them: a pack asks about a few hundred paths of the
        tens of thousands the lists hold."""
        index: dict[str, list[str]] = {}
        for package in self.packages:
            for path in self.listed(package):
                folder, _, name = path.rpartition("/")
                found = index.get(name)
                if found is None:
                    index[name] = [f"{folder}\0{package}"]
                else:
                    found.append(f"{folder}\0{package}")
        return {name: "\n".join(listings) for name, listings in index.items()}

    @cached_property
    def _diverted(self) -> dict[str, str | None]:
        """Link-free path -> its owner after diversions (None: a local one, no package)."""
        owners: dict[str, str | None] = {}
        for diverted, moved_to, by in self._diversions():
            # The diverter's own file sits at the original path; the diverted package's file
            # at the new one (a local diversion, ``:``, belongs to no package).
            folder, _, name = _normal(diverted).rpartition("/")
            listing = self._listings(name)
            original_owners = [n for f, n in listing if f == folder and n != by]
            owners[self.key(diverted)] = by if by in self.packages else None
            if original_owners:
                owners[self.key(moved_to)] = original_owners[0]
        return owners

    def listed(self, package: str) -> list[str]:
        """The paths of ``info/<package>.list`` (or ``<package>:<arch>.list``), as listed."""
        if package not in self._lists:
            self._lists[package] = self._read_list(package)
        return self._lists[package]

    def _read_list(self, package: str) -> list[str]:
        for name in self._list_names(package):
            try:
                data = self.root.read_bytes(posixpath.join(INFO, name))
            except (OSError, ScratchpackError) as exc:
                log.warning("%s/%s: unreadable (%s); taken as empty", INFO, name, exc)
                continue
            text = data.decode("utf-8", "surrogateescape")
            lines = text.splitlines()
            if lines[:1] == ["/."]:
                del lines[0]
            # Lists are read by the hundred: the line by line work only for what dpkg never
            # writes (lines that are not absolute paths, odd spellings of one).
            if text.count("\n/") != len(lines) or "\n/.\n" in text:
                lines = [line for line in lines if line.startswith("/") and line != "/."]
            if "//" in text or "/\n" in text or "/." in text.replace("/.\n", "", 1):
                lines = [_normal(line) for line in lines]
            return lines
        return []

    @cached_property
    def _info_names(self) -> set[str]:
        return set(self.root.listdir(INFO))

    def _list_names(self, package: str) -> list[str]:
        arch = self.packages[package].architecture if package in self.packages else ""
        candidates = [f"{package}:{arch}.list", f"{package}.list"]
        return [name for name in candidates if name in self._info_names]

    def _diversions(self) -> list[tuple[str, str, str]]:
        if not self.root.is_file(DIVERSIONS):
            return []
        lines = self.root.read_bytes(DIVERSIONS).decode("utf-8", "surrogateescape").splitlines()
        return [
            (lines[i], lines[i + 1], lines[i + 2])
            for i in range(0, len(lines) - 2, 3)
            if lines[i].startswith("/") and lines[i + 1].startswith("/")
        ]

    def key(self, image_path: str) -> str:
        """A path with its parent folder's links resolved: the one spelling both the dpkg lists
        and the plan reduce to."""
        folder, _, name = _normal(image_path).rpartition("/")
        try:
            return f"{self._folder_key(folder)}/{name}"
        except SymlinkLoop:
            return image_path

    def _folder_key(self, folder: str) -> str:
        """FOLDER ("" for the top) with its links resolved, "" for the top; once per folder."""
        resolved = self._parents.get(folder)
        if resolved is None:
            resolved = self.root.realpath(folder or "/")
            self._parents[folder] = resolved = "" if resolved == "/" else resolved
        return resolved


def _normal(path: str) -> str:
    """An absolute path without doubled or trailing slashes, . or .. parts (the lists' own
    spelling is already so: only odd ones pay for normpath)."""
    if path[:1] != "/" or "//" in path or "/." in path or path[-1] == "/":
        return posixpath.normpath("/" + path.lstrip("/"))
    return path


def open_database(
    root: FsRoot, memo: Path | None = None, stable_before_ns: int | None = None
) -> Database | None:
    """The root's dpkg database, or None when it has no status file (a musl or hand-made
    root: its files belong to no package). A pack reads it once and passes it on.

    MEMO, a folder of the user's cache, keeps what was read of a root for the next pack (the
    packages and the index of every listed path: hundreds of files, most of a repack's time),
    under the identity of every file it was read from; any change to them is a miss. As for
    file digests (``bundler.staging.digests``), files changed since STABLE_BEFORE_NS (default:
    two seconds ago) are read but not remembered."""
    if not root.is_file(STATUS):
        return None
    if stable_before_ns is None:
        stable_before_ns = time.time_ns() - STABLE_NS
    key = _files_key(root, stable_before_ns) if memo is not None else None
    memo_file = memo / hashlib.sha256(root.top.encode()).hexdigest()[:32] if memo else None
    if memo_file is not None and key is not None:
        found = _load_memo(root, memo_file, key)
        if found is not None:
            return found
    database = _read_database(root)
    if database is not None and memo_file is not None and key is not None:
        _save_memo(database, memo_file, key)
    return database


def _read_database(root: FsRoot) -> Database | None:
    try:
        text = root.read_bytes(STATUS).decode("utf-8", "surrogateescape")
    except OSError as exc:
        log.warning("%s: unreadable (%s); files are taken as owned by no package", STATUS, exc)
        return None
    database = Database(root)
    for fields in parse_stanzas(text):
        package = Package(dict(fields).get("Package", ""), fields)
        if package.name and package.installed:
            database.packages[package.name] = package
    return database


def _files_key(root: FsRoot, stable_before_ns: int) -> str | None:
    """One digest of the identity (inode, size, mtime, ctime) of every file the database is
    read from: status, diversions, the info folder and each list in it. None when a list is
    a link (its target's changes would not show) or one changed since STABLE_BEFORE_NS:
    such a root is read every time."""
    found: list[tuple[str, os.stat_result | None]] = []
    for image_path in (STATUS, DIVERSIONS, INFO):
        found.append((image_path, root.stat(image_path)))
    try:
        info = root.real_host_path(INFO)
        for name in sorted(os.listdir(info)):
            if name.endswith(".list"):
                found.append((name, os.lstat(f"{info}/{name}")))
    except (OSError, ScratchpackError):
        return None
    seen: list[str] = []
    for name, st in found:
        if st is not None and stat.S_ISLNK(st.st_mode):
            return None
        if st is not None and max(st.st_mtime_ns, st.st_ctime_ns) >= stable_before_ns:
            return None
        seen.append(f"{name} {identity(st) if st is not None else None}")
    return hashlib.sha256("\n".join(seen).encode("utf-8", "surrogateescape")).hexdigest()


def _load_memo(root: FsRoot, memo_file: Path, key: str) -> Database | None:
    try:
        stored = marshal.loads(memo_file.read_bytes())
        if stored.get("format") != MEMO_FORMAT or stored.get("key") != key:
            return None
        database = Database(root)
        for name, fields in stored["packages"]:
            database.packages[name] = Package(name, tuple(fields))
        by_name = stored["by_name"]
        if not all(isinstance(v, str) for v in itertools.islice(by_name.values(), 1)):
            return None
        vars(database)["_by_name"] = by_name  # what the cached property would hold
        os.utime(memo_file)  # recently used: the cache evicts the oldest first
    except (OSError, ValueError, EOFError, TypeError, KeyError, AttributeError):
        return None
    log.debug("%s: the dpkg database as read before (%s)", root.top, memo_file)
    return database


def _save_memo(database: Database, memo_file: Path, key: str) -> None:
    stored = {
        "format": MEMO_FORMAT,
        "key": key,
        "packages": [(p.name, p.fields) for p in database.packages.values()],
        "by_name": database._by_name,
    }
    temp = memo_file.with_name(f".tmp-{os.getpid()}-{memo_file.name}")
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(marshal.dumps(stored))
        os.replace(temp, memo_file)
    except OSError as exc:
        log.info("%s: cannot keep the dpkg database: %s", memo_file, exc.strerror or exc)
        temp.unlink(missing_ok=True)
