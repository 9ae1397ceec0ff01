"""Push an image of an OCI layout to a registry (OCI distribution spec), with no daemon.

``push(layout, name, "host:5000/team/app:1")`` sends the manifest, or the image index, that
``name`` names in the layout's index.json: every blob first, each one only when the repository
lacks it (``HEAD``), mounted from another repository of the same registry when one is known to
hold it, else uploaded (``_Pusher._upload``: PATCH streamed from its file, in chunks once a
413 asks for them, resumed where the registry says it stands after a fault, then PUT), a few
blobs at once; then the manifests, the platform manifests of an index by digest before the
index itself under the tag; then the artifacts the
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
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import UsageError
from bundler.image.oci import (
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    LayoutError,
    blob_path,
    canonical_json,
    read_index,
    read_json_blob,
)
from bundler.image.references import docker_reference, full_name, ref_name
from bundler.image.transport import (
    DOCKER_HUB_AUTH_KEY,
    RETRY_STATUSES,
    Body,
    CredentialStore,
    NetworkError,
    RegistryError,
    Response,
    RetryPolicy,
    Session,
    TlsSettings,
    Tries,
    error_message,
)
from bundler.staging.output import replace_file

__all__ = [
    "CredentialStore",
    "PushResult",
    "Reference",
    "RegistryError",
    "RetryPolicy",
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
JOBS = 4  # blobs uploaded at once
MIN_CHUNK = 1 << 16  # no chunk smaller, whatever 413s say
FAULT_CHUNK = 1 << 18  # no smaller chunks after a fault
# A manifest PUT's answer for a blob the repository lacks: the spec's code, and distribution's
BLOB_UNKNOWN = ("MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN")

Progress = Callable[[str], None]
Meter = Callable[[int, int], None]  # (bytes sent, bytes to send)


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
        if ref_name(entry) == name:
            return dict(entry)
    names = sorted({ref_name(m) for m in manifests} - {""})
    raise LayoutError(
        f"{layout}: no image named {name!r} (the layout has: {', '.join(names) or 'none'})"
    )


def _referrers(layout: Path, subjects: set[str]) -> list[_Manifest]:
    """The layout's index entries whose manifest has one of SUBJECTS as its subject."""
    found = []
    for entry in read_index(layout)["manifests"]:
        if entry.get("mediaType", MEDIA_MANIFEST) != MEDIA_MANIFEST or ref_name(entry):
            continue
        try:
            subject = read_json_blob(layout, entry["digest"]).get("subject")
        except LayoutError:
            continue  # another tool's entry we cannot read: not one of ours to push
        if isinstance(subject, dict) and subject.get("digest") in subjects:
            found.append(_load_manifest(layout, entry))
    return found


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
    retry: RetryPolicy | None = None,
    jobs: int = JOBS,
    meter: Meter | None = None,
) -> PushResult:
    """Push the image (or image index) NAME of the OCI layout LAYOUT_DIR to REFERENCE
    (``host:5000/team/app:tag``, or a parsed Reference), with the artifacts the layout
    attaches to it.

    CREDENTIALS default to the user's Docker config (``CredentialStore.from_docker_config()``);
    TLS to Docker's trust (system CAs and ``/etc/docker/certs.d``); INSECURE allows plain HTTP
    and unverified TLS to this registry. PROGRESS hears one line per blob and manifest; METER
    hears (bytes sent, bytes to send) as blobs go up. RETRY says how passing faults are tried
    again; JOBS blobs go up at once. Raises RegistryError (or LayoutError, UsageError) with a
    one-line message."""
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
        retry=retry,
    )
    pusher = _Pusher(
        session, target, BlobLocations.default(), progress or _quiet, max(1, jobs), meter
    )
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


class _Restart(Exception):
    """The registry lost the upload session (after SENT bytes were acknowledged): start a
    new one from the first byte."""

    def __init__(self, reason: str, sent: int) -> None:
        super().__init__(reason)
        self.sent = sent


