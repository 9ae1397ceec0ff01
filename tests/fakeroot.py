"""Shared test helpers: the CLI run as a user runs it, and small glibc roots made from this
machine's own files for --root tests (no compiler needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

LOADER = "/lib64/ld-linux-x86-64.so.2"
MULTIARCH = "usr/lib/x86_64-linux-gnu"


def host_has_glibc_x86_64() -> bool:
    return Path(LOADER).exists() and Path("/lib/x86_64-linux-gnu/libc.so.6").exists()


def make_root(
    top: Path, programs: Iterable[str] = ("/usr/bin/true",), libs: Iterable[str] = ()
) -> Path:
    """A merged-/usr Debian-like root: loader, libc, the given host libraries and programs."""
    multiarch = top / MULTIARCH
    multiarch.mkdir(parents=True)
    (top / "usr/bin").mkdir()
    (top / "usr/lib64").mkdir()
    (top / "etc").mkdir()
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin")):
        (top / link).symlink_to(target)
    shutil.copy2(os.path.realpath(LOADER), multiarch / "ld-linux-x86-64.so.2")
    (top / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", *libs):
        shutil.copy2(os.path.realpath(lib), multiarch / Path(lib).name)
    for program in programs:
        shutil.copy2(program, top / "usr/bin" / Path(program).name)
    return top


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``scratchpack ARGS`` in a fresh interpreter, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
