"""Language runtimes (Python, Perl, Node) packed without their modules: say so, in one line.

An interpreter's ELF closure is enough to answer ``--version`` and little else: Python cannot
import ``encodings`` (it stops before its first line), Perl cannot ``use POSIX``, Debian's
node dies with SIGSEGV loading a builtin it keeps in ``/usr/share/nodejs``. The modules are
data to the loader, so no resolution finds them; a traced run that does the real work does
(``--trace``), or the folders themselves (``--extra``). Silence would be the worst answer: the
image builds, and fails when it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from bundler.loader.closure import Binary, BinaryKind
from bundler.loader.rootfs import FsRoot, SymlinkLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Language:
    name: str
    program: re.Pattern[str]  # the interpreter's file name (links followed); group 1: version
    module_dirs: tuple[str, ...]  # image-path globs; "{version}" from the file name, else "*"


LANGUAGES = (
    Language(
        "Python",
        re.compile(r"python(\d+(?:\.\d+)?)(?:[dmu]*)"),
        ("/usr/lib/python{version}", "/usr/local/lib/python{version}"),
    ),
    Language(
        "Perl",
        re.compile(r"perl(?:(\d+\.\d+)(?:\.\d+)?)?(?:-[\w-]+)?"),
        (
            "/usr/share/perl/{version}*",
            "/usr/lib/*/perl/{version}*",
            "/usr/lib/*/perl-base",
            "/usr/share/perl5",
            "/usr/lib/*/perl5/*",
            "/usr/local/lib/perl5",
        ),
    ),
    Language(
        "Node.js",
        re.compile(r"node(?:js)?()"),
        ("/usr/share/nodejs", "/usr/lib/node_modules", "/usr/local/lib/node_modules"),
    ),
    Language("Ruby", re.compile(r"ruby(\d+\.\d+)?"), ("/usr/lib/ruby/{version}*",)),
    Language("Lua", re.compile(r"lua(\d+\.\d+)?"), ("/usr/share/lua/{version}*",)),
    Language("Tcl", re.compile(r"tclsh(\d+\.\d+)?"), ("/usr/share/tcltk/tcl{version}*",)),
    Language("PHP", re.compile(r"php(\d+\.\d+)?"), ("/usr/share/php", "/usr/lib/php/{version}*")),
)


@dataclass(frozen=True)
class Unpacked:
    """An interpreter of the plan whose module folders are not in it."""

    program: str
    language: str
    folders: tuple[str, ...]
    size: int  # bytes of regular files below the folders


def runtimes_without_modules(
    root: FsRoot, binaries: Iterable[Binary], planned: Collection[str]
) -> list[Unpacked]:
    """Each packed interpreter none of whose module folders has a file among the planned paths."""
    found: list[Unpacked] = []
    seen: set[str] = set()
    for binary in binaries:
        if binary.kind == BinaryKind.SCRIPT or binary.path in seen:
            continue
        seen.add(binary.path)
        match = _language_of(root, binary.path)
        if match is None:
            continue
        language, version = match
        sizes = {f: _tree_size(root, f) for f in _module_folders(root, language, version)}
        folders = tuple(folder for folder, size in sizes.items() if size)  # empty site dirs
        if not folders or any(_planned_below(planned, folder) for folder in folders):
            continue
        found.append(Unpacked(binary.path, language.name, folders, sum(sizes.values())))
    return found


def warn_runtimes_without_modules(
    root: FsRoot, binaries: Iterable[Binary], planned: Collection[str]
) -> None:
    """Warn for each interpreter none of whose modules is among ``planned`` (image paths)."""
    for item in runtimes_without_modules(root, binaries, planned):
        count = len(item.folders)
        where = item.folders[0] if count == 1 else f"{count} folders, -v lists them"
        log.warning(
            "%s: a %s interpreter packed without its modules (%s; %.1f MB): the image can do "
            "little beyond --version. Add --trace 'ARGS' with a run that does the real work "
            "(packs what it uses), or --extra each folder",
            item.program,
            item.language,
            where,
            item.size / 1e6,
        )
        for folder in item.folders:
            log.info("  %s modules: %s", item.language, folder)


def _language_of(root: FsRoot, program: str) -> tuple[Language, str] | None:
    """The language of a program by its file name, as named and as its links resolve
    (``python3`` -> ``python3.11``, which tells the version)."""
    names = [posixpath.basename(program)]
    with contextlib.suppress(SymlinkLoop):
        names.append(posixpath.basename(root.realpath(program)))
    for language in LANGUAGES:
        versions = [m.group(1) or "" for m in map(language.program.fullmatch, names) if m]
        if versions:
            return language, max(versions, key=len)
    return None


def _module_folders(root: FsRoot, language: Language, version: str) -> list[str]:
    folders: list[str] = []  # resolved: perl/5.36 is a link to perl/5.36.0, said once
    for pattern in language.module_dirs:
        matches = root.glob(pattern.format(version=version or "*"))
        for path in (match for match in matches if root.is_dir(match)):
            real = root.realpath(path)
            if real not in folders:
                folders.append(real)
    return folders


def _planned_below(planned: Collection[str], folder: str) -> bool:
    prefix = folder.rstrip("/") + "/"
    return any(path.startswith(prefix) for path in planned)


def _tree_size(root: FsRoot, folder: str) -> int:
    total = 0
    for top, _dirs, files in os.walk(root.real_host_path(folder)):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
