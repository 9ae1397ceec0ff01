"""Staging and packing: the plan written out as a folder tree and as a reproducible tarball.

Both are made from the plan alone (never by walking what was written), in sorted order, with
the plan's numeric owners (no user or group names) and every mtime clamped to
SOURCE_DATE_EPOCH, so the same inputs give the same bytes on any machine and in any output
folder.
"""

from __future__ import annotations

import datetime
import functools
import io
import logging
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from bundler.staging.blobs import Blob, Compressor
from bundler.staging.plan import DIR, FILE, HARDLINK, SYMLINK, Entry

log = logging.getLogger(__name__)

Progress = Callable[[Entry], None]


def clamp(mtime: int, epoch: int) -> int:
    return min(mtime, epoch)


def rfc3339(epoch: int) -> str:
    """The epoch as the UTC timestamp image configs and SBOMs carry."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_tree(entries: Iterable[Entry], top: Path, epoch: int, progress: Progress | None) -> None:
    """Write every entry under ``top`` (a new folder). Directory modes and times come last,
    so a read-only directory does not stop its own children from being written."""
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
) -> Blob:
    """A gzip'd tar of the entries: sorted, numeric owners with no names, mtimes clamped, GNU
    format (no PAX time records), gzip header with no file name and time 0; compressed as
    every layer is (``bundler.staging.blobs``), or taken from COMPRESSOR's cache when an
    earlier pack made the same tar (SOURCE: the file HANDLE writes, to fill the cache)."""
    ordered = sorted(entries, key=lambda e: e.path)
    write = functools.partial(write_tar, ordered, epoch=epoch)
    hashing = functools.partial(write_tar, ordered, epoch=epoch, progress=progress)
    return (compressor or Compressor(None, 1, None)).make(
        write, handle, hashing=hashing, source=source
    )


def write_tar(
    entries: Iterable[Entry], handle: BinaryIO, epoch: int, progress: Progress | None = None
) -> None:
    """The plain tar of the entries (the tarball's, and each image layer's): sorted by path."""
    tar = tarfile.TarFile(
        fileobj=handle,
        mode="w",
        format=tarfile.GNU_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
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
