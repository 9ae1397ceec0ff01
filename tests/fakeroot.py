"""Shared test helpers: the CLI run as a user runs it, and small glibc roots made from this
machine's own files for --root tests (no compiler needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from bundler.loader.rootfs import FsRoot

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


DEBIAN_STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Architecture: amd64
Source: glibc
Version: 2.36-9
Description: GNU C Library
 continued here

Package: libfoo1
Status: install ok installed
Priority: optional
Section: libs
Architecture: amd64
Version: 1.0-1

Package: footool
Status: install ok installed
Priority: optional
Section: utils
Architecture: amd64
Version: 1.0-1

Package: divertor
Status: install ok installed
Priority: required
Section: admin
Architecture: all
Version: 3

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1
"""

DEBIAN_LISTS = {
    "libc6:amd64": [
        *("/.", "/lib64", LOADER, "/lib/x86_64-linux-gnu"),
        *(f"/lib/x86_64-linux-gnu/{name}" for name in ("libc.so.6", "libm.so.6")),
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/gconv/UTF-16.so",
    ],
    "libfoo1:amd64": [
        *(f"/{MULTIARCH}/{name}" for name in ("libfoo.so.1", "libfoo.so.1.0", "libfoo-extra.so.1")),
        "/usr/share/doc/libfoo1/README",
    ],
    "footool:amd64": ["/usr/bin/foo", "/usr/bin/footool", "/etc/foo.conf"],
    "divertor": ["/usr/bin/foo"],
}


def make_debian_root(top: Path) -> FsRoot:
    """A Debian-shaped root (merged /usr) with a dpkg database, a diversion and files that
    are not ELF: enough for ownership, metadata and layers, without a compiler."""
    lib = top / MULTIARCH
    (lib / "gconv").mkdir(parents=True)
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin")):
        (top / link).symlink_to(target)
    (top / "usr/lib64").mkdir()
    (top / "usr/bin").mkdir()
    (top / "etc").mkdir()
    (top / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    names = ("ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "gconv/UTF-16.so")
    for name in (*names, "libfoo.so.1.0", "libfoo-extra.so.1"):
        (lib / name).write_bytes(name.encode() * 100)
    (lib / "libfoo.so.1").symlink_to("libfoo.so.1.0")
    for name in ("foo", "footool", "foo.distrib"):
        (top / "usr/bin" / name).write_bytes(b"#!" + name.encode())
    (top / "etc/foo.conf").write_text("conf\n")
    info = top / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (top / "var/lib/dpkg/status").write_text(DEBIAN_STATUS)
    for name, lines in DEBIAN_LISTS.items():
        (info / f"{name}.list").write_text("\n".join(lines) + "\n")
    (top / "var/lib/dpkg/diversions").write_text("/usr/bin/foo\n/usr/bin/foo.distrib\ndivertor\n")
    return FsRoot(str(top))
