"""--push through a network that fails (tests/faultproxy.py in front of tests/registrykit.py):
every seeded schedule of 502s, 503s, 429s (Retry-After in seconds and as a date), cut uploads,
stalls and a 1 MiB body cap must end with the whole image in the registry, as skopeo copy (which
checks every digest) and docker pull and run find it, for at most 1.5 times the image's bytes
sent. Then a blob the registry loses before the manifest goes up, a fault that does not pass
(one line naming the blob), and credentials from a Docker credential helper.

Every push runs the CLI as a user would (``python -m bundler``).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faultproxy import Faults, running_proxy
from registrykit import Registry, running_registry
from test_docker import kit  # noqa: F401

from bundler.image.transport import RegistryError

SCHEDULES = (1, 2, 3, 4, 5, 6)
BIG = 3 << 20  # a layer over the proxy's 1 MiB body cap
USERS = {"carol": "helper-pw"}


def needs(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name} (make deps installs it)")
    return found


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random bytes (gzip cannot shrink them): the layer --extra makes is over the cap."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(random.Random(19).randbytes(BIG))
    return path


def scratchpack(
    tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp / "cache"),  # no mount from an earlier push's records
        "DOCKER_CONFIG": str(tmp / "no-docker-config"),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args], capture_output=True, text=True,
        timeout=timeout, env=environment,
    )  # fmt: skip


def push_echo(tmp: Path, big: Path, host: str, ref: str, *more: str, **kw: Any) -> Any:
    return scratchpack(
        tmp, "/bin/echo", "--cmd", "pushed through faults", "--extra", str(big),
        "--push", f"{host}/{ref}", "--insecure-registry", *more, **kw,
    )  # fmt: skip


def skopeo_copy(registry: Registry, ref: str, dest: Path) -> dict[str, Any]:
    """Copy REF out of the registry (directly, not through the proxy) into an OCI layout:
    skopeo checks every blob against its digest. The manifest."""
    done = subprocess.run(
        [needs("skopeo"), "copy", "--src-tls-verify=false",
         f"docker://{registry.host}/{ref}", f"oci:{dest}:copied"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    index = json.loads((dest / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest: dict[str, Any] = json.loads(
        (dest / "blobs" / "sha256" / digest.split(":")[1]).read_text()
    )
    return manifest


@pytest.mark.slow
def test_every_fault_schedule_completes(
    tmp_path: Path, big_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    needs("docker-registry")
    rows = []
    started = time.monotonic()
    for seed in SCHEDULES:
        tmp = tmp_path / f"seed{seed}"
        with (
            running_registry(tmp / "registry") as registry,
            running_proxy(registry.host, Faults(seed)) as (host, proxy),
        ):
            t0 = time.monotonic()
            done = push_echo(tmp, big_file, host, f"faults/echo:seed{seed}",
                             "--push-retries", "8", "--push-timeout", "120", "-v")  # fmt: skip
            took = time.monotonic() - t0
            assert done.returncode == 0, f"seed {seed}: {done.stderr}"
            digest = done.stdout.strip().splitlines()[-1]
            manifest = skopeo_copy(registry, f"faults/echo:seed{seed}", tmp / "copied")
            assert any(layer["size"] > proxy.faults.body_cap for layer in manifest["layers"])
            stored = registry.blob_bytes()[1]
            ratio = proxy.received / stored
            rows.append((seed, dict(proxy.injected), proxy.requests, took, ratio))
            assert proxy.injected["413"] >= 1, "the big layer never met the body cap"
            faulted = [row for row in proxy.log if row[2] and row[3]]
            assert ratio <= 1.5, (
                f"seed {seed}: {proxy.received} B sent for {stored} B stored; faults on bodies: "
                f"{faulted}; {done.stderr[-3000:]}"
            )
            assert digest.startswith("sha256:")
    with capsys.disabled():
        print(f"\nfault schedules ({time.monotonic() - started:.0f} s):")
        for seed, injected, requests, took, ratio in rows:
            faults = ", ".join(f"{k} x{v}" for k, v in sorted(injected.items()))
            print(f"  seed {seed}: {requests} requests, {faults}; {took:.1f} s; ", end="")
            print(f"sent/stored {ratio:.2f}")
    assert sum(sum(r[1].values()) - r[1].get("413", 0) for r in rows) >= 2 * len(SCHEDULES)


@pytest.mark.docker
@pytest.mark.slow
def test_docker_pulls_and_runs_what_went_through_faults(
    tmp_path: Path,
    big_file: Path,
    kit: Any,  # noqa: F811
) -> None:
    needs("docker-registry")
    with (
        running_registry(tmp_path / "registry") as registry,
        running_proxy(registry.host, Faults(7)) as (host, proxy),
    ):
        ref = f"faults/echo:{kit.run_id}"
        done = push_echo(tmp_path, big_file, host, ref, "--push-retries", "8")
        assert done.returncode == 0, done.stderr
        assert sum(proxy.injected.values()) >= 2, proxy.injected
        digest = done.stdout.strip().splitlines()[-1]
        reference = f"{registry.host}/{ref}"
        kit.own(reference)
        pulled = subprocess.run(["docker", "pull", reference], capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        assert digest in pulled.stdout
        code, output = kit.run(reference, None)
        assert (code, output) == (0, "pushed through faults\n")


@pytest.mark.slow
def test_a_blob_lost_before_the_manifest_is_uploaded_again(tmp_path: Path, big_file: Path) -> None:
    needs("docker-registry")
    lost: list[str] = []

    def lose_the_big_layer(method: str, target: str) -> None:
        # What a garbage collection between the HEAD and the manifest PUT does: the layer's
        # link in the repository and its data go.
        if method != "PUT" or "/manifests/" not in target or lost:
            return
        v2 = registry.storage / "docker/registry/v2"
        data = max((v2 / "blobs").rglob("data"), key=lambda p: p.stat().st_size)
        digest = data.parent.name
        lost.append(digest)
        shutil.rmtree(data.parent)
        for link in (v2 / "repositories").rglob(f"_layers/sha256/{digest}"):
            shutil.rmtree(link)

    with (
        running_registry(tmp_path / "registry") as registry,
        running_proxy(
            registry.host, Faults(0, p502=0, p503=0, p429=0, pcut=0, pstall=0), lose_the_big_layer
        ) as (host, _proxy),
    ):
        done = push_echo(tmp_path, big_file, host, "lost/echo:1")
        assert done.returncode == 0, done.stderr
        assert lost, "no manifest PUT went through the proxy"
        assert "the registry lost 1 blob(s); uploading them again" in done.stderr
        manifest = skopeo_copy(registry, "lost/echo:1", tmp_path / "copied")
        assert f"sha256:{lost[0]}" in {layer["digest"] for layer in manifest["layers"]}


@pytest.mark.slow
def test_a_fault_that_does_not_pass_is_one_line_naming_the_blob(
    tmp_path: Path, big_file: Path
) -> None:
    needs("docker-registry")
    with (
        running_registry(tmp_path / "registry") as registry,
        running_proxy(registry.host, Faults(0, p502=1.0, methods=("PATCH",))) as (host, proxy),
    ):
        t0 = time.monotonic()
        done = push_echo(tmp_path, big_file, host, "never/echo:1", "--push-retries", "2", "-q")
        took = time.monotonic() - t0
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "upload of blob sha256:" in lines[0] and "gave up after 3 tries" in lines[0], lines[0]
    assert lines[0].endswith("last: HTTP 502"), lines[0]
    assert proxy.injected["502"] >= 3
    assert took < 60


@pytest.mark.slow
def test_credentials_from_a_docker_credential_helper(tmp_path: Path, big_file: Path) -> None:
    needs("docker-registry")
    with running_registry(tmp_path / "registry", users=USERS) as registry:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        asked = tmp_path / "asked"
        helper = bin_dir / "docker-credential-test"
        # A helper as docker-credential-pass and the others answer `get`: the server URL on
        # stdin, JSON on stdout, "credentials not found" for a registry it does not hold.
        helper.write_text(
            "#!/bin/sh\n"
            '[ "$1" = get ] || exit 2\n'
            "read -r server\n"
            f'echo "$server" >> {asked}\n'
            f'if [ "$server" = "{registry.host}" ]; then\n'
            f'  echo \'{{"Username":"carol","Secret":"helper-pw"}}\'\n'
            "else\n"
            '  echo "credentials not found in native keychain"; exit 1\n'
            "fi\n"
        )
        helper.chmod(0o755)
        path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        for n, config in enumerate(
            [{"credsStore": "test"}, {"auths": {}, "credHelpers": {registry.host: "test"}}]
        ):
            folder = tmp_path / f"docker{n}"
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(config))
            done = push_echo(tmp_path, big_file, registry.host, f"helped/echo:{n}",
                             env={"DOCKER_CONFIG": str(folder), "PATH": path})  # fmt: skip
            assert done.returncode == 0, done.stderr
        assert asked.read_text().split() == [registry.host, registry.host]
        # A helper that holds nothing for the registry: no credentials, one line.
        (tmp_path / "docker2").mkdir()
        (tmp_path / "docker2" / "config.json").write_text(
            json.dumps({"credHelpers": {registry.host: "test"}})
        )
        helper.write_text(helper.read_text().replace(f'= "{registry.host}"', '= "elsewhere"'))
        env = {"DOCKER_CONFIG": str(tmp_path / "docker2"), "PATH": path}
        done = push_echo(tmp_path, big_file, registry.host, "helped/echo:2", env=env)
        assert done.returncode != 0
        assert "asks for credentials" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_terminal_sees_the_bytes_go_up(tmp_path: Path, big_file: Path) -> None:
    needs("docker-registry")
    import pty

    with running_registry(tmp_path / "registry") as registry:
        primary, secondary = pty.openpty()
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "DOCKER_CONFIG": str(tmp_path / "none")}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "bundler", "/bin/echo", "--extra", str(big_file),
             "--push", f"{registry.host}/tty/echo:1", "--insecure-registry"],
            stdout=subprocess.PIPE, stderr=secondary, env=env,
        )  # fmt: skip
        os.close(secondary)
        seen = b""
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            seen += data
        os.close(primary)
        assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")
        piped = push_echo(tmp_path / "piped", big_file, registry.host, "piped/echo:1")
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[K" not in piped.stderr and "uploading 3.15 MB" in piped.stderr  # lines, no meter
    text = seen.decode(errors="replace")
    assert "\r\x1b[Kscratchpack: uploading " in text, text
    last = text.rpartition("scratchpack: uploading ")[2].partition("\r")[0]
    sent, _, total = last.partition(" of ")
    assert sent.strip() == total.strip(), last  # every byte counted, once


# ----- the retry policy, on a clock of the test's own ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def answer(status: int, **headers: str) -> Any:
    from bundler.image.transport import Response

    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return Response(status, message, b"")


def test_backoff_doubles_with_jitter_and_retry_after_wins() -> None:
    from bundler.image.transport import RetryPolicy

    fake = FakeClock()
    policy = RetryPolicy(attempts=6, total=1000, base=0.5, cap=4.0, rng=random.Random(1),
                         clock=fake.clock, sleep=fake.sleep, now=lambda: 5000.0)  # fmt: skip
    tries = policy.tries("reg:5000", "upload of blob sha256:ab")
    for _ in range(4):
        tries.answer(answer(502))
    for n, slept in enumerate(fake.slept, 1):
        top = min(4.0, 0.5 * 2 ** (n - 1))
        assert top / 2 <= slept <= top, (n, slept)
    date = email.utils.formatdate(5007.0, usegmt=True)
    tries.answer(answer(429, Retry_After=date))
    assert fake.slept[-1] == pytest.approx(7.0)
    with pytest.raises(RegistryError) as caught:
        tries.answer(answer(429, Retry_After="3"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("reg:5000: upload of blob sha256:ab: gave up after 6 tries")
    assert message.endswith("last: HTTP 429")


def test_the_total_time_bounds_the_waits() -> None:
    from bundler.image.transport import RetryPolicy

    fake = FakeClock()
    policy = RetryPolicy(attempts=100, total=10.0, clock=fake.clock, sleep=fake.sleep)
    tries = policy.tries("reg:5000", "manifest 1")
    tries.answer(answer(503, Retry_After="4"))
    tries.answer(answer(503, Retry_After="4"))
    with pytest.raises(RegistryError, match=r"manifest 1: gave up after 3 tries in 8 s"):
        tries.answer(answer(503, Retry_After="4"))  # 8 s spent, 4 more would pass 10
    assert fake.slept == [4.0, 4.0]
    tries.progressed()  # a chunk went through: the count and the time start anew
    tries.answer(answer(503, Retry_After="4"))
    assert fake.slept == [4.0, 4.0, 4.0]


def test_push_flags_go_with_push(tmp_path: Path) -> None:
    for flag, value in (("--push-retries", "3"), ("--push-timeout", "60"), ("--push-jobs", "2")):
        done = scratchpack(tmp_path, "/bin/true", "-o", str(tmp_path / "out"), flag, value)
        assert done.returncode == 2, done.stderr
        assert f"{flag} goes with --push" in done.stderr
