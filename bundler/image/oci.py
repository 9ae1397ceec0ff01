"""Blobs of an image and the OCI image layout (image-spec 1.1) that holds them.

A layer is the reproducible tar of its entries (``stage.write_tar``; its sha256 is the layer's
diff_id), gzip-compressed as ``bundler.staging.blobs`` does it: the blob. Both hashes are taken
while the bytes stream to disk, so no layer is ever held in memory; a layer whose diff_id an
image of the layout already has is not compressed again, its blob is reused. The config and the
manifest are canonical JSON (sorted keys, no spaces): the same inputs give the same digests
in any folder and on any machine.

The layout is written so that a call killed at any moment leaves a valid layout with every
earlier entry intact: a lock file serialises writers, every blob is written under a temporary
name, fsynced and renamed into place, and ``index.json`` is replaced in one rename once every
blob it names is there (their folder synced once, first). Temporaries of dead calls are
removed by the next call, under the lock.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from bundler.errors import ScratchpackError
from bundler.image.dockerfile import ImageConfig
from bundler.image.references import REF_NAME, check_layout_name, ref_name
from bundler.image.spec import ImageSpec, LayerSpec, Platform
from bundler.staging.blobs import Blob, Compressor, file_digest
from bundler.staging.digests import Recipe
from bundler.staging.output import (
    OutputRecords,
    open_lock,
    replace_file,
    sync_file,
    sync_folder,
    taking_turns,
)
from bundler.staging.tree import Progress, one_at_a_time, rfc3339, tar_recipe, write_tar

log = logging.getLogger(__name__)

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"
BLOBS = Path("blobs", "sha256")
# Layers other tools may have written, which a layout reuses as gzip blobs.
GZIP_LAYERS = (MEDIA_LAYER, "application/vnd.docker.image.rootfs.diff.tar.gzip")
# Our own names in a layout folder: distinct from the output folder's (bundler.staging.output), so a
# layout inside an output folder never waits for, nor removes, what a pack run holds.
LOCK_NAME = ".scratchpack-oci.lock"
TEMP_PREFIX = ".scratchpack-oci-tmp-"


class LayoutError(ScratchpackError):
    """An OCI layout folder cannot be used or written."""


@dataclass(frozen=True)
class Descriptor:
    """What a manifest or an index says of a blob."""

    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class LayerBlob:
    descriptor: Descriptor
    diff_id: str  # "sha256:<hex>" of the uncompressed tar


class LayoutImage(NamedTuple):
    """One image of a layout, read back: its manifest and config, and its layers' files."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[Path]


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces: the same value always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor_of(media_type: str, data: bytes) -> Descriptor:
    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


# ----- blobs ------------------------------------------------------------------------------------


def write_layer(
    layer: LayerSpec,
    handle: BinaryIO,
    epoch: int,
    progress: Progress | None = None,
    compressor: Compressor | None = None,
    reuse: Callable[[str], Blob | None] | None = None,
    source: Path | None = None,
    recipe: Recipe | None = None,
) -> LayerBlob:
    """The layer's blob into ``handle`` (from its position on), or REUSE's blob of the same
    diff_id (nothing written): the tar is hashed first, compressed only when no blob of it is
    known (``bundler.staging.blobs``)."""
    write = functools.partial(write_tar, layer.entries, epoch=epoch)
    hashing = functools.partial(write_tar, layer.entries, epoch=epoch, progress=progress)
    packer = compressor or Compressor(1, None)
    recipe = recipe or tar_recipe(layer.entries, epoch, packer.memo)
    blob = packer.make(write, handle, reuse, hashing, source, recipe)
    return LayerBlob(Descriptor(MEDIA_LAYER, blob.digest, blob.size), blob.diff_id)


def platform_json(platform: Platform) -> dict[str, str]:
    found = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        found["variant"] = platform.variant
    return found


def exposed_port(port: str) -> str:
    """``80`` -> ``80/tcp`` (a bare port is TCP, as for EXPOSE); ``53/UDP`` -> ``53/udp``."""
    number, _, protocol = port.partition("/")
    return f"{number}/{(protocol or 'tcp').lower()}"