class _Pusher:
    def __init__(
        self,
        session: Session,
        target: Reference,
        locations: BlobLocations,
        progress: Progress,
        jobs: int = JOBS,
        meter: Meter | None = None,
    ) -> None:
        self.session = session
        self.target = target
        self.locations = locations
        self.progress = progress
        self.jobs = jobs
        self.meter = meter
        self.counts = _Counts()
        self.repo = f"/v2/{target.repository}"
        self.lock = threading.Lock()  # counts, locations, the meter, the chunk size
        self.chunk: int | None = None  # None: a blob in one PATCH, until a 413 says smaller
        self.failed = threading.Event()  # one upload gave up: the others stop
        self.sent = 0  # bytes of blobs acknowledged, for the meter
        self.to_send = 0

    # ----- blobs --------------------------------------------------------------------------------

    def push_blobs(self, blobs: tuple[_Blob, ...], again: bool = False) -> None:
        """BLOBS into the repository, JOBS at a time; AGAIN: uploaded without asking whether
        it has them (it said it lost them)."""
        todo = [b for b in dict.fromkeys(blobs) if again or b.digest not in self.counts.done]
        if len(todo) <= 1 or self.jobs == 1:
            for blob in todo:
                self.push_blob(blob, again)
            return
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(todo))) as pool:
            futures = [pool.submit(self.push_blob, blob, again) for blob in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.failed.set()
                raise
            finally:
                for future in futures:
                    future.cancel()

    def push_blob(self, blob: _Blob, again: bool = False) -> None:
        if self.failed.is_set():
            return
        if again:
            self._upload_new(blob)
        else:
            head = self.session.call(
                "HEAD", f"{self.repo}/blobs/{blob.digest}", f"looking up blob {blob.digest}"
            )
            # A redirect is to where the registry keeps the blob: it has it.
            if 200 <= head.status < 400:
                with self.lock:
                    self.counts.present += 1
                self._say(blob, "already in the repository")
            elif head.status == 404:
                self._mount_or_upload(blob)
            else:
                raise self.session.denied(f"looking up blob {blob.digest}", head)
        with self.lock:
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
                with self.lock:
                    self.counts.mounted += 1
                self._say(blob, f"mounted from {sources[0]}")
                return
            self._upload(blob, started)
        else:
            self._upload_new(blob)

    def _upload_new(self, blob: _Blob) -> None:
        self._upload(blob, self._start_upload(blob, ""))

    def _start_upload(self, blob: _Blob, query: str) -> Response:
        """POST an upload (a mount when QUERY asks one): 201 mounted, 202 an upload session."""
        what = f"starting the upload of blob {blob.digest}"
        answer = self.session.call("POST", f"{self.repo}/blobs/uploads/{query}", what)
        if answer.status not in (201, 202) or (answer.status == 202 and not _location(answer)):
            raise self.session.denied(what, answer)
        return answer

    def _upload(self, blob: _Blob, started: Response) -> None:
        """The blob's bytes to the upload session STARTED, streamed from its file: PATCH with
        Content-Range, from the newest Location each time, then PUT ``?digest=``. The whole
        rest in one PATCH until a 413 asks for smaller chunks. After a fault, GET on the
        session says how much it holds, and the upload goes on from there; a session the
        registry lost starts anew."""
        self._say(blob, f"uploading {blob.size / MB:.2f} MB")
        with self.lock:
            self.to_send += blob.size
        tries = self.session.retry.tries(self.target.registry, f"upload of blob {blob.digest}")
        while True:
            try:
                self._send_blob(blob, started, tries)
                break
            except _Restart as lost:
                log.info("%s: %s; starting it again", blob.digest, lost)
                self._meter(-lost.sent)
                started = self._start_upload(blob, "")
        with self.lock:
            self.counts.uploaded += 1
            self.counts.bytes_uploaded += blob.size

    def _send_blob(self, blob: _Blob, started: Response, tries: Tries) -> None:
        location = _location(started)
        minimum = _int_header(started, "OCI-Chunk-Min-Length")
        offset = 0
        # After each fault, this blob's chunks halve (down to FAULT_CHUNK): on a network that
        # cuts, a fault then costs less to send again.
        cautious: int | None = None
        while offset < blob.size:
            if self.failed.is_set():
                raise RegistryError(f"{self.target.registry}: stopped: another upload failed")
            with self.lock:
                chunk = self.chunk
            if cautious is not None:
                chunk = cautious if chunk is None else min(chunk, cautious)
            length = (
                blob.size - offset
                if chunk is None
                else min(max(chunk, minimum), blob.size - offset)
            )
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + length - 1}",
            }
            body = Body(path=blob.path, size=length, offset=offset)
            try:
                answer = self.session.request("PATCH", location, headers, body)
            except NetworkError as exc:
                if not exc.passing:
                    raise
                tries.failed(str(exc).removeprefix(f"{self.target.registry}: "))
                cautious = max(FAULT_CHUNK, minimum, length // 2)
                location, offset = self._resume(blob, location, offset, tries)
                continue
            if answer.status == 202 and _location(answer):
                location = _location(answer)
                held = _range_end(answer)
                done = offset + length if held is None else held
                if not offset < done <= blob.size:
                    raise RegistryError(
                        f"{self.target.registry}: upload of blob {blob.digest}: holds "
                        f"{held} B after a chunk that ended at {offset + length}"
                    )
                self._meter(done - offset)
                offset = done
                tries.progressed()
            elif answer.status == 413:
                self._smaller(blob, length, minimum, answer)
            elif answer.status == 416 or answer.status in RETRY_STATUSES:
                if answer.status != 416:
                    tries.answer(answer)
                    cautious = max(FAULT_CHUNK, minimum, length // 2)
                location, offset = self._resume(blob, location, offset, tries)
            elif _error_code(answer) in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"):
                raise _Restart(f"the registry lost the upload ({error_message(answer)})", offset)
            else:
                raise self.session.denied(f"upload of blob {blob.digest}", answer)
        self._finish(blob, location, offset, tries)

    def _finish(self, blob: _Blob, location: str, offset: int, tries: Tries) -> None:
        """PUT ``?digest=``: the upload closed, the blob checked and stored."""
        url = _with_query(location, digest=blob.digest)
        while True:
            answer: Response | None
            try:
                answer = self.session.request(
                    "PUT", url, {"Content-Type": "application/octet-stream"}, Body(data=b"")
                )
            except NetworkError as exc:
                if not exc.passing:
                    raise
                tries.failed(str(exc).removeprefix(f"{self.target.registry}: "))
                answer = None
            if answer is not None and answer.status == 201:
                return
            if answer is not None and answer.status not in RETRY_STATUSES:
                if _error_code(answer) in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"):
                    if self._has(blob):
                        return  # the PUT went through; its answer was lost
                    raise _Restart(
                        f"the registry lost the upload ({error_message(answer)})", offset
                    )
                raise self.session.denied(f"upload of blob {blob.digest}", answer)
            if answer is not None:
                tries.answer(answer)
            if self._has(blob):
                return

    def _has(self, blob: _Blob) -> bool:
        head = self.session.call(
            "HEAD", f"{self.repo}/blobs/{blob.digest}", f"looking up blob {blob.digest}"
        )
        return 200 <= head.status < 400

    def _resume(self, blob: _Blob, location: str, offset: int, tries: Tries) -> tuple[str, int]:
        """Where the upload at LOCATION stands: GET on it answers 204 with the Range held."""
        while True:
            try:
                answer = self.session.request("GET", location)
            except NetworkError as exc:
                if not exc.passing:
                    raise
                tries.failed(str(exc).removeprefix(f"{self.target.registry}: "))
                continue
            if answer.status in RETRY_STATUSES:
                tries.answer(answer)
                continue
            if answer.status == 204:
                held = _range_end(answer)
                held = 0 if held is None else held
                if held > blob.size:
                    raise _Restart(f"the registry holds {held} B of {blob.size}", offset)
                self._meter(held - offset)
                log.debug("%s: the registry holds %d B; going on from there", blob.digest, held)
                return _location(answer) or location, held
            raise _Restart(f"the registry lost the upload ({error_message(answer)})", offset)

    def _smaller(self, blob: _Blob, refused: int, minimum: int, answer: Response) -> None:
        """A 413 for a body of REFUSED bytes: chunks of the largest power of two below it
        (for every blob of this push), never below the registry's minimum."""
        floor = max(minimum, MIN_CHUNK)
        if refused <= floor:
            raise RegistryError(
                f"{self.target.registry}: upload of blob {blob.digest}: a chunk of {refused} B "
                f"refused as too large ({error_message(answer)})"
            )
        smaller = max(floor, 1 << ((refused - 1).bit_length() - 1))
        with self.lock:
            if self.chunk is None or self.chunk > smaller:
                self.chunk = smaller
                log.info(
                    "%s: a body of %d B is too large (HTTP 413): chunks of %d B",
                    self.target.registry,
                    refused,
                    smaller,
                )

    def _meter(self, sent: int) -> None:
        if self.meter is None or not sent:
            return
        with self.lock:
            self.sent += sent
            self.meter(self.sent, self.to_send)

    def _say(self, blob: _Blob, what: str) -> None:
        self.progress(f"{_short(blob.digest)}: {what}")

    # ----- manifests ----------------------------------------------------------------------------

    def push_manifest(self, manifest: _Manifest, tag_or_digest: str) -> Response:
        """The manifest's blobs, then the manifest. A registry that lost a blob since (it
        answers MANIFEST_BLOB_UNKNOWN) gets the blobs it names again, then the manifest once
        more."""
        self.push_blobs(manifest.blobs)
        answer = self._put_manifest(manifest, tag_or_digest)
        if _error_code(answer) in BLOB_UNKNOWN and manifest.blobs:
            lost = _unknown_blobs(answer, manifest.blobs)
            self.progress(
                f"{_short(manifest.digest)}: the registry lost {len(lost)} blob(s); "
                "uploading them again"
            )
            with self.lock:
                self.counts.done -= {b.digest for b in lost}
            self.push_blobs(lost, again=True)
            answer = self._put_manifest(manifest, tag_or_digest)
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

    def _put_manifest(self, manifest: _Manifest, tag_or_digest: str) -> Response:
        return self.session.call(
            "PUT",
            f"{self.repo}/manifests/{tag_or_digest}",
            f"manifest {tag_or_digest}",
            {"Content-Type": manifest.media_type},
            Body(data=manifest.data),
        )

    def push_referrer(self, artifact: _Manifest) -> None:
        """The artifact by digest; listed for its subject by the registry's referrers API
        when it has one (OCI-Subject in the answer, or the API lists it), else in the
        referrers tag."""
        answer = self.push_manifest(artifact, artifact.digest)
        subject = json.loads(artifact.data)["subject"]["digest"]
        if answer.header("OCI-Subject") or self._listed_by_api(subject, artifact.digest):
            self.progress(f"{_short(artifact.digest)}: listed by the referrers API")
            return
        self._add_to_referrers_tag(subject, _referrer_descriptor(artifact))

    def _listed_by_api(self, subject: str, digest: str) -> bool:
        """GET /v2/<name>/referrers/<subject> answers 200 with an index that lists DIGEST."""
        answer = self.session.call(
            "GET",
            f"{self.repo}/referrers/{subject}",
            f"the referrers of {subject}",
            {"Accept": MEDIA_INDEX},
        )
        if answer.status != 200:
            return False
        listed = answer.json().get("manifests")
        return isinstance(listed, list) and any(
            isinstance(m, dict) and m.get("digest") == digest for m in listed
        )

    def _add_to_referrers_tag(self, subject: str, descriptor: dict[str, Any]) -> None:
        """The referrers tag schema (distribution spec 1.1): the index ``<alg>-<hex>`` lists
        the artifacts whose subject is that manifest."""
        tag = subject.replace(":", "-")
        answer = self.session.call(
            "GET", f"{self.repo}/manifests/{tag}", f"the referrers tag {tag}",
            {"Accept": MEDIA_INDEX},
        )  # fmt: skip
        if answer.status == 200 and answer.json().get("mediaType") == MEDIA_INDEX:
            index = answer.json()
        elif answer.status == 404:
            index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
        else:
            raise self.session.denied(f"reading the referrers tag {tag}", answer)
        listed = [m for m in index.get("manifests", []) if m.get("digest") != descriptor["digest"]]
        index["manifests"] = [*listed, descriptor]
        data = canonical_json(index)
        put = self.session.call(
            "PUT", f"{self.repo}/manifests/{tag}", f"the referrers tag {tag}",
            {"Content-Type": MEDIA_INDEX}, Body(data=data),
        )  # fmt: skip
        if put.status not in (200, 201):
            raise self.session.denied(f"the referrers tag {tag}", put)


def _error_code(answer: Response) -> str:
    errors = answer.json().get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    code = first.get("code") if isinstance(first, dict) else None
    return code if isinstance(code, str) else ""


def _unknown_blobs(answer: Response, blobs: tuple[_Blob, ...]) -> tuple[_Blob, ...]:
    """The blobs a BLOB_UNKNOWN answer names (its errors' detail); all of BLOBS when it names
    none of them."""
    named = set()
    errors = answer.json().get("errors")
    for error in errors if isinstance(errors, list) else ():
        if isinstance(error, dict) and error.get("code") in BLOB_UNKNOWN:
            named.update(re.findall(r"sha256:[0-9a-f]{64}", json.dumps(error.get("detail"))))
    found = tuple(b for b in blobs if b.digest in named)
    return found or blobs


def _int_header(answer: Response, name: str) -> int:
    value = answer.header(name).strip()
    return int(value) if value.isdigit() else 0


def _range_end(answer: Response) -> int | None:
    """How many bytes a ``Range: 0-<last>`` answer says the session holds. docker-registry
    writes ``0-0`` for none (as for one byte: it is taken as none)."""
    match = re.fullmatch(r"(?:bytes=)?0-(\d+)", answer.header("Range").strip())
    if match is None:
        return None
    last = int(match[1])
    return last + 1 if last > 0 else 0


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
