"""A repack of unchanged inputs reads and writes as little as it can, and any change to an
input or an output is packed as a first pack would: the digest memo (bundler.staging.digests),
the output records (bundler.staging.output), the dpkg memo (bundler.packages.dpkg)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_debian_root, make_root, run

from bundler.loader.rootfs import FsRoot
from bundler.packages import dpkg
from bundler.packages.dpkg import open_database
from bundler.staging import digests
from bundler.staging.digests import STABLE_NS, DigestMemo

LIBC = "usr/lib/x86_64-linux-gnu/libc.so.6"


# ----- the digest memo ---------------------------------------------------------------------------


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the digest memo reads from now on."""
    read: list[str] = []
    real = digests._read_digest

    def counting(host_path: str) -> digests.FileDigest:
        read.append(host_path)
        return real(host_path)

    monkeypatch.setattr(digests, "_read_digest", counting)
    return read


def test_a_file_is_read_once_while_it_stays_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"a" * 5000)
    memo_file = tmp_path / "memo.json"
    later = time.time_ns() + 2 * STABLE_NS  # the run begins when the file is long stable
    read = _reads(monkeypatch)
    first = DigestMemo(memo_file, began_ns=later)
    digest = first.file(str(data))
    assert digest.sha256 == hashlib.sha256(b"a" * 5000).hexdigest()
    assert digest.sha1 == hashlib.sha1(b"a" * 5000).hexdigest() and digest.size == 5000
    first.save()
    assert DigestMemo(memo_file, began_ns=later).file(str(data)) == digest
    assert read == [str(data)]  # the second run took it from the memo
    # New bytes of the same size, the old mtime put back: the ctime still tells.
    st = data.stat()
    data.write_bytes(b"b" * 5000)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = DigestMemo(memo_file, began_ns=later).file(str(data))
    assert changed.sha256 == hashlib.sha256(b"b" * 5000).hexdigest()
    assert len(read) == 2


def test_a_file_changed_just_before_the_run_is_hashed_but_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"fresh")
    memo_file = tmp_path / "memo.json"
    read = _reads(monkeypatch)
    memo = DigestMemo(memo_file)  # begins now: the file is a few ms old
    assert memo.file(str(data)).size == 5
    memo.save()
    assert not memo_file.exists() or str(data) not in json.loads(memo_file.read_text())["files"]
    DigestMemo(memo_file).file(str(data))
    assert len(read) == 2


def test_a_damaged_memo_is_a_miss_not_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x")
    memo_file = tmp_path / "memo.json"
    for damage in ("{", "[]", '{"format": 3, "files": 1}', '{"format": 3}'):
        memo_file.write_text(damage)
        assert DigestMemo(memo_file).file(str(data)).size == 1
    st = os.stat(data)
    identity = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    forged = {"format": digests.FORMAT, "files": {str(data): [*identity, "00"]}, "tars": {}}
    memo_file.write_text(json.dumps({**forged, "facts": {}}))  # a record cut short
    assert DigestMemo(memo_file).file(str(data)).sha256 == hashlib.sha256(b"x").hexdigest()


# ----- the dpkg memo -----------------------------------------------------------------------------


def test_the_dpkg_database_is_read_once_while_its_files_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_debian_root(tmp_path / "root")
    memo = tmp_path / "dpkg"
    later = time.time_ns() + 2 * STABLE_NS
    first = open_database(root, memo, later)
    assert first is not None
    owners = {p: first.owner(p) for p in dpkg_paths()}
    assert owners["/usr/lib/x86_64-linux-gnu/libc.so.6"] == "libc6"
    assert owners["/usr/bin/foo"] == "divertor" and owners["/usr/bin/foo.distrib"] == "footool"
    assert len(list(memo.iterdir())) == 1
    reads: list[str] = []
    real = FsRoot.read_bytes

    def counting(self: FsRoot, image_path: str) -> bytes:
        reads.append(image_path)
        return real(self, image_path)

    monkeypatch.setattr(FsRoot, "read_bytes", counting)
    again = open_database(FsRoot(root.top), memo, later)
    assert again is not None and again.packages == first.packages
    assert {p: again.owner(p) for p in dpkg_paths()} == owners
    assert not [r for r in reads if r.endswith(".list") or r == dpkg.STATUS]
    # A package lists one more file: the memo is not taken.
    listed = Path(root.top, "var/lib/dpkg/info/libfoo1:amd64.list")
    listed.write_text(listed.read_text() + "/usr/share/doc/libfoo1/NEWS\n")
    changed = open_database(FsRoot(root.top), memo, time.time_ns() + 2 * STABLE_NS)
    assert changed is not None and changed.owner("/usr/share/doc/libfoo1/NEWS") == "libfoo1"
    assert any(r.endswith(".list") for r in reads)


