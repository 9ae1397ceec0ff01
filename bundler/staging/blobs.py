"""Compressed tar streams: gzip on every core with the same bytes on any, and never twice.

A stream (the rootfs tarball, an image layer) is the reproducible tar of its entries; its
sha256 is its diff_id. Packing it costs one hash of the tar when that diff_id was compressed
before, and one compression otherwise:

- **Compression** cuts the tar into chunks of a fixed size (``CHUNK``, whatever the number of
  cores) and deflates each one on a thread pool (zlib releases the GIL), primed with the last
  32 KiB of the chunk before it and ended by a sync flush, as pigz does; the pieces are written
  in order behind one gzip header (no name, time 0) and before one trailer. So the bytes depend
  on the tar, the level, the chunk size and zlib's version only: one worker or sixty-four give
  the same file. Chunks cost a few bytes each (an empty stored block) against one deflate.
- **Reuse**: a blob already known by its diff_id (in an OCI layout, or in the user's cache) is
  taken as it is, once its sha256 and size are checked; a cache entry that does not match is
  deleted and never used.

The user's cache (``LayerCache``) holds blobs by diff_id under one folder per recipe (level,
chunk, zlib version), so a blob made by another zlib never replaces what this one makes. Each
entry is written under a temporary name and renamed into place; a hit refreshes the entry's
time, and the oldest entries go once the folder is over its size.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

from bundler.errors import ScratchpackError
from bundler.staging.digests import DigestMemo, Recipe
from bundler.staging.output import STOPPING_SIGNALS, OutputRecords

if TYPE_CHECKING:
    import concurrent.futures

log = logging.getLogger(__name__)

LEVEL = 6  # gzip's default: most of 9's gain for much less time
CHUNK = 1 << 18  # fixed: the bytes must not depend on the cores
WINDOW = 1 << 15  # deflate's window: each chunk is primed with the last 32 KiB before it
RECIPE = f"gzip{LEVEL}-chunk{CHUNK}-zlib{zlib.ZLIB_RUNTIME_VERSION}"
# magic, deflate, no flags, mtime 0, XFL 0 (level 6), OS 255 (unknown): as gzip.GzipFile
# writes it with no name and time 0.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
READ_SIZE = 1 << 20
LAYERS = "layers"  # the cache's own sub-folder (blobs and memos): all that --clear-cache removes
DIGESTS = "digests.json"  # in LAYERS: what earlier packs hashed (``bundler.staging.digests``)
OUTPUTS = "outputs.json"  # in LAYERS: what each output was made from (``OutputRecords``)
DPKG = "dpkg"  # in LAYERS: each root's dpkg database as read (``bundler.packages.dpkg``)
TEMP_PREFIX = ".tmp-"
DEFAULT_CACHE_BYTES = 1 << 30

TarWriter = Callable[[BinaryIO], None]
Item = TypeVar("Item")
Made = TypeVar("Made")


class StreamChanged(ScratchpackError):
    """A file of the image changed between the two reads of a layer."""


@dataclass(frozen=True)
class Blob:
    """A compressed stream: its digest and size, and the digest of the tar inside."""

    digest: str  # "sha256:<hex>" of the gzip bytes
    size: int
    diff_id: str  # "sha256:<hex>" of the tar


def _deflate(data: bytes, dictionary: bytes, last: bool) -> bytes:
    """One chunk as raw deflate, primed with DICTIONARY; byte-aligned unless LAST."""
    if dictionary:
        engine = zlib.compressobj(
            LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, dictionary
        )
    else:
        engine = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return engine.compress(data) + engine.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _Sink:
    """Counts and hashes what goes through it; passes it on to ``handle`` (if any)."""

    def __init__(self, handle: BinaryIO | None = None) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.handle is not None:
            self.handle.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class GzipStream:
    """A writable file of tar bytes whose gzip goes to ``out``; ``close`` gives the Blob."""

    def __init__(
        self, out: BinaryIO, pool: concurrent.futures.Executor | None, depth: int = 4
    ) -> None:
        self.out = _Sink(out)
        self.tar = _Sink()
        self.crc = 0
        self.pool = pool
        self.depth = depth
        self.pending = bytearray()
        self.dictionary = b""
        self.inflight: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
        self.out.write(GZIP_HEADER)

    def write(self, data: bytes) -> int:
        self.tar.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.pending += data
        if len(self.pending) >= CHUNK:
            whole = len(self.pending) - len(self.pending) % CHUNK
            view = bytes(self.pending[:whole])
            del self.pending[:whole]
            for start in range(0, whole, CHUNK):
                self._submit(view[start : start + CHUNK], last=False)
        return len(data)

    def tell(self) -> int:
        return self.tar.size

    def flush(self) -> None:
        pass

    def close(self) -> Blob:
        self._submit(bytes(self.pending), last=True)
        self.pending.clear()
        while self.inflight:
            self.out.write(self.inflight.popleft().result())
        self.out.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.tar.size & 0xFFFFFFFF))
        return Blob(self.out.digest, self.out.size, self.tar.digest)

    def _submit(self, chunk: bytes, last: bool) -> None:
        dictionary = self.dictionary
        self.dictionary = (dictionary + chunk)[-WINDOW:] if len(chunk) < WINDOW else chunk[-WINDOW:]
        if self.pool is None:
            self.out.write(_deflate(chunk, dictionary, last))
            return
        self.inflight.append(self.pool.submit(_deflate, chunk, dictionary, last))
        while len(self.inflight) > self.depth:
            self.out.write(self.inflight.popleft().result())


def tar_digest(write: TarWriter) -> tuple[str, int]:
    """(diff_id, size) of the tar WRITE makes: a hash, nothing written anywhere."""
    sink = _Sink()
    write(cast(BinaryIO, sink))
    return sink.digest, sink.size


def copy_verified(source: Path, out: BinaryIO, digest: str, size: int) -> bool:
    """SOURCE's bytes appended to OUT when their sha256 and size are DIGEST and SIZE; else OUT
    is left as it was and False."""
    start = out.tell()
    sink = _Sink(out)
    try:
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(READ_SIZE), b""):
                sink.write(block)
    except OSError:
        pass  # gone (evicted by another run) or unreadable: not used
    if sink.digest == digest and sink.size == size:
        return True
    out.seek(start)
    out.truncate()
    return False


def file_digest(path: Path) -> tuple[str, int] | None:
    """(sha256, size) of the file at PATH; None when it cannot be read."""
    sink = _Sink()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(READ_SIZE), b""):
                sink.write(block)
    except OSError:
        return None
    return sink.digest, sink.size


class LayerCache:
    """Compressed blobs by diff_id in FOLDER/layers/RECIPE/, at most MAX_BYTES in all."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.top = folder / LAYERS
        self.folder = self.top / RECIPE
        self.max_bytes = max_bytes

    def empty(self) -> bool:
        """Whether the cache holds no entry of this recipe (so no lookup can hit)."""
        try:
            return not any(not n.startswith(TEMP_PREFIX) for n in os.listdir(self.folder))
        except OSError:
            return True

    def _entries(self, diff_id: str) -> list[Path]:
        prefix = diff_id.partition(":")[2] + "."
        try:
            return [self.folder / n for n in os.listdir(self.folder) if n.startswith(prefix)]
        except OSError:
            return []

    def fetch(self, diff_id: str, out: BinaryIO) -> Blob | None:
        """The blob of DIFF_ID appended to OUT when the cache holds it whole; else None."""
        for path in self._entries(diff_id):
            blob_hex = path.name.partition(".")[2]
            try:
                size = path.stat().st_size
            except OSError:
                continue
            digest = "sha256:" + blob_hex
            if copy_verified(path, out, digest, size):
                with contextlib.suppress(OSError):
                    os.utime(path)  # most recently used
                log.info("%s: taken from the cache (%d bytes)", diff_id, size)
                return Blob(digest, size, diff_id)
            log.warning("%s: a damaged cache entry, removed", path)
            path.unlink(missing_ok=True)
        return None

    def store(self, blob: Blob, source: Path, offset: int = 0) -> None:
        """Keep SOURCE's BLOB (its bytes from OFFSET on) for later runs; a cache that cannot
        be written is skipped with a warning, never an error of the pack."""
        if blob.size > self.max_bytes:
            return
        final = self.folder / f"{blob.diff_id.partition(':')[2]}.{blob.digest.partition(':')[2]}"
        if final.exists():
            return
        # A name of this thread's own: streams are compressed side by side.
        temp = self.folder / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{final.name}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as reader, open(temp, "wb") as writer:
                reader.seek(offset)
                left = blob.size
                sink = _Sink(cast(BinaryIO, writer))
                while left:
                    block = reader.read(min(READ_SIZE, left))
                    if not block:
                        break
                    sink.write(block)
                    left -= len(block)
            if sink.digest != blob.digest or sink.size != blob.size:
                log.warning("%s: changed while it was copied into the cache; not kept", source)
                return
            os.replace(temp, final)
        except OSError as exc:
            log.warning("%s: cannot write the layer cache: %s", self.folder, exc.strerror or exc)
            return
        finally:
            temp.unlink(missing_ok=True)
        self.evict()

    def evict(self) -> None:
        """The least recently used entries (of every recipe) go until the cache fits."""
        found: list[tuple[float, int, Path]] = []
        stale = time.time() - 3600
        for path in self.top.glob("*/*"):
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.startswith(TEMP_PREFIX):
                if st.st_mtime < stale:
                    path.unlink(missing_ok=True)  # left by a run that was killed
                continue
            found.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in found)
        for _, size, path in sorted(found):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            log.info("%s: evicted from the layer cache", path.name)

    def clear(self) -> int:
        """Remove every entry, and the memos beside them; the bytes freed."""
        freed = sum(p.stat().st_size for p in self.top.rglob("*") if p.is_file())
        import shutil  # here only: a pack never clears the cache

        shutil.rmtree(self.top, ignore_errors=True)
        return freed


