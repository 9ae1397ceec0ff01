"""Which file goes in which layer, so that images made from one root share their layers.

A registry, a network and a node store a layer once however many images name it, but only a
layer whose bytes are the same. So a layer's content must depend on as little as possible of
the image it is in. As apko and distroless do, files are grouped by the Debian package that
owns them (the root's dpkg database), with glibc's at the bottom; files of no package (a
generated ``passwd``, the user's ``--extra`` files, ``ld.so.cache``) go in the top layer.

Two refinements make the groups stable across images:

- a package's group holds *all* of its shared objects in the folders the loader used, not just
  those this program needs (``libc6`` with ``libm.so.6`` or without would be two layers);
  ``complete_for_sharing`` adds them to the plan before anything is written;
- the root's top-level links to folders (merged-/usr: ``/lib -> usr/lib``) all go in the
  bottom layer, needed or not, and every layer carries the folders above its files as the very
  same entries (a folder's mode, owner and time come from the root, never from the image).

A budget bounds the count (Docker refuses more than 125 layers): the groups least likely to be
shared, the last in the order, are merged into the top layer.
"""

from __future__ import annotations

import logging
import posixpath
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bundler.image.spec import DEFAULT_MAX_LAYERS, LayerSpec
from bundler.loader.closure import Binary
from bundler.packages.dpkg import Database
from bundler.packages.metadata import STATUS_D
from bundler.staging.plan import DIR, HARDLINK, LIBRARY, LINK, SYMLINK, Entry, Plan, Planner

log = logging.getLogger(__name__)

TOP = ""  # the group of files no package owns
_SHARED_OBJECT = re.compile(r".*\.so(\.[0-9.]+)?")


@dataclass(frozen=True)
class Group:
    package: str  # TOP for files of no package
    entries: tuple[Entry, ...]


def complete_for_sharing(planner: Planner, database: Database, binaries: Iterable[Binary]) -> int:
    """Add every shared object of each package the closure takes libraries from, in the
    folders the loader found them in, and the root's top-level links to folders; returns the
    bytes added."""
    before = planner.plan.total_bytes
    for name in sorted(planner.root.listdir("/")):
        st = planner.root.lstat("/" + name)
        if st is not None and stat.S_ISLNK(st.st_mode) and planner.root.is_dir("/" + name):
            planner.add_path("/" + name, LINK)
    folders: dict[str, set[str]] = {}  # package -> link-free folders the loader used
    for binary in binaries:
        for path in binary.mapped:
            package = database.owner(path)
            if package is not None:
                folders.setdefault(package, set()).add(posixpath.dirname(database.key(path)))
    for package in sorted(folders):
        for listed in database.listed(package):
            key = database.key(listed)
            if posixpath.dirname(key) not in folders[package]:
                continue
            if not _SHARED_OBJECT.fullmatch(posixpath.basename(key)) or key in planner.plan.entries:
                continue
            if planner.root.lstat(key) is not None and not planner.root.is_dir(key):
                planner.add_path(key, LIBRARY)
    added = planner.plan.total_bytes - before
    log.info("layers: %d bytes of packages' other shared objects added, for shared layers", added)
    return added


def plan_layers(
    plan: Plan,
    database: Database | None,
    interpreters: Sequence[str],
    max_layers: int = DEFAULT_MAX_LAYERS,
) -> list[LayerSpec]:
    """The plan's entries as layers, bottom first."""
    if max_layers < 1:
        raise ValueError("max_layers must be at least 1")
    groups = _groups(plan, database, interpreters)
    if len(groups) > max_layers:
        keep, merged = groups[: max_layers - 1], groups[max_layers - 1 :]
        log.info(
            "layers: %d groups, budget %d: the last %d merged into the top layer",
            len(groups),
            max_layers,
            len(merged),
        )
        entries = tuple(e for group in merged for e in group.entries)
        groups = [*keep, Group(TOP, entries)]
    groups = _with_lone_folders(plan, groups)
    return [
        LayerSpec(_with_parents(plan, group.entries), _comment(group, database)) for group in groups
    ]


def _groups(plan: Plan, database: Database | None, interpreters: Sequence[str]) -> list[Group]:
    """Entries by owning package, in layer order: the C library's package (with the root's
    top-level links) first, then library packages, then the rest, then files of no package."""
    if database is None:
        log.info("layers: the root has no dpkg database; one layer")
        files = tuple(e for e in plan.sorted_entries() if e.type != DIR)
        return [Group(TOP, files)]
    bottom = next((p for p in map(database.owner, interpreters) if p is not None), None)
    members: dict[str, list[Entry]] = {}
    group_of: dict[str, str] = {}
    for entry in plan.sorted_entries():
        if entry.type == DIR:
            continue
        package = _package_of(entry, database, group_of, bottom)
        group_of[entry.path] = package
        members.setdefault(package, []).append(entry)

    def order(package: str) -> tuple[int, int, str]:
        if package == bottom:
            return (0, 0, package)
        if package == TOP:
            return (3, 0, package)
        info = database.packages.get(package)
        rank = info.priority_rank if info else len(database.packages)
        section = info.get("Section") if info else ""
        return (1 if section.endswith("libs") else 2, rank, package)

    return [Group(p, tuple(members[p])) for p in sorted(members, key=order)]


def _package_of(
    entry: Entry, database: Database, group_of: dict[str, str], bottom: str | None
) -> str:
    if entry.type == HARDLINK and entry.target in group_of:
        return group_of[entry.target]  # a hard link lives in the layer of its twin
    if entry.path.startswith(STATUS_D + "/"):
        # Each package's layer carries its own slice of the package database, as apko's do.
        name = posixpath.basename(entry.path).removesuffix(".md5sums")
        return name if name in database.packages else TOP
    if entry.data is not None:
        return TOP  # made by scratchpack
    if bottom and entry.type == SYMLINK and posixpath.dirname(entry.path) == "/":
        return bottom  # /lib -> usr/lib: every program's loader path runs through these
    return database.owner(entry.path) or TOP


def _with_parents(plan: Plan, entries: Sequence[Entry]) -> tuple[Entry, ...]:
    """The entries and every folder above them, each folder as the plan has it."""
    chosen: dict[str, Entry] = {}
    for entry in entries:
        chosen[entry.path] = entry
        parent = posixpath.dirname(entry.path)
        while parent != "/" and parent not in chosen:
            folder = plan.entries.get(parent)
            if folder is not None and folder.type == DIR:
                chosen[parent] = folder
            parent = posixpath.dirname(parent)
    return tuple(chosen[path] for path in sorted(chosen))


def _with_lone_folders(plan: Plan, groups: list[Group]) -> list[Group]:
    """Folders of the plan above no file (``/tmp``, a ``--mkdir``) go in the top layer."""
    held: set[str] = set()
    for group in groups:
        for entry in group.entries:
            parts = entry.path.split("/")
            held.update("/".join(parts[:n]) for n in range(2, len(parts) + 1))
    lone = tuple(e for e in plan.sorted_entries() if e.type == DIR and e.path not in held)
    if not lone:
        return groups
    if groups and groups[-1].package == TOP:
        return [*groups[:-1], Group(TOP, groups[-1].entries + lone)]
    return [*groups, Group(TOP, lone)]


def _comment(group: Group, database: Database | None) -> str:
    if group.package == TOP:
        return "files of no package"
    info = database.packages.get(group.package) if database else None
    if info is None:
        return group.package
    return f"{group.package} {info.version} ({len(group.entries)} files)"