def test_a_database_changed_just_before_the_run_is_not_remembered(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    memo = tmp_path / "dpkg"
    assert open_database(root, memo) is not None  # its files are a few ms old
    assert not memo.exists()


def dpkg_paths() -> list[str]:
    return [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/bin/foo",
        "/usr/bin/foo.distrib",
        "/etc/foo.conf",
        "/usr/lib",
        "/nowhere",
    ]


# ----- the CLI, as users run it ------------------------------------------------------------------


needs_glibc = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs glibc x86_64")


@pytest.fixture(scope="module")
def stable_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small root whose files were all made more than two seconds ago (younger ones are
    never remembered), shared by the tests below: each copies what it changes."""
    if not host_has_glibc_x86_64():
        pytest.skip("needs glibc x86_64")
    top = make_root(tmp_path_factory.mktemp("repack") / "root", programs=["/usr/bin/env"])
    time.sleep(STABLE_NS / 1e9 + 0.2)
    yield top


def _own_copy(stable_root: Path, top: Path, files: dict[str, str] | None = None) -> Path:
    """A copy of the shared root at TOP to change, with FILES added, once it is stable."""
    shutil.copytree(stable_root, top, symlinks=True)
    for name, text in (files or {}).items():
        (top / name).write_text(text)
    time.sleep(STABLE_NS / 1e9 + 0.2)
    return top


def _pack(root: Path, work: Path, *more: str) -> None:
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    args = ["--root", str(root), "/usr/bin/env", "-q", "-o", str(work / "out")]
    args += ["--docker-archive", str(work / "image.tar"), "--oci", str(work / "oci")]
    done = run(*args, *more, env=env)
    assert done.returncode == 0, done.stderr


def _outputs(work: Path) -> dict[str, tuple[int, int, int]]:
    """Every output file and folder: (inode, size, mtime in ns)."""
    found = {}
    for top in (work / "out", work / "oci", work / "image.tar"):
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            st = path.lstat()
            found[str(path.relative_to(work))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def _bytes_of(work: Path, blobs: bool = True) -> dict[str, bytes]:
    """Every output file's bytes; without BLOBS, the layout's index (which names every blob
    of its images by digest) but not its store, where a layout keeps what it held before."""
    files = [p for top in (work / "out", work / "oci") for p in top.rglob("*") if p.is_file()]
    if not blobs:
        files = [p for p in files if "blobs" not in p.relative_to(work).parts]
    found = {str(p.relative_to(work)): p.read_bytes() for p in files}
    found["image.tar"] = (work / "image.tar").read_bytes()
    found.pop("out/.scratchpack.lock", None)
    found.pop("oci/.scratchpack.lock", None)
    return found


@needs_glibc
def test_an_unchanged_repack_writes_nothing(stable_root: Path, tmp_path: Path) -> None:
    _pack(stable_root, tmp_path)
    before = _outputs(tmp_path)
    memo = tmp_path / "cache/scratchpack/layers/digests.json"
    remembered = json.loads(memo.read_text())
    assert str(stable_root / LIBC) in remembered["files"]
    _pack(stable_root, tmp_path)
    assert _outputs(tmp_path) == before  # not one file written again, nor replaced
    assert not [p for p in tmp_path.iterdir() if "scratchpack-tmp" in p.name]


@needs_glibc
def test_a_changed_input_is_packed_as_a_first_pack_would(stable_root: Path, tmp_path: Path) -> None:
    root = _own_copy(stable_root, tmp_path / "root")
    work = tmp_path / "work"
    _pack(root, work)
    # One byte of libc's last page (padding), its size and mtime kept: only the ctime moves.
    libc = root / LIBC
    st = libc.stat()
    data = bytearray(libc.read_bytes())
    data[-1] ^= 0x01
    libc.write_bytes(bytes(data))
    os.utime(libc, ns=(st.st_atime_ns, st.st_mtime_ns))
    _pack(root, work)
    fresh = tmp_path / "fresh"
    _pack(root, fresh, "--no-cache")
    assert _bytes_of(work, blobs=False) == _bytes_of(fresh, blobs=False)
    assert (work / "out/rootfs" / LIBC).read_bytes() == bytes(data)
    sbom = json.loads((work / "out/sbom.spdx.json").read_text())
    sums = [c["checksumValue"] for f in sbom["files"] for c in f["checksums"]]
    assert hashlib.sha256(bytes(data)).hexdigest() in sums


@needs_glibc
def test_a_changed_output_is_written_again(stable_root: Path, tmp_path: Path) -> None:
    _pack(stable_root, tmp_path)
    expected = _bytes_of(tmp_path)
    program = tmp_path / "out/rootfs/usr/bin/env"
    program.write_bytes(b"not env")
    (tmp_path / "out/sbom.spdx.json").unlink()
    tarball = tmp_path / "out/rootfs.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[:100])
    (tmp_path / "out/rootfs/usr/lib").chmod(0o700)
    archive = tmp_path / "image.tar"
    archive.write_bytes(archive.read_bytes()[:-1024])
    _pack(stable_root, tmp_path)
    assert _bytes_of(tmp_path) == expected
    assert (tmp_path / "out/rootfs/usr/lib").stat().st_mode & 0o777 == 0o755


@needs_glibc
def test_without_the_cache_every_output_is_written(stable_root: Path, tmp_path: Path) -> None:
    _pack(stable_root, tmp_path, "--no-cache")
    before = _outputs(tmp_path)
    _pack(stable_root, tmp_path, "--no-cache")
    after = _outputs(tmp_path)
    for name in ("out/rootfs", "out/rootfs.tar.gz", "image.tar"):
        assert after[name][0] != before[name][0] or after[name][2] != before[name][2], name
    assert not (tmp_path / "cache").exists()


@needs_glibc
def test_a_secret_is_found_whatever_an_earlier_pack_remembered(
    stable_root: Path, tmp_path: Path
) -> None:
    token = "token = ghp_" + "a1B2" * 9 + "\n"
    root = _own_copy(stable_root, tmp_path / "root", {"etc/deploy.conf": token})
    work = tmp_path / "work"
    _pack(root, work, "--extra", "/etc/deploy.conf", "--allow-secret", "/etc/deploy.conf")
    memo = json.loads((work / "cache/scratchpack/layers/digests.json").read_text())
    assert any(value for value in memo["facts"].values())  # the finding was remembered
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    refused = run(
        "--root", str(root), "/usr/bin/env", "-q", "-o", str(work / "out"),
        "--extra", "/etc/deploy.conf", env=env,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "/etc/deploy.conf:1: github-token" in refused.stderr


@needs_glibc
def test_a_layout_blob_checked_before_is_not_read_again_until_touched(
    stable_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler import cli
    from bundler.image import oci

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    layout = tmp_path / "oci"
    args = ["--root", str(stable_root), "/usr/bin/env", "-q", "--oci", str(layout)]
    assert cli.main(args) == 0
    assert cli.main(args) == 0  # reads each layer's blob whole once, and records it
    read: list[str] = []
    real = oci.file_digest

    def counting(path: Path) -> tuple[str, int] | None:
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(oci, "file_digest", counting)
    layers = oci.read_image(layout, "env").layers
    assert cli.main(args) == 0
    assert not {p.name for p in layers} & set(read)  # taken by their records
    os.utime(layers[0])  # touched (its ctime moves): read and checked again
    assert cli.main(args) == 0
    assert layers[0].name in read and not {p.name for p in layers[1:]} & set(read)
