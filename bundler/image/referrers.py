"""Artifacts attached to an image of an OCI layout (image-spec 1.1): SBOMs, signatures.

An artifact is an image manifest whose ``artifactType`` says what it holds, whose config is
the empty descriptor (``{}``), whose one layer is the artifact's blob and whose ``subject`` is
the image's manifest: what ``oras attach`` writes and what the referrers API of a registry
lists once the layout is copied there (``oras cp -r``, ``regctl``). In the layout it is an
entry of index.json with no ref name, carrying its ``artifactType`` and an annotation naming
the image it is for. When the image's name is given to another image, the entries whose
subject left the index go too (``oci.without_orphans``), in the same write.

Written under the layout's lock, blobs before index.json, exactly as images are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from bundler.image.oci import (
    MEDIA_MANIFEST,
    LayoutError,
    canonical_json,
    descriptor_of,
    layout_writer,
    listed_manifests,
)

log = logging.getLogger(__name__)

MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
SPDX_JSON = "application/spdx+json"
CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
TITLE = "org.opencontainers.image.title"
# On our index entries: "<ref name>@<digest>" of the image an artifact is for. A reader of
# index.json sees what each nameless entry is; a later attach of the same artifactType to the
# same image replaces ours, never another tool's.
SUBJECT = "scratchpack.subject"


def attach_artifact(
    layout_dir: str | os.PathLike[str],
    subject_digest: str,
    artifact_type: str,
    media_type: str,
    data: bytes | Callable[[], bytes],
    annotations: dict[str, str] | None = None,
    *,
    title: str = "",
    known: tuple[str, int] | None = None,
) -> str:
    """Attach DATA (a blob of MEDIA_TYPE, or what a call makes) to the manifest SUBJECT_DIGEST
    listed in the layout's index, as an artifact of ARTIFACT_TYPE; the artifact manifest's
    digest. TITLE names the blob for ``oras pull`` (which writes no file for a blob without
    one). KNOWN, DATA's (digest, size) from an earlier pack: a blob the layout holds already
    is not made again."""
    with layout_writer(layout_dir, create=False) as layout:
        before = layout.manifests()
        listed = listed_manifests(layout.top, before)
        subject = _subject(layout.top, [m for m, _name in listed], subject_digest)
        made = data if callable(data) else lambda: data
        blob = layout.blobs.add_made(media_type, made, known)
        layer = blob.to_json()
        if title:
            layer["annotations"] = {TITLE: title}
        layout.blobs.add_bytes(MEDIA_EMPTY, EMPTY)
        body = artifact_manifest(artifact_type, layer, subject, annotations or {})
        manifest = layout.blobs.add_bytes(MEDIA_MANIFEST, body)
        names = sorted(name for m, name in listed if m["digest"] == subject_digest)
        entry = {
            **manifest.to_json(),
            "artifactType": artifact_type,
            "annotations": {**(annotations or {}), SUBJECT: f"{names[0]}@{subject_digest}"},
        }
        kept = [m for m in before if not _replaced_by(m, entry)]
        layout.write_index([*kept, entry])
    log.info("%s: %s for %s is %s", layout.top, artifact_type, subject_digest, manifest.digest)
    return manifest.digest


def artifact_manifest(
    artifact_type: str,
    layer: dict[str, Any],
    subject: dict[str, Any],
    annotations: dict[str, str],
) -> bytes:
    """An OCI 1.1 artifact manifest: the empty config, one layer, a subject."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor_of(MEDIA_EMPTY, EMPTY).to_json(),
        "layers": [layer],
        "subject": subject,
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return canonical_json(manifest)


def _subject(top: os.PathLike[str], manifests: list[dict[str, Any]], digest: str) -> dict[str, Any]:
    for entry in manifests:
        if entry["digest"] == digest:
            return {k: entry[k] for k in ("mediaType", "digest", "size") if k in entry}
    raise LayoutError(f"{top}: no manifest {digest} in index.json to attach an artifact to")


def _replaced_by(entry: dict[str, Any], new: dict[str, Any]) -> bool:
    """The same manifest, or ours of the same artifactType for the same image."""
    if entry["digest"] == new["digest"]:
        return True
    annotations = entry.get("annotations")
    ours = annotations.get(SUBJECT) if isinstance(annotations, dict) else None
    return (
        ours is not None
        and entry.get("artifactType") == new["artifactType"]
        and ours.rpartition("@")[2] == new["annotations"][SUBJECT].rpartition("@")[2]
    )
