"""Shared fixtures.

``debootstrap_root``: a Debian bookworm tree made with ``debootstrap --variant=minbase``, with a
few packages whose libraries are interesting (redis, python3, curl, OpenSSL). It is built once
into ``<repo>/.cache/debootstrap-bookworm`` (in a temporary folder beside it, renamed into place
when complete, so an interrupted build never leaves a half tree) and reused by later runs. A
stamp file beside it records what it was built from; a different package list rebuilds it.

``release_root(suite)``: the same for bullseye (glibc 2.31) and trixie (2.41), amd64, a few
packages only (``.cache/debootstrap-bullseye``, ``-trixie``), for the loader's rules by release.

``debootstrap_arm64_root``: the same for arm64 (``.cache/debootstrap-bookworm-arm64``, fewer
packages), made with ``debootstrap --foreign`` and its second stage run in the tree under
qemu-user-static; ``qemu_aarch64`` registers the emulator in binfmt_misc (``.ci/binfmt``) or
skips, saying why (fails with SCRATCHPACK_REQUIRE_QEMU=1).
The markers (``ldd``, ``slow``, ``docker``, ``debootstrap``) are registered in pyproject.toml.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"

DEBOOTSTRAP_SUITE = "bookworm"
DEBOOTSTRAP_VARIANT = "minbase"
# redis-server pulls in redis-tools (redis-cli), libjemalloc, liblzf, libsystemd, libssl3 ...
# python3-venv: the docker tests' builder image pip-installs scratchpack into a venv.
DEBOOTSTRAP_INCLUDE = (
    "redis-server",
    "redis-tools",
    "python3",
    "python3-venv",
    "curl",
    "libssl3",
    # tests/test_docker_runtime.py: nginx, strace for --trace in the builder stage, and the
    # data --with base packs (netbase: /etc/services and /etc/protocols, not in minbase).
    "nginx",
    "strace",
    "ca-certificates",
    "tzdata",
    "netbase",
    # tests/test_docker_corpus.py: real Debian programs of several families, run FROM scratch.
    # Daemons with configuration trees and plugin modules:
    "postgresql",
    "lighttpd",
    "memcached",
    "libnginx-mod-http-echo",
    # interpreters:
    "perl",
    "nodejs",
    # programs that run helpers or a shell, and programs with data folders:
    "git",
    "sqlite3",
    "file",
    "openssl",
)
DEBOOTSTRAP_TIMEOUT = 30 * 60
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (not the security one), else deb.debian.org.

    ``SCRATCHPACK_DEBIAN_MIRROR`` overrides it.
    """
    env = os.environ.get("SCRATCHPACK_DEBIAN_MIRROR")
    if env:
        return env
    files = ["/etc/apt/sources.list"]
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for name in files:
        try:
            text = Path(name).read_text(errors="replace")
        except OSError:
            continue
        if name.endswith(".sources"):
            # deb822: a stanza per paragraph, "URIs:" and "Suites:" fields.
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                suites = fields.get("suites", "").split()
                if "deb" in fields.get("types", "deb").split() and DEBOOTSTRAP_SUITE in suites:
                    for uri in fields.get("uris", "").split():
                        if "security" not in uri:
                            return uri.rstrip("/")
        else:
            for line in text.splitlines():
                # "deb [arch=... signed-by=...] URI SUITE COMPONENT..."
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if (
                    len(words) >= 3
                    and words[0] == "deb"
                    and words[2] == DEBOOTSTRAP_SUITE
                    and "security" not in words[1]
                ):
                    return words[1].rstrip("/")
    return DEFAULT_MIRROR


