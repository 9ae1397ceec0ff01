"""scratchpack --list --json against the loader, file by file, on whole systems.

(a) this machine: every ELF regular file under /usr/bin, /usr/sbin, /usr/lib/x86_64-linux-gnu and
    /usr/libexec, in one scratchpack call, each traced by ldd;
(b) a debootstrapped bookworm tree: the same folders with ``--root``, traced by ``chroot ROOT ldd``;
    and the same for bullseye (glibc 2.31) and trixie (2.41) trees;
(c) a copy of that tree whose only route to a library is ld.so.cache (its conf file removed after
    ldconfig ran).
Paths are compared by real path; under a root, symbolic links are resolved chroot-style here (not
with scratchpack's code) so the two sides are judged independently.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lddcompare as lc
from conftest import release_root

CORPUS_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu", "/usr/libexec")
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
LIB_C = Path(__file__).resolve().parent.parent / "testdata" / "src" / "lib.c"
MAIN_C = Path(__file__).resolve().parent.parent / "testdata" / "src" / "main.c"


def elf_files(top: str, dirs: Iterable[str] = CORPUS_DIRS) -> list[str]:
    """Image paths of ELF regular files (not links) under ``dirs`` of the tree at ``top``."""
    found = []
    for d in dirs:
        host_dir = os.path.join(top, d.lstrip("/"))
        if os.path.islink(host_dir):
            continue  # merged /usr: the folder it points to is walked on its own
        for dirpath, _dirs, files in os.walk(host_dir):
            for name in sorted(files):
                p = os.path.join(dirpath, name)
                try:
                    if not stat.S_ISREG(os.lstat(p).st_mode):
                        continue
                    with open(p, "rb") as f:
                        head = f.read(18)
                    # Programs and libraries only (ET_EXEC, ET_DYN): scratchpack refuses
                    # relocatable objects (crt1.o, ...) as bad input, and ldd has nothing to say.
                    if head[:4] != b"\x7fELF" or int.from_bytes(head[16:18], "little") not in (
                        2,
                        3,
                    ):
                        continue
                except OSError:
                    continue
                found.append("/" + os.path.relpath(p, top) if top != "/" else p)
    return sorted(set(found))


def chroot_realpath(root: str) -> Callable[[str], str]:
    """realpath of an image path as ``chroot root`` sees it ('..' and absolute links clamp at
    the top)."""
    cache: dict[str, str] = {}

    def resolve(path: str, depth: int = 0) -> str:
        if depth > 40:
            raise OSError(f"too many links: {path}")
        done = "/"
        parts = [p for p in path.split("/") if p not in ("", ".")]
        while parts:
            part = parts.pop(0)
            if part == "..":
                done = posixpath.dirname(done)
                continue
            cur = posixpath.join(done, part)
            host = root.rstrip("/") + cur
            if os.path.islink(host):
                target = os.readlink(host)
                base = "/" if target.startswith("/") else done
                done = resolve(posixpath.join(base, target), depth + 1)
            else:
                done = cur
        return done

    def realpath(path: str) -> str:
        if path not in cache:
            cache[path] = resolve(path)
        return cache[path]

    return realpath


def compare_all(
    files: list[str],
    binaries: list[lc.Listed],
    traces: dict[str, lc.LddResult],
    realpath: Callable[[str], str],
) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    by_path = {b.path: b for b in binaries}
    failures: list[tuple[str, list[str]]] = []
    stats = {"dynamic": 0, "not_dynamic": 0, "libraries": 0, "loader_error": 0}
    for f in files:
        listed = by_path.get(f)
        res = traces[f]
        if listed is None:
            failures.append((f, ["not in scratchpack's output"]))
            continue
        if res.error is not None:
            stats["loader_error"] += 1
        elif res.not_dynamic and not res.libs and not res.plain:
            stats["not_dynamic"] += 1
        else:
            stats["dynamic"] += 1
            stats["libraries"] += len(res.libs)
        problems = lc.diff(listed, res, "/", realpath)
        if problems:
            failures.append((f, problems))
    return failures, stats


def ldd_many(files: list[str], workers: int = 4) -> dict[str, lc.LddResult]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(files, pool.map(lc.run_ldd, files), strict=True))


def chroot_ldd_many(
    root: str, files: list[str], chunks: int = 4, env: dict[str, str] | None = None
) -> dict[str, lc.LddResult]:
    """ldd inside ``chroot root``, many files per shell, a few shells at once; ``env`` is
    added to CHROOT_ENV (LD_LIBRARY_PATH, QEMU_CPU ...)."""
    # The variables are set inside the root, not for the host's chroot program.
    exports = "".join(f"export {k}='{v}'; " for k, v in (env or {}).items())
    script = exports + 'for f in "$@"; do echo "=== $f"; ldd "$f" 2>&1; done'

    def one(batch: list[str]) -> dict[str, lc.LddResult]:
        proc = subprocess.run(
            ["chroot", root, "/bin/sh", "-c", script, "sh", *batch],
            capture_output=True,
            text=True,
            env={**CHROOT_ENV, **{k: v for k, v in (env or {}).items() if k.startswith("QEMU_")}},
            timeout=1800,
            check=False,
        )
        out: dict[str, list[str]] = {}
        current = None
        for line in proc.stdout.splitlines():
            if line.startswith("=== "):
                current = line[4:]
                out[current] = []
            elif current is not None:
                out[current].append(line)
        missing = [f for f in batch if f not in out]
        assert not missing, f"chroot ldd printed nothing for {missing[:5]}: {proc.stderr[-2000:]}"
        return {f: lc.parse_ldd("\n".join(lines)) for f, lines in out.items()}

    size = max(1, -(-len(files) // chunks))
    batches = [files[i : i + size] for i in range(0, len(files), size)]
    result: dict[str, lc.LddResult] = {}
    with ThreadPoolExecutor(max_workers=chunks) as pool:
        for part in pool.map(one, batches):
            result.update(part)
    return result


def assert_agreement(
    what: str,
    files: list[str],
    binaries: list[lc.Listed],
    traces: dict[str, lc.LddResult],
    realpath: Callable[[str], str],
) -> None:
    failures, stats = compare_all(files, binaries, traces, realpath)
    print(f"{what}: {len(files)} files, {stats}, {len(failures)} disagree")
    assert stats["dynamic"] > 0, "no dynamic program in the corpus: the test proves nothing"
    assert not failures, (
        f"{what}: {len(failures)} of {len(files)} files disagree with ldd:\n"
        + lc.format_report(failures)
    )


@pytest.mark.ldd
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd: not a glibc host")
def test_host_corpus() -> None:
    files = elf_files("/")
    assert len(files) > 100, files
    proc = lc.run_scratchpack(files)
    binaries, _missing = lc.parse_json(proc.stdout)
    traces = ldd_many(files)
    assert_agreement("host", files, binaries, traces, os.path.realpath)


def _need_chroot() -> None:
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    if shutil.which("chroot") is None:
        pytest.skip("no chroot command")


@pytest.mark.ldd
@pytest.mark.slow
@pytest.mark.debootstrap
def test_debootstrap_corpus(debootstrap_root: Path) -> None:
    _need_chroot()
    root = str(debootstrap_root)
    files = elf_files(root)
    assert len(files) > 100, files
    proc = lc.run_scratchpack(files, extra=["--root", root])
    binaries, _missing = lc.parse_json(proc.stdout)
    traces = chroot_ldd_many(root, files)
    assert_agreement("debootstrap", files, binaries, traces, chroot_realpath(root))


@pytest.mark.ldd
@pytest.mark.slow
@pytest.mark.debootstrap
@pytest.mark.parametrize("suite", ["bullseye", "trixie"])
def test_release_corpus(suite: str) -> None:
    """The same on the trees of the glibc releases around bookworm's: 2.31 and 2.41."""
    _need_chroot()
    root = str(release_root(suite))
    files = elf_files(root)
    assert len(files) > 300, files
    proc = lc.run_scratchpack(files, extra=["--root", root])
    binaries, _missing = lc.parse_json(proc.stdout)
    traces = chroot_ldd_many(root, files, chunks=2)
    assert_agreement(suite, files, binaries, traces, chroot_realpath(root))


