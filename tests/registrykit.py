"""A Docker registry of the tests' own (Debian's ``docker-registry``) on 127.0.0.1.

Started with a configuration and storage folder in the test's tmp path, on a free port, and
stopped afterwards; nothing outside the machine is reached. Docker treats 127.0.0.0/8 as an
insecure registry by default, so ``docker pull 127.0.0.1:PORT/...`` works over plain HTTP.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "docker-registry"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Registry:
    host: str  # "127.0.0.1:PORT"
    storage: Path
    log: Path

    def blob_bytes(self) -> tuple[int, int]:
        """(count, bytes) of the blobs the registry stores (layers, configs, manifests)."""
        files = list((self.storage / "docker/registry/v2/blobs").rglob("data"))
        return len(files), sum(f.stat().st_size for f in files)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(folder: Path) -> Iterator[Registry]:
    """A registry serving on 127.0.0.1 until the block ends; its storage under ``folder``."""
    binary = shutil.which(REGISTRY)
    if binary is None:
        raise FileNotFoundError(f"{REGISTRY} is not installed (make deps installs it)")
    port = free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = folder / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    registry = Registry(f"127.0.0.1:{port}", storage, log)
    try:
        _wait_until_up(registry, proc)
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(registry: Registry, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{REGISTRY} exited: {registry.log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{REGISTRY} did not answer on {registry.host} in {START_TIMEOUT} s")
