"""One name for every platform: redis packed from an amd64 root and from an arm64 root into one
OCI layout under one tag gives an image index; pushed without a daemon to a registry of the
test's own, pulled by Docker for linux/arm64 (run through qemu in binfmt_misc), it answers PING.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from registrykit import running_registry
from test_docker import kit, report  # noqa: F401

pytestmark = [pytest.mark.debootstrap, pytest.mark.slow, pytest.mark.docker]

TAG = "redis:7"
# redis-cli goes in too: the image pings itself from a second container (no client image).
PROGRAMS = ("redis-server", "redis-cli")
ARGS = ("--with", "tmp", "--user", "redis", "--mkdir", "/var/lib/redis")


def _scratchpack(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert done.returncode == 0, f"scratchpack {' '.join(args)}:\n{done.stderr}"
    return done


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_redis_for_arm64_and_amd64_under_one_tag(
    debootstrap_root: Path,
    debootstrap_arm64_root: Path,
    tmp_path: Path,
    kit: Any,  # noqa: F811
    capsys: Any,
) -> None:
    layout = tmp_path / "oci"
    for root in (debootstrap_root, debootstrap_arm64_root):
        _scratchpack("--root", str(root), *PROGRAMS, *ARGS, "--oci", str(layout), "--tag", TAG)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{layout}:{TAG}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    platforms = {
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]
    }
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert platforms == {("amd64", None), ("arm64", "v8")}
    with running_registry(tmp_path / "registry") as registry:
        reference = f"{registry.host}/team/redis:7"
        pushed = _scratchpack(
            "--root",
            str(debootstrap_arm64_root),
            *PROGRAMS,
            *ARGS,
            "--oci",
            str(layout),
            "--tag",
            TAG,
            "--push",
            reference,
            "--insecure-registry",
            "--json",
        )
        result = json.loads(pushed.stdout)["image"]["pushed"]
        kit.own(reference)
        _docker("pull", "--platform", "linux/arm64", reference)
    image = json.loads(_docker("image", "inspect", reference))[0]
    assert image["Architecture"] == "arm64"
    network = kit.network(kit.name("multiarch"))
    server = kit.start(
        reference,
        ["--protected-mode", "no", "--bind", "0.0.0.0"],
        kit.name("redis-arm64"),
        network=network,
    )
    answer = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _code, answer = kit.run(
            reference,
            ["-h", kit.name("redis-arm64"), "ping"],
            network=network,
            entrypoint=["/usr/bin/redis-cli"],
        )
        if answer.strip() == "PONG":
            break
        time.sleep(0.5)
    server.reload()
    assert answer.strip() == "PONG", (
        f"{answer!r}; the server is {server.status}: {kit.logs(server)}"
    )
    report(
        capsys,
        f"redis:7 for linux/amd64 and linux/arm64/v8 in one index ({result['digest']}); "
        f"pushed {result['uploaded']} blobs, pulled for arm64, PONG under qemu",
    )


def test_programs_of_two_machines_are_refused_in_one_image(
    debootstrap_arm64_root: Path, tmp_path: Path
) -> None:
    from fakeroot import make_root

    root = make_root(tmp_path / "root")
    arm = root / "usr/bin/true-arm64"
    arm.write_bytes((debootstrap_arm64_root / "usr/bin/true").read_bytes())
    arm.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bundler",
            "--root",
            str(root),
            "/bin/true",
            "/usr/bin/true-arm64",
            "--allow-missing",
            "-q",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "scratchpack: programs of different machines cannot share one image: /bin/true is "
        "linux/amd64, /usr/bin/true-arm64 is linux/arm64/v8"
    ]
    assert not out.exists()
