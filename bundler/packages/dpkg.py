"""The root's dpkg database: installed packages, and which package owns each file.

Read as dpkg itself keeps it (``/var/lib/dpkg``): ``status`` holds one stanza per package,
``info/<pkg>[:<arch>].list`` the paths each installed, ``diversions`` the files one package
moved aside for another's (triplets of lines: the path, where it went, the diverting package,
``:`` for a local one). Paths are compared at their link-free parent folder: Debian 12 lists
``/lib/x86_64-linux-gnu/libc.so.6`` while merged-/usr puts it at ``/usr/lib/...``, and the
plan holds the latter, so both spellings meet in one key.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from bundler.errors import ScratchpackError
from bundler.loader.rootfs import FsRoot, SymlinkLoop

log = logging.getLogger(__name__)

DPKG = "/var/lib/dpkg"
STATUS = f"{DPKG}/status"
INFO = f"{DPKG}/info"
DIVERSIONS = f"{DPKG}/diversions"
# Debian's priorities, most basic first (a stable order for layers that many images share).
PRIORITIES = ("required", "important", "standard", "optional", "extra")
_FIELD = re.compile(r"^([!-9;-~]+):[ \t]*(.*)$")
# What normpath would change in an absolute path: doubled or trailing slashes, . and .. parts.
_UNUSUAL = re.compile(r"//|/\.\.?(?:/|$)|/$")


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

    @cached_property
    def owners(self) -> dict[str, str]:
        """Link-free path -> owning package, for every path of every installed package's list
        (folders too: many packages share those, the first one listed keeps it)."""
        owners: dict[str, str] = {}
        for name in self.packages:
            for path in self.listed(name):
                owners.setdefault(self.key(path), name)
        for diverted, moved_to, by in self._diversions():
            # The diverter's own file sits at the original path; the diverted package's file
            # at the new one (a local diversion, ``:``, belongs to no package).
            original_owners = [n for n in self.packages if n != by and diverted in self.listed(n)]
            key, new_key = self.key(diverted), self.key(moved_to)
            if by in self.packages:
                owners[key] = by
            else:
                owners.pop(key, None)
            if original_owners:
                owners[new_key] = original_owners[0]
        return owners

    def owner(self, image_path: str) -> str | None:
        return self.owners.get(self.key(image_path))

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
            return [line for line in text.splitlines() if line.startswith("/") and line != "/."]
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
        path = image_path
        if not path.startswith("/") or _UNUSUAL.search(path):
            path = posixpath.normpath("/" + path.lstrip("/"))
        parent, _, name = path.rpartition("/")
        parent = parent or "/"
        resolved = self._parents.get(parent)
        if resolved is None:
            try:
                resolved = self._parents[parent] = self.root.realpath(parent)
            except SymlinkLoop:
                return image_path
        return posixpath.join(resolved, name)


def open_database(root: FsRoot) -> Database | None:
    """The root's dpkg database, or None when it has no status file (a musl or hand-made
    root: its files belong to no package). A pack reads it once and passes it on."""
    if not root.is_file(STATUS):
        return None
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
