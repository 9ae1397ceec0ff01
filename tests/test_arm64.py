"""An arm64 root, checked against the real aarch64 loader run under qemu-user (binfmt_misc).

(a) every ELF file of the debootstrapped bookworm arm64 tree's usr/bin, usr/sbin and
    usr/lib/aarch64-linux-gnu: ``scratchpack --list --root`` against ``chroot TREE ldd``;
(b) the legacy hwcap folder ``atomics/`` (HWCAP_IMPORTANT = HWCAP_ATOMICS on aarch64, glibc
    2.28-2.36), in a copy of the tree: libraries placed in ``atomics/``, ``tls/atomics/``,
    ``aarch64/atomics/`` ... of an RPATH, RUNPATH, LD_LIBRARY_PATH and system directory, found
    without ld.so.cache and then through the cache the root's own ldconfig writes. qemu's
    default CPU has the atomics extension (scratchpack's default for an arm64 root); with
    QEMU_CPU=cortex-a53 (ARMv8.0) it has not, which ``--cpu-features none`` must match.
No arm64 compiler is needed: the cases are the tree's own files, edited with patchelf.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lddcompare as lc
import test_corpus as corpus

ARM64_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/aarch64-linux-gnu")
LIBDIR = "/usr/lib/aarch64-linux-gnu"
# Every legacy folder of a 2.36 loader on an atomics CPU, in its search order.
ATOMICS_ORDER = (
    "tls/aarch64/atomics",
    "tls/aarch64",
    "tls/atomics",
    "tls",
    "aarch64/atomics",
    "aarch64",
    "atomics",
    "",
)
NO_ATOMICS = {"QEMU_CPU": "cortex-a53"}  # ARMv8.0: no LSE atomics
TRACE_ENV = ("LD_DEBUG=libs", "LD_LIBRARY_PATH=/nx")

pytestmark = [pytest.mark.debootstrap, pytest.mark.ldd]


def _need_chroot() -> None:
    if os.geteuid() != 0 or shutil.which("chroot") is None:
        pytest.skip("chroot needs root and the chroot command")


@pytest.mark.slow
def test_arm64_tree_against_qemu_loader(debootstrap_arm64_root: Path) -> None:
    _need_chroot()
    root = str(debootstrap_arm64_root)
    files = corpus.elf_files(root, ARM64_DIRS)
    assert len(files) > 300, files
    start = time.monotonic()
    proc = lc.run_scratchpack(files, extra=["--root", root])
    ours = time.monotonic() - start
    binaries, _missing = lc.parse_json(proc.stdout)
    start = time.monotonic()
    traces = corpus.chroot_ldd_many(root, files, chunks=2)
    print(f"arm64: scratchpack {ours:.1f} s, ldd under qemu {time.monotonic() - start:.1f} s")
    corpus.assert_agreement("arm64", files, binaries, traces, corpus.chroot_realpath(root))


# ----- atomics folders -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One library, ``libNAME.so.1``, put in several legacy folders of one search directory."""

    name: str
    via: str  # rpath, runpath, llp (LD_LIBRARY_PATH) or system
    folders: tuple[str, ...]  # subfolders of the directory holding a copy ("" is the directory)

    @property
    def soname(self) -> str:
        return f"lib{self.name.replace('_', '')}.so.1"

    @property
    def directory(self) -> str:
        return LIBDIR if self.via == "system" else f"/opt/{self.name}/lib"

    @property
    def program(self) -> str:
        return f"/opt/{self.name}/bin/prog"

    def expected(self, atomics: bool) -> str | None:
        """The copy the loader takes: the first folder of its order that holds one (None: the
        library is not found)."""
        order = ATOMICS_ORDER if atomics else tuple(f for f in ATOMICS_ORDER if "atomics" not in f)
        first = next((f for f in order if f in self.folders), None)
        if first is None:
            return None
        return "/".join(p for p in (self.directory, first, self.soname) if p)


CASES = (
    Case("rpath_atomics", "rpath", ("atomics", "")),
    Case("rpath_tls_atomics", "rpath", ("tls/atomics", "atomics", "")),
    Case("rpath_aarch64_atomics", "rpath", ("aarch64/atomics", "aarch64", "")),
    Case("rpath_all", "rpath", ATOMICS_ORDER),
    Case("rpath_aarch64_first", "rpath", ("aarch64", "atomics", "")),
    Case("rpath_tls_first", "rpath", ("tls", "aarch64/atomics", "")),
    Case("rpath_atomics_only", "rpath", ("atomics",)),
    Case("runpath_atomics", "runpath", ("atomics", "")),
    Case("runpath_tls_aarch64_atomics", "runpath", ("tls/aarch64/atomics", "tls/aarch64", "")),
    Case("llp_atomics", "llp", ("atomics", "")),
    Case("llp_aarch64_atomics", "llp", ("aarch64/atomics", "atomics", "")),
    Case("system_atomics", "system", ("atomics", "")),
    Case("system_tls_atomics", "system", ("tls/atomics", "")),
    # ldconfig files atomics/ and tls/ (hwcap names) but not aarch64/ (no platform on aarch64):
    # through the cache the loader takes the plain copy here, without it aarch64/atomics/.
    Case("system_aarch64_atomics", "system", ("aarch64/atomics", "")),
)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"