@pytest.mark.ldd
@pytest.mark.slow
@pytest.mark.debootstrap
def test_root_cache_only_directory(debootstrap_root: Path, tmp_path: Path) -> None:
    """A library folder named only by a conf file that is gone after ldconfig ran: ld.so finds
    the library through ld.so.cache alone, and so must scratchpack --root."""
    _need_chroot()
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    root = tmp_path / "root"
    subprocess.run(["cp", "-al", str(debootstrap_root), str(root)], check=True)
    libdir = root / "opt/cacheonly/lib"
    libdir.mkdir(parents=True)
    lib = libdir / "libcacheonly.so.1"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            '-DVARIANT="cache-only"',
            str(LIB_C),
            "-o",
            str(lib),
            "-Wl,-soname,libcacheonly.so.1",
        ],
        check=True,
    )
    prog = root / "opt/cacheonly/bin/prog"
    prog.parent.mkdir(parents=True)
    subprocess.run(
        ["gcc", str(MAIN_C), "-o", str(prog), "-Wl,--no-as-needed", str(lib)], check=True
    )
    conf = root / "etc/ld.so.conf.d/zz-cacheonly.conf"
    conf.write_text("/opt/cacheonly/lib\n")
    # ldconfig writes a new cache and renames it: the shared (hard-linked) tree is not touched.
    cache = root / "etc/ld.so.cache"
    before = cache.stat().st_ino if cache.exists() else None
    subprocess.run(["chroot", str(root), "/sbin/ldconfig"], check=True, env=CHROOT_ENV)
    assert cache.stat().st_ino != before
    conf.unlink()

    image_prog = "/opt/cacheonly/bin/prog"
    traces = chroot_ldd_many(str(root), [image_prog], chunks=1)
    res = traces[image_prog]
    assert ("libcacheonly.so.1", "/opt/cacheonly/lib/libcacheonly.so.1") in res.libs, res.raw
    proc = lc.run_scratchpack([image_prog], extra=["--root", str(root)])
    binaries, missing = lc.parse_json(proc.stdout)
    assert missing == []
    problems = lc.diff(binaries[0], res, "/", chroot_realpath(str(root)))
    assert not problems, "\n".join(problems)
    assert ("libcacheonly.so.1", "/opt/cacheonly/lib/libcacheonly.so.1") in binaries[0].libs

    # Control: without the cache entry (cache rebuilt without the conf) neither finds it.
    subprocess.run(["chroot", str(root), "/sbin/ldconfig"], check=True, env=CHROOT_ENV)
    res = chroot_ldd_many(str(root), [image_prog], chunks=1)[image_prog]
    assert res.missing == {"libcacheonly.so.1"}, res.raw
    binaries, _ = lc.parse_json(
        lc.run_scratchpack([image_prog], extra=["--root", str(root)]).stdout
    )
    assert binaries[0].missing == {"libcacheonly.so.1"}
