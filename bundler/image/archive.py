"""The one tar file ``docker load`` takes, whichever image store the engine has.

Classic engines (Docker 20.10, Debian bookworm's docker.io) read ``manifest.json`` (config and
layer files by path, RepoTags) and ignore the rest; containerd-backed ones (Docker 25+) read
the OCI layout at the top of the same tar (``oci-layout``, ``index.json``, blobs), as Docker's
own ``docker save`` writes it. Both name the same blobs, so every byte is stored once.

Layers stream straight into the archive: each member's header is written once the blob is
complete and its size and digest known, so no layer is ever held in memory or written twice.
The members come in a fixed order with time 0 and owner 0: the same inputs give the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from bundler.errors import ScratchpackError
from bundler.image.oci import (
    BLOBS,
    INDEX_FILE,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    Descriptor,
    LayerBlob,
    canonical_json,
    config_bytes,
    descriptor_of,
    error_text,
    manifest_bytes,
    platform_json,
    write_layer,
)
from bundler.image.references import REF_NAME, docker_reference, full_name
from bundler.image.spec import ImageSpec, LayerSpec
from bundler.staging.blobs import RECIPE as COMPRESSION
from bundler.staging.blobs import Compressor
from bundler.staging.output import OutputRecords, sync_file
from bundler.staging.tree import Progress, known_diff_id, one_at_a_time

log = logging.getLogger(__name__)

BLOCK = tarfile.BLOCKSIZE
# containerd's import takes an image's name from this annotation of index.json.
CONTAINERD_NAME = "io.containerd.image.name"
TEMP_MARK = ".scratchpack-tmp-"
ARCHIVE_FORMAT = 1  # a change to what write_archive_stream writes bumps it


class ArchiveError(ScratchpackError):
    """The docker-archive file cannot be written."""


def write_docker_archive(
    path: str | os.PathLike[str],
    image: ImageSpec,
    repo_tag: str,
    progress: Progress | None = None,
    compressor: Compressor | None = None,
    records: OutputRecords | None = None,
) -> str:
    """Write the archive to PATH, beside it first and renamed into place; the image id (the
    config's digest, which ``docker load`` and ``docker images`` show). With RECORDS, an
    archive this call would write byte for byte (its recipe and lstat as recorded) stays."""
    final = Path(path)
    docker_reference(repo_tag)  # a bad name is refused before any work
    if final.is_dir():
        raise ArchiveError(f"{final}: is a folder; --docker-archive names the file to write")
    known = archive_recipe(image, repo_tag, compressor) if compressor and records else None
    if known is not None and records is not None and records.made_from(final, known[0]):
        log.info("%s: %s, image %s, as written before", final, repo_tag, known[1])
        return known[1]
    _remove_dead_temps(final)
    temp = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}")
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        # Held while we write: a later call removes the temporaries it can lock, those of
        # calls that were killed.
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(fd, "w+b") as handle:
            image_id = write_archive_stream(handle, image, repo_tag, progress, compressor, temp)
            sync_file(handle)
            os.replace(temp, final)
    except OSError as exc:
        raise _archive_error(final, exc) from None
    finally:
        temp.unlink(missing_ok=True)
    log.info("%s: %s, image %s", final, repo_tag, image_id)
    if records is not None and compressor is not None:
        known = archive_recipe(image, repo_tag, compressor)  # every diff_id is known now
        records.record({final: known[0] if known is not None else None})
    return image_id


def archive_recipe(
    image: ImageSpec, repo_tag: str, compressor: Compressor
) -> tuple[str, str] | None:
    """All the bytes of the archive of IMAGE depend on, as one digest, and the image id:
    each layer's diff_id (its blob is the compression of that tar, by COMPRESSOR's recipe),
    the config made of them, the name, and this format. None while a layer's diff_id is not
    known without reading it (``bundler.staging.digests``): the archive is then written."""
    diff_ids = []
    for layer in image.layers:
        diff_id = known_diff_id(layer.entries, image.epoch, compressor.memo)
        if diff_id is None:
            return None
        diff_ids.append(diff_id)
    config = config_bytes(image, diff_ids)
    parts = [f"docker-archive {ARCHIVE_FORMAT}", COMPRESSION, repo_tag, *diff_ids]
    digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape"))
    digest.update(config)
    return digest.hexdigest(), descriptor_of(MEDIA_CONFIG, config).digest


def write_archive_stream(
    handle: BinaryIO,
    image: ImageSpec,
    repo_tag: str,
    progress: Progress | None = None,
    compressor: Compressor | None = None,
    path: Path | None = None,
) -> str:
    """The archive into HANDLE (seekable: each layer's header is written after its blob);
    the image id. Layers come from COMPRESSOR's cache when it has them (PATH: the file HANDLE
    writes, read back to fill the cache)."""
    name, tag = docker_reference(repo_tag)
    out = _TarWriter(handle, compressor, path)
    out.directory("blobs/")
    out.directory(f"{BLOBS.as_posix()}/")
    if compressor is not None and compressor.workers > 1 and len(image.layers) > 1 and path:
        layers = _layers_side_by_side(out, image, progress, compressor, path)
    else:
        layers = [out.layer(layer, image.epoch, progress) for layer in image.layers]
    config = out.blob(MEDIA_CONFIG, config_bytes(image, [b.diff_id for b in layers]))
    manifest = out.blob(MEDIA_MANIFEST, manifest_bytes(config, [b.descriptor for b in layers]))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                **manifest.to_json(),
                "annotations": {CONTAINERD_NAME: f"{full_name(name)}:{tag}", REF_NAME: tag},
                "platform": platform_json(image.platform),
            }
        ],
    }
    classic: list[dict[str, Any]] = [
        {
            "Config": _member(config),
            "RepoTags": [f"{name}:{tag}"],
            "Layers": [_member(b.descriptor) for b in layers],
        }
    ]
    out.file(INDEX_FILE, canonical_json(index))
    out.file("manifest.json", canonical_json(classic))
    out.file(LAYOUT_FILE, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
    if layers:
        # Read only by loaders older than manifest.json (before Docker 1.10).
        out.file("repositories", canonical_json({name: {tag: layers[-1].descriptor.hex}}))
    out.close()
    return config.digest


def _layers_side_by_side(
    out: _TarWriter, image: ImageSpec, progress: Progress | None, compressor: Compressor, path: Path
) -> list[LayerBlob]:
    """Each layer compressed into a file of its own beside the archive, several at once
    (``Compressor.side_by_side``), then copied into it in order: the same bytes as one layer
    after the other. The files are named and locked as the archive's own temporary is, so a
    killed call's are removed by the next (``_remove_dead_temps``)."""
    each = one_at_a_time(progress)
    temps = [path.with_name(f"{path.name}-layer{n}") for n in range(len(image.layers))]
    with contextlib.ExitStack() as files:

        def compress(item: tuple[int, LayerSpec]) -> tuple[LayerBlob, BinaryIO]:
            number, layer = item
            temp = temps[number]
            files.callback(temp.unlink, missing_ok=True)
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)  # as the archive's own: alive, not to be removed
            handle = files.enter_context(open(fd, "w+b"))
            blob = write_layer(layer, handle, image.epoch, each, compressor, source=temp)
            handle.flush()
            return blob, handle

        made = compressor.side_by_side(compress, list(enumerate(image.layers)))
        return [out.copied_layer(blob, handle) for blob, handle in made]


