"""Names of images: Docker references (``host:5000/team/app:1``), the name an OCI layout gives
an image (``org.opencontainers.image.ref.name``), and the forms containerd and registries use.
One grammar of each, for --tag, --build, --docker-archive, --oci and --push alike."""

from __future__ import annotations

import re
from typing import Any

from bundler.errors import UsageError

# image-spec annotations.md: the annotation naming an image in a layout, and its grammar.
REF_NAME = "org.opencontainers.image.ref.name"
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# distribution/reference's grammar (what `docker tag` accepts).
_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}")


def check_layout_name(name: str) -> None:
    """A name an OCI layout can give an image, or a one-line UsageError."""
    if not _REF_NAME.fullmatch(name):
        raise UsageError(
            f"{name!r}: not a valid image name in an OCI layout (letters, digits, and "
            "- . _ : @ + / between them)"
        )


def ref_name(entry: dict[str, Any]) -> str:
    """The name an entry of a layout's index.json gives its image; "" for none."""
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else ""


def docker_reference(repo_tag: str) -> tuple[str, str]:
    """(name, tag) of ``name[:tag]``, tag ``latest`` when none is given. The colon of a
    registry's port is not a tag: ``host:5000/x`` is ``host:5000/x:latest``."""
    if "@" in repo_tag:
        raise UsageError(f"{repo_tag!r}: names an image by digest; a tag is needed here")
    name, tag = repo_tag, "latest"
    head, sep, tail = repo_tag.rpartition(":")
    if sep and "/" not in tail:
        name, tag = head, tail
    parts = name.split("/")
    domain = parts[0] if len(parts) > 1 and _is_domain(parts[0]) else None
    path = parts[1:] if domain else parts
    valid = (
        (domain is None or _DOMAIN.fullmatch(domain))
        and all(_PATH_COMPONENT.fullmatch(p) for p in path)
        and _TAG.fullmatch(tag)
        and len(name) <= 255
    )
    if not valid:
        raise UsageError(
            f"{repo_tag!r}: not a valid image name (lowercase letters, digits and . _ - "
            "separators, an optional registry host first and :tag last)"
        )
    return name, tag


def _is_domain(component: str) -> bool:
    # As Docker tells a registry from a user name: a dot, a port, localhost, or capitals.
    return any(c in component for c in ".:") or component == "localhost" or not component.islower()


def full_name(name: str) -> str:
    """``redis`` -> ``docker.io/library/redis``: the form containerd stores names in."""
    first, _, rest = name.partition("/")
    if rest and _is_domain(first):
        return name
    return f"docker.io/{name}" if rest else f"docker.io/library/{name}"
