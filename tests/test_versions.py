"""Symbol versions, against the real loader: a program built against a newer library than the
one it finds (the GLIBC_2.34-on-bullseye failure, in small) is reported as ldd reports it, and
a pack refuses it.

Built here with gcc: libv.so.1 "new" defines VER_1 and VER_2 (the program uses a VER_2
symbol), "old" only VER_1, "plain" no versions at all (the loader accepts any need then).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, run

from bundler.loader.elf import read_elf

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
    pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host"),
]

LIB = """
int f1(void) { return 1; }
#ifdef NEW
int f2(void) { return 2; }
#endif
"""
PROGRAM = """
int f1(void); int f2(void);
int main(void) { return f1() + f2() - 3; }
"""


def _build(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.c").write_text(LIB)
    (src / "prog.c").write_text(PROGRAM)
    (src / "new.map").write_text("VER_1 { global: f1; local: *; };\nVER_2 { global: f2; } VER_1;\n")
    (src / "old.map").write_text("VER_1 { global: f1; local: *; };\n")
    dirs = {name: tmp_path / name for name in ("new", "old", "plain")}
    for name, folder in dirs.items():
        folder.mkdir()
        flags = {
            "new": ["-DNEW", f"-Wl,--version-script={src / 'new.map'}"],
            "old": [f"-Wl,--version-script={src / 'old.map'}"],
            "plain": ["-DNEW"],
        }[name]
        _gcc(
            "-shared",
            "-fPIC",
            "-Wl,-soname,libv.so.1",
            *flags,
            "-o",
            folder / "libv.so.1",
            src / "lib.c",
        )
    _gcc(src / "prog.c", "-o", tmp_path / "prog", f"-L{dirs['new']}", "-l:libv.so.1")
    return {"prog": tmp_path / "prog", **dirs}


def _gcc(*args: object) -> None:
    done = subprocess.run(["gcc", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _ldd_misses(program: Path, libdir: Path) -> set[tuple[str, str, str]]:
    """(version, library, needed_by) from ldd's 'version `X' not found' lines."""
    done = subprocess.run(
        ["ldd", str(program)],
        capture_output=True,
        text=True,
        env={"LD_LIBRARY_PATH": str(libdir), "PATH": "/usr/bin:/bin"},
    )
    found = set()
    for line in (done.stdout + done.stderr).splitlines():
        match = re.search(r"(\S+): version `([^']+)' not found \(required by (\S+)\)", line)
        if match:
            found.add((match.group(2), match.group(1), match.group(3)))
    return found


def _listed(program: Path, libdir: Path) -> dict[str, object]:
    result = run("--list", "--json", "--ld-library-path", str(libdir), str(program))
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_version_needs_and_definitions_match_readelf(tmp_path: Path) -> None:
    built = _build(tmp_path)
    program = read_elf(str(built["prog"]))
    assert {(n.file, n.version) for n in program.version_needs} >= {("libv.so.1", "VER_2")}
    assert read_elf(str(built["new"] / "libv.so.1")).version_defs == {"VER_1", "VER_2"}
    assert read_elf(str(built["old"] / "libv.so.1")).version_defs == {"VER_1"}
    assert read_elf(str(built["plain"] / "libv.so.1")).version_defs is None
    readelf = subprocess.run(
        ["readelf", "-V", "--wide", str(built["prog"])], capture_output=True, text=True
    ).stdout
    names = set(re.findall(r"Name: (\S+)\s+Flags", readelf))
    assert {n.version for n in program.version_needs} == names


def test_a_missing_version_is_reported_as_ldd_reports_it(tmp_path: Path) -> None:
    built = _build(tmp_path)
    for libdir, expected in ((built["old"], True), (built["new"], False), (built["plain"], False)):
        ldd = _ldd_misses(built["prog"], libdir)
        ours = {
            (m["version"], m["library"], m["needed_by"])
            for m in _listed(built["prog"], libdir)["missing"]  # type: ignore[attr-defined]
            if "version" in m
        }
        assert ours == ldd, libdir
        assert bool(ours) == expected, libdir
    old = _listed(built["prog"], built["old"])["missing"]
    expected_miss = {
        "version": "VER_2",
        "library": str(built["old"] / "libv.so.1"),
        "needed_by": str(built["prog"]),
    }
    assert expected_miss in old  # type: ignore[operator]


def test_a_pack_refuses_a_missing_version_unless_allowed(tmp_path: Path) -> None:
    built = _build(tmp_path)
    args = ["--ld-library-path", str(built["old"]), str(built["prog"])]
    out = tmp_path / "out"
    refused = run(*args, "-o", str(out))
    assert refused.returncode == 1
    assert f"libv.so.1: version `VER_2' not found (required by {built['prog']})" in refused.stderr
    assert "1 symbol version the loader would not find (VER_2)" in refused.stderr
    assert not out.exists()
    allowed = run(*args, "-o", str(out), "--allow-missing", "-q")
    assert allowed.returncode == 0, allowed.stderr
    listed = run("--list", *args)
    assert listed.returncode == 0
    assert "version `VER_2' not found" in listed.stderr
