"""Images without a daemon, checked with the field's own tools on a debootstrapped bookworm.

Six programs are packed from one root with six separate ``--oci`` calls into one layout: the
layers they share are stored once, so the layout's unique layer bytes stay within 15% of one
single-layer tarball holding all six programs' files (six separate tarballs: about 1.9x).
Every blob is re-hashed, every diff_id checked against its decompressed layer, ``umoci
unpack`` must give what ``-o`` writes in ``rootfs/``, ``skopeo`` copies the images to a
registry of the test's own on 127.0.0.1 (whose stored bytes must also stay within 15%), Docker
pulls one back and runs it, and Docker 20.10 loads a ``--docker-archive`` and runs it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from registrykit import running_registry

# The kit that cleans up after Docker (images pulled and loaded here are handed to it).
from test_docker import kit, report  # noqa: F401

from bundler.image.oci import REF_NAME, read_image, read_index

pytestmark = [pytest.mark.debootstrap, pytest.mark.slow]

PROGRAMS = ("redis-server", "nginx", "python3", "curl", "openssl", "sqlite3")
COMMON = ("--with", "base")
SHARING_LIMIT = 1.15
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


def scratchpack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"scratchpack {' '.join(args)}:\n{done.stderr}"
    return done


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool} (make deps installs it)")


@pytest.fixture(scope="module")
def packs(debootstrap_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The six images in one layout (six calls), and the union as one single-layer tarball."""
    top = tmp_path_factory.mktemp("layout")
    layout = top / "oci"
    root = ("--root", str(debootstrap_root))
    for program in PROGRAMS:
        scratchpack(
            *root, program, *COMMON, "--oci", str(layout), "--tag", program, "-q", env=EPOCH
        )
    scratchpack(*root, *PROGRAMS, *COMMON, "-o", str(top / "union"), "-q", env=EPOCH)
    return {"layout": layout, "union": top / "union/rootfs.tar.gz", "top": top}


def _names(layout: Path) -> list[str]:
    """The images of the layout (the SBOMs attached to them have no name)."""
    entries = read_index(layout)["manifests"]
    return [m["annotations"][REF_NAME] for m in entries if REF_NAME in m.get("annotations", {})]


def _layer_sizes(layout: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name in _names(layout):
        image = read_image(layout, name)
        for layer in image.manifest["layers"]:
            sizes[layer["digest"]] = layer["size"]
    return sizes


def test_six_calls_share_their_layers(packs: dict[str, Path], capsys: Any) -> None:
    layout = packs["layout"]
    names = _names(layout)
    assert sorted(names) == sorted(PROGRAMS)
    sizes = _layer_sizes(layout)
    unique = sum(sizes.values())
    union = packs["union"].stat().st_size
    ratio = unique / union
    report(
        capsys,
        f"six --oci calls: {len(sizes)} distinct layers, {unique} B unique layer bytes; "
        f"one single-layer tarball of all six: {union} B; ratio {ratio:.3f} "
        f"(limit {SHARING_LIMIT})",
    )
    assert ratio <= SHARING_LIMIT
    # The C library's layer is the same blob at the bottom of every image.
    bottoms = {read_image(layout, n).manifest["layers"][0]["digest"] for n in PROGRAMS}
    assert len(bottoms) == 1


def test_every_blob_and_diff_id_is_what_it_claims(packs: dict[str, Path]) -> None:
    layout = packs["layout"]
    blobs = layout / "blobs/sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    for name in PROGRAMS:
        image = read_image(layout, name)
        config = image.config
        assert (config["os"], config["architecture"]) == ("linux", "amd64")
        assert len(config["history"]) == len(image.manifest["layers"])
        diff_ids = []
        for layer in image.manifest["layers"]:
            data = (blobs / layer["digest"].split(":")[1]).read_bytes()
            assert len(data) == layer["size"]
            diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest())
        assert config["rootfs"]["diff_ids"] == diff_ids
        assert config["config"]["Entrypoint"][0].endswith("/" + name)


def test_umoci_unpack_equals_the_rootfs_of_the_same_pack(
    debootstrap_root: Path, tmp_path: Path
) -> None:
    needs("umoci")
    if os.geteuid() != 0:
        pytest.skip("umoci unpack keeps owners only as root")
    out, layout = tmp_path / "out", tmp_path / "oci"
    scratchpack(
        "--root",
        str(debootstrap_root),
        "redis-server",
        *COMMON,
        "--user",
        "redis",
        "--extra",
        "/etc/redis",
        "--mkdir",
        "/var/lib/redis",
        "-o",
        str(out),
        "--oci",
        str(layout),
        "--tag",
        "redis:7",
        "-q",
    )
    bundle = tmp_path / "bundle"
    done = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:redis:7", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _tree(bundle / "rootfs") == _tree(out / "rootfs")