def run_config(config: ImageConfig) -> dict[str, Any]:
    """The config's ``config`` object: what Docker's own images carry, empty fields left out."""
    found: dict[str, Any] = {"Entrypoint": list(config.entrypoint)}
    if config.cmd is not None:
        found["Cmd"] = list(config.cmd)
    if config.env:
        found["Env"] = [f"{key}={value}" for key, value in config.env]
    if config.user:
        found["User"] = config.user
    if config.workdir:
        found["WorkingDir"] = config.workdir
    if config.expose:
        found["ExposedPorts"] = {exposed_port(port): {} for port in config.expose}
    if config.labels:
        found["Labels"] = dict(config.labels)
    return found


def config_bytes(image: ImageSpec, diff_ids: list[str]) -> bytes:
    created = rfc3339(image.epoch)
    history = [
        {"created": created, "created_by": layer.comment, "comment": layer.comment}
        for layer in image.layers
    ]
    config = {
        **platform_json(image.platform),
        "created": created,
        "config": run_config(image.config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    return canonical_json(config)


def manifest_bytes(config: Descriptor, layers: list[Descriptor]) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return canonical_json(manifest)


# ----- the layout -------------------------------------------------------------------------------


def write_oci_layout(
    directory: str | os.PathLike[str],
    image: ImageSpec,
    name: str,
    progress: Progress | None = None,
    compressor: Compressor | None = None,
) -> str:
    """Add IMAGE to the OCI layout DIRECTORY (created if needed) as NAME, replacing an image
    of that name; the manifest's digest. Other images of the layout stay. A layer whose
    diff_id an image of the layout already has is not compressed again: its blob is reused."""
    check_layout_name(name)
    with layout_writer(directory) as layout:
        manifest = layout.blobs.add_image(image, progress, compressor, layout.known_layers())
        platform = platform_json(image.platform)
        before = layout.manifests()
        same_name = [m for m in before if ref_name(m) == name]
        kept = [m for m in before if ref_name(m) != name]
        entry = _entry_for(layout, same_name, {**manifest.to_json(), "platform": platform})
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: name}
        layout.write_index(without_orphans(layout.top, before, [*kept, entry]))
    log.info("%s: %s (%s) is %s", layout.top, name, image.platform, manifest.digest)
    return manifest.digest


def _entry_for(
    layout: LayoutWriter, same_name: list[dict[str, Any]], new: dict[str, Any]
) -> dict[str, Any]:
    """The index.json entry of a name once NEW (a platform's manifest) is added: NEW itself
    when the name holds nothing else, else an image index with a manifest per platform (the
    same platform replaced), as users publish one name for every kind of node."""
    children = []
    for old in same_name:
        if old.get("mediaType") == MEDIA_INDEX:
            children += read_json_blob(layout.top, old["digest"]).get("manifests", [])
        elif old.get("mediaType") == MEDIA_MANIFEST and "platform" in old:
            children.append({k: v for k, v in old.items() if k != "annotations"})
    others = [c for c in children if c.get("platform") != new["platform"]]
    if not others:
        return dict(new)
    manifests = sorted([*others, new], key=lambda m: json.dumps(m.get("platform"), sort_keys=True))
    body = canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests})
    return layout.blobs.add_bytes(MEDIA_INDEX, body).to_json()


def listed_manifests(
    top: Path, manifests: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], str]]:
    """Every manifest the index lists, with its name: the entries themselves, and the platform
    manifests of the image indexes among them (named as their index)."""
    found = []
    for entry in manifests:
        found.append((entry, ref_name(entry)))
        if entry.get("mediaType") == MEDIA_INDEX:
            try:
                children = read_json_blob(top, entry["digest"]).get("manifests", [])
            except LayoutError:
                continue  # not ours to understand; kept as it is
            found += [(child, ref_name(entry)) for child in children if isinstance(child, dict)]
    return found


