"""Push an image of an OCI layout to a registry (OCI distribution spec), with no daemon.

``push(layout, name, "host:5000/team/app:1")`` sends the manifest, or the image index, that
``name`` names in the layout's index.json: every blob first, each one only when the repository
lacks it (``HEAD``), mounted from another repository of the same registry when one is known to
hold it, else uploaded in one ``PUT`` streamed from its file; then the manifests, the platform
manifests of an index by digest before the index itself under the tag; then the artifacts the
layout attaches to the image (SBOMs, ``bundler.image.referrers``) by digest. A registry that
has no referrers API (no ``OCI-Subject`` answer) gets the spec's fallback: an index tagged
``sha256-<hex of the image>`` listing them, as oras and regctl keep it.

Which repositories hold a blob is remembered in ``$XDG_CACHE_HOME/scratchpack/registry-blobs
.json`` (``~/.cache`` by default): every blob pushed, found or mounted is recorded with its
registry and repository. A mount is only an offer: a registry that no longer has the blob there
(deleted, or we may not read that repository) answers with an ordinary upload session, which we
use. So a stale or lost record costs nothing but the upload we would have made anyway, and the
file is never trusted for more than where to try first.

HTTP, TLS and auth: ``bundler.image.transport``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import UsageError
from bundler.image.archive import docker_reference, full_name
from bundler.image.oci import (
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    REF_NAME,
    LayoutError,
    blob_path,
    read_index,
    read_json_blob,
)
from bundler.image.transport import (
    DOCKER_HUB_AUTH_KEY,
    Body,
    CredentialStore,
    RegistryError,
    Response,
    Session,
    TlsSettings,
)
from bundler.staging.output import replace_file

__all__ = [
    "CredentialStore",
    "PushResult",
    "Reference",
    "RegistryError",
    "TlsSettings",
    "parse_reference",
    "push",
]

log = logging.getLogger(__name__)

DOCKER_HUB = "registry-1.docker.io"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (MEDIA_INDEX, MEDIA_DOCKER_LIST)
CACHE_NAME = "registry-blobs.json"
CACHE_DIGESTS = 20_000  # per registry: the oldest records go first
CACHE_REPOSITORIES = 4  # per blob: the latest repositories that held it
MB = 1_000_000

Progress = Callable[[str], None]


# ----- references -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Where an image goes: ``registry`` as connected to (``host[:port]``), ``repository``
    (``team/app``), ``tag``."""

    registry: str
    repository: str
    tag: str

    @property
    def auth_key(self) -> str:
        """The key of the registry's credentials in a Docker config's ``auths``."""
        return DOCKER_HUB_AUTH_KEY if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def parse_reference(ref: str) -> Reference:
    """``host:5000/team/redis:7``; ``registry.example/x`` (tag ``latest``); Docker Hub's short
    forms as Docker reads them: ``redis`` is ``registry-1.docker.io/library/redis:latest``.
    A reference by digest is refused: a push names its tag."""
    if "@" in ref:
        raise UsageError(f"{ref!r}: a push needs a tag (name:tag), not a digest")
    name, tag = docker_reference(ref)
    domain, _, repository = full_name(name).partition("/")
    if domain in ("docker.io", "index.docker.io"):
        domain = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    return Reference(domain, repository, tag)


