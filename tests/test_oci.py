"""Daemonless images: the OCI image layout (bundler/image/oci.py) and the docker-archive
(bundler/image/archive.py).

Most tests need no tool: blobs are re-hashed, layers decompressed and read back, the JSON
documents checked field by field. Concurrent writers and writers killed at random moments must
leave a valid layout with every earlier image intact. Where installed, umoci unpacks the layout
and skopeo reads the layout and the archive (`make deps` installs both); with a Docker Engine,
``docker load`` takes the archive and the image runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

# The Docker tests' kit (what it makes is removed at the end), as the other modules share it.
from test_docker import kit  # noqa: F401

from bundler.errors import ScratchpackError, UsageError
from bundler.image import oci
from bundler.image.archive import write_docker_archive
from bundler.image.dockerfile import ImageConfig
from bundler.image.oci import LayoutError, read_image, read_index, write_oci_layout
from bundler.image.references import docker_reference, full_name
from bundler.image.spec import ImageSpec, LayerSpec, Platform
from bundler.staging.blobs import CompressionOptions, compressor
from bundler.staging.plan import (
    DIR,
    EXTRA,
    FILE,
    HARDLINK,
    LIBRARY,
    LINK,
    PARENT,
    PROGRAM,
    SYMLINK,
    Entry,
)

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "testdata" / "src"
EPOCH = 1_700_000_000
CONFIG = ImageConfig(
    entrypoint=("/usr/bin/prog",),
    cmd=("--serve",),
    env=(("LD_LIBRARY_PATH", "/opt/lib"), ("MODE", "a=b")),
    expose=("80", "53/udp"),
    workdir="/srv",
    labels=(("org.example.k", "v"),),
    user="65532",
)


# ----- images made in tmp_path -------------------------------------------------------------------


def source(folder: Path, name: str, data: bytes, mode: int = 0o644) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists() or path.read_bytes() != data:  # other processes may be reading it
        path.write_bytes(data)
    path.chmod(mode)
    return path


def file_entry(path: str, src: Path, mode: int, kind: str = EXTRA, **kw: Any) -> Entry:
    size = src.stat().st_size
    return Entry(path, FILE, mode, kind, source=str(src), size=size, **kw)


def dir_entry(path: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(path, DIR, mode, PARENT, **kw)


def sample_layers(tmp: Path) -> tuple[LayerSpec, ...]:
    """Two layers: a program with a library, a hard link and links; then generated data."""
    src = tmp / "src"
    prog = source(src, "prog", b"\x7fELF fake program\n" * 100, 0o755)
    lib = source(src, "libx.so.1.2", random.Random(7).randbytes(5000), 0o644)
    first = (
        dir_entry("/usr", mtime=EPOCH + 999),  # later than the epoch: clamped
        dir_entry("/usr/bin"),
        dir_entry("/usr/lib"),
        file_entry("/usr/bin/prog", prog, 0o755, PROGRAM, mtime=12345),
        Entry("/usr/bin/prog-again", HARDLINK, 0o755, PROGRAM, target="/usr/bin/prog"),
        file_entry("/usr/lib/libx.so.1.2", lib, 0o644, LIBRARY),
        Entry("/usr/lib/libx.so.1", SYMLINK, 0o777, LINK, target="libx.so.1.2"),
        Entry("/lib", SYMLINK, 0o777, LINK, target="usr/lib"),
    )
    passwd = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home:/none\n"
    second = (
        dir_entry("/etc"),
        Entry("/etc/passwd", FILE, 0o644, EXTRA, size=len(passwd), data=passwd),
        Entry("/etc/secret", FILE, 0o640, EXTRA, size=3, data=b"key", uid=0, gid=65532),
        dir_entry("/srv", 0o750, uid=65532, gid=65532),
        dir_entry("/tmp", 0o1777),
        Entry("/etc/empty", FILE, 0o600, EXTRA, size=0, data=b""),
    )
    return (LayerSpec(first, "program and libraries"), LayerSpec(second, "generated files"))


def sample_image(tmp: Path, config: ImageConfig = CONFIG) -> ImageSpec:
    return ImageSpec(sample_layers(tmp), config, Platform("arm64", variant="v8"), EPOCH)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def blob_files(layout: Path) -> list[Path]:
    return sorted(p for p in (layout / "blobs/sha256").iterdir() if not p.name.startswith("."))


def temporaries(layout: Path) -> list[Path]:
    found = [*layout.iterdir(), *(layout / "blobs/sha256").iterdir()]
    return [p for p in found if p.name.startswith(oci.TEMP_PREFIX)]


def check_layout(layout: Path) -> dict[str, str]:
    """Assert LAYOUT is a valid OCI layout whose every referenced blob is there with its digest
    and size; its names and manifest digests."""
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = read_index(layout)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == oci.MEDIA_INDEX
    names: dict[str, str] = {}
    for entry in index["manifests"]:
        if "artifactType" in entry:  # an SBOM attached to an image: no name of its own
            check_blob(layout, entry)
            continue
        name = entry["annotations"][oci.REF_NAME]
        assert name not in names, f"{name} twice in index.json"
        names[name] = entry["digest"]
        check_blob(layout, entry)
        manifests = [entry]
        if entry["mediaType"] == oci.MEDIA_INDEX:  # a name for several platforms
            manifests = json.loads(oci.blob_path(layout, entry["digest"]).read_bytes())["manifests"]
        for descriptor in manifests:
            check_blob(layout, descriptor)
            manifest = json.loads(oci.blob_path(layout, descriptor["digest"]).read_bytes())
            for blob in [manifest["config"], *manifest["layers"]]:
                check_blob(layout, blob)
    assert list(names) == sorted(names), "index.json entries are sorted by name"
    return names


def check_blob(layout: Path, descriptor: dict[str, Any]) -> None:
    path = oci.blob_path(layout, descriptor["digest"])
    assert path.is_file(), f"{descriptor['digest']} is missing"
    assert path.stat().st_size == descriptor["size"]
    assert sha256_file(path) == descriptor["digest"]


def layer_members(blob: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(blob, "r:gz") as tar:
        found: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
        for info in tar:
            handle = tar.extractfile(info) if info.isreg() else None
            found[info.name] = (info, handle.read() if handle else None)
        return found


# ----- blobs, documents ------------------------------------------------------------------------


def test_blobs_are_named_by_their_digests_and_diff_ids_are_of_the_tars(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    digest = write_oci_layout(layout, sample_image(tmp_path), "sample")
    assert check_layout(layout) == {"sample": digest}
    for blob in blob_files(layout):
        assert sha256_file(blob) == "sha256:" + blob.name
    _manifest, config, layers = read_image(layout, "sample")
    assert len(layers) == 2
    for path, diff_id in zip(layers, config["rootfs"]["diff_ids"], strict=True):
        raw = path.read_bytes()
        # A reproducible gzip header: no file name, time 0.
        assert raw[:3] == b"\x1f\x8b\x08" and raw[3] & 0x08 == 0 and raw[4:8] == bytes(4)
        assert "sha256:" + hashlib.sha256(gzip.decompress(raw)).hexdigest() == diff_id


def test_manifest_config_and_index_fields(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    digest = write_oci_layout(layout, sample_image(tmp_path), "redis:7")
    index = read_index(layout)
    assert index["manifests"] == [
        {
            "mediaType": oci.MEDIA_MANIFEST,
            "digest": digest,
            "size": oci.blob_path(layout, digest).stat().st_size,
            "annotations": {oci.REF_NAME: "redis:7"},
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        }
    ]
    manifest, config, layers = read_image(layout, "redis:7")
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == oci.MEDIA_MANIFEST
    assert manifest["config"]["mediaType"] == oci.MEDIA_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.MEDIA_LAYER] * 2
    assert [layer["size"] for layer in manifest["layers"]] == [p.stat().st_size for p in layers]
    assert (config["architecture"], config["os"], config["variant"]) == ("arm64", "linux", "v8")
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"] == {
        "Entrypoint": ["/usr/bin/prog"],
        "Cmd": ["--serve"],
        "Env": ["LD_LIBRARY_PATH=/opt/lib", "MODE=a=b"],  # exactly the ImageConfig's, no PATH
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Labels": {"org.example.k": "v"},
        "User": "65532",
        "WorkingDir": "/srv",
    }
    assert config["rootfs"]["type"] == "layers"
    assert len(config["history"]) == len(manifest["layers"]) == 2
    assert config["history"][0] == {
        "created": "2023-11-14T22:13:20Z",
        "created_by": "program and libraries",
        "comment": "program and libraries",
    }
    # Canonical JSON: what is stored is what re-serialising gives.
    raw = oci.blob_path(layout, manifest["config"]["digest"]).read_bytes()
    assert raw == json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def test_minimal_config_leaves_empty_fields_out(tmp_path: Path) -> None:
    spec = ImageSpec((), ImageConfig(entrypoint=("/x",)), Platform("amd64"), 0)
    write_oci_layout(tmp_path / "l", spec, "empty")
    _manifest, config, layers = read_image(tmp_path / "l", "empty")
    assert config["config"] == {"Entrypoint": ["/x"]}
    assert "variant" not in config and config["created"] == "1970-01-01T00:00:00Z"
    assert layers == [] and config["rootfs"]["diff_ids"] == [] and config["history"] == []
    assert read_index(tmp_path / "l")["manifests"][0]["platform"] == {
        "architecture": "amd64",
        "os": "linux",
    }


def test_layers_hold_the_entries_with_their_metadata(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, sample_image(tmp_path), "sample")
    _manifest, _config, layers = read_image(layout, "sample")
    first, second = layer_members(layers[0]), layer_members(layers[1])
    assert list(first) == sorted(first) and list(second) == sorted(second)
    prog, prog_data = first["usr/bin/prog"]
    assert prog.isreg() and prog.mode == 0o755 and prog.mtime == 12345
    assert prog_data == (tmp_path / "src/prog").read_bytes()
    assert first["usr"][0].isdir() and first["usr"][0].mtime == EPOCH
    assert first["usr/bin/prog-again"][0].islnk()
    assert first["usr/bin/prog-again"][0].linkname == "usr/bin/prog"
    assert first["lib"][0].issym() and first["lib"][0].linkname == "usr/lib"
    assert first["usr/lib/libx.so.1"][0].linkname == "libx.so.1.2"
    assert first["usr/lib/libx.so.1.2"][1] == (tmp_path / "src/libx.so.1.2").read_bytes()
    assert second["etc/secret"][0].mode == 0o640 and second["etc/secret"][0].gid == 65532
    assert second["etc/secret"][1] == b"key"
    assert second["tmp"][0].mode == 0o1777
    srv = second["srv"][0]
    assert (srv.uid, srv.gid, srv.uname, srv.gname) == (65532, 65532, "", "")
    assert second["etc/empty"][1] == b""


def test_layouts_in_two_folders_are_byte_identical(tmp_path: Path) -> None:
    image = sample_image(tmp_path)
    one, two = tmp_path / "one", tmp_path / "deeper" / "two"
    assert write_oci_layout(one, image, "x") == write_oci_layout(two, image, "x")

    def files(top: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(top)): p.read_bytes()
            for p in top.rglob("*")
            if p.is_file() and p.name != oci.LOCK_NAME
        }

    assert files(one) == files(two)
    assert not temporaries(one)


def test_two_names_share_blobs(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = sample_image(tmp_path)
    first = write_oci_layout(layout, image, "b-name")
    assert len(blob_files(layout)) == 4  # two layers, config, manifest
    assert write_oci_layout(layout, image, "a-name") == first
    assert len(blob_files(layout)) == 4
    other = ImageConfig(entrypoint=("/usr/bin/prog-again",))
    write_oci_layout(layout, sample_image(tmp_path, other), "c-name")
    assert len(blob_files(layout)) == 6  # the layers are shared: a config and a manifest more
    assert list(check_layout(layout)) == ["a-name", "b-name", "c-name"]


def test_the_same_name_replaces_its_entry(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    keep = write_oci_layout(layout, sample_image(tmp_path), "keep")
    write_oci_layout(layout, sample_image(tmp_path), "app")
    newer = ImageConfig(entrypoint=("/usr/bin/prog",), env=(("V", "2"),))
    replaced = write_oci_layout(layout, sample_image(tmp_path, newer), "app")
    assert check_layout(layout) == {"app": replaced, "keep": keep}
    assert read_image(layout, "app").config["config"]["Env"] == ["V=2"]


def test_entries_of_other_tools_are_kept(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, sample_image(tmp_path), "ours")
    index = read_index(layout)
    foreign = {**index["manifests"][0], "annotations": {"org.example.other": "x"}}
    index["manifests"].append(foreign)
    (layout / "index.json").write_text(json.dumps(index))
    write_oci_layout(layout, sample_image(tmp_path), "more")
    manifests = read_index(layout)["manifests"]
    assert [m.get("annotations") for m in manifests] == [
        {"org.example.other": "x"},
        {oci.REF_NAME: "more"},
        {oci.REF_NAME: "ours"},
    ]


# ----- refusals ---------------------------------------------------------------------------------


def test_a_non_empty_folder_that_is_no_layout_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(LayoutError) as caught:
        write_oci_layout(folder, sample_image(tmp_path), "x")
    message = str(caught.value)
    assert str(folder) in message and "not an OCI layout" in message and "\n" not in message
    assert sorted(os.listdir(folder)) == ["cat.jpg"]  # not even a lock file left there


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(LayoutError, match="is not a folder"):
        write_oci_layout(tmp_path / "f", sample_image(tmp_path), "x")


def test_an_index_that_is_not_json_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, sample_image(tmp_path), "x")
    (layout / "index.json").write_text('{"manifests": [')
    with pytest.raises(LayoutError, match=r"index\.json: not valid JSON") as caught:
        write_oci_layout(layout, sample_image(tmp_path), "y")
    assert "\n" not in str(caught.value)
    assert (layout / "index.json").read_text() == '{"manifests": ['
    for wrong in ("[]", '{"manifests": [1]}', '{"manifests": [{"size": 1}]}'):
        (layout / "index.json").write_text(wrong)
        with pytest.raises(LayoutError, match="not an OCI image index"):
            write_oci_layout(layout, sample_image(tmp_path), "y")


def test_what_a_killed_first_call_leaves_is_taken_up(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / oci.LOCK_NAME).touch()
    (layout / f"{oci.TEMP_PREFIX}1-index.json").write_text("{")
    (layout / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    write_oci_layout(layout, sample_image(tmp_path), "x")
    assert list(check_layout(layout)) == ["x"]
    assert not temporaries(layout)


@pytest.mark.parametrize("name", ["", "a b", "-x", "x/", "a//b", "x:", "é"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="not a valid image name"):
        write_oci_layout(tmp_path / "l", sample_image(tmp_path), name)
    assert not (tmp_path / "l").exists()


def test_a_vanished_source_names_the_file(tmp_path: Path) -> None:
    image = sample_image(tmp_path)
    (tmp_path / "src/libx.so.1.2").unlink()
    with pytest.raises(ScratchpackError, match=r"libx\.so\.1\.2: cannot read"):
        write_oci_layout(tmp_path / "l", image, "x")
    assert not temporaries(tmp_path / "l")


# ----- concurrent and killed writers ------------------------------------------------------------


def _write_in_child(layout: str, tmp: str, name: str) -> str:
    config = ImageConfig(entrypoint=("/usr/bin/prog",), labels=(("name", name),))
    return write_oci_layout(layout, sample_image(Path(tmp), config), name)


def test_concurrent_writers_leave_every_name(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sample_layers(tmp_path)  # the sources, once, before the children read them
    names = [f"w{i}" for i in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        digests = pool.starmap(_write_in_child, [(str(layout), str(tmp_path), n) for n in names])
    assert check_layout(layout) == dict(zip(names, digests, strict=True))
    assert len(blob_files(layout)) == 2 + 2 * 4  # shared layers, a config and manifest each
    assert not temporaries(layout)


BIG_WRITER = """
import sys
from pathlib import Path
from bundler.image.dockerfile import ImageConfig
from bundler.image.oci import write_oci_layout
from bundler.image.spec import ImageSpec, LayerSpec, Platform
from bundler.staging.plan import Entry

