"""Python applications in the plan: a venv's interpreter with its standard library and
distributions, and every distribution a closure or a traced run touched, whole.

See ``bundler.packages.pydist`` for what a distribution is and what is left out.
"""

from __future__ import annotations

import logging
import posixpath
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bundler.loader.closure import Binary
from bundler.loader.rootfs import FsRoot, SymlinkLoop
from bundler.packages.dpkg import Database
from bundler.packages.pydist import (
    INSTALLERS,
    Distribution,
    LeftOut,
    Venv,
    distributions,
    imported_installers,
    owning,
    stdlib_files,
    stdlib_folder,
    venv_of,
)
from bundler.staging.plan import FILE, EntryKind, Planner

log = logging.getLogger(__name__)

PYTHON = EntryKind.PYTHON  # the kind of the entries added here, in the manifest
_SITE = re.compile(r"^(.*?/(?:site|dist)-packages)/")


@dataclass(frozen=True)
class PythonAdded:
    """What was added: the ELF files to resolve, the distributions packed, what was left out."""

    elves: tuple[str, ...]
    distributions: tuple[Distribution, ...]
    left_out: LeftOut


def add_python(
    planner: Planner,
    binaries: Sequence[Binary],
    specs: Sequence[str],
    traced: bool,
    database: Database | None,
) -> PythonAdded:
    """Each venv interpreter among ``binaries`` brings its standard library, ``pyvenv.cfg`` and
    (without a trace) every distribution of the venv but the installers; then every
    distribution with a planned file goes in whole."""
    root = planner.root
    left_out = LeftOut()
    elves: list[str] = []
    packed: dict[str, Distribution] = {}
    venvs: dict[str, Venv] = {}
    for binary in binaries:
        venv = venv_of(root, binary.path)
        if venv is None or venv.prefix in venvs:
            continue
        venvs[venv.prefix] = venv
        _say_chosen(root, binary.path, venv, specs)
        elves += _add_interpreter(planner, venv, left_out)
        if not traced:
            wanted = imported_installers(root, _planned_files(planner))
            for site in venv.sites:
                for dist in distributions(root, site):
                    if dist.key in INSTALLERS and dist.key not in wanted:
                        for path in dist.files:
                            left_out.add("installers (pip, setuptools, wheel)", _size(root, path))
                        continue
                    packed.setdefault(dist.dist_info, dist)
    touched = _touched(planner, database)
    for dist in touched:
        packed.setdefault(dist.dist_info, dist)
    for dist in packed.values():
        elves += _add_files(planner, dist.files)
        for path in dist.tests:
            left_out.add("test suites of distributions", _size(root, path))
        for path in dist.build_only:
            left_out.add("build-only files of distributions (headers, stubs)", _size(root, path))
    for reason, size in sorted(left_out.bytes_by_reason.items()):
        log.info(
            "Python: left out %s, %.1f MB in %d files",
            reason,
            size / 1e6,
            left_out.files_by_reason[reason],
        )
    if packed:
        log.info(
            "Python: %d distributions packed whole: %s",
            len(packed),
            ", ".join(sorted(f"{d.name} {d.version}" for d in packed.values())),
        )
    return PythonAdded(tuple(dict.fromkeys(elves)), tuple(packed.values()), left_out)


def _say_chosen(root: FsRoot, program: str, venv: Venv, specs: Sequence[str]) -> None:
    """Name the interpreter a program found on PATH turned out to be: a venv's, with its
    link chain and base (the user typed ``python3`` and may have meant the system's)."""
    chain = [program]
    current = program
    for _ in range(8):
        text = _readlink(root, current)
        if text is None:
            break
        current = posixpath.normpath(posixpath.join(posixpath.dirname(current), text))
        chain.append(current)
    shown = " -> ".join(chain)
    named = [s for s in specs if "/" not in s and posixpath.basename(program) == s]
    if named:
        log.warning(
            "%s on PATH is the interpreter of the venv %s (%s; home = %s)",
            named[0],
            venv.prefix,
            shown,
            venv.home or "?",
        )
    else:
        log.info("%s: the interpreter of the venv %s (%s)", program, venv.prefix, shown)


def _add_interpreter(planner: Planner, venv: Venv, left_out: LeftOut) -> list[str]:
    """pyvenv.cfg, its home, the venv's lib64 link and the base's standard library."""
    root = planner.root
    planner.add_path(venv.config, PYTHON)
    if venv.home and root.is_dir(venv.home):
        planner.add_path(venv.home, PYTHON)
    lib64 = posixpath.join(venv.prefix, "lib64")
    if _readlink(root, lib64) is not None:
        planner.add_path(lib64, PYTHON)
    for site in venv.sites:
        planner.add_path(site, PYTHON)  # an empty venv still has its site folder
    folder = stdlib_folder(root, venv)
    if folder is None:
        log.warning(
            "%s: no standard library for Python %s beside its home %s; the interpreter will "
            "not start without one",
            venv.config,
            venv.version or "?",
            venv.home or "?",
        )
        return []
    return _add_files(planner, stdlib_files(root, folder, left_out))