class LayoutWriter:
    """A layout held under its lock: blobs go in first, then index.json in one rename."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.blobs = _BlobStore(top / BLOBS)

    def manifests(self) -> list[dict[str, Any]]:
        return list(read_index(self.top)["manifests"])

    def known_layers(self) -> dict[str, Descriptor]:
        """diff_id -> gzip blob of every layer of every image the layout lists (read from
        their configs and manifests; what cannot be read is skipped, never trusted)."""
        known: dict[str, Descriptor] = {}
        for entry, _name in listed_manifests(self.top, self.manifests()):
            if entry.get("mediaType") != MEDIA_MANIFEST:
                continue
            try:
                manifest = read_json_blob(self.top, entry["digest"])
                config = read_json_blob(self.top, manifest["config"]["digest"])
                diff_ids = config["rootfs"]["diff_ids"]
                layers = manifest["layers"]
                if len(diff_ids) != len(layers):
                    continue
                for diff_id, layer in zip(diff_ids, layers, strict=True):
                    if layer.get("mediaType") in GZIP_LAYERS and isinstance(diff_id, str):
                        descriptor = Descriptor(MEDIA_LAYER, layer["digest"], int(layer["size"]))
                        blob_path(self.top, descriptor.digest)  # a sha256 digest, or skipped
                        known.setdefault(diff_id, descriptor)
            except (LayoutError, KeyError, TypeError, ValueError, AttributeError):
                continue
        return known

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        """index.json with MANIFESTS (sorted: the same layout, the same bytes), other fields
        of the index kept."""
        self.blobs.sync()  # every blob it names is there for good before index.json names it
        index = {**read_index(self.top), "schemaVersion": 2, "mediaType": MEDIA_INDEX}
        index["manifests"] = sorted(manifests, key=lambda m: (ref_name(m), m["digest"]))
        _replace_file(self.top, INDEX_FILE, canonical_json(index))


@contextlib.contextmanager
def layout_writer(directory: str | os.PathLike[str], create: bool = True) -> Iterator[LayoutWriter]:
    """The layout DIRECTORY under its lock, its dead calls' temporaries gone; started when
    CREATE, else a LayoutError when it holds no layout yet."""
    top = Path(directory)
    _check_usable(top)
    if not create and not (top / INDEX_FILE).is_file():
        raise LayoutError(f"{top}: not an OCI layout (no {INDEX_FILE})")
    with _locked(top):
        _check_usable(top)  # another call may have changed it while we waited
        _remove_temps(top)
        _remove_temps(top / BLOBS)
        _start_layout(top)
        yield LayoutWriter(top)


def without_orphans(
    top: Path, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """AFTER less the manifests whose ``subject`` left the index between BEFORE and AFTER (an
    SBOM goes with the image it describes), and theirs in turn. A subject never listed in the
    index (a platform's manifest inside a listed index) is not taken as gone."""
    # A platform manifest that moved into an image index of its name is still there.
    present = {m["digest"] for m, _name in listed_manifests(top, after)}
    gone = {m["digest"] for m in before} - present
    kept = list(after)
    while gone:
        dropped = [m for m in kept if _subject_digest(top, m) in gone]
        kept = [m for m in kept if m not in dropped]
        gone = {m["digest"] for m in dropped} - {m["digest"] for m in kept}
    return kept


def _subject_digest(top: Path, entry: dict[str, Any]) -> str | None:
    """The digest a listed manifest names as its ``subject``; None for none, or a blob we
    cannot read (kept: what we do not understand is not ours to drop)."""
    if entry.get("mediaType") != MEDIA_MANIFEST:
        return None
    try:
        subject = read_json_blob(top, entry["digest"]).get("subject")
    except LayoutError:
        return None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


class _BlobStore:
    """blobs/sha256 of a layout, written under its lock: temporary name, fsync, rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._serial = itertools.count()
        self._renamed = False
        self.checked: dict[Path, str | None] = {}  # blobs read whole and found good

    def add_image(
        self,
        image: ImageSpec,
        progress: Progress | None,
        compressor: Compressor | None = None,
        known: dict[str, Descriptor] | None = None,
    ) -> Descriptor:
        """Every blob of IMAGE; the manifest's descriptor. KNOWN: blobs of the layout by
        diff_id, reused when they are whole. Layers whose tar an earlier pack made and whose
        blob is here are only checked; the others are compressed side by side."""
        packer = compressor or Compressor(1, None)
        known = known or {}
        each = one_at_a_time(progress)
        recipes = [tar_recipe(layer.entries, image.epoch, packer.memo) for layer in image.layers]
        looked = [self._made_before(recipe, packer, known) for recipe in recipes]
        blobs = [blob for blob, _tried in looked]
        missing = [n for n, blob in enumerate(blobs) if blob is None]

        def compress(n: int) -> LayerBlob:
            # A blob looked for by its recipe's diff_id is not there (or was damaged).
            reusable = {} if looked[n][1] else known
            layer = image.layers[n]
            return self.add_layer(layer, image.epoch, each, packer, reusable, recipes[n])

        for n, blob in zip(missing, packer.side_by_side(compress, missing), strict=True):
            blobs[n] = blob
        layers = [blob for blob in blobs if blob is not None]
        if packer.records is not None and self.checked:
            packer.records.record(self.checked)  # a repack takes them as they are
            self.checked.clear()
        config = self.add_bytes(MEDIA_CONFIG, config_bytes(image, [b.diff_id for b in layers]))
        return self.add_bytes(
            MEDIA_MANIFEST, manifest_bytes(config, [b.descriptor for b in layers])
        )

    def _made_before(
        self, recipe: Recipe | None, packer: Compressor, known: dict[str, Descriptor]
    ) -> tuple[LayerBlob | None, bool]:
        """The blob of a layer of RECIPE when an earlier pack made its tar (its diff_id by
        recipe, nothing read) and the layout holds that blob, whole; and whether it was
        looked for."""
        made = packer.memo.made(recipe.key) if recipe is not None and known else None
        if made is None:
            return None, False
        reused = self._reuse(made[0], known, packer.records)
        if reused is None:
            return None, True
        descriptor = Descriptor(MEDIA_LAYER, reused.digest, reused.size)
        return LayerBlob(descriptor, reused.diff_id), True

    def _reuse(
        self, diff_id: str, known: dict[str, Descriptor], records: OutputRecords | None = None
    ) -> Blob | None:
        """The layout's blob of DIFF_ID, once its sha256 and size are checked (or, by RECORDS,
        found as an earlier pack checked it: untouched since); a damaged one is removed (we
        hold the lock: the new copy takes its place)."""
        descriptor = known.get(diff_id)
        if descriptor is None:
            return None
        path = self.folder / descriptor.hex
        checked = f"blob {descriptor.digest}"
        if records is not None and records.made_from(path, checked):
            return Blob(descriptor.digest, descriptor.size, diff_id)
        if file_digest(path) == (descriptor.digest, descriptor.size):
            log.info("%s: layer %s reused", path, diff_id)
            self.checked[path] = checked
            return Blob(descriptor.digest, descriptor.size, diff_id)
        log.warning("%s: damaged or missing; the layer is written again", path)
        path.unlink(missing_ok=True)
        return None

    def add_layer(
        self,
        layer: LayerSpec,
        epoch: int,
        progress: Progress | None,
        compressor: Compressor | None = None,
        known: dict[str, Descriptor] | None = None,
        recipe: Recipe | None = None,
    ) -> LayerBlob:
        """The layer's blob: the layout's own when it holds one of the same tar (hashed to
        know), else compressed. The digest is known only once the layer is written; a blob
        already there is kept and the new copy dropped. RECIPE: the tar's, when known."""
        with self._temp() as (temp, handle):
            # A layout of no layers has nothing to reuse.
            found = functools.partial(self._reuse, known=known) if known else None
            blob = write_layer(layer, handle, epoch, progress, compressor, found, temp, recipe)
            if handle.tell():
                self._place(temp, handle, blob.descriptor)
        return blob

    def add_made(
        self, media_type: str, made: Callable[[], bytes], known: tuple[str, int] | None
    ) -> Descriptor:
        """The blob MADE returns, of KNOWN (digest, size) when an earlier pack made it: a
        blob of the layout with those is taken (once checked) without making it again."""
        if known is not None:
            descriptor = Descriptor(media_type, *known)
            if file_digest(self.folder / descriptor.hex) == known:
                return descriptor
        return self.add_bytes(media_type, made())

    def add_bytes(self, media_type: str, data: bytes) -> Descriptor:
        descriptor = descriptor_of(media_type, data)
        if not (self.folder / descriptor.hex).exists():
            with self._temp() as (temp, handle):
                handle.write(data)
                self._place(temp, handle, descriptor)
        return descriptor

    @contextlib.contextmanager
    def _temp(self) -> Iterator[tuple[Path, BinaryIO]]:
        temp = self.folder / f"{TEMP_PREFIX}{os.getpid()}-{next(self._serial)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with open(fd, "wb") as handle:
                yield temp, handle
        except OSError as exc:
            raise _blob_error(self.folder, exc) from None
        finally:
            temp.unlink(missing_ok=True)  # gone already when it was renamed into place

    def _place(self, temp: Path, handle: BinaryIO, descriptor: Descriptor) -> None:
        final = self.folder / descriptor.hex
        if final.exists():
            return
        sync_file(handle)
        os.replace(temp, final)
        self._renamed = True  # the folder is synced once, before index.json names the blob

    def sync(self) -> None:
        """The renames of the blobs placed so far survive a crash from now on."""
        if self._renamed:
            sync_folder(self.folder)
            self._renamed = False