def _umount_under(path: Path) -> None:
    """Unmount whatever an interrupted debootstrap left mounted inside ``path`` (proc, sys)."""
    prefix = str(path) + "/"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [m.split()[1].encode().decode("unicode_escape") for m in mounts if len(m.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _remove_tree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        _umount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: be killed when the test run dies, so no orphan writes into a tree that the
    next run removes (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class TreeSpec:
    """One cached debootstrap tree: a Debian suite for one architecture."""

    arch: str
    include: tuple[str, ...]
    suite: str = DEBOOTSTRAP_SUITE
    variant: str = DEBOOTSTRAP_VARIANT
    # A foreign tree: debootstrap --foreign unpacks, then its second stage runs inside the
    # tree under qemu-user-static through binfmt_misc (.ci/binfmt registers it).
    foreign: bool = False

    @property
    def path(self) -> Path:
        # The amd64 tree keeps its historical name, so existing caches stay valid.
        suffix = "" if self.arch == "amd64" else f"-{self.arch}"
        return CACHE / f"debootstrap-{self.suite}{suffix}"

    def stamp(self) -> dict[str, object]:
        return {
            "suite": self.suite,
            "variant": self.variant,
            "include": sorted(self.include),
            "arch": self.arch,
        }


AMD64_TREE = TreeSpec("amd64", DEBOOTSTRAP_INCLUDE)
# Enough for the arm64 resolution test and a redis image for arm64, and no more: every fresh
# CI machine builds it, the second stage under emulation (a few minutes).
ARM64_TREE = TreeSpec(
    "arm64", ("redis-server", "redis-tools", "python3", "curl", "nginx"), foreign=True
)
# The glibc releases around bookworm's 2.36, for the loader's rules by release: bullseye's
# 2.31 (no glibc-hwcaps yet, ld-2.31.so) and trixie's 2.41 (no legacy hwcap folders). A few
# packages only, enough ELF files for the corpus comparison; each tree builds in about a minute.
OTHER_RELEASE_INCLUDE = ("curl", "python3", "openssl")
BULLSEYE_TREE = TreeSpec("amd64", OTHER_RELEASE_INCLUDE, suite="bullseye")
TRIXIE_TREE = TreeSpec("amd64", OTHER_RELEASE_INCLUDE, suite="trixie")
RELEASE_TREES = {"bookworm": AMD64_TREE, "bullseye": BULLSEYE_TREE, "trixie": TRIXIE_TREE}
QEMU_BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def _run_logged(cmd: list[str], log: Path, timeout: float) -> None:
    """Run one build step, its output appended to ``log``; RuntimeError naming the log."""
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            preexec_fn=_die_with_parent,
            check=False,
        )
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-5:])
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}), see {log}:\n{tail}")


def qemu_aarch64_problem() -> str | None:
    """Why arm64 programs cannot run here, or None when binfmt_misc runs them under qemu.

    Registers the entry first (.ci/binfmt: idempotent, needs root) when it is absent."""
    if not QEMU_BINFMT.exists():
        proc = subprocess.run(
            [str(REPO / ".ci" / "binfmt"), "aarch64"], capture_output=True, text=True, check=False
        )
        if not QEMU_BINFMT.exists():
            why = proc.stderr.strip() or proc.stdout.strip()
            return f"arm64 programs cannot run here: {why or 'qemu-aarch64 not registered'}"
    state = QEMU_BINFMT.read_text().splitlines()[:1]
    if state != ["enabled"]:
        return f"{QEMU_BINFMT} is {state}"
    return None


def build_debootstrap_root(spec: TreeSpec = AMD64_TREE) -> Path:
    """Return the cached tree, building it first if needed; raise RuntimeError when impossible."""
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None
    )
    tree = spec.path
    stamp_file = tree.with_name(tree.name + ".json")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(tree.with_name(tree.name + ".lock"), "w") as lock:
        # Two test runs at once (developers in parallel) build the tree only once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if tree.is_dir() and json.loads(stamp_file.read_text()) == spec.stamp():
                return tree
        except (OSError, ValueError):
            pass
        if debootstrap is None:
            raise RuntimeError("debootstrap is not installed (`make deps` installs it)")
        if os.geteuid() != 0:
            raise RuntimeError("debootstrap needs root")
        if spec.foreign and (problem := qemu_aarch64_problem()) is not None:
            raise RuntimeError(problem)
        # Leftovers of interrupted builds (their owner is gone: we hold the lock).
        for old in CACHE.glob(tree.name + ".tmp-*"):
            _remove_tree(old)
        tmp = tree.with_name(f"{tree.name}.tmp-{os.getpid()}")
        log = tree.with_name(tree.name + ".log")
        cmd = [
            debootstrap,
            f"--variant={spec.variant}",
            f"--arch={spec.arch}",
            *(["--foreign"] if spec.foreign else []),
            *([f"--include={','.join(spec.include)}"] if spec.include else []),
            spec.suite,
            str(tmp),
            debian_mirror(),
        ]
        start = time.monotonic()
        log.write_text("")
        try:
            _run_logged(cmd, log, DEBOOTSTRAP_TIMEOUT)
            if spec.foreign:
                second = ["chroot", str(tmp), "/debootstrap/debootstrap", "--second-stage"]
                _run_logged(second, log, DEBOOTSTRAP_TIMEOUT)
            _umount_under(tmp)
            # The downloaded .debs are half the size and of no use to the tests.
            for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            _remove_tree(tree)
            stamp_file.unlink(missing_ok=True)
            tmp.rename(tree)
            stamp_file.write_text(json.dumps(spec.stamp(), indent=1) + "\n")
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT} s, see {log}") from exc
        finally:
            _remove_tree(tmp)
        with open(log, "a") as out:
            out.write(f"built in {time.monotonic() - start:.0f} s\n")
        return tree


