"""Python distributions are packed whole, as Debian packages are: what a venv brings.

A venv (a folder with ``pyvenv.cfg``) and a ``site-packages``/``dist-packages`` folder hold
distributions, each described by its ``NAME-VERSION.dist-info/`` folder, whose ``RECORD``
lists every file the installer wrote (paths relative to the site folder, ``../../../bin/x``
for scripts). A run that touched one module of numpy needs the rest of numpy on another path
(``numpy.fft``), a lazily imported plugin of Pillow, or the ``METADATA`` that
``importlib.metadata.version()`` reads; scanners find distributions by that ``METADATA`` too.
So the unit is the distribution: its ``RECORD`` files and its whole ``dist-info`` folder,
less its test suites (folders named ``tests`` or ``test``), which no application imports.

A venv's interpreter is a link chain to its base (``bin/python -> python3 ->
/usr/bin/python3.11``) that finds its standard library by the ``home`` of ``pyvenv.cfg``; the
library comes with it, less what never runs in a container (its test suite and test
extension modules, ``idlelib``, ``ensurepip``, and ``tkinter`` when the root has no Tk).
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from bundler.loader.rootfs import FsRoot

log = logging.getLogger(__name__)

INSTALLERS = frozenset({"pip", "setuptools", "wheel"})
TEST_FOLDERS = frozenset({"tests", "test"})
# Modules of the installers an application may import itself (pkg_resources is setuptools').
INSTALLER_MODULES = {
    "pip": "pip",
    "setuptools": "setuptools",
    "pkg_resources": "setuptools",
    "_distutils_hack": "setuptools",
    "wheel": "wheel",
}
# Extension modules of the standard library that no service in a container loads, with the
# libraries they would bring.
STDLIB_MODULES_LEFT_OUT = {
    "nis": "nis (NIS client, removed in 3.13; brings libnsl and Kerberos)",
    "_dbm": "_dbm (Berkeley DB; dbm falls back to dbm.dumb)",
    "ossaudiodev": "ossaudiodev (OSS sound devices)",
}
# Files of distributions used only to build or type-check against them.
BUILD_ONLY = re.compile(r"\.(pyi|pxd|pyx|pxi|c|h|cpp|hpp|cc)$")
_IMPORT = re.compile(rb"^\s*(?:import|from)\s+([A-Za-z_][\w]*)", re.MULTILINE)


@dataclass(frozen=True)
class Distribution:
    """One installed distribution of a site folder."""

    name: str  # as METADATA spells it
    version: str
    site: str  # the site folder (image path)
    dist_info: str  # its NAME-VERSION.dist-info folder (image path)
    files: tuple[str, ...]  # image paths that exist: RECORD's and dist-info's, less tests
    tests: tuple[str, ...]  # files of its test suites, left out
    licence_files: tuple[str, ...] = ()
    build_only: tuple[str, ...] = ()  # headers, type stubs, Cython sources: left out

    @property
    def key(self) -> str:
        """The normalised name (PEP 503): ``Flask_SQLAlchemy`` -> ``flask-sqlalchemy``."""
        return normalise(self.name)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Venv:
    """A virtual environment: ``prefix`` holds ``pyvenv.cfg``."""

    prefix: str
    home: str | None  # the base interpreter's folder
    version: str  # "3.11"
    system_site: bool  # include-system-site-packages
    sites: tuple[str, ...]  # its site-packages folders (image paths, link-free)

    @property
    def config(self) -> str:
        return posixpath.join(self.prefix, "pyvenv.cfg")


def venv_of(root: FsRoot, program: str) -> Venv | None:
    """The venv whose ``bin/`` holds ``program`` (as spelt, links not followed), if any."""
    prefix = posixpath.dirname(posixpath.dirname(program))
    config = posixpath.join(prefix, "pyvenv.cfg")
    if not root.is_file(config):
        return None
    values = _read_config(root, config)
    version = ""
    match = re.match(r"(\d+\.\d+)", values.get("version", values.get("version_info", "")))
    if match:
        version = match.group(1)
    sites: list[str] = []
    for lib in ("lib", "lib64"):
        folder = posixpath.join(prefix, lib)
        if not root.is_dir(folder):
            continue
        for name in sorted(root.listdir(folder)):
            site = posixpath.join(folder, name, "site-packages")
            if re.fullmatch(r"python\d+\.\d+", name) and root.is_dir(site):
                version = version or name[len("python") :]
                real = root.realpath(site)
                if real not in sites:
                    sites.append(real)
    return Venv(
        prefix,
        values.get("home"),
        version,
        values.get("include-system-site-packages", "false").lower() == "true",
        tuple(sites),
    )


def _read_config(root: FsRoot, path: str) -> dict[str, str]:
    with open(root.real_host_path(path), encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values


def distributions(root: FsRoot, site: str) -> list[Distribution]:
    """Every ``*.dist-info`` distribution of a site folder, by name."""
    found = []
    for name in sorted(root.listdir(site)):
        folder = posixpath.join(site, name)
        if name.endswith(".dist-info") and root.is_dir(folder):
            dist = _distribution(root, site, folder)
            if dist is not None:
                found.append(dist)
    return found


def _distribution(root: FsRoot, site: str, folder: str) -> Distribution | None:
    metadata = _headers(root, posixpath.join(folder, "METADATA"))
    name, version = metadata.get("name", [""])[0], metadata.get("version", [""])[0]
    if not name:
        stem = posixpath.basename(folder)[: -len(".dist-info")]
        name, _sep, version = stem.partition("-")
    paths: list[str] = list(_walk_files(root, folder))
    record = posixpath.join(folder, "RECORD")
    if root.is_file(record):
        with open(root.real_host_path(record), encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(io.StringIO(handle.read())))
        for row in rows:
            if not row or not row[0]:
                continue
            path = posixpath.normpath(posixpath.join(site, row[0]))
            if path not in paths and root.lstat(path) is not None and not root.is_dir(path):
                paths.append(path)
    kept = tuple(p for p in paths if not _in_tests(site, p) and not _build_only(folder, p))
    tests = tuple(p for p in paths if _in_tests(site, p))
    build_only = tuple(p for p in paths if not _in_tests(site, p) and _build_only(folder, p))
    licences = tuple(
        p
        for p in kept
        if p.startswith(folder + "/")
        and ("/licenses/" in p or re.match(r"(LICEN[CS]E|COPYING|NOTICE)", posixpath.basename(p)))
    )
    return Distribution(name, version, site, folder, kept, tests, licences, build_only)


def _build_only(dist_info: str, path: str) -> bool:
    return not path.startswith(dist_info + "/") and BUILD_ONLY.search(path) is not None


def _in_tests(site: str, path: str) -> bool:
    inside = path[len(site) + 1 :] if path.startswith(site + "/") else ""
    return any(part in TEST_FOLDERS for part in inside.split("/")[:-1])


def _headers(root: FsRoot, path: str) -> dict[str, list[str]]:
    """The header fields of a METADATA file (email-style), lower-cased names."""
    if not root.is_file(path):
        return {}
    with open(root.real_host_path(path), encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    fields: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    return fields


def _walk_files(root: FsRoot, folder: str) -> Iterator[str]:
    for name in sorted(root.listdir(folder)):
        path = posixpath.join(folder, name)
        st = root.lstat(path)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_files(root, path)
        else:
            yield path


@dataclass
class LeftOut:
    """What a pack of Python left out, bytes by reason."""

    bytes_by_reason: dict[str, int] = field(default_factory=dict)
    files_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, size: int) -> None:
        self.bytes_by_reason[reason] = self.bytes_by_reason.get(reason, 0) + size
        self.files_by_reason[reason] = self.files_by_reason.get(reason, 0) + 1


def stdlib_folder(root: FsRoot, venv: Venv) -> str | None:
    """The base interpreter's standard library: ``lib/pythonX.Y`` beside its ``home``."""
    homes = [venv.home] if venv.home else []
    homes += ["/usr/bin", "/usr/local/bin"]
    for home in homes:
        folder = posixpath.join(posixpath.dirname(home.rstrip("/")), "lib", f"python{venv.version}")
        if root.is_file(posixpath.join(folder, "os.py")):
            return folder
    return None