def _tree(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every path below TOP: type, mode, owner, and content or link target."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        rel = "/" + str(path.relative_to(top)) if path != top else "/"
        if stat.S_ISLNK(st.st_mode):
            what: Any = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = None
        if path != top:
            found[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                what,
            )
    return found


def test_the_same_inputs_give_the_same_digests(debootstrap_root: Path, tmp_path: Path) -> None:
    digests, archives = [], []
    for run in ("one", "two"):
        folder = tmp_path / run
        scratchpack(
            "--root",
            str(debootstrap_root),
            "curl",
            *COMMON,
            "--oci",
            str(folder / "oci"),
            "--docker-archive",
            str(folder / "curl.tar"),
            "--tag",
            "curl:8",
            "-q",
            env=EPOCH,
        )
        # The image's manifest and the SBOMs attached to it: the same bytes, so the same digests.
        digests.append(sorted(m["digest"] for m in read_index(folder / "oci")["manifests"]))
        archives.append((folder / "curl.tar").read_bytes())
    assert digests[0] == digests[1]
    assert archives[0] == archives[1]


@pytest.mark.docker
def test_a_registry_stores_the_shared_layers_once_and_docker_pulls_and_runs(
    packs: dict[str, Path],
    kit: Any,  # noqa: F811
    capsys: Any,
) -> None:
    needs("skopeo")
    needs("docker-registry")
    layout = packs["layout"]
    with running_registry(packs["top"] / "registry") as registry:
        for name in PROGRAMS:
            done = subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:{name}",
                    f"docker://{registry.host}/scratchpack/{name}:latest",
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
        count, stored = registry.blob_bytes()
        union = packs["union"].stat().st_size
        report(
            capsys,
            f"registry after six pushes: {count} blobs, {stored} B stored; union tarball "
            f"{union} B; ratio {stored / union:.3f}",
        )
        assert stored / union <= SHARING_LIMIT
        reference = f"{registry.host}/scratchpack/sqlite3:latest"
        kit.own(reference)
        pulled = subprocess.run(
            ["docker", "pull", reference], capture_output=True, text=True, timeout=300
        )
        assert pulled.returncode == 0, pulled.stderr
    code, output = kit.run(reference, [":memory:", "select 6 * 7, sqlite_version()"])
    assert code == 0 and output.startswith("42|3."), output


@pytest.mark.docker
def test_docker_20_10_loads_the_archive_and_runs_it(
    debootstrap_root: Path,
    tmp_path: Path,
    kit: Any,  # noqa: F811
) -> None:
    tag = kit.tag("openssl-archive")
    archive = tmp_path / "openssl.tar"
    scratchpack(
        "--root",
        str(debootstrap_root),
        "openssl",
        *COMMON,
        "--docker-archive",
        str(archive),
        "--tag",
        tag,
        "-q",
    )
    kit.own(tag)
    loaded = subprocess.run(
        ["docker", "load", "-i", str(archive)], capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr
    assert tag in loaded.stdout
    code, output = kit.run(tag, ["prime", "97"])
    assert code == 0 and "is prime" in output, output


def _docker_config(folder: Path, host: str, user: str, password: str) -> Path:
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


@pytest.mark.docker
def test_push_to_a_tls_registry_with_auth_then_docker_pulls_and_runs(
    debootstrap_root: Path,
    tmp_path: Path,
    kit: Any,  # noqa: F811
    capsys: Any,
) -> None:
    """--push as a user runs it: credentials from the Docker config, the registry's CA where
    Docker trusts it (/etc/docker/certs.d/HOST:PORT/ca.crt); a second image that shares
    layers uploads only its own; wrong credentials fail in one line; Docker pulls and runs."""
    needs("docker-registry")
    if os.geteuid() != 0:
        pytest.skip("trusting the registry's CA means writing /etc/docker/certs.d (root)")
    with running_registry(tmp_path / "registry", tls=True, users={"ci": "s3cret"}) as registry:
        assert registry.ca is not None
        certs_d = Path("/etc/docker/certs.d") / registry.host
        certs_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(registry.ca, certs_d / "ca.crt")
        try:
            config = _docker_config(tmp_path / "docker", registry.host, "ci", "s3cret")
            env = {"DOCKER_CONFIG": str(config), **EPOCH}
            root = ("--root", str(debootstrap_root))
            pushes = []
            for program in ("sqlite3", "curl"):
                ref = f"{registry.host}/team/{program}:1"
                done = scratchpack(*root, program, *COMMON, "--push", ref, "--json", env=env)
                pushes.append(json.loads(done.stdout)["image"]["pushed"])
            first, second = pushes
            assert first["present"] == 0 and first["uploaded"] > 0
            # curl shares the C library's layer (and more) with sqlite3: those are mounted.
            assert second["mounted"] + second["present"] > 0
            count, stored = registry.blob_bytes()
            report(
                capsys,
                f"--push sqlite3 then curl: {first['uploaded']} then {second['uploaded']} blobs "
                f"uploaded ({second['mounted']} mounted); registry: {count} blobs, {stored} B",
            )
            again = scratchpack(
                *root,
                "sqlite3",
                *COMMON,
                "--push",
                f"{registry.host}/team/sqlite3:1",
                "--json",
                env=env,
            )
            repeat = json.loads(again.stdout)["image"]["pushed"]
            assert repeat["uploaded"] == 0 and repeat["digest"] == first["digest"]
            wrong = _docker_config(tmp_path / "wrong", registry.host, "ci", "nope")
            refused = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bundler",
                    *root,
                    "sqlite3",
                    "--push",
                    f"{registry.host}/team/x:1",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "DOCKER_CONFIG": str(wrong)},
            )
            assert refused.returncode != 0
            lines = [line for line in refused.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and registry.host in lines[0], refused.stderr
            reference = f"{registry.host}/team/sqlite3:1"
            kit.own(reference)
            pulled = subprocess.run(
                ["docker", "--config", str(config), "pull", reference],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert pulled.returncode == 0, pulled.stderr
            assert first["digest"] in pulled.stdout
        finally:
            shutil.rmtree(certs_d, ignore_errors=True)
    code, output = kit.run(reference, [":memory:", "select 6 * 7"])
    assert code == 0 and output.strip() == "42", output