def _blob_error(folder: Path, exc: OSError) -> LayoutError:
    return LayoutError(error_text(folder, exc, "cannot write a blob"))


def error_text(where: Path, exc: OSError, doing: str) -> str:
    """One line for an OSError met while a layer streams out: a file of the image that could
    not be read (it changed since it was planned) is named; else WHERE, which was written."""
    if exc.filename and Path(exc.filename).parent != where:
        return f"{exc.filename}: cannot read: {exc.strerror}"
    if exc.errno is None:
        # tarfile's "unexpected end of data": a file shrank between planning and packing.
        return f"{where}: {doing}: {exc} (a file of the image shrank while it was read)"
    if exc.errno == errno.ENOSPC:
        return f"{where}: {doing}: no space left on the device"
    return f"{where}: {doing}: {exc.strerror or exc}"


def _ours(name: str) -> bool:
    return name == LOCK_NAME or name.startswith(TEMP_PREFIX)


def _check_usable(top: Path) -> None:
    """Refuse a folder that is not (the start of) an OCI layout. A first call killed early
    leaves only our lock, temporaries and an empty index.json: still ours to finish."""
    if not top.exists():
        return
    if not top.is_dir():
        raise LayoutError(f"{top}: is not a folder, so it cannot hold an OCI layout")
    try:
        names = [n for n in os.listdir(top) if not _ours(n)]
    except OSError as exc:
        raise LayoutError(f"{top}: cannot read the folder: {exc.strerror}") from None
    if names and LAYOUT_FILE not in names and names != [INDEX_FILE]:
        raise LayoutError(
            f"{top}: the folder is not empty and is not an OCI layout (no {LAYOUT_FILE} file)"
        )
    if INDEX_FILE in names:
        read_index(top)


