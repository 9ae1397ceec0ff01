"""Staging and packing: the plan written out as a folder tree and as a reproducible tarball.

Both are made from the plan alone (never by walking what was written), in sorted order, with
the plan's numeric owners (no user or group names) and every mtime clamped to
SOURCE_DATE_EPOCH, so the same inputs give the same bytes on any machine and in any output
folder.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from bundler.staging.blobs import Blob, Compressor
from bundler.staging.digests import DigestMemo, Recipe, code_key
from bundler.staging.plan import DIR, FILE, HARDLINK, SYMLINK, Entry, EntryType

if TYPE_CHECKING:
    import tarfile

log = logging.getLogger(__name__)

Progress = Callable[[Entry], None]
# What a tar and a tree are made of besides the entries: this module's code, and the
# interpreter's tarfile (its headers).
TAR_CODE = f"{code_key(__file__)} python{sys.version_info[0]}.{sys.version_info[1]}"
_ERRORS = "surrogateescape"  # file names that are not UTF-8 go into the tar byte for byte


def one_at_a_time(progress: Progress | None) -> Progress | None:
    """PROGRESS called from the threads of several streams (layers), one call at a time."""
    if progress is None:
        return None
    lock = threading.Lock()

    def report(entry: Entry) -> None:
        with lock:
            progress(entry)

    return report


def clamp(mtime: int, epoch: int) -> int:
    return min(mtime, epoch)


def rfc3339(epoch: int) -> str:
    """The epoch as the UTC timestamp image configs and SBOMs carry."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_tree(entries: Iterable[Entry], top: Path, epoch: int, progress: Progress | None) -> None:
    """Write every entry under ``top`` (a new folder). Directory modes and times come last,
    so a read-only directory does not stop its own children from being written."""
    import shutil  # here, with the tree to write (shutil costs ms to import)

    top.mkdir()
    ordered = sorted(entries, key=lambda e: e.path)
    for entry in ordered:
        target = top / entry.path.lstrip("/")
        if entry.type == DIR:
            target.mkdir(exist_ok=True)
        elif entry.type == SYMLINK:
            assert entry.target is not None
            os.symlink(entry.target, target)
            _chown(target, entry)
        elif entry.type == HARDLINK:
            assert entry.target is not None
            os.link(top / entry.target.lstrip("/"), target)
        elif entry.data is not None:
            target.write_bytes(entry.data)
            os.chmod(target, entry.mode)
        else:
            assert entry.source is not None
            shutil.copyfile(entry.source, target, follow_symlinks=False)
            os.chmod(target, entry.mode)
        _chown(target, entry)
        if entry.type != DIR:
            _set_times(target, clamp(entry.mtime, epoch))
        if progress:
            progress(entry)
    for entry in reversed(ordered):
        if entry.type == DIR:
            target = top / entry.path.lstrip("/")
            _chown(target, entry)
            os.chmod(target, entry.mode)
            _set_times(target, clamp(entry.mtime, epoch))
    _set_times(top, epoch)


def _chown(path: Path, entry: Entry) -> None:
    # Owners other than root matter in the image (a --mkdir for the service user); in the
    # staging tree they can only be set when we are root, as in a builder stage.
    if (entry.uid or entry.gid) and os.geteuid() == 0:
        os.chown(path, entry.uid, entry.gid, follow_symlinks=False)


def _set_times(path: Path, mtime: int) -> None:
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def write_tarball(
    entries: Iterable[Entry],
    handle: BinaryIO,
    epoch: int,
    progress: Progress | None,
    compressor: Compressor | None = None,
    source: Path | None = None,
    recipe: Recipe | None = None,
) -> Blob:
    """A gzip'd tar of the entries: sorted, numeric owners with no names, mtimes clamped, GNU
    format (no PAX time records), gzip header with no file name and time 0; compressed as
    every layer is (``bundler.staging.blobs``), or taken from COMPRESSOR's cache when an
    earlier pack made the same tar (SOURCE: the file HANDLE writes, to fill the cache; RECIPE:
    ``tar_recipe`` of the entries, when the caller has it)."""
    ordered = sorted(entries, key=lambda e: e.path)
    write = functools.partial(write_tar, ordered, epoch=epoch)
    hashing = functools.partial(write_tar, ordered, epoch=epoch, progress=progress)
    packer = compressor or Compressor(1, None)
    recipe = recipe or tar_recipe(ordered, epoch, packer.memo)
    return packer.make(write, handle, hashing=hashing, source=source, recipe=recipe)


