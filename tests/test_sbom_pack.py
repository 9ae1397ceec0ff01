"""SBOMs of real packs: beside the outputs, attached to the image in an OCI layout, valid.

redis-server packed from the debootstrapped bookworm tree: sbom.spdx.json and sbom.cdx.json
name exactly the packages that own the packed files (the image's own status.d says which),
with every file and its digest; spdx-tools and CycloneDX's strict schema accept them; in an
OCI layout they hang off the image as artifacts (``subject``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_sbom import cyclonedx_errors, spdx_messages

from bundler.image.oci import read_index, read_json_blob
from bundler.packages.sbom import IMAGE_ID, OS_ID

pytestmark = [pytest.mark.debootstrap, pytest.mark.slow]

ARGS = ("redis-server", "--with", "base", "--user", "redis", "--extra", "/etc/redis/redis.conf")


def _scratchpack(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bundler", *args, "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def packed(debootstrap_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("sbom")
    _scratchpack(
        "--root", str(debootstrap_root), *ARGS, "-o", str(top / "out"), "--oci", str(top / "oci")
    )
    return top


def _status_d_packages(rootfs: Path) -> set[str]:
    folder = rootfs / "var/lib/dpkg/status.d"
    return {p.name for p in folder.iterdir() if not p.name.endswith(".md5sums")}


def test_spdx_names_the_image_packages_and_files(packed: Path, tmp_path: Path) -> None:
    out = packed / "out"
    document: dict[str, Any] = json.loads((out / "sbom.spdx.json").read_text())
    assert spdx_messages(tmp_path, document) == []
    # Every package but the image itself and its operating system is a Debian package.
    packages = {p["name"]: p for p in document["packages"] if p["SPDXID"] not in (IMAGE_ID, OS_ID)}
    assert set(packages) == _status_d_packages(out / "rootfs")
    ssl = packages["libssl3"]
    purls = [ref["referenceLocator"] for ref in ssl["externalRefs"]]
    assert any("distro=debian-12" in p and "upstream=openssl" in p for p in purls), purls
    files = {f["fileName"].removeprefix("."): f for f in document["files"]}
    rootfs = out / "rootfs"
    regular = {
        "/" + str(p.relative_to(rootfs))
        for p in rootfs.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    assert set(files) == regular
    conf = files["/etc/redis/redis.conf"]
    sha256 = next(c["checksumValue"] for c in conf["checksums"] if c["algorithm"] == "SHA256")
    assert sha256 == hashlib.sha256((rootfs / "etc/redis/redis.conf").read_bytes()).hexdigest()


def test_cyclonedx_names_the_image_packages(packed: Path) -> None:
    out = packed / "out"
    document: dict[str, Any] = json.loads((out / "sbom.cdx.json").read_text())
    assert not cyclonedx_errors(document)
    libraries = {
        c["name"] for c in document["components"] if c.get("purl", "").startswith("pkg:deb/")
    }
    assert libraries == _status_d_packages(out / "rootfs")
    systems = [c for c in document["components"] if c["type"] == "operating-system"]
    assert [(c["name"], c["version"]) for c in systems] == [("debian", "12")]


def test_the_sboms_hang_off_the_image_in_the_layout(packed: Path) -> None:
    layout = packed / "oci"
    manifests = read_index(layout)["manifests"]
    images = [m for m in manifests if "artifactType" not in m]
    assert len(images) == 1
    artifacts = {m["artifactType"]: m for m in manifests if "artifactType" in m}
    assert set(artifacts) == {"application/spdx+json", "application/vnd.cyclonedx+json"}
    for kind, entry in artifacts.items():
        manifest = read_json_blob(layout, entry["digest"])
        assert manifest["subject"]["digest"] == images[0]["digest"]
        blob = manifest["layers"][0]["digest"]
        name = "sbom.spdx.json" if kind == "application/spdx+json" else "sbom.cdx.json"
        data = (layout / "blobs/sha256" / blob.split(":")[1]).read_bytes()
        assert data == (packed / "out" / name).read_bytes()


def test_no_package_metadata_means_no_sboms(debootstrap_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _scratchpack("--root", str(debootstrap_root), *ARGS, "-o", str(out))
    assert (out / "sbom.spdx.json").is_file()
    _scratchpack("--root", str(debootstrap_root), *ARGS, "-o", str(out), "--no-package-metadata")
    assert not (out / "sbom.spdx.json").exists() and not (out / "sbom.cdx.json").exists()
    assert not (out / "rootfs/var/lib/dpkg").exists()
