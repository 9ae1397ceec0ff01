"""Shared fixtures.

``debootstrap_root``: a Debian bookworm tree made with ``debootstrap --variant=minbase``, with a
few packages whose libraries are interesting (redis, python3, curl, OpenSSL). It is built once
into ``<repo>/.cache/debootstrap-bookworm`` (in a temporary folder beside it, renamed into place
when complete, so an interrupted build never leaves a half tree) and reused by later runs. A
stamp file beside it records what it was built from; a different package list rebuilds it.
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
DEBOOTSTRAP_DIR = CACHE / f"debootstrap-{DEBOOTSTRAP_SUITE}"
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


def _stamp() -> dict[str, object]:
    return {
        "suite": DEBOOTSTRAP_SUITE,
        "variant": DEBOOTSTRAP_VARIANT,
        "include": sorted(DEBOOTSTRAP_INCLUDE),
        "arch": "amd64",
    }


def build_debootstrap_root() -> Path:
    """Return the cached tree, building it first if needed; raise RuntimeError when impossible."""
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None
    )
    stamp_file = DEBOOTSTRAP_DIR.with_name(DEBOOTSTRAP_DIR.name + ".json")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(DEBOOTSTRAP_DIR.with_name(DEBOOTSTRAP_DIR.name + ".lock"), "w") as lock:
        # Two test runs at once (developers in parallel) build the tree only once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if DEBOOTSTRAP_DIR.is_dir() and json.loads(stamp_file.read_text()) == _stamp():
                return DEBOOTSTRAP_DIR
        except (OSError, ValueError):
            pass
        if debootstrap is None:
            raise RuntimeError("debootstrap is not installed (`make deps` installs it)")
        if os.geteuid() != 0:
            raise RuntimeError("debootstrap needs root")
        # Leftovers of interrupted builds (their owner is gone: we hold the lock).
        for old in CACHE.glob(DEBOOTSTRAP_DIR.name + ".tmp-*"):
            _remove_tree(old)
        tmp = DEBOOTSTRAP_DIR.with_name(f"{DEBOOTSTRAP_DIR.name}.tmp-{os.getpid()}")
        log = DEBOOTSTRAP_DIR.with_name(DEBOOTSTRAP_DIR.name + ".log")
        cmd = [
            debootstrap,
            f"--variant={DEBOOTSTRAP_VARIANT}",
            "--arch=amd64",
            *([f"--include={','.join(DEBOOTSTRAP_INCLUDE)}"] if DEBOOTSTRAP_INCLUDE else []),
            DEBOOTSTRAP_SUITE,
            str(tmp),
            debian_mirror(),
        ]
        start = time.monotonic()
        try:
            with open(log, "w") as out:
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=DEBOOTSTRAP_TIMEOUT,
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                    preexec_fn=_die_with_parent,
                    check=False,
                )
            if proc.returncode != 0:
                tail = "".join(log.read_text(errors="replace").splitlines(True)[-5:])
                raise RuntimeError(f"debootstrap failed ({proc.returncode}), see {log}:\n{tail}")
            _umount_under(tmp)
            # The downloaded .debs are half the size and of no use to the tests.
            for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            _remove_tree(DEBOOTSTRAP_DIR)
            stamp_file.unlink(missing_ok=True)
            tmp.rename(DEBOOTSTRAP_DIR)
            stamp_file.write_text(json.dumps(_stamp(), indent=1) + "\n")
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT} s, see {log}") from exc
        finally:
            _remove_tree(tmp)
        with open(log, "a") as out:
            out.write(f"built in {time.monotonic() - start:.0f} s\n")
        return DEBOOTSTRAP_DIR


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


if __name__ == "__main__":
    # `python tests/conftest.py` builds (or finds) the cached tree outside pytest.
    t0 = time.monotonic()
    print(build_debootstrap_root(), f"{time.monotonic() - t0:.1f} s")