def tree_recipe(recipe: Recipe) -> str:
    """What ``build_tree`` makes of the entries of RECIPE depends on: the tar's recipe, this
    format, and whether owners can be set (only root can)."""
    return f"{recipe.key} tree owners{int(os.geteuid() == 0)}"


def known_diff_id(entries: Iterable[Entry], epoch: int, memo: DigestMemo) -> str | None:
    """The diff_id of the tar of ENTRIES when an earlier pack made it (nothing is read)."""
    recipe = tar_recipe(entries, epoch, memo)
    made = memo.made(recipe.key) if recipe is not None else None
    return made[0] if made is not None else None


def tar_recipe(entries: Iterable[Entry], epoch: int, memo: DigestMemo) -> Recipe | None:
    """One digest of all ``write_tar`` makes of ENTRIES: what each header is made of (the
    header's bytes follow from it, this module's code and the interpreter's tarfile), and the
    sha256 of each file's bytes (from MEMO when it knows them). The end of the archive is the
    same for every tar. None when a file is no longer as planned (its tar will say so)."""
    recipe = hashlib.sha256(TAR_CODE.encode())
    sources: list[str] = []
    for entry in sorted(entries, key=lambda e: e.path):
        kind, target, mtime = EntryType(entry.type).value, entry.target or "", entry.mtime
        header = f"{entry.path}\0{kind}\0{entry.mode}\0{entry.uid}\0{entry.gid}\0{entry.size}"
        made = f"{header}\0{clamp(mtime, epoch)}\0{target}\0"
        recipe.update(made.encode("utf-8", _ERRORS))
        if entry.type != FILE:
            continue
        try:
            digest = memo.content(entry)
        except OSError:
            return None
        if entry.data is None and entry.source is not None:
            sources.append(entry.source)
        if digest.size != entry.size:
            return None
        recipe.update(bytes.fromhex(digest.sha256))
    return Recipe(recipe.hexdigest(), tuple(sources))


def write_tar(
    entries: Iterable[Entry], handle: BinaryIO, epoch: int, progress: Progress | None = None
) -> None:
    """The plain tar of the entries (the tarball's, and each image layer's): sorted by path."""
    import tarfile  # here, with a tar to write: a repack of known tars writes none

    tar = tarfile.TarFile(
        fileobj=handle,
        mode="w",
        format=tarfile.GNU_FORMAT,
        encoding="utf-8",
        errors=_ERRORS,
    )
    with tar:
        for entry in sorted(entries, key=lambda e: e.path):
            info = _tarinfo(entry, epoch)
            if entry.type == FILE and entry.data is not None:
                tar.addfile(info, io.BytesIO(entry.data))
            elif entry.type == FILE:
                assert entry.source is not None
                with open(entry.source, "rb") as source:
                    tar.addfile(info, source)
            else:
                tar.addfile(info)
            if progress:
                progress(entry)


def _tarinfo(entry: Entry, epoch: int) -> tarfile.TarInfo:
    import tarfile

    info = tarfile.TarInfo(entry.path.lstrip("/"))
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = clamp(entry.mtime, epoch)
    if entry.type == DIR:
        info.type = tarfile.DIRTYPE
    elif entry.type == SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target or ""
    elif entry.type == HARDLINK:
        info.type = tarfile.LNKTYPE
        info.linkname = (entry.target or "").lstrip("/")
    else:
        info.size = entry.size
    return info