@functools.cache
def docker_engine_problem() -> str | None:
    """Why no Docker Engine answers here, or None when one does (asked once per run)."""
    try:
        import docker  # lazily: most runs of most tests never need it

        client = docker.from_env(timeout=20)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except Exception as exc:  # the SDK raises many kinds; any of them means "no engine"
        return f"no Docker Engine answers ({type(exc).__name__}: {exc}); `make docker-engine`"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip `docker` tests without an engine (fail instead with SCRATCHPACK_REQUIRE_DOCKER=1)
    and `ldd` tests without an ldd."""
    if item.get_closest_marker("docker") is not None:
        problem = docker_engine_problem()
        if problem is not None:
            if os.environ.get("SCRATCHPACK_REQUIRE_DOCKER") == "1":
                pytest.fail(problem, pytrace=False)
            pytest.skip(problem)
    if item.get_closest_marker("ldd") is not None and shutil.which("ldd") is None:
        pytest.skip("no ldd on PATH (glibc's libc-bin)")


@pytest.fixture(scope="session")
def debootstrap_root() -> Iterator[Path]:
    """A debootstrapped Debian bookworm tree (minbase + redis-server, python3, curl, libssl3).

    Treat it as read-only: it is shared by every test and every later run. Skips when
    debootstrap is absent or fails.
    """
    try:
        root = build_debootstrap_root()
    except RuntimeError as exc:
        pytest.skip(f"no debootstrapped {DEBOOTSTRAP_SUITE} tree: {exc}")
    yield root


def release_root(suite: str) -> Path:
    """The cached amd64 tree of a suite of RELEASE_TREES, built first if needed. Read-only,
    like ``debootstrap_root``. Skips loudly when it cannot be built (no mirror serves the
    suite, no debootstrap, not root); SCRATCHPACK_REQUIRE_RELEASES=1 fails instead."""
    try:
        return build_debootstrap_root(RELEASE_TREES[suite])
    except RuntimeError as exc:
        why = f"SKIPPED, no debootstrapped {suite} tree from {debian_mirror()}: {exc}"
        if os.environ.get("SCRATCHPACK_REQUIRE_RELEASES") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def qemu_aarch64() -> None:
    """arm64 programs run here (qemu-user-static through binfmt_misc, registered if needed).

    Skips naming the reason; fails instead with SCRATCHPACK_REQUIRE_QEMU=1 (CI machines that
    must run the arm64 comparison)."""
    problem = qemu_aarch64_problem()
    if problem is not None:
        if os.environ.get("SCRATCHPACK_REQUIRE_QEMU") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(f"SKIPPED, arm64 emulation unavailable: {problem}")


@pytest.fixture(scope="session")
def debootstrap_arm64_root(qemu_aarch64: None) -> Iterator[Path]:
    """A Debian bookworm arm64 tree (minbase + redis-server, redis-tools, python3, curl, nginx),
    built with debootstrap --foreign and a second stage under qemu. Read-only, like
    ``debootstrap_root``; copy it (``cp -a``) to change anything."""
    try:
        root = build_debootstrap_root(ARM64_TREE)
    except RuntimeError as exc:
        if os.environ.get("SCRATCHPACK_REQUIRE_QEMU") == "1":
            pytest.fail(f"no arm64 {DEBOOTSTRAP_SUITE} tree: {exc}", pytrace=False)
        pytest.skip(f"no debootstrapped arm64 {DEBOOTSTRAP_SUITE} tree: {exc}")
    yield root


if __name__ == "__main__":
    # `python tests/conftest.py [arm64]` builds (or finds) a cached tree outside pytest.
    import sys

    t0 = time.monotonic()
    # `python tests/conftest.py bullseye` (or trixie): another suite's amd64 tree.
    arg = sys.argv[1] if sys.argv[1:] else "bookworm"
    chosen = ARM64_TREE if arg == "arm64" else RELEASE_TREES[arg]
    print(build_debootstrap_root(chosen), f"{time.monotonic() - t0:.1f} s")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say once which CPU the loader tests ran on: their expectations come from it."""
    loader = terminalreporter.config.stash.get(LOADER_REPORT, None)
    if loader:
        terminalreporter.write_line(f"loader tests ran with {loader}")


LOADER_REPORT = pytest.StashKey[str]()


@pytest.fixture(scope="session", autouse=True)
def _own_layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Packs run by the tests (in process or as `python -m bundler`) fill a layer cache of
    the session's own, never the user's ~/.cache/scratchpack."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before