def _make_case(root: Path, case: Case, library: str, program: str) -> None:
    for folder in case.folders:
        target = root / case.directory.lstrip("/") / folder / case.soname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / library.lstrip("/"), target)
        _run(["patchelf", "--set-soname", case.soname, str(target)])
    prog = root / case.program.lstrip("/")
    prog.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / program.lstrip("/"), prog)
    _run(["patchelf", "--add-needed", case.soname, str(prog)])
    if case.via in ("rpath", "runpath"):
        flag = ["--force-rpath"] if case.via == "rpath" else []
        _run(["patchelf", *flag, "--set-rpath", case.directory, str(prog)])


@pytest.fixture(scope="session")
def atomics_root(debootstrap_arm64_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the arm64 tree with every case, and no ld.so.cache yet."""
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf is not installed (make deps installs it)")
    _need_chroot()
    root = tmp_path_factory.mktemp("arm64-atomics") / "root"
    _run(["cp", "-a", str(debootstrap_arm64_root), str(root)])
    library = os.path.realpath(root / "usr/lib/aarch64-linux-gnu/libz.so.1")
    library = "/" + os.path.relpath(library, root)
    for case in CASES:
        _make_case(root, case, library, "/usr/bin/true")
    (root / "etc/ld.so.cache").unlink()
    return root


def _llp() -> str:
    return ":".join(c.directory for c in CASES if c.via == "llp")


def _compare(root: Path, cpu: list[str], env: dict[str, str], atomics: bool) -> list[str]:
    """Disagreements of scratchpack with the loader, and of either with the expected copy."""
    programs = [c.program for c in CASES]
    extra = ["--root", str(root), "--ld-library-path", _llp(), *cpu]
    binaries, _ = lc.parse_json(lc.run_scratchpack(programs, extra=extra).stdout)
    traces = corpus.chroot_ldd_many(
        str(root), programs, chunks=1, env={"LD_LIBRARY_PATH": _llp(), **env}
    )
    realpath = corpus.chroot_realpath(str(root))
    by_path = {b.path: b for b in binaries}
    problems = []
    for case in CASES:
        listed, trace = by_path[case.program], traces[case.program]
        problems += [f"{case.name}: {p}" for p in lc.diff(listed, trace, "/", realpath)]
        cached = (root / "etc/ld.so.cache").exists()
        want = case.expected(atomics)
        if cached and case.via == "system":
            # The cache lists what ldconfig filed (see CASES); the loader takes that first.
            filed = tuple(f for f in case.folders if "aarch64" not in f)
            want = Case(case.name, case.via, filed).expected(atomics)
        if want is None and case.soname not in trace.missing:
            problems.append(f"{case.name}: the loader finds {case.soname}: {trace.raw}")
        elif want is not None and realpath(want) not in trace.mapped("/", realpath):
            problems.append(f"{case.name}: the loader does not take {want}: {trace.raw}")
    return problems


def test_atomics_search_order_is_glibcs(atomics_root: Path) -> None:
    """LD_DEBUG=libs of the real loader lists the folders in ATOMICS_ORDER (and without the
    atomics extension, the same less the atomics folders)."""
    for env, atomics in (({}, True), (NO_ATOMICS, False)):
        # Through env(1) inside the root, or the host's chroot program would trace itself.
        proc = subprocess.run(
            ["chroot", str(atomics_root), "/usr/bin/env", *TRACE_ENV, "/usr/bin/true"],
            env={**corpus.CHROOT_ENV, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        line = next(x for x in proc.stderr.splitlines() if "search path=" in x)
        searched = line.split("search path=")[1].split()[0].split(":")
        order = [f for f in ATOMICS_ORDER if atomics or "atomics" not in f]
        assert searched == ["/".join(p for p in ("/nx", f) if p) for f in order], line


def test_atomics_folders_against_qemu_loader(atomics_root: Path) -> None:
    """Each case, with and without ld.so.cache, on CPUs with and without atomics."""
    problems = []
    phases = (
        ("no cache, atomics", [], {}, True),
        ("no cache, ARMv8.0", ["--cpu-features", "none"], NO_ATOMICS, False),
    )
    for what, cpu, env, atomics in phases:
        problems += [f"[{what}] {p}" for p in _compare(atomics_root, cpu, env, atomics)]
    # The root's own ldconfig, run under qemu, files atomics/ entries with hwcap bit 8.
    _run(["chroot", str(atomics_root), "/sbin/ldconfig"])
    listing = subprocess.run(
        ["chroot", str(atomics_root), "/sbin/ldconfig", "-p"], capture_output=True, text=True
    ).stdout
    assert "atomics/libsystematomics.so.1" in listing, listing
    phases = (
        ("cache, atomics", [], {}, True),
        ("cache, ARMv8.0", ["--cpu-features", "none"], NO_ATOMICS, False),
    )
    for what, cpu, env, atomics in phases:
        problems += [f"[{what}] {p}" for p in _compare(atomics_root, cpu, env, atomics)]
    print(f"atomics cases: {len(CASES)} x 4 phases, {len(problems)} disagreements")
    assert not problems, "\n".join(problems)