def _member(descriptor: Descriptor) -> str:
    return f"{BLOBS.as_posix()}/{descriptor.hex}"


class _TarWriter:
    """A tar written by hand, so a member's header can follow its (streamed) content."""

    def __init__(
        self, handle: BinaryIO, compressor: Compressor | None = None, path: Path | None = None
    ) -> None:
        self.handle = handle
        self.written: set[str] = set()
        self.compressor = compressor
        self.path = path

    def directory(self, name: str) -> None:
        self.handle.write(_header(name, 0, tarfile.DIRTYPE, 0o755))

    def file(self, name: str, data: bytes) -> None:
        self.handle.write(_header(name, len(data), tarfile.REGTYPE, 0o644))
        self.handle.write(data)
        self._pad(len(data))

    def blob(self, media_type: str, data: bytes) -> Descriptor:
        descriptor = descriptor_of(media_type, data)
        if descriptor.digest not in self.written:
            self.written.add(descriptor.digest)
            self.file(_member(descriptor), data)
        return descriptor

    def layer(self, layer: LayerSpec, epoch: int, progress: Progress | None) -> LayerBlob:
        start = self.handle.tell()
        self.handle.write(bytes(BLOCK))  # the header's place, filled in below
        blob = write_layer(layer, self.handle, epoch, progress, self.compressor, source=self.path)
        if blob.descriptor.digest in self.written:
            # Two layers of the same bytes: the archive holds the blob once.
            self.handle.seek(start)
            self.handle.truncate()
            return blob
        self.written.add(blob.descriptor.digest)
        end = self.handle.tell()
        self.handle.seek(start)
        header = _header(_member(blob.descriptor), blob.descriptor.size, tarfile.REGTYPE, 0o644)
        self.handle.write(header)
        self.handle.seek(end)
        self._pad(blob.descriptor.size)
        return blob

    def copied_layer(self, blob: LayerBlob, source: BinaryIO) -> LayerBlob:
        """A layer compressed elsewhere (into SOURCE), written as ``layer`` writes it."""
        if blob.descriptor.digest in self.written:
            return blob  # two layers of the same bytes: the archive holds the blob once
        self.written.add(blob.descriptor.digest)
        size = blob.descriptor.size
        self.handle.write(_header(_member(blob.descriptor), size, tarfile.REGTYPE, 0o644))
        source.seek(0)
        shutil.copyfileobj(source, self.handle, 1 << 20)
        self._pad(size)
        return blob

    def close(self) -> None:
        self.handle.write(bytes(2 * BLOCK))  # the end-of-archive marker

    def _pad(self, size: int) -> None:
        self.handle.write(bytes(-size % BLOCK))


def _header(name: str, size: int, kind: bytes, mode: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, mode
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")
    # Our names are short (blobs/sha256/<64 hex>), so one block; a layer's placeholder relies
    # on it. GNU format writes sizes of 8 GiB and more in base 256, still one block.
    assert len(header) == BLOCK, name
    return header


def _remove_dead_temps(final: Path) -> None:
    """Temporaries of this archive left by killed calls: a live call holds a lock on its own."""
    prefix = f".{final.name}{TEMP_MARK}"
    folder = final.parent
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return  # the write itself will say what is wrong with the folder
    for name in names:
        try:
            fd = os.open(folder / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (folder / name).unlink(missing_ok=True)
        except OSError:
            pass  # locked: its writer is alive
        finally:
            os.close(fd)


def _archive_error(path: Path, exc: OSError) -> ArchiveError:
    if exc.errno == errno.EFBIG:
        return ArchiveError(f"{path}: cannot write the docker-archive: file size limit exceeded")
    return ArchiveError(error_text(path.parent, exc, f"cannot write {path.name}"))
