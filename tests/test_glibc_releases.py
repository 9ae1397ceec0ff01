"""The loader's rules by glibc release, against the real loaders of three Debian trees:
bullseye (glibc 2.31), bookworm (2.36) and trixie (2.41). Their whole corpora are compared in
test_corpus.py; here:

(a) the release scratchpack reads from each tree's loader, and from where;
(b) libraries in ``glibc-hwcaps/`` and legacy folders (``tls``, ``x86_64``, ``haswell``,
    ``avx512_1``) of an RPATH directory and of a directory only ld.so.cache knows, in a copy of
    each tree: without a cache, then with the cache each of the three ldconfigs writes
    (``TREE/sbin/ldconfig -r COPY``: static programs, they run here as they are), each phase
    compared with ``chroot COPY ldd``, and on 2.33+ loaders also with the loader limited to
    x86-64-v2 (``ld.so --glibc-hwcaps-mask``) against ``--hwcaps x86-64-v2``;
(c) a program built here (it needs GLIBC_2.34) put in the bullseye tree: scratchpack's symbol
    version misses against ldd's "version `GLIBC_2.34' not found" lines.
The cached trees are never changed: every case works in a ``cp -a`` copy. The CPU is this
machine's; the Intel-only rules (haswell, avx512_1) are checked by stating the CPU in
test_rules.py, since no Intel CPU may be at hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lddcompare as lc
import test_corpus as corpus
from conftest import release_root

from bundler.loader.elf import read_elf
from bundler.loader.ldconfig import parse_ld_cache
from bundler.loader.ldso import LoaderFactory, SearchSettings
from bundler.loader.rootfs import FsRoot

pytestmark = [pytest.mark.debootstrap, pytest.mark.ldd]

SUITES = {"bullseye": (2, 31), "bookworm": (2, 36), "trixie": (2, 41)}
LOADER = "/lib64/ld-linux-x86-64.so.2"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
CONF = "etc/ld.so.conf.d/zz-release-cases.conf"
# The folders of one directory that hold a copy of the case's library ("" is the directory).
FOLDERS: dict[str, tuple[str, ...]] = {
    "v2": ("glibc-hwcaps/x86-64-v2", ""),
    "v3v2": ("glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2", ""),
    "v2only": ("glibc-hwcaps/x86-64-v2",),
    "x8664": ("x86_64", ""),
    "x8664only": ("x86_64",),
    "tls": ("tls", ""),
    "tlsonly": ("tls",),
    "tlsx8664": ("tls/x86_64", "x86_64", ""),
    "v2tls": ("glibc-hwcaps/x86-64-v2", "tls", ""),
    "haswell": ("haswell", ""),
    "avx512": ("avx512_1", ""),
}
_VERSION_MISS = re.compile(r"^\s*\S+: (?P<lib>\S+): version `(?P<ver>[^']+)' not found")


@dataclass(frozen=True)
class Case:
    """``libNAME.so.1`` in the folders of FOLDERS[layout] of one directory, reached through
    DT_RPATH (``via`` rpath) or only through ld.so.cache (``via`` cache: a conf file names the
    directory)."""

    layout: str
    via: str

    @property
    def name(self) -> str:
        return f"{self.via}{self.layout}"

    @property
    def soname(self) -> str:
        return f"lib{self.name}.so.1"

    @property
    def directory(self) -> str:
        # Not named as a hwcap folder: ldconfig would give every library in it that bit.
        return f"/opt/{self.via}/{self.layout}-dir"

    @property
    def program(self) -> str:
        return f"/opt/bin/{self.name}"

    def path(self, folder: str) -> str:
        return "/".join(p for p in (self.directory, folder, self.soname) if p)


CASES = tuple(Case(layout, via) for via in ("rpath", "cache") for layout in FOLDERS)


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout


def _need_tools() -> None:
    if os.geteuid() != 0 or shutil.which("chroot") is None:
        pytest.skip("chroot needs root and the chroot command")
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf is not installed (make deps installs it)")


def _tree(suite: str) -> Path:
    return release_root(suite)  # bookworm's is the shared debootstrap_root tree


@pytest.fixture(scope="module")
def trees() -> dict[str, Path]:
    return {suite: _tree(suite) for suite in SUITES}


def _make_cases(root: Path) -> None:
    library = "/" + os.path.relpath(os.path.realpath(root / LIBDIR.lstrip("/") / "libz.so.1"), root)
    for case in CASES:
        for folder in FOLDERS[case.layout]:
            target = root / case.path(folder).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / library.lstrip("/"), target)
            _run(["patchelf", "--set-soname", case.soname, str(target)])
        prog = root / case.program.lstrip("/")
        prog.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "usr/bin/true", prog)
        _run(["patchelf", "--add-needed", case.soname, str(prog)])
        if case.via == "rpath":
            _run(["patchelf", "--force-rpath", "--set-rpath", case.directory, str(prog)])
    dirs = sorted({c.directory for c in CASES if c.via == "cache"})
    (root / CONF).write_text("".join(d + "\n" for d in dirs))


def _trace(root: Path, programs: list[str], mask: str | None) -> dict[str, lc.LddResult]:
    """ldd inside the root, or the loader itself with --glibc-hwcaps-mask, one shell."""
    # ldd's own way (LD_TRACE_LOADED_OBJECTS), as --list stops at the first missing library.
    tracer = (
        "ldd" if mask is None else f"LD_TRACE_LOADED_OBJECTS=1 {LOADER} --glibc-hwcaps-mask {mask}"
    )
    script = f'for f in "$@"; do echo "=== $f"; {tracer} "$f" 2>&1; done'
    out = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", script, "sh", *programs],
        capture_output=True,
        text=True,
        env=corpus.CHROOT_ENV,
        check=False,
    ).stdout
    chunks = out.split("=== ")[1:]
    traces = {c.split("\n", 1)[0]: lc.parse_ldd(c.split("\n", 1)[1]) for c in chunks}
    assert set(traces) == set(programs), out[-2000:]
    return traces


def _found(trace: lc.LddResult, case: Case) -> str | None:
    """The folder of the case's directory whose copy the loader took; None: not found."""
    path = dict(trace.libs).get(case.soname)
    if path is None:
        return None
    rest = path[len(case.directory) + 1 :]
    return rest[: -len(case.soname)].rstrip("/")