layout, sources, name, marker = sys.argv[1:5]
big = []
for path in sorted(Path(sources).iterdir()):
    big.append(Entry("/data/" + path.name, "file", 0o644, "extra", source=str(path),
                     size=path.stat().st_size))
small = Entry("/marker", "file", 0o644, "extra", size=len(marker), data=marker.encode())
# The marker in the big layer too: each writer's big layer is new, so it is compressed (a layer
# the layout already has would be reused, and written in no time).
inside = Entry("/data/~marker", "file", 0o644, "extra", size=len(marker), data=marker.encode())
layers = (LayerSpec((Entry("/data", "dir", 0o755, "directory"), *big, inside), "big files"),
          LayerSpec((small,), "marker"))
config = ImageConfig(entrypoint=("/marker",), env=(("MARKER", marker),))
print(write_oci_layout(layout, ImageSpec(layers, config, Platform("amd64")), name))
"""


def run_big_writer(layout: Path, sources: Path, name: str, marker: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", BIG_WRITER, str(layout), str(sources), name, marker]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_writers_killed_at_any_moment_leave_a_valid_layout(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for index in range(4):  # 32 MB that gzip cannot shrink: the write takes a while
        (sources / f"random{index}").write_bytes(os.urandom(8 << 20))
    layout = tmp_path / "layout"
    started = time.monotonic()
    first = run_big_writer(layout, sources, "first", "m0")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    duration = time.monotonic() - started
    known = {"first": {out.strip()}}
    assert check_layout(layout) == {"first": out.strip()}
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    interrupted = 0  # writers killed with their temporaries on disk: in the middle of a write
    for attempt in range(15):
        # A new name, or one written before (a kill may leave the old or the new entry).
        name = rng.choice([f"n{attempt}", *sorted(known)])
        writer = run_big_writer(layout, sources, name, f"m{attempt + 1}")
        time.sleep(rng.uniform(0, duration * 1.2))
        writer.send_signal(signal.SIGKILL)
        out, _err = writer.communicate(timeout=60)
        if writer.returncode == 0:
            known.setdefault(name, set()).add(out.strip())
        interrupted += bool(temporaries(layout))
        names = check_layout(layout)
        context = f"seed {seed}, attempt {attempt}, {name} after {duration:.1f} s"
        for earlier, digests in known.items():
            if earlier == name:
                continue
            assert names.get(earlier) in digests, f"{earlier} lost ({context})"
        for written, digest in names.items():
            known.setdefault(written, set()).add(digest)
    print(
        f"seed {seed}: {interrupted} of 15 writers killed mid-write, a write takes {duration:.1f} s"
    )
    assert interrupted, f"no writer was killed while writing (seed {seed}, {duration:.1f} s)"
    last = run_big_writer(layout, sources, "last", "end")
    _out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert "last" in check_layout(layout)
    assert not temporaries(layout)  # the dead calls' temporaries went with the next call
    for blob in blob_files(layout):
        assert sha256_file(blob) == "sha256:" + blob.name


# ----- docker-archive ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "name", "tag"),
    [
        ("redis", "redis", "latest"),
        ("redis:7", "redis", "7"),
        ("host:5000/x", "host:5000/x", "latest"),
        ("host:5000/team/x:1.0", "host:5000/team/x", "1.0"),
        ("localhost/x:v_1", "localhost/x", "v_1"),
        ("scratchpack-test-x:123-abc", "scratchpack-test-x", "123-abc"),
    ],
)
def test_docker_reference(given: str, name: str, tag: str) -> None:
    assert docker_reference(given) == (name, tag)


@pytest.mark.parametrize("given", ["Redis", "x@sha256:" + "0" * 64, "x:", "a b", "x:-tag", ""])
def test_docker_reference_refuses(given: str) -> None:
    with pytest.raises(UsageError):
        docker_reference(given)


def test_full_name() -> None:
    assert full_name("redis") == "docker.io/library/redis"
    assert full_name("me/redis") == "docker.io/me/redis"
    assert full_name("host:5000/x") == "host:5000/x"
    assert full_name("localhost/x") == "localhost/x"


def archive_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        found = {}
        for info in tar:
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
            handle = tar.extractfile(info)
            found[info.name] = handle.read() if handle else b""
        return found


def test_docker_archive_holds_both_layouts(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    image_id = write_docker_archive(path, sample_image(tmp_path), "example.com:5000/app")
    members = archive_members(path)
    for name, data in members.items():
        if name.startswith("blobs/sha256/") and data:
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    (classic,) = json.loads(members["manifest.json"])
    assert classic["RepoTags"] == ["example.com:5000/app:latest"]
    assert classic["Config"] == "blobs/sha256/" + image_id.removeprefix("sha256:")
    config = json.loads(members[classic["Config"]])
    diff_ids = [
        "sha256:" + hashlib.sha256(gzip.decompress(members[layer])).hexdigest()
        for layer in classic["Layers"]
    ]
    assert diff_ids == config["rootfs"]["diff_ids"] and len(diff_ids) == 2
    top = classic["Layers"][-1].rsplit("/", 1)[1]
    assert json.loads(members["repositories"]) == {"example.com:5000/app": {"latest": top}}
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(members["index.json"])["manifests"]
    assert entry["annotations"] == {
        "io.containerd.image.name": "example.com:5000/app:latest",
        oci.REF_NAME: "latest",
    }
    manifest = json.loads(members["blobs/sha256/" + entry["digest"].removeprefix("sha256:")])
    assert manifest["config"]["digest"] == image_id
    assert ["blobs/sha256/" + m["digest"][7:] for m in manifest["layers"]] == classic["Layers"]


def test_docker_archive_is_reproducible_and_the_same_as_the_layout(tmp_path: Path) -> None:
    image = sample_image(tmp_path)
    one, two = tmp_path / "one.tar", tmp_path / "sub" / "two.tar"
    two.parent.mkdir()
    assert write_docker_archive(one, image, "app:1") == write_docker_archive(two, image, "app:1")
    assert one.read_bytes() == two.read_bytes()
    write_oci_layout(tmp_path / "layout", image, "app:1")
    for blob in blob_files(tmp_path / "layout"):
        assert archive_members(one)[f"blobs/sha256/{blob.name}"] == blob.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["layout", "one.tar", "src", "sub"]


def test_docker_archive_stores_a_repeated_layer_once(tmp_path: Path) -> None:
    layer = sample_layers(tmp_path)[1]
    spec = ImageSpec((layer, layer), ImageConfig(entrypoint=("/x",)), Platform("amd64"), 0)
    path = tmp_path / "twice.tar"
    write_docker_archive(path, spec, "twice")
    members = archive_members(path)
    (classic,) = json.loads(members["manifest.json"])
    assert classic["Layers"][0] == classic["Layers"][1]
    assert len([m for m in members if m.startswith("blobs/sha256/") and members[m]]) == 3


def test_layers_compressed_side_by_side_make_the_same_archive(tmp_path: Path) -> None:
    layers = sample_layers(tmp_path)
    spec = ImageSpec(
        (*layers, layers[1]), ImageConfig(entrypoint=("/x",)), Platform("amd64"), 0
    )  # a repeated layer too: stored once
    one_by_one = tmp_path / "one.tar"
    write_docker_archive(one_by_one, spec, "app:1")
    side_by_side = tmp_path / "two.tar"
    dead = tmp_path / ".two.tar.scratchpack-tmp-99999999-layer0"  # a killed call's
    dead.write_text("left by a killed call")
    with compressor(CompressionOptions(workers=3)) as packer:
        write_docker_archive(side_by_side, spec, "app:1", compressor=packer)
    assert side_by_side.read_bytes() == one_by_one.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["one.tar", "src", "two.tar"]


def test_docker_archive_replaces_the_file_and_removes_dead_temporaries(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_text("old")
    dead = tmp_path / ".image.tar.scratchpack-tmp-99999999"
    dead.write_text("left by a killed call")
    write_docker_archive(path, sample_image(tmp_path), "app")
    assert tarfile.is_tarfile(path)
    assert sorted(os.listdir(tmp_path)) == ["image.tar", "src"]


def test_docker_archive_into_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScratchpackError, match="is a folder"):
        write_docker_archive(tmp_path, sample_image(tmp_path), "app")


# ----- real tools -------------------------------------------------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (`make deps` installs it)")
    return found


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr}"
    return done


def test_umoci_unpacks_the_layout_as_planned(tmp_path: Path) -> None:
    umoci = tool("umoci")
    image = sample_image(tmp_path)
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    write_oci_layout(layout, image, "sample")
    root = os.geteuid() == 0
    run(
        umoci,
        "unpack",
        *([] if root else ["--rootless"]),
        "--image",
        f"{layout}:sample",
        str(bundle),
    )
    rootfs = bundle / "rootfs"
    for layer in image.layers:
        for entry in layer.entries:
            check_unpacked(rootfs, entry, root)
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == ["/usr/bin/prog", "--serve"]
    assert runtime["process"]["cwd"] == "/srv"


def check_unpacked(rootfs: Path, entry: Entry, owners: bool) -> None:
    path = rootfs / entry.path.lstrip("/")
    st = path.lstat()
    kinds = {DIR: stat.S_ISDIR, FILE: stat.S_ISREG, HARDLINK: stat.S_ISREG, SYMLINK: stat.S_ISLNK}
    assert kinds[entry.type](st.st_mode), entry.path
    if entry.type == SYMLINK:
        assert os.readlink(path) == entry.target
        return
    assert stat.S_IMODE(st.st_mode) == entry.mode, entry.path
    if owners:
        assert (st.st_uid, st.st_gid) == (entry.uid, entry.gid), entry.path
    if entry.type == HARDLINK:
        assert entry.target is not None
        assert st.st_ino == (rootfs / entry.target.lstrip("/")).stat().st_ino
    elif entry.type == FILE:
        expected = entry.data if entry.data is not None else Path(str(entry.source)).read_bytes()
        assert path.read_bytes() == expected, entry.path


def test_skopeo_reads_the_layout_and_the_archive(tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    image = sample_image(tmp_path)
    layout = tmp_path / "layout"
    digest = write_oci_layout(layout, image, "redis:7")
    raw = run(skopeo, "inspect", "--raw", f"oci:{layout}:redis:7").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    copy = tmp_path / "copy"
    run(skopeo, "copy", f"oci:{layout}:redis:7", f"dir:{copy}")
    assert (copy / "manifest.json").read_text() == raw
    archive = tmp_path / "image.tar"
    image_id = write_docker_archive(archive, image, "app:1")
    inspected = json.loads(run(skopeo, "inspect", f"docker-archive:{archive}").stdout)
    assert inspected["Architecture"] == "arm64"
    assert inspected["Env"] == ["LD_LIBRARY_PATH=/opt/lib", "MODE=a=b"]
    assert len(inspected["Layers"]) == 2
    # Copying reads every layer back, checking each against its diff_id.
    run(skopeo, "copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'again'}:app")
    config = read_image(tmp_path / "again", "app").config
    assert config["rootfs"] == read_image(layout, "redis:7").config["rootfs"]
    assert image_id == read_image(layout, "redis:7").manifest["config"]["digest"]


# ----- Docker Engine ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hello") / "hello"
    cmd = ["gcc", "-static", "-O2", '-DVARIANT="static"', str(SRC / "hello.c"), str(SRC / "lib.c")]
    done = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"gcc -static failed (no static libc?): {done.stderr.strip()[-200:]}")
    return out


@pytest.mark.docker
@pytest.mark.slow
def test_docker_loads_the_archive_and_runs_it(
    kit: Any,  # noqa: F811
    tmp_path: Path,
    static_hello: Path,
) -> None:
    tag = kit.tag("archive")
    kit.own(tag)
    data = b"hello from a second layer\n"
    layers = (
        LayerSpec(
            (
                dir_entry("/usr"),
                dir_entry("/usr/bin"),
                file_entry("/usr/bin/hello", static_hello, 0o755, PROGRAM),
                Entry("/bin", SYMLINK, 0o777, LINK, target="usr/bin"),
            ),
            "the program",
        ),
        LayerSpec(
            (dir_entry("/etc"), Entry("/etc/motd", FILE, 0o644, EXTRA, size=len(data), data=data)),
            "data",
        ),
    )
    config = ImageConfig(
        entrypoint=("/bin/hello",),
        cmd=("from", "scratch"),
        env=(("GREETING", "hi"),),
        labels=tuple(kit.labels.items()),
    )
    platform = Platform("amd64")
    archive = tmp_path / "hello.tar"
    image_id = write_docker_archive(archive, ImageSpec(layers, config, platform), tag)
    done = subprocess.run(
        ["docker", "load", "-i", str(archive)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert tag in done.stdout
    attrs = kit.client.images.get(tag).attrs
    assert attrs["Id"] == image_id
    assert attrs["Config"]["Entrypoint"] == ["/bin/hello"]
    assert attrs["Config"]["Env"] == ["GREETING=hi"]
    assert len(attrs["RootFS"]["Layers"]) == 2
    code, output = kit.run(tag, None)
    assert (code, output) == (0, "hello from static\narg 1: from\narg 2: scratch\n")


def test_one_name_for_every_platform_becomes_an_image_index(tmp_path: Path) -> None:
    """Packing one program from an amd64 root and an arm64 root under one name: an image index
    with a manifest per platform; the same platform again replaces its own manifest only."""
    layout = tmp_path / "oci"
    arm = sample_image(tmp_path / "arm")
    amd = ImageSpec(arm.layers, arm.config, Platform("amd64"), EPOCH)
    arm_digest = write_oci_layout(layout, arm, "redis:7")
    amd_digest = write_oci_layout(layout, amd, "redis:7")
    # An SBOM of a platform's manifest inside the index: attached, and kept while it stays.
    from bundler.image.referrers import SPDX_JSON, attach_artifact

    sbom = attach_artifact(layout, amd_digest, SPDX_JSON, SPDX_JSON, b"{}", title="sbom")
    write_oci_layout(layout, amd, "other")
    entries = {m["annotations"].get(oci.REF_NAME): m for m in read_index(layout)["manifests"]}
    assert entries["redis:7"]["mediaType"] == oci.MEDIA_INDEX
    assert "platform" not in entries["redis:7"]
    index = oci.read_json_blob(layout, entries["redis:7"]["digest"])
    assert {(m["platform"]["architecture"], m["digest"]) for m in index["manifests"]} == {
        ("arm64", arm_digest),
        ("amd64", amd_digest),
    }
    assert (
        oci.read_image(layout, "redis:7", "linux/amd64").manifest["config"]
        == json.loads((layout / "blobs/sha256" / amd_digest.split(":")[1]).read_bytes())["config"]
    )
    with pytest.raises(LayoutError, match="holds the platforms linux/amd64, linux/arm64/v8"):
        oci.read_image(layout, "redis:7")
    newer = ImageSpec(arm.layers, ImageConfig(entrypoint=("/new",)), arm.platform, EPOCH)
    newer_digest = write_oci_layout(layout, newer, "redis:7")
    entries = {m["annotations"].get(oci.REF_NAME): m for m in read_index(layout)["manifests"]}
    index = oci.read_json_blob(layout, entries["redis:7"]["digest"])
    assert {m["digest"] for m in index["manifests"]} == {newer_digest, amd_digest}
    assert sbom in {m["digest"] for m in read_index(layout)["manifests"]}
    check_layout(layout)
    raw = run(tool("skopeo"), "inspect", "--raw", f"oci:{layout}:redis:7").stdout
    assert json.loads(raw)["mediaType"] == oci.MEDIA_INDEX