# ----- what is pushed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """What a push did. ``digest`` is the manifest's (or index's) now tagged ``reference``;
    blobs are counted once each: ``uploaded`` (``bytes_uploaded`` in all), ``mounted`` from
    another repository, ``present`` already in the repository. ``referrers`` are the digests
    of the artifacts (SBOMs) pushed for it."""

    reference: Reference
    digest: str
    media_type: str
    uploaded: int
    mounted: int
    present: int
    bytes_uploaded: int
    manifests: int
    referrers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class _Manifest:
    digest: str
    media_type: str
    data: bytes
    blobs: tuple[_Blob, ...]  # what it needs in the repository first (config and layers)
    children: tuple[_Manifest, ...] = ()  # an index's manifests, pushed before it
    descriptor: dict[str, Any] = field(default_factory=dict)  # as index.json lists it


def _load_manifest(layout: Path, descriptor: dict[str, Any]) -> _Manifest:
    """The manifest DESCRIPTOR names in LAYOUT, its blobs and (for an index) its children,
    all checked to be there with their sizes before anything is sent."""
    digest = descriptor["digest"]
    data = _blob(layout, descriptor).path.read_bytes()
    try:
        document = json.loads(data)
    except ValueError:
        raise LayoutError(f"{layout}: the manifest {digest} is not JSON") from None
    media_type = document.get("mediaType") or descriptor.get("mediaType") or MEDIA_MANIFEST
    if media_type in INDEX_TYPES:
        children = tuple(_load_manifest(layout, child) for child in document.get("manifests", []))
        return _Manifest(digest, media_type, data, (), children, descriptor)
    needed = [document.get("config"), *document.get("layers", [])]
    if not all(isinstance(d, dict) and isinstance(d.get("digest"), str) for d in needed):
        raise LayoutError(f"{layout}: the manifest {digest} lacks its config or a layer digest")
    blobs = tuple(_blob(layout, d) for d in needed if not _foreign(layout, d))
    return _Manifest(digest, media_type, data, blobs, (), descriptor)


def _foreign(layout: Path, descriptor: dict[str, Any]) -> bool:
    # A non-distributable layer the registry fetches from its own URLs, absent here.
    return bool(descriptor.get("urls")) and not blob_path(layout, descriptor["digest"]).exists()


def _blob(layout: Path, descriptor: dict[str, Any]) -> _Blob:
    digest = descriptor["digest"]
    path = blob_path(layout, digest)
    try:
        size = path.stat().st_size
    except OSError:
        raise LayoutError(f"{layout}: the blob {digest} is not in the layout") from None
    if isinstance(descriptor.get("size"), int) and descriptor["size"] != size:
        raise LayoutError(
            f"{path}: {size} bytes where its descriptor says {descriptor['size']}; "
            "not pushing a damaged layout"
        )
    return _Blob(digest, size, path)


def _named(layout: Path, name: str) -> dict[str, Any]:
    manifests = read_index(layout)["manifests"]
    for entry in manifests:
        if _ref_name(entry) == name:
            return dict(entry)
    names = sorted({_ref_name(m) for m in manifests} - {""})
    raise LayoutError(
        f"{layout}: no image named {name!r} (the layout has: {', '.join(names) or 'none'})"
    )


def _referrers(layout: Path, subjects: set[str]) -> list[_Manifest]:
    """The layout's index entries whose manifest has one of SUBJECTS as its subject."""
    found = []
    for entry in read_index(layout)["manifests"]:
        if entry.get("mediaType", MEDIA_MANIFEST) != MEDIA_MANIFEST or _ref_name(entry):
            continue
        try:
            subject = read_json_blob(layout, entry["digest"]).get("subject")
        except LayoutError:
            continue  # another tool's entry we cannot read: not one of ours to push
        if isinstance(subject, dict) and subject.get("digest") in subjects:
            found.append(_load_manifest(layout, entry))
    return found


def _ref_name(entry: dict[str, Any]) -> str:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else ""


def _walk(manifest: _Manifest) -> Iterator[_Manifest]:
    """Children before their index."""
    for child in manifest.children:
        yield from _walk(child)
    yield manifest


# ----- where blobs are ----------------------------------------------------------------------------


