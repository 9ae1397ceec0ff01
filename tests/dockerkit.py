"""A Docker Engine for the tests: images, containers and networks that are removed afterwards.

Everything a ``Kit`` creates carries the label ``scratchpack-test=<run id>`` (imported images
through ``--change LABEL``, built ones through the images they derive from or ``labels=``, and
containers and networks directly) and is recorded; ``Kit.cleanup()`` removes what it recorded
plus the untagged images of intermediate build stages carrying this run's label. Only this
run's resources are ever touched. Every call to the engine has a timeout.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import tarfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors

LABEL = "scratchpack-test"
# The HTTP timeout of one call (a build step streams its output; a silent step longer than
# this fails the build rather than hanging the run).
API_TIMEOUT = 300


class DockerKitError(AssertionError):
    """An engine operation of a test failed; the message carries the engine's output."""


def make_wheelhouse(base: Path, repo: Path, pins: Sequence[str], download: Sequence[str]) -> Path:
    """BASE/wheels: the wheel of REPO's checkout as it is (built from a copy in BASE/source, so
    nothing lands in the repository) and those of DOWNLOAD with their dependencies, for
    ``pip install --no-index``; PINS (``dist==version``) constrain them. BASE is the caller's
    own folder. DockerKitError when pip fails (no index reachable, ...)."""
    import shutil
    import sys

    wheels = base / "wheels"
    wheels.mkdir()
    constraints = base / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, source / name)
    shutil.copytree(repo / "bundler", source / "bundler", ignore=shutil.ignore_patterns("__py*"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    steps = [
        [*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)],
        [*pip, "download", "-d", str(wheels), "-c", str(constraints), *download],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise DockerKitError(f"cannot make the wheelhouse: pip {cmd[5]} failed: {tail}")
    return wheels


class Kit:
    def __init__(self, client: Any | None = None) -> None:
        self.client = client or docker.from_env(timeout=API_TIMEOUT)
        self.run_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.labels = {LABEL: self.run_id}
        self._images: list[str] = []  # tags, removed newest first
        self._containers: list[str] = []
        self._networks: list[str] = []

    # ----- naming ------------------------------------------------------------------------------
    def tag(self, name: str) -> str:
        """A tag unique to this run: ``scratchpack-test-NAME:RUNID``."""
        return f"{LABEL}-{name}:{self.run_id}"

    def name(self, name: str) -> str:
        """A container or network name unique to this run."""
        return f"{LABEL}-{name}-{self.run_id}"

    # ----- images ------------------------------------------------------------------------------
    def import_tree(self, root: Path, tag: str, timeout: float = 300) -> str:
        """``tar -C ROOT -c . | docker import - TAG``, without what proc/, sys/ and dev/ hold."""
        self._images.append(tag)
        tar_cmd = [
            "tar",
            "-C",
            str(root),
            "--numeric-owner",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./dev/*",
            "-c",
            ".",
        ]
        import_cmd = ["docker", "import", "--change", f"LABEL {LABEL}={self.run_id}", "-", tag]
        tar = subprocess.Popen(tar_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert tar.stdout is not None
            done = subprocess.run(
                import_cmd, stdin=tar.stdout, capture_output=True, text=True, timeout=timeout
            )
            tar.stdout.close()
            tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
            tar_rc = tar.wait(timeout=30)
        finally:
            if tar.poll() is None:
                tar.kill()
                tar.wait()
        if tar_rc != 0 or done.returncode != 0:
            raise DockerKitError(
                f"importing {root} as {tag} failed: tar exit {tar_rc}: {tar_err.strip()}; "
                f"docker import exit {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout.strip()

    def build(
        self,
        context: Path,
        tag: str,
        dockerfile: str = "Dockerfile",
        timeout: int = API_TIMEOUT,
    ) -> Any:
        """``docker build`` (the engine's classic builder, as ``scratchpack --build`` uses);
        the image, or DockerKitError with the end of the build log."""
        self._images.append(tag)
        try:
            image, _logs = self.client.images.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=tag,
                rm=True,
                forcerm=True,
                labels=self.labels,
                timeout=timeout,
            )
        except docker.errors.BuildError as exc:
            log = "".join(str(c.get("stream", c.get("error", ""))) for c in exc.build_log)
            tail = "\n".join(log.splitlines()[-40:])
            raise DockerKitError(f"docker build {context} failed: {exc.msg}\n{tail}") from None
        except docker.errors.APIError as exc:
            raise DockerKitError(f"docker build {context} failed: {exc}") from None
        image.reload()
        return image

    def image_size(self, tag: str) -> int:
        return int(self.client.images.get(tag).attrs["Size"])

    def own(self, tag: str) -> None:
        """Remove TAG at cleanup too (an image made outside the kit, e.g. by scratchpack)."""
        self._images.append(tag)

    # ----- containers --------------------------------------------------------------------------
    def copy_out(self, image: str, paths: Sequence[str], dest: Path) -> None:
        """Copy PATHS out of IMAGE into DEST (``docker create`` + ``docker cp``), never running
        the image. DEST/<basename> for each path."""
        container = self.client.containers.create(
            image, command=["/nonexistent"], labels=self.labels
        )
        self._containers.append(container.id)
        try:
            for path in paths:
                stream, _stat = container.get_archive(path)
                data = io.BytesIO(b"".join(stream))
                with tarfile.open(fileobj=data) as archive:
                    if hasattr(tarfile, "tar_filter"):  # Python >= 3.10.12 / 3.11.4
                        # The staged tree keeps the source root's absolute links (/lib64/...);
                        # "tar" keeps them but still refuses members outside DEST.
                        archive.extractall(dest, filter="tar")
                    else:
                        archive.extractall(dest)
        finally:
            self._remove_container(container.id)

    def start(
        self,
        image: str,
        command: Sequence[str] | None,
        name: str,
        network: str | None = None,
        entrypoint: Sequence[str] | None = None,
    ) -> Any:
        """Start a container in the background; removed at cleanup (or by ``stop``)."""
        container = self.client.containers.create(
            image,
            command=list(command) if command is not None else None,
            entrypoint=list(entrypoint) if entrypoint is not None else None,
            name=name,
            network=network,
            labels=self.labels,
        )
        self._containers.append(container.id)
        container.start()
        return container

    def run(
        self,
        image: str,
        command: Sequence[str] | None,
        network: str | None = None,
        entrypoint: Sequence[str] | None = None,
        timeout: int = 120,
    ) -> tuple[int, str]:
        """Run a container to its end: (exit code, stdout+stderr). Killed after TIMEOUT s."""
        container = self.client.containers.create(
            image,
            command=list(command) if command is not None else None,
            entrypoint=list(entrypoint) if entrypoint is not None else None,
            network=network,
            labels=self.labels,
        )
        self._containers.append(container.id)
        try:
            container.start()
            try:
                status = container.wait(timeout=timeout)
            except Exception as exc:  # requests' ReadTimeout (or ConnectionError on some SDKs)
                container.kill()
                output = container.logs().decode(errors="replace")
                raise DockerKitError(
                    f"{image} {command}: still running after {timeout} s ({exc}); "
                    f"output so far:\n{output}"
                ) from None
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            return int(status.get("StatusCode", -1)), output
        finally:
            self._remove_container(container.id)

    def logs(self, container: Any) -> str:
        try:
            return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))
        except docker.errors.APIError as exc:
            return f"(no logs: {exc})"

    def wait_for_pong(
        self, client_image: str, host: str, network: str, server: Any, timeout: float = 30
    ) -> str:
        """``redis-cli -h HOST ping`` from another container until it answers (or TIMEOUT s);
        what the last attempt printed."""
        script = (
            f"end=$(( $(date +%s) + {int(timeout)} )); "
            f"while :; do out=$(redis-cli -h {shlex.quote(host)} ping 2>&1); "
            '[ "$out" = PONG ] && break; '
            '[ "$(date +%s)" -ge "$end" ] && break; sleep 0.2; done; echo "$out"'
        )
        code, output = self.run(
            client_image, ["sh", "-c", script], network=network, timeout=int(timeout) + 30
        )
        server.reload()
        if output.strip() != "PONG":
            raise DockerKitError(
                f"redis-cli -h {host} ping from {client_image} answered {output.strip()!r} "
                f"(exit {code}); the server is {server.status}, its output:\n{self.logs(server)}"
            )
        return output.strip()

    # ----- networks ----------------------------------------------------------------------------
    def network(self, name: str) -> str:
        """A user-defined bridge network (containers find each other by name on it)."""
        net = self.client.networks.create(name, driver="bridge", labels=self.labels)
        self._networks.append(net.id)
        return str(net.name)

    # ----- cleanup -----------------------------------------------------------------------------
    def _remove_container(self, cid: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(cid).remove(force=True)
        if cid in self._containers:
            self._containers.remove(cid)

    def cleanup(self) -> list[str]:
        """Remove everything this kit made; the problems met (never raises)."""
        problems: list[str] = []
        for cid in list(reversed(self._containers)):
            try:
                self._remove_container(cid)
            except Exception as exc:
                problems.append(f"container {cid[:12]}: {exc}")
        for nid in reversed(self._networks):
            try:
                self.client.networks.get(nid).remove()
            except docker.errors.NotFound:
                pass
            except Exception as exc:
                problems.append(f"network {nid[:12]}: {exc}")
        self._networks.clear()
        for _attempt in range(3):
            # Tagged images newest first (children before parents), then the untagged images of
            # intermediate stages of this run; twice more when a parent was still held.
            left = []
            for tag in reversed(self._images):
                try:
                    self.client.images.remove(tag, force=True)
                except docker.errors.ImageNotFound:
                    pass
                except Exception as exc:
                    left.append(tag)
                    problems.append(f"image {tag}: {exc}")
            self._images = list(reversed(left))
            label = f"{LABEL}={self.run_id}"
            for image in self.client.images.list(filters={"label": label, "dangling": True}):
                try:
                    self.client.images.remove(image.id, force=True)
                except docker.errors.ImageNotFound:
                    pass
                except Exception as exc:
                    problems.append(f"image {image.id[:19]}: {exc}")
            if not self._images and not self.client.images.list(filters={"label": label}):
                return []
            time.sleep(1)
        return problems