def stdlib_files(root: FsRoot, folder: str, left_out: LeftOut) -> list[str]:
    """The files of a standard library folder less what never runs in a container."""
    dynload = posixpath.join(folder, "lib-dynload")
    has_tk = root.is_dir(dynload) and any(n.startswith("_tkinter.") for n in root.listdir(dynload))
    kept = []
    for path in _walk_files(root, folder):
        reason = _stdlib_reason(path[len(folder) + 1 :], has_tk)
        if reason is None:
            kept.append(path)
            continue
        st = root.lstat(path)
        left_out.add(reason, st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0)
    return kept


def _stdlib_reason(inside: str, has_tk: bool) -> str | None:
    """Why a file of the standard library is left out (None: it stays)."""
    top = inside.split("/", 1)[0]
    parts = inside.split("/")
    if top in ("test", "idlelib", "ensurepip", "lib2to3", "pydoc_data"):
        return {"test": "test suites", "pydoc_data": "pydoc_data (help() topics)"}.get(top, top)
    if top in ("site-packages", "dist-packages"):
        return "the base's own site folder (not on a venv's path)"
    if any(part in TEST_FOLDERS for part in parts[:-1]):
        return "test suites"  # ctypes/test, ...
    if top == "lib-dynload":
        module = parts[-1].split(".", 1)[0]
        if re.match(r"(_test|_xxtestfuzz|xxlimited|_ctypes_test|xxsubtype)", module):
            return "test suites"
        if module in STDLIB_MODULES_LEFT_OUT:
            return STDLIB_MODULES_LEFT_OUT[module]
    if top.startswith("config-"):
        return "build configuration"
    if not has_tk and top in ("tkinter", "turtledemo", "turtle.py"):
        return "tkinter without Tk"
    return None


def imported_installers(root: FsRoot, paths: Iterable[str]) -> set[str]:
    """The installer distributions (pip, setuptools, wheel) that Python sources among
    ``paths`` import (``import pkg_resources`` needs setuptools)."""
    wanted: set[str] = set()
    for path in paths:
        if not path.endswith(".py") or not root.is_file(path):
            continue
        try:
            with open(root.real_host_path(path), "rb") as handle:
                text = handle.read(1 << 20)
        except OSError:
            continue
        for match in _IMPORT.finditer(text):
            module = match.group(1).decode()
            if module in INSTALLER_MODULES:
                wanted.add(INSTALLER_MODULES[module])
    return wanted


def owning(dists: Iterable[Distribution]) -> dict[str, Distribution]:
    """Which distribution each file belongs to (image paths)."""
    owners: dict[str, Distribution] = {}
    for dist in dists:
        for path in dist.files + dist.tests + dist.build_only:
            owners.setdefault(path, dist)
    return owners
