"""Finding the programs a user names: a path, or a name on PATH; scripts lead to their interpreter.

Like the kernel's execve, a file that starts with ``#!`` runs the program named on that line,
which is found and resolved in turn (``#!/usr/bin/env NAME`` also brings NAME from PATH).
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from dataclasses import dataclass

from bundler.errors import BadElf, ProgramNotFound, UsageError
from bundler.loader.elf import is_elf, read_elf
from bundler.loader.rootfs import FsRoot, SymlinkLoop

log = logging.getLogger(__name__)

# The PATH of a fresh root shell on Debian; the one used inside --root.
DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Linux reads at most this much of a #! line (BINPRM_BUF_SIZE) and follows 4 nested scripts.
SHEBANG_LIMIT = 256
MAX_SCRIPT_DEPTH = 4


@dataclass(frozen=True)
class Script:
    """A #! script: the program that runs it and its optional single argument."""

    path: str
    interpreter: str
    argument: str | None


def locate(root: FsRoot, spec: str, search_path: tuple[str, ...], cwd: str) -> str:
    """The image path of a program given as a path (absolute or relative) or a name on PATH."""
    if "/" not in spec:
        try:
            return _on_path(root, spec, search_path)
        except ProgramNotFound:
            # Not on PATH, but a file of that name here: the user meant it (as ldd takes it).
            if root.is_host and root.is_file(posixpath.join(cwd, spec)):
                return posixpath.join(cwd, spec)
            raise
    host_inside = None if root.is_host else root.image_path_of_host(spec)
    if host_inside is not None and spec.startswith("/"):
        image = host_inside  # a host path into the root's tree: take it as that image path
    else:
        image = posixpath.normpath(posixpath.join(cwd, spec))
    _check_program(root, spec, image)
    return image


def _on_path(root: FsRoot, name: str, search_path: tuple[str, ...]) -> str:
    for directory in search_path:
        if not directory.startswith("/"):
            continue  # a relative PATH entry depends on where the program is started: skip it
        candidate = posixpath.join(directory, name)
        st = root.stat(candidate)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    where = "the root's PATH" if not root.is_host else "PATH"
    raise ProgramNotFound(f"{name}: no such program on {where} ({':'.join(search_path)})")


def _check_program(root: FsRoot, spec: str, image: str) -> None:
    try:
        # FsRoot.stat answers None for a loop (as for a missing file), so ask resolve, which
        # raises: the user is told about the loop, not "no such file".
        root.realpath(image)
        st = root.stat(image)
    except SymlinkLoop:
        raise UsageError(f"{spec}: too many levels of symbolic links") from None
    if st is None:
        raise ProgramNotFound(f"{spec}: no such file")
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{spec}: is a directory, not a program")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{spec}: is not a regular file")


def read_head(root: FsRoot, image: str) -> bytes:
    try:
        with open(root.real_host_path(image), "rb") as handle:
            return handle.read(SHEBANG_LIMIT)
    except OSError as exc:
        raise UsageError(f"{image}: {exc.strerror}") from None


def parse_script(image: str, head: bytes) -> Script | None:
    """The #! line as Linux reads it: interpreter, then everything else as one argument."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    if not line:
        raise BadElf(image, "empty #! line")
    parts = line.replace(b"\t", b" ").split(b" ", 1)
    argument = parts[1].strip(b" \t") if len(parts) > 1 else b""
    # Both halves are file names or words of any bytes: decode them as file names are (a strict
    # decode of a non-UTF-8 argument was a traceback).
    interpreter, rest = os.fsdecode(parts[0]), os.fsdecode(argument)
    return Script(image, interpreter, rest or None)


def script_programs(
    root: FsRoot, script: Script, search_path: tuple[str, ...], cwd: str
) -> list[str]:
    """The programs a script starts: its interpreter, and NAME for ``/usr/bin/env NAME``."""
    programs = [locate(root, script.interpreter, search_path, cwd)]
    if posixpath.basename(script.interpreter) == "env" and script.argument:
        name = script.argument.split()[0]
        if not name.startswith("-") and "=" not in name:
            programs.append(locate(root, name, search_path, cwd))
    return programs


def started_first(root: FsRoot, image: str) -> str | None:
    """The program execve() of ``image`` runs first: an ELF file's PT_INTERP, a script's
    absolute #! interpreter; None for a static program or a relative #! name. Raises BadElf or
    UsageError for a file that cannot be read as either."""
    head = read_head(root, image)
    if is_elf(head):
        return read_elf(root.real_host_path(image), image).interpreter
    script = parse_script(image, head)
    return script.interpreter if script and script.interpreter.startswith("/") else None


def classify(root: FsRoot, image: str) -> Script | None:
    """None for an ELF file, a Script for a #! script; anything else is an error."""
    head = read_head(root, image)
    if is_elf(head):
        return None
    script = parse_script(image, head)
    if script is None:
        raise BadElf(image, "neither an ELF file nor a #! script")
    return script