@dataclass(frozen=True)
class Phase:
    suite: str  # whose tree (and loader)
    cache: str | None  # whose ldconfig wrote the cache; None: no cache
    mask: str | None  # --glibc-hwcaps-mask / --hwcaps

    def __str__(self) -> str:
        return f"{self.suite}, cache by {self.cache or 'nobody'}, mask {self.mask or 'none'}"


def _compare(root: Path, phase: Phase) -> tuple[list[str], dict[str, str | None]]:
    """Disagreements of scratchpack with the loader, and where the loader found each case."""
    programs = [c.program for c in CASES]
    extra = ["--root", str(root), *(["--hwcaps", phase.mask] if phase.mask else [])]
    binaries, _ = lc.parse_json(lc.run_scratchpack(programs, extra=extra).stdout)
    traces = _trace(root, programs, phase.mask)
    realpath = corpus.chroot_realpath(str(root))
    by_path = {b.path: b for b in binaries}
    problems: list[str] = []
    found: dict[str, str | None] = {}
    for case in CASES:
        trace = traces[case.program]
        problems += [
            f"[{phase}] {case.name}: {p}"
            for p in lc.diff(by_path[case.program], trace, "/", realpath)
        ]
        found[case.name] = _found(trace, case)
    return problems, found


@pytest.fixture(scope="module")
def case_roots(
    trees: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    _need_tools()
    roots = {}
    for suite, tree in trees.items():
        root = tmp_path_factory.mktemp(f"release-{suite}") / "root"
        _run(["cp", "-a", str(tree), str(root)])
        _make_cases(root)
        roots[suite] = root
    yield roots
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


def test_release_of_each_loader(trees: dict[str, Path]) -> None:
    """The release and its source; the other sources agree (libc.so.6's text), and the highest
    GLIBC_2.N libc.so.6 defines is a lower bound."""
    sources = {"bullseye": "the loader's file name", "bookworm": "the loader's text"}
    for suite, want in SUITES.items():
        root = FsRoot(str(trees[suite]))
        factory = LoaderFactory(root, SearchSettings())
        ident = read_elf(root.real_host_path("/usr/bin/true")).ident
        loader = factory.get(LOADER, ident)
        assert (loader.version, loader.version_from) == (
            want,
            sources.get(suite, "the loader's text"),
        )
        # Without the loader's bytes nor its file name: libc.so.6's own banner.
        version, source = factory.glibc_release("/nonexistent", b"", loader.system_dirs)
        assert version == want, source
        assert source.endswith("libc.so.6's text")
        defs = read_elf(root.real_host_path(f"{LIBDIR}/libc.so.6")).version_defs or ()
        nodes = [tuple(map(int, n[6:].split(".")[:2])) for n in defs if n.startswith("GLIBC_2.")]
        assert (2, 28) <= max(nodes) <= want, sorted(nodes)


def test_hwcaps_folders_by_release(trees: dict[str, Path], case_roots: dict[str, Path]) -> None:
    """Every case in every tree, under no cache and under each release's ldconfig."""
    problems: list[str] = []
    seen: dict[Phase, dict[str, str | None]] = {}
    for suite, root in case_roots.items():
        cache = root / "etc/ld.so.cache"
        writers: list[str | None] = [None, *SUITES]
        for writer in writers:
            cache.unlink(missing_ok=True)
            if writer is not None:
                ldconfig = trees[writer] / "sbin/ldconfig"
                _run([str(ldconfig), "-r", str(root)])
            masks = [None, "x86-64-v2"] if SUITES[suite] >= (2, 33) else [None]
            for mask in masks:
                phase = Phase(suite, writer, mask)
                found, seen[phase] = _compare(root, phase)
                problems += found
    print(f"release cases: {len(CASES)} cases x {len(seen)} phases, {len(problems)} disagree")
    assert not problems, "\n".join(problems)
    _assert_rules_exercised(seen, case_roots)


def _assert_rules_exercised(
    seen: dict[Phase, dict[str, str | None]], roots: dict[str, Path]
) -> None:
    """The real loaders differ as the rules say, so the agreement above covers each rule."""
    old, mid, new = (seen[Phase(s, None, None)] for s in SUITES)
    # glibc-hwcaps folders from 2.33 on.
    assert old["rpathv2only"] is None and old["rpathv2"] == ""
    assert mid["rpathv2"] == "glibc-hwcaps/x86-64-v2" and new["rpathv2only"] is not None
    # Legacy folders up to 2.36; 2.33-2.36 take glibc-hwcaps first.
    assert old["rpathtlsonly"] == "tls" and mid["rpathtlsonly"] == "tls"
    assert old["rpathv2tls"] == "tls" and mid["rpathv2tls"] == "glibc-hwcaps/x86-64-v2"
    assert new["rpathtlsonly"] is None and new["rpathx8664only"] is None
    # A 2.36 ldconfig files tls/ for a 2.41 loader, which does not take it (TLS bit set).
    by_bookworm = seen[Phase("trixie", "bookworm", None)]
    assert by_bookworm["cachetlsonly"] is None and by_bookworm["cachetls"] == ""
    cache = parse_ld_cache(_cache_of(roots["trixie"], "bookworm"), origin="bookworm's")
    assert any("/tls/" in e.path for e in cache.entries)
    # A 2.31 loader skips the glibc-hwcaps entries of a newer ldconfig.
    assert seen[Phase("bullseye", "trixie", None)]["cachev2only"] is None
    assert seen[Phase("bookworm", "trixie", None)]["cachev2only"] is not None


def _cache_of(root: Path, writer: str) -> bytes:
    """The cache the tree ``writer``'s ldconfig writes for ``root`` (left in place)."""
    tree = _tree(writer)
    (root / "etc/ld.so.cache").unlink(missing_ok=True)
    _run([str(tree / "sbin/ldconfig"), "-r", str(root)])
    return (root / "etc/ld.so.cache").read_bytes()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_symbol_version_miss_in_bullseye(trees: dict[str, Path], tmp_path: Path) -> None:
    """A program built here needs GLIBC_2.34 (__libc_start_main), which bullseye's libc.so.6
    lacks: scratchpack's "missing" entries are ldd's "version ... not found" lines."""
    _need_tools()
    root = tmp_path / "root"
    _run(["cp", "-a", str(trees["bullseye"]), str(root)])
    prog = root / "opt/new/prog"
    prog.parent.mkdir(parents=True)
    _run(["gcc", str(corpus.MAIN_C), "-o", str(prog)])
    image = "/opt/new/prog"
    raw = subprocess.run(
        ["chroot", str(root), "ldd", image],
        capture_output=True,
        text=True,
        env=corpus.CHROOT_ENV,
        check=False,
    )
    text = raw.stdout + raw.stderr
    ldd_misses = {(m["ver"], m["lib"]) for m in map(_VERSION_MISS.match, text.splitlines()) if m}
    assert "GLIBC_2.34" in {version for version, _ in ldd_misses}, text
    proc = lc.run_scratchpack([image], extra=["--root", str(root)])
    doc_missing = lc.parse_json(proc.stdout)[1]
    ours = {(m["version"], m["library"]) for m in doc_missing if "version" in m}
    realpath = corpus.chroot_realpath(str(root))
    assert {(v, realpath(p)) for v, p in ours} == {(v, realpath(p)) for v, p in ldd_misses}, (
        text,
        doc_missing,
    )
    print(f"bullseye version misses: {len(ldd_misses)}, the same in scratchpack's")
    shutil.rmtree(root)


# The features of a Skylake-SP-class Intel CPU, as /proc/cpuinfo names them.
SKYLAKE_SP = (
    "intel,sse2,cx16,lahf_lm,popcnt,pni,sse4_1,sse4_2,ssse3,avx,avx2,bmi1,bmi2,f16c,fma,abm,"
    "movbe,xsave,avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
)


def test_stated_intel_cpu_by_release(case_roots: dict[str, Path]) -> None:
    """No Intel CPU here: the vendor is stated. Up to 2.36 its loader searches haswell/ (the
    platform) and avx512_1/ (Skylake-class AVX-512, haswell/avx512_1 first); from 2.37 neither."""
    programs = [Case(layout, "rpath").program for layout in ("haswell", "avx512")]
    want = {
        "bullseye": ("haswell", "avx512_1"),
        "bookworm": ("haswell", "avx512_1"),
        "trixie": ("", ""),
    }
    for suite, root in case_roots.items():
        extra = ["--root", str(root), "--cpu-features", SKYLAKE_SP]
        binaries, _ = lc.parse_json(lc.run_scratchpack(programs, extra=extra).stdout)
        got = []
        for binary, layout in zip(binaries, ("haswell", "avx512"), strict=True):
            case = Case(layout, "rpath")
            trace = lc.LddResult(libs=binary.libs)
            got.append(_found(trace, case))
        assert tuple(got) == want[suite], (suite, got)
