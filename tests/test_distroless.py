"""``--distroless static|base|cc`` writes Dockerfile.distroless: FROM gcr.io/distroless/VARIANT-
debian12 and COPY --from lines for what that base does not ship. No registry can be reached
here, so only the text is checked (the docker tests prove the FROM scratch image runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64

# Base variants and what each leaves out (GoogleContainerTools/distroless, debian12).
LIBC = ("libc.so.6", "ld-linux-x86-64.so.2", "libm.so.6")
SSL = ("libssl.so.3", "libcrypto.so.3")
CC = ("libstdc++.so.6", "libgcc_s.so.1")


def pack(*args: str, out: Path, stage: str = "build") -> tuple[str, list[str]]:
    """Pack; (the Dockerfile.distroless text, the in-image paths it copies: what the one COPY
    brings from the staged distroless/ folder)."""
    done = subprocess.run(
        [sys.executable, "-m", "bundler", "-q", "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SOURCE_DATE_EPOCH": "0"},
    )
    assert done.returncode == 0, done.stderr
    text = (out / "Dockerfile.distroless").read_text()
    # One COPY of the folder staged in the build stage: one layer on the base.
    copies = [line for line in text.splitlines() if line.startswith("COPY ")]
    assert copies == [f"COPY --from={stage} {json.dumps([f'{out}/distroless/', '/'])}"], copies
    tree = out / "distroless"
    copied = sorted(
        "/" + str(path.relative_to(tree))
        for path in tree.rglob("*")
        if path.is_symlink() or not path.is_dir()
    )
    return text, copied


def basenames(paths: list[str]) -> set[str]:
    return {p.rsplit("/", 1)[-1] for p in paths}


@pytest.mark.debootstrap
@pytest.mark.parametrize("variant", ["static", "base", "cc"])
def test_distroless_variants_in_bookworm(
    debootstrap_root: Path, tmp_path: Path, variant: str
) -> None:
    """apt-get (C++: libstdc++, libgcc_s) and redis-server (libssl, libcrypto) from the
    debootstrapped tree, whose dpkg lists say which package ships what."""
    text, copied = pack(
        "--root",
        str(debootstrap_root),
        "apt-get",
        "redis-server",
        "--distroless",
        variant,
        out=tmp_path / "out",
    )
    lines = text.splitlines()
    assert f"FROM gcr.io/distroless/{variant}-debian12" in lines
    assert [n for n, line in enumerate(lines) if line.startswith("FROM ")] == [
        lines.index(f"FROM gcr.io/distroless/{variant}-debian12")
    ]
    assert len([line for line in lines if line.startswith("COPY")]) == 1
    assert lines[-1] == 'ENTRYPOINT ["/usr/bin/apt-get"]'
    names = basenames(copied)
    # Always: the programs and the libraries no distroless image has.
    assert {"/usr/bin/apt-get", "/usr/bin/redis-server"} <= set(copied)
    assert {"libapt-pkg.so.6.0", "libjemalloc.so.2", "liblzf.so.1"} <= names
    shipped = {"static": (), "base": LIBC + SSL, "cc": LIBC + SSL + CC}[variant]
    needed = LIBC[:2] + SSL + CC  # what these two programs load of those packages
    assert not names & set(shipped), names & set(shipped)
    assert set(needed) - set(shipped) <= names
    # No file twice; the same closure as the scratch image (rootfs/ has every copied path).
    assert len(copied) == len(set(copied))
    rootfs = tmp_path / "out" / "rootfs"
    assert all((rootfs / p.lstrip("/")).exists() for p in copied)


@pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
def test_distroless_base_on_the_host(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    text, copied = pack(
        curl, "--distroless", "base", "--stage", "builder", out=tmp_path / "out", stage="builder"
    )
    assert "FROM gcr.io/distroless/base-debian12\n" in text
    # curl's own status.d entry comes along; libc6's and libssl3's are in the base.
    assert "/var/lib/dpkg/status.d/curl" in copied
    assert not any("status.d/libc6" in p or "status.d/libssl3" in p for p in copied)
    assert os.path.realpath(curl) in copied
    names = basenames(copied)
    assert not names & set(LIBC + SSL)
    assert "libcurl.so.4" in names
    # The FROM scratch Dockerfile beside it is unchanged: the whole closure, libc included.
    assert (tmp_path / "out" / "Dockerfile").read_text().splitlines()[1:3] == [
        "FROM scratch",
        "ADD rootfs.tar.gz /",
    ]


@pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
def test_no_distroless_file_without_the_option(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    out = tmp_path / "out"
    pack(curl, "--distroless", "static", out=out)
    done = subprocess.run(
        [sys.executable, "-m", "bundler", "-q", "-o", str(out), curl],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # A stale Dockerfile.distroless from an earlier run with the option is not left behind
    # as if it matched this run.
    assert not (out / "Dockerfile.distroless").exists()
