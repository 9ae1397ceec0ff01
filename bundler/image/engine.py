"""The Docker Engine: build the generated image and run it once. The client is passed in."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import ScratchpackError, UsageError
from bundler.image.references import docker_reference

log = logging.getLogger(__name__)


class EngineUnavailable(ScratchpackError):
    """No Docker Engine answers."""


class BuildFailed(ScratchpackError):
    """docker build failed."""

    exit_code = 1


class VerifyFailed(ScratchpackError):
    """The image ran and exited non-zero."""

    exit_code = 1


@dataclass(frozen=True)
class BuiltImage:
    id: str
    tag: str
    size: int


def connect() -> Any:
    """A docker SDK client from the environment (DOCKER_HOST & co.), or EngineUnavailable."""
    try:
        import docker  # imported here: it costs ~0.2 s and only --build needs it
    except ImportError:
        raise EngineUnavailable("the docker Python package is not installed") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        raise EngineUnavailable(
            f"cannot reach the Docker Engine ({_first_line(exc)}); "
            "is dockerd running, and DOCKER_HOST right?"
        ) from None
    return client


def build_image(
    client: Any,
    context: Path,
    tag: str,
    dockerfile: str = "Dockerfile",
    platform: str | None = None,
) -> BuiltImage:
    """``docker build`` the folder; ``platform`` (linux/arm64/v8) labels the image with what
    its programs run on: FROM scratch names none, and the engine would take its own."""
    try:
        image, logs = client.images.build(
            path=str(context), dockerfile=dockerfile, tag=tag, rm=True, platform=platform
        )
    except Exception as exc:
        raise BuildFailed(f"{context}: docker build failed: {_first_line(exc)}") from None
    for chunk in logs:
        line = str(chunk.get("stream", "")).rstrip() if isinstance(chunk, dict) else ""
        if line:
            log.info("%s", line)
    image.reload()
    return BuiltImage(id=image.id, tag=tag, size=int(image.attrs.get("Size", 0)))


def verify_image(
    client: Any,
    tag: str,
    args: Sequence[str],
    timeout: float = 60.0,
    platform: str | None = None,
) -> str:
    """Run the image once with ARGS; its output, or VerifyFailed showing it. A run still going
    after ``timeout`` seconds (a server, say) is killed and fails."""
    container = client.containers.create(tag, command=list(args), platform=platform)
    shown_args = " ".join(shlex.quote(a) for a in args)
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except Exception as exc:  # requests' ReadTimeout, or a connection error
            container.kill()
            output = _logs(container)
            raise VerifyFailed(
                f"{tag} {shown_args}: still running after {timeout:g} s ({_first_line(exc)}); "
                f"its output:\n  {_indent(output)}"
            ) from None
        output = _logs(container)
    finally:
        container.remove(force=True)
    code = int(status.get("StatusCode", 1))
    if code != 0:
        raise VerifyFailed(f"{tag} {shown_args}: exited {code}; its output:\n  {_indent(output)}")
    return output


def _logs(container: Any) -> str:
    raw: bytes = container.logs(stdout=True, stderr=True)
    return raw.decode("utf-8", "replace")


def _indent(output: str) -> str:
    return output.strip().replace("\n", "\n  ") or "(no output)"


def check_tag(tag: str) -> None:
    """--build's image name[:tag], checked before any work, by Docker's own grammar."""
    try:
        docker_reference(tag)
    except UsageError as exc:
        raise UsageError(f"--build {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]