def _touched(planner: Planner, database: Database | None) -> list[Distribution]:
    """The distributions of every site folder that have a planned file."""
    root = planner.root
    sites: dict[str, list[str]] = {}
    for path in _planned_files(planner):
        match = _SITE.match(path)
        if match:
            sites.setdefault(match.group(1), []).append(path)
    found: list[Distribution] = []
    for site, paths in sorted(sites.items()):
        owners = owning(distributions(root, site))
        hooks: dict[str, list[str]] = {}
        for path in paths:
            dist = owners.get(path)
            if dist is None or dist in found:
                continue
            if dist.key in INSTALLERS and _startup_hook(site, path):
                hooks.setdefault(dist.dist_info, []).append(path)
                continue
            found.append(dist)
        for dist_info, hooked in sorted(hooks.items()):
            if any(d.dist_info == dist_info for d in found):
                continue
            # Every interpreter start reads setuptools' distutils-precedence.pth, which
            # imports _distutils_hack: a traced run touches them without using setuptools.
            for path in hooked:
                del planner.plan.entries[path]
                _drop_empty_folders(planner, posixpath.dirname(path), site)
            log.info(
                "%s: only its start-up hooks were read (%s); left out with them",
                posixpath.basename(dist_info),
                ", ".join(posixpath.relpath(p, site) for p in hooked[:3]),
            )
        if database is not None:
            found += _debian_modules(root, database, site, paths, owners)
    return found


def _drop_empty_folders(planner: Planner, folder: str, top: str) -> None:
    """Remove ``folder`` and its parents up to ``top`` from the plan while nothing is in them."""
    entries = planner.plan.entries
    while folder.startswith(top + "/") and folder in entries:
        prefix = folder + "/"
        if any(p.startswith(prefix) for p in entries):
            return
        del entries[folder]
        folder = posixpath.dirname(folder)


def _startup_hook(site: str, path: str) -> bool:
    """A ``.pth`` file of the site folder, or a module such a file imports at start-up
    (setuptools' ``_distutils_hack``), with its pycs."""
    inside = path[len(site) + 1 :]
    return ("/" not in inside and inside.endswith(".pth")) or inside.startswith("_distutils_hack/")


def _debian_modules(
    root: FsRoot,
    database: Database,
    site: str,
    paths: Iterable[str],
    owners: dict[str, Distribution],
) -> list[Distribution]:
    """Debian's python3-* modules go by their dpkg package: its files in the site folder
    and the pycs py3compile made for them (which no .list names)."""
    found: list[Distribution] = []
    seen: set[str] = set()
    for path in paths:
        if path in owners:
            continue
        package = database.owner(path)
        if package is None or package in seen:
            continue
        seen.add(package)
        files: list[str] = []
        for listed in database.listed(package):
            try:
                real = root.realpath(listed)
            except SymlinkLoop:
                continue
            if not real.startswith(site + "/") or not root.is_file(real):
                continue
            files.append(real)
            if real.endswith(".py"):
                files += _pycs_of(root, real)
        if files:
            found.append(Distribution(package, "", site, "", tuple(files), ()))
    return found


def _pycs_of(root: FsRoot, source: str) -> list[str]:
    folder, name = posixpath.split(source)
    cache = posixpath.join(folder, "__pycache__")
    if not root.is_dir(cache):
        return []
    stem = name[: -len(".py")] + "."
    return [
        posixpath.join(cache, n)
        for n in sorted(root.listdir(cache))
        if n.startswith(stem) and n.endswith(".pyc") and n.count(".") in (2, 3)
    ]


def _planned_files(planner: Planner) -> list[str]:
    return [p for p, e in planner.plan.entries.items() if e.type == FILE]


def _add_files(planner: Planner, paths: Iterable[str]) -> list[str]:
    """Each path as spelt; the ELF files among them (extension modules) to resolve."""
    elves = []
    for path in paths:
        if path in planner.plan.entries:
            continue
        planner.add_path(path, PYTHON)
        entry = planner.plan.entries.get(path)
        if entry is not None and entry.type == FILE and planner.is_elf(path):
            elves.append(path)
    return elves


def _readlink(root: FsRoot, path: str) -> str | None:
    """The text of a link of the root (its folders' links followed), None for a non-link."""
    st = root.lstat(path)
    if st is None or not stat.S_ISLNK(st.st_mode):
        return None
    try:
        return root.readlink(path)
    except SymlinkLoop:
        return None


def _size(root: FsRoot, path: str) -> int:
    st = root.lstat(path)
    return st.st_size if st is not None else 0