@contextlib.contextmanager
def _locked(top: Path) -> Iterator[None]:
    """The layout's lock for the whole write: concurrent calls into one folder take turns."""
    try:
        top.mkdir(parents=True, exist_ok=True)
        fd = open_lock(top / LOCK_NAME)
    except OSError as exc:
        raise LayoutError(f"{top}: cannot create the OCI layout: {exc.strerror}") from None
    with taking_turns(fd, top):
        yield


def _remove_temps(folder: Path) -> None:
    # Left by calls that were killed; we hold the lock, so no live call owns them.
    if folder.is_dir():
        for item in folder.glob(TEMP_PREFIX + "*"):
            item.unlink(missing_ok=True)


def _start_layout(top: Path) -> None:
    """An empty index.json, then oci-layout, then the blobs folder: a call killed anywhere
    after this leaves a layout tools accept."""
    if not (top / INDEX_FILE).exists():
        empty = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
        _replace_file(top, INDEX_FILE, canonical_json(empty))
    if not (top / LAYOUT_FILE).exists():
        _replace_file(top, LAYOUT_FILE, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
    try:
        (top / BLOBS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LayoutError(f"{top / BLOBS}: cannot create the folder: {exc.strerror}") from None


def _replace_file(top: Path, name: str, data: bytes) -> None:
    """NAME gets DATA in one rename: a reader sees the old file or the new one, whole."""
    try:
        replace_file(top / name, data, top / f"{TEMP_PREFIX}{os.getpid()}-{name}")
    except OSError as exc:
        raise LayoutError(f"{top / name}: cannot write: {exc.strerror}") from None


# ----- reading ----------------------------------------------------------------------------------


def read_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The layout's index.json; LayoutError when it is missing or not an image index."""
    path = Path(directory) / INDEX_FILE
    try:
        index = json.loads(path.read_bytes())
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise LayoutError(f"{path}: not valid JSON ({exc}); not touching this layout") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise LayoutError(f"{path}: not an OCI image index (no manifests list)")
    if not all(
        isinstance(m, dict) and isinstance(m.get("digest"), str) for m in index["manifests"]
    ):
        raise LayoutError(f"{path}: not an OCI image index (a manifest without a digest)")
    return index


def read_json_blob(directory: str | os.PathLike[str], digest: str) -> dict[str, Any]:
    path = blob_path(directory, digest)
    try:
        found = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path}: cannot read the blob {digest}: {exc}") from None
    if not isinstance(found, dict):
        raise LayoutError(f"{path}: the blob {digest} is not a JSON object")
    return found


def blob_path(directory: str | os.PathLike[str], digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise LayoutError(f"{directory}: {digest!r} is not a sha256 digest")
    return Path(directory) / BLOBS / hexdigest


def read_image(
    directory: str | os.PathLike[str], name: str, platform: str | None = None
) -> LayoutImage:
    """The image NAME of the layout: manifest, config and the paths of its layer blobs. A name
    holding several platforms (an image index) needs PLATFORM, ``os/arch[/variant]``."""
    matches = [m for m in read_index(directory)["manifests"] if ref_name(m) == name]
    if not matches:
        raise LayoutError(f"{directory}: the OCI layout has no image named {name!r}")
    entry = matches[0]
    if entry.get("mediaType") == MEDIA_INDEX:
        entry = _platform_manifest(directory, name, entry, platform)
    manifest = read_json_blob(directory, entry["digest"])
    config = read_json_blob(directory, manifest["config"]["digest"])
    layers = [blob_path(directory, layer["digest"]) for layer in manifest["layers"]]
    return LayoutImage(manifest, config, layers)


def _platform_manifest(
    directory: str | os.PathLike[str], name: str, entry: dict[str, Any], platform: str | None
) -> dict[str, Any]:
    children = read_json_blob(directory, entry["digest"]).get("manifests", [])
    named: dict[str, dict[str, Any]] = {
        platform_name(c.get("platform", {})): c for c in children if isinstance(c, dict)
    }
    if platform is None and len(named) == 1:
        return next(iter(named.values()))
    if platform not in named:
        raise LayoutError(
            f"{directory}: {name!r} holds the platforms {', '.join(sorted(named))}; say which"
        )
    return named[platform]


def platform_name(platform: dict[str, str]) -> str:
    """``linux/arm64/v8`` from an OCI platform object."""
    parts = (platform.get("os"), platform.get("architecture"), platform.get("variant"))
    return "/".join(p for p in parts if p)