class BlobLocations:
    """Which repositories of a registry held a blob, as far as our pushes saw: where to try a
    mount first. Read once, written once at the end of a push (one rename); concurrent pushes
    may lose each other's records, which only costs an upload."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data = self._read()
        self._changed = False

    @classmethod
    def default(cls) -> BlobLocations:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return cls(Path(cache) / "scratchpack" / CACHE_NAME)

    def _read(self) -> dict[str, dict[str, list[str]]]:
        try:
            found = json.loads(self.path.read_bytes())
            registries = found["registries"]
            if isinstance(registries, dict):
                return {str(k): dict(v) for k, v in registries.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("%s: not used (%s)", self.path, exc)
        return {}

    def candidates(self, registry: str, digest: str, repository: str) -> list[str]:
        held = self._data.get(registry, {}).get(digest, [])
        return [r for r in held if isinstance(r, str) and r != repository]

    def record(self, registry: str, digest: str, repository: str) -> None:
        blobs = self._data.setdefault(registry, {})
        held = [r for r in blobs.pop(digest, []) if r != repository]
        blobs[digest] = [repository, *held][:CACHE_REPOSITORIES]  # to the end: newest
        while len(blobs) > CACHE_DIGESTS:
            del blobs[next(iter(blobs))]
        self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        document = json.dumps({"version": 1, "registries": self._data}).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.path, document, temp)
        except OSError as exc:
            # Only a hint for later pushes: never a reason to fail this one.
            log.debug("%s: not written (%s)", self.path, exc)


# ----- the push -----------------------------------------------------------------------------------


@dataclass
class _Counts:
    uploaded: int = 0
    mounted: int = 0
    present: int = 0
    bytes_uploaded: int = 0
    manifests: int = 0
    done: set[str] = field(default_factory=set)


def push(
    layout_dir: str | os.PathLike[str],
    name: str,
    reference: str | Reference,
    *,
    credentials: CredentialStore | None = None,
    tls: TlsSettings | None = None,
    insecure: bool = False,
    progress: Progress | None = None,
) -> PushResult:
    """Push the image (or image index) NAME of the OCI layout LAYOUT_DIR to REFERENCE
    (``host:5000/team/app:tag``, or a parsed Reference), with the artifacts the layout
    attaches to it.

    CREDENTIALS default to the user's Docker config (``CredentialStore.from_docker_config()``);
    TLS to Docker's trust (system CAs and ``/etc/docker/certs.d``); INSECURE allows plain HTTP
    and unverified TLS to this registry. PROGRESS hears one line per blob and manifest.
    Raises RegistryError (or LayoutError, UsageError) with a one-line message."""
    layout = Path(layout_dir)
    target = reference if isinstance(reference, Reference) else parse_reference(reference)
    top = _load_manifest(layout, _named(layout, name))
    referrers = _referrers(layout, {m.digest for m in _walk(top)})
    session = Session(
        target.registry,
        target.auth_key,
        credentials if credentials is not None else CredentialStore.from_docker_config(),
        tls or TlsSettings(),
        insecure,
    )
    pusher = _Pusher(session, target, BlobLocations.default(), progress or _quiet)
    try:
        session.ping([f"repository:{target.repository}:pull,push"])
        for manifest in _walk(top):
            pusher.push_manifest(manifest, target.tag if manifest is top else manifest.digest)
        for artifact in referrers:
            pusher.push_referrer(artifact)
    finally:
        pusher.locations.save()
        session.close()
    counts = pusher.counts
    log.info(
        "%s: pushed %s (%d blobs uploaded, %d mounted, %d present)",
        target,
        top.digest,
        counts.uploaded,
        counts.mounted,
        counts.present,
    )
    return PushResult(
        target, top.digest, top.media_type, counts.uploaded, counts.mounted, counts.present,
        counts.bytes_uploaded, counts.manifests, tuple(a.digest for a in referrers),
    )  # fmt: skip


def _quiet(_: str) -> None:
    pass


class _Pusher:
    def __init__(
        self, session: Session, target: Reference, locations: BlobLocations, progress: Progress
    ) -> None:
        self.session = session
        self.target = target
        self.locations = locations
        self.progress = progress
        self.counts = _Counts()
        self.repo = f"/v2/{target.repository}"

    # ----- blobs --------------------------------------------------------------------------------

    def push_blob(self, blob: _Blob) -> None:
        if blob.digest in self.counts.done:
            return
        head = self.session.request("HEAD", f"{self.repo}/blobs/{blob.digest}")
        # A redirect is to where the registry keeps the blob: it has it.
        if 200 <= head.status < 400:
            self.counts.present += 1
            self._say(blob, "already in the repository")
        elif head.status == 404:
            self._mount_or_upload(blob)
        else:
            raise self.session.denied(f"looking up blob {blob.digest}", head)
        self.counts.done.add(blob.digest)
        self.locations.record(self.target.registry, blob.digest, self.target.repository)

    def _mount_or_upload(self, blob: _Blob) -> None:
        sources = self.locations.candidates(
            self.target.registry, blob.digest, self.target.repository
        )
        if sources:
            self.session.want_scope(f"repository:{sources[0]}:pull")
            query = urllib.parse.urlencode({"mount": blob.digest, "from": sources[0]})
            started = self._start_upload(blob, f"?{query}")
            if started.status == 201:
                self.counts.mounted += 1
                self._say(blob, f"mounted from {sources[0]}")
                return
        else:
            started = self._start_upload(blob, "")
        self._upload(blob, started)

    def _start_upload(self, blob: _Blob, query: str) -> Response:
        """POST an upload (a mount when QUERY asks one): 201 mounted, 202 an upload session."""
        answer = self.session.request("POST", f"{self.repo}/blobs/uploads/{query}")
        if answer.status not in (201, 202) or (answer.status == 202 and not _location(answer)):
            raise self.session.denied(f"starting the upload of blob {blob.digest}", answer)
        return answer

    def _upload(self, blob: _Blob, started: Response) -> None:
        """One monolithic PUT to the upload session, the bytes streamed from the file."""
        self._say(blob, f"uploading {blob.size / MB:.2f} MB")
        url = _with_query(_location(started), digest=blob.digest)
        body = Body(path=blob.path, size=blob.size)
        answer = self.session.request(
            "PUT", url, {"Content-Type": "application/octet-stream"}, body
        )
        if answer.status != 201:
            raise self.session.denied(f"upload of blob {blob.digest}", answer)
        self.counts.uploaded += 1
        self.counts.bytes_uploaded += blob.size

    def _say(self, blob: _Blob, what: str) -> None:
        self.progress(f"{_short(blob.digest)}: {what}")

    # ----- manifests ----------------------------------------------------------------------------

    def push_manifest(self, manifest: _Manifest, tag_or_digest: str) -> Response:
        for blob in manifest.blobs:
            self.push_blob(blob)
        answer = self.session.request(
            "PUT",
            f"{self.repo}/manifests/{tag_or_digest}",
            {"Content-Type": manifest.media_type},
            Body(data=manifest.data),
        )
        if answer.status not in (200, 201):
            raise self.session.denied(f"manifest {tag_or_digest}", answer)
        stored = answer.header("Docker-Content-Digest")
        if stored and stored != manifest.digest:
            raise RegistryError(
                f"{self.target.registry}: stored the manifest {tag_or_digest} as {stored}, "
                f"not as {manifest.digest} (it rewrote the manifest)"
            )
        self.counts.manifests += 1
        self.progress(f"{_short(manifest.digest)}: manifest pushed as {tag_or_digest}")
        return answer

    def push_referrer(self, artifact: _Manifest) -> None:
        answer = self.push_manifest(artifact, artifact.digest)
        if answer.header("OCI-Subject"):
            return  # the registry lists it in its referrers API itself
        subject = json.loads(artifact.data)["subject"]["digest"]
        self._add_to_referrers_tag(subject, _referrer_descriptor(artifact))

    def _add_to_referrers_tag(self, subject: str, descriptor: dict[str, Any]) -> None:
        """The referrers tag schema (distribution spec 1.1): the index ``<alg>-<hex>`` lists
        the artifacts whose subject is that manifest."""
        tag = subject.replace(":", "-")
        answer = self.session.request(
            "GET", f"{self.repo}/manifests/{tag}", {"Accept": MEDIA_INDEX}
        )
        if answer.status == 200 and answer.json().get("mediaType") == MEDIA_INDEX:
            index = answer.json()
        elif answer.status == 404:
            index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
        else:
            raise self.session.denied(f"reading the referrers tag {tag}", answer)
        listed = [m for m in index.get("manifests", []) if m.get("digest") != descriptor["digest"]]
        index["manifests"] = [*listed, descriptor]
        data = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        put = self.session.request(
            "PUT", f"{self.repo}/manifests/{tag}", {"Content-Type": MEDIA_INDEX}, Body(data=data)
        )
        if put.status not in (200, 201):
            raise self.session.denied(f"the referrers tag {tag}", put)


def _referrer_descriptor(artifact: _Manifest) -> dict[str, Any]:
    document = json.loads(artifact.data)
    found: dict[str, Any] = {
        "mediaType": artifact.media_type,
        "digest": artifact.digest,
        "size": len(artifact.data),
    }
    if document.get("artifactType"):
        found["artifactType"] = document["artifactType"]
    if document.get("annotations"):
        found["annotations"] = document["annotations"]
    return found


def _location(answer: Response) -> str:
    return answer.header("Location")


def _with_query(url: str, **params: str) -> str:
    """URL with PARAMS added to the query it has (an upload session's ``_state``...)."""
    parts = urllib.parse.urlsplit(url)
    query = "&".join(filter(None, [parts.query, urllib.parse.urlencode(params)]))
    return urllib.parse.urlunsplit((*parts[:3], query, parts.fragment))


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12] or digest