@dataclass(frozen=True)
class CompressionOptions:
    """How a pack compresses: threads (0: one per core) and the user's cache (None: none)."""

    workers: int = 1
    cache_folder: str | None = None
    cache_bytes: int = DEFAULT_CACHE_BYTES


class Compressor:
    """Blobs for tar streams: from a reuse hook or the cache when their diff_id is known,
    else compressed on the pool (and kept in the cache)."""

    def __init__(
        self,
        workers: int,
        cache: LayerCache | None,
        memo: DigestMemo | None = None,
        make_pool: Callable[[], concurrent.futures.Executor] | None = None,
        records: OutputRecords | None = None,
    ) -> None:
        self._pool: concurrent.futures.Executor | None = None
        self._make_pool = make_pool  # the pool, made when a stream is first compressed
        self._making = threading.Lock()
        self.workers = workers
        self.cache = cache
        self.memo = memo or DigestMemo()
        # What outputs (a layout's blobs too) were made from, and their lstat once made.
        self.records = records
        self.compressed = 0  # streams compressed by this compressor (the rest were reused)
        self._counting = threading.Lock()
        # An empty cache at the start (or none): a stream without a reuse hook is compressed
        # in one pass, hashed as it goes, instead of hashed first to look it up.
        self.nothing_cached = cache is None or cache.empty()

    @property
    def pool(self) -> concurrent.futures.Executor | None:
        """The deflate pool (None: one worker); a repack that compresses nothing makes none."""
        if self._pool is None and self._make_pool is not None:
            with self._making:
                if self._pool is None:
                    self._pool = self._make_pool()
        return self._pool

    def compress(self, write: TarWriter, out: BinaryIO, expected: str | None = None) -> Blob:
        stream = GzipStream(out, self.pool, depth=2 * self.workers)
        write(cast(BinaryIO, stream))
        blob = stream.close()
        with self._counting:
            self.compressed += 1
        if expected is not None and blob.diff_id != expected:
            raise StreamChanged(
                f"{getattr(out, 'name', 'a layer')}: a file of the image changed while it was "
                "packed; pack again"
            )
        return blob

    def side_by_side(self, work: Callable[[Item], Made], items: Sequence[Item]) -> list[Made]:
        """WORK on each of ITEMS (the layers of an image), as many at once as there are
        workers, their deflate on the one pool: a small stream leaves a core idle while its
        only chunk is deflated, another stream fills it. The results, in order; the first
        error is raised once the others have stopped (those not started never start)."""
        if self.workers <= 1 or len(items) <= 1:
            return [work(item) for item in items]
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(
            min(self.workers, len(items)),
            thread_name_prefix="stream",
            initializer=_signals_to_the_main_thread,
        ) as streams:
            futures = [streams.submit(work, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def make(
        self,
        write: TarWriter,
        out: BinaryIO,
        reuse: Callable[[str], Blob | None] | None = None,
        hashing: TarWriter | None = None,
        source: Path | None = None,
        recipe: Recipe | None = None,
    ) -> Blob:
        """The blob of the tar WRITE makes: REUSE's (nothing written to OUT) or the cache's
        (copied to OUT) when the diff_id is known, else compressed into OUT (and kept in the
        cache, read back from SOURCE, the file OUT writes). The diff_id comes from the memo
        when an earlier pack made the tar of RECIPE, else from one read of the tar (HASHING,
        when given, is WRITE with progress reports)."""
        known = self.memo.made(recipe.key) if recipe is not None else None
        if known is None and reuse is None and self.nothing_cached:
            # Nothing to reuse whatever the diff_id: one pass, compressing as it hashes.
            start = out.tell()
            blob = self.compress(hashing or write, out)
            self._keep(blob, source, out, start)
            self._remember(recipe, blob.diff_id, None)
            return blob
        if known is not None:
            diff_id = known[0]
        else:
            diff_id, size = tar_digest(hashing or write)
            self._remember(recipe, diff_id, size)
        if reuse is not None:
            found = reuse(diff_id)
            if found is not None:
                return found
        start = out.tell()
        if self.cache is not None:
            cached = self.cache.fetch(diff_id, out)
            if cached is not None:
                return cached
        if known is not None and recipe is not None:
            # From the memo: what the tar turns out to be is the answer, and the memo's next.
            blob = self.compress(write, out)
            if blob.diff_id != diff_id:
                log.warning("%s: the digest memo was wrong about this tar; corrected", diff_id)
                self.memo.forget(recipe.key)
        else:
            blob = self.compress(write, out, expected=diff_id)
        self._keep(blob, source, out, start)
        return blob

    def _remember(self, recipe: Recipe | None, diff_id: str, size: int | None) -> None:
        if recipe is not None:
            self.memo.remember_tar(recipe, diff_id, size if size is not None else -1)

    def _keep(self, blob: Blob, source: Path | None, out: BinaryIO, start: int) -> None:
        if self.cache is not None and source is not None:
            out.flush()
            self.cache.store(blob, source, start)


def _cache_folder(options: CompressionOptions | None) -> Path | None:
    """The user's cache folder of a pack with OPTIONS; None: no cache (--no-cache, size 0)."""
    if options is None or options.cache_folder is None or options.cache_bytes <= 0:
        return None
    return Path(options.cache_folder)


def cache_path(options: CompressionOptions | None, name: str) -> Path | None:
    """NAME in the cache's own folder (what --clear-cache removes); None: no cache."""
    folder = _cache_folder(options)
    return folder / LAYERS / name if folder is not None else None


def output_records(options: CompressionOptions | None) -> OutputRecords | None:
    """Where a pack with OPTIONS records what its outputs were made from (None: no cache,
    so every output is written)."""
    path = cache_path(options, OUTPUTS)
    return OutputRecords(path) if path is not None else None


@contextlib.contextmanager
def compressor(
    options: CompressionOptions | None, memo: DigestMemo | None = None
) -> Iterator[Compressor]:
    """A Compressor with its thread pool (none for one worker) and the pack's digest MEMO
    (saved at the end; a new one, in the cache folder when there is one, if none is given),
    for the length of a pack."""
    options = options or CompressionOptions()
    workers = options.workers or os.cpu_count() or 1
    folder = _cache_folder(options)
    cache = LayerCache(folder, options.cache_bytes) if folder is not None else None
    memo = memo or DigestMemo(cache_path(options, DIGESTS))
    made: list[concurrent.futures.Executor] = []

    def make_pool() -> concurrent.futures.Executor:
        import concurrent.futures

        pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="deflate", initializer=_signals_to_the_main_thread
        )
        made.append(pool)
        return pool

    try:
        maker = make_pool if workers > 1 else None
        yield Compressor(max(workers, 1), cache, memo, maker, output_records(options))
    finally:
        for pool in made:
            pool.shutdown(wait=True)  # chunks in flight end first, as they must
        memo.save()


def _signals_to_the_main_thread() -> None:
    """Workers block the stopping signals: the kernel hands them to the main thread, so that
    where it holds them (outputs being renamed into place) they wait, as they must."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING_SIGNALS)
