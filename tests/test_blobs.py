"""Compression once: deflate on every core with the same bytes, the layer cache, and reuse of
an OCI layout's own blobs (bundler.staging.blobs)."""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest

from bundler import cli
from bundler.image.oci import read_image, read_index
from bundler.staging import blobs
from bundler.staging.blobs import (
    CHUNK,
    Blob,
    CompressionOptions,
    Compressor,
    GzipStream,
    LayerCache,
    compressor,
)

PROGRAM = "python3"  # several chunks' worth of files, from this machine


def sample(size: int, seed: int = 7) -> bytes:
    """Bytes that compress somewhat, as a tar of programs does."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(3, 40)) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def gzip_of(data: bytes, workers: int, step: int) -> tuple[bytes, Blob]:
    out = io.BytesIO()
    pool = concurrent.futures.ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        stream = GzipStream(out, pool, depth=2 * workers)
        for start in range(0, len(data), step):
            stream.write(data[start : start + step])
        blob = stream.close()
    finally:
        if pool is not None:
            pool.shutdown()
    return out.getvalue(), blob


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5])
def test_the_bytes_do_not_depend_on_the_workers_nor_the_writes(size: int) -> None:
    data = sample(size)
    serial, blob = gzip_of(data, 1, 1 << 20)
    for workers, step in ((2, 4096), (4, 100_000), (8, CHUNK)):
        assert gzip_of(data, workers, step)[0] == serial, (workers, step)
    assert gzip.decompress(serial) == data
    assert blob.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blob.digest == "sha256:" + hashlib.sha256(serial).hexdigest()
    assert blob.size == len(serial)
    assert serial[:10] == blobs.GZIP_HEADER  # no name, time 0: the same on any machine


def test_chunks_cost_little_against_one_deflate() -> None:
    data = sample(8 * CHUNK)
    ours = len(gzip_of(data, 2, 1 << 16)[0])
    whole = len(gzip.compress(data, compresslevel=blobs.LEVEL, mtime=0))
    assert ours <= whole * 1.01, (ours, whole)


def tar_writer(data: bytes) -> blobs.TarWriter:
    def write(handle: BinaryIO) -> None:
        handle.write(data)

    return write


def made(compress: Compressor, data: bytes, folder: Path, name: str) -> tuple[Blob, Path]:
    path = folder / name
    with open(path, "wb") as handle:
        blob = compress.make(tar_writer(data), handle, source=path)
    return blob, path


def test_cache_miss_then_hit(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    data = sample(CHUNK + 10)
    first, first_path = made(Compressor(1, cache), data, tmp_path, "a.gz")
    assert len(list(cache.folder.iterdir())) == 1
    again = Compressor(1, cache)
    second, second_path = made(again, data, tmp_path, "b.gz")
    assert again.compressed == 0  # taken from the cache
    assert second == first
    assert second_path.read_bytes() == first_path.read_bytes()
    other = Compressor(1, cache)
    made(other, sample(100, seed=8), tmp_path, "c.gz")
    assert other.compressed == 1  # another tar: a miss


def test_a_damaged_cache_entry_is_never_used(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    data = sample(50_000)
    good, good_path = made(Compressor(1, cache), data, tmp_path, "good.gz")
    (entry,) = cache.folder.iterdir()
    damaged = bytearray(entry.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    entry.write_bytes(bytes(damaged))
    again = Compressor(1, cache)
    blob, path = made(again, data, tmp_path, "again.gz")
    assert again.compressed == 1
    assert blob == good and path.read_bytes() == good_path.read_bytes()
    assert gzip.decompress(path.read_bytes()) == data
    # The damaged entry went; the fresh compression took its place, whole.
    (entry,) = cache.folder.iterdir()
    assert entry.read_bytes() == good_path.read_bytes()
    entry.write_bytes(entry.read_bytes()[:100])  # cut short
    third = Compressor(1, cache)
    assert made(third, data, tmp_path, "third.gz")[0] == good
    assert third.compressed == 1


def test_the_cache_stays_within_its_bound_least_recently_used_first(tmp_path: Path) -> None:
    data = [sample(30_000, seed=n) for n in range(4)]
    size = len(gzip_of(data[0], 1, 1 << 20)[0])
    cache = LayerCache(tmp_path / "cache", max_bytes=int(size * 2.5))
    digest = {n: hashlib.sha256(data[n]).hexdigest() for n in range(3)}
    for n in range(2):
        made(Compressor(1, cache), data[n], tmp_path, f"{n}.gz")  # a pack each
        (entry,) = cache.folder.glob(digest[n] + ".*")
        os.utime(entry, (1000.0 + n, 1000.0 + n))  # 0 used long ago, 1 after it
    again = Compressor(1, cache)
    made(again, data[0], tmp_path, "0-again.gz")  # a hit: 0 is now the most recent
    assert again.compressed == 0
    made(Compressor(1, cache), data[2], tmp_path, "2.gz")
    names = {p.name.partition(".")[0] for p in cache.folder.iterdir()}
    assert names == {digest[0], digest[2]}  # 1 was the least recently used
    total = sum(p.stat().st_size for p in cache.folder.iterdir())
    assert total <= cache.max_bytes


def test_an_entry_bigger_than_the_cache_is_not_kept(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache", max_bytes=10)
    made(Compressor(1, cache), sample(5000), tmp_path, "x.gz")
    assert not any(cache.top.glob("*/*"))


def test_with_nothing_to_reuse_a_stream_is_read_once(tmp_path: Path) -> None:
    reads: list[int] = []

    def write(handle: BinaryIO) -> None:
        reads.append(1)
        handle.write(sample(10_000))

    cache = LayerCache(tmp_path / "cache")
    first = Compressor(1, cache)
    with open(tmp_path / "a.gz", "wb") as handle:
        first.make(write, handle, source=tmp_path / "a.gz")
    assert len(reads) == 1  # an empty cache: compressed as it was hashed
    second = Compressor(1, cache)
    with open(tmp_path / "b.gz", "wb") as handle:
        second.make(write, handle, source=tmp_path / "b.gz")
    assert len(reads) == 2 and second.compressed == 0  # hashed, found: never compressed
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_clearing_empties_the_cache(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    blob, _ = made(Compressor(1, cache), sample(5000), tmp_path, "x.gz")
    assert cache.clear() == blob.size
    assert not cache.top.exists()
    assert made(Compressor(1, cache), sample(5000), tmp_path, "y.gz")[0] == blob


def test_a_file_changed_between_the_two_reads_is_an_error(tmp_path: Path) -> None:
    reads = iter([b"first", b"second"])

    def write(handle: BinaryIO) -> None:
        handle.write(next(reads))

    cache = LayerCache(tmp_path / "cache")
    made(Compressor(1, cache), b"something else", tmp_path, "other.gz")
    with open(tmp_path / "x.gz", "wb") as handle, pytest.raises(blobs.StreamChanged):
        Compressor(1, cache).make(write, handle)  # hashed, then compressed: two reads


# ----- the CLI, as users run it ------------------------------------------------------------------


def scratchpack(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-m", "bundler", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_any_number_of_jobs_writes_the_same_bytes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for jobs in ("1", "2", "5"):
        scratchpack(
            PROGRAM, "-q", "--no-cache", "-j", jobs, "-o", str(tmp_path / f"out{jobs}"),
            "--oci", str(tmp_path / f"oci{jobs}"),
            "--docker-archive", str(tmp_path / f"{jobs}.tar"),
            cache=cache,
        )  # fmt: skip
    tarball = (tmp_path / "out1" / "rootfs.tar.gz").read_bytes()
    assert len(tarball) > 2 * CHUNK  # several chunks, so several workers had work
    for jobs in ("2", "5"):
        assert (tmp_path / f"out{jobs}" / "rootfs.tar.gz").read_bytes() == tarball
        assert (tmp_path / f"{jobs}.tar").read_bytes() == (tmp_path / "1.tar").read_bytes()
        assert read_index(tmp_path / f"oci{jobs}") == read_index(tmp_path / "oci1")
    assert not cache.exists()  # --no-cache: nothing written there
    with tarfile.open(tmp_path / "out1" / "rootfs.tar.gz") as tar:
        assert any(m.name.endswith("bin/python3") or "python3" in m.name for m in tar)


def test_a_repack_takes_the_tarball_and_layers_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = (PROGRAM, "-v", "-o", str(tmp_path / "out"))
    archive = ("--docker-archive", str(tmp_path / "image.tar"))
    first = scratchpack(*args, *archive, cache=cache)
    assert "taken from the cache" not in first.stderr
    entries = list((cache / "scratchpack" / "layers" / blobs.RECIPE).iterdir())
    assert entries  # the tarball and every layer
    before = (tmp_path / "out" / "rootfs.tar.gz").read_bytes()
    image = (tmp_path / "image.tar").read_bytes()
    # Into new outputs (the same ones would be left as they are: nothing to write).
    elsewhere = (PROGRAM, "-v", "-o", str(tmp_path / "out2"))
    second = scratchpack(*elsewhere, "--docker-archive", str(tmp_path / "image2.tar"), cache=cache)
    hits = second.stderr.count("taken from the cache")
    assert hits == len(entries), second.stderr
    assert (tmp_path / "out2" / "rootfs.tar.gz").read_bytes() == before
    assert (tmp_path / "image2.tar").read_bytes() == image
    cleared = scratchpack("--clear-cache", cache=cache)
    assert "emptied" in cleared.stderr
    assert not (cache / "scratchpack" / "layers").exists()
    third = scratchpack(*args, cache=cache)
    assert "taken from the cache" not in third.stderr


def test_a_cache_size_of_zero_turns_it_off(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    scratchpack(PROGRAM, "-q", "--cache-size", "0", "-o", str(tmp_path / "out"), cache=cache)
    assert not cache.exists()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    bad = subprocess.run(
        [sys.executable, "-m", "bundler", PROGRAM, "--cache-size", "lots", "-o", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--cache-size 'lots'" in bad.stderr


def test_an_unchanged_repack_into_a_layout_compresses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = tmp_path / "oci"
    args = [PROGRAM, "-q", "--no-cache", "--oci", str(layout), "--tag", "app:1"]
    assert cli.main(args) == 0
    index = read_index(layout)
    blobs_before = sorted(os.listdir(layout / "blobs" / "sha256"))
    calls: list[int] = []
    real = blobs._deflate

    def counting(data: bytes, dictionary: bytes, last: bool) -> bytes:
        calls.append(len(data))
        return real(data, dictionary, last)

    monkeypatch.setattr(blobs, "_deflate", counting)
    assert cli.main(args) == 0
    assert calls == []  # every layer's blob was the layout's own
    assert read_index(layout) == index
    assert sorted(os.listdir(layout / "blobs" / "sha256")) == blobs_before
    # Under another name, the same layers: still nothing compressed.
    assert cli.main([*args[:-1], "app:2"]) == 0
    assert calls == []
    # A damaged blob is not reused: that layer alone is compressed again, and mended.
    image = read_image(layout, "app:1")
    victim = max(image.layers, key=lambda p: p.stat().st_size)
    good = victim.read_bytes()
    tar_size = len(gzip.decompress(good))
    victim.write_bytes(good[: len(good) // 2])
    assert cli.main(args) == 0
    assert sum(calls) == tar_size  # that layer's tar, and nothing else, went through deflate
    assert victim.read_bytes() == good
    assert read_image(layout, "app:1").manifest == image.manifest


def test_the_compressor_context_uses_one_pool_for_many_workers() -> None:
    with compressor(CompressionOptions(workers=3)) as many:
        assert many.pool is not None and many.workers == 3
    off = CompressionOptions(workers=1, cache_folder="/nonexistent", cache_bytes=0)
    with compressor(off) as one:
        assert one.pool is None and one.cache is None


def test_workers_leave_ctrl_c_and_sigterm_to_the_main_thread() -> None:
    """Outputs are renamed into place with the signals held by the main thread; a worker that
    took them would let the handler run mid-rename."""
    import signal

    with compressor(CompressionOptions(workers=2)) as many:
        assert many.pool is not None
        masks = [many.pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, set()) for _ in "ab"]
        for mask in masks:
            assert {signal.SIGINT, signal.SIGTERM} <= mask.result()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
