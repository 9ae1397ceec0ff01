"""Package metadata in scratch images: what syft and trivy read, as distroless ships it.

A small glibc root made from this machine's files gets a dpkg database of its own (status,
lists, md5sums, a diversion, copyright files, base-files' os-release); packs run through the
CLI as a user runs them. tests/test_scanners.py runs the real scanners on real Debian roots.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 13001
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Depends: libgcc-s1
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: coreutils
Essential: yes
Status: install ok installed
Priority: required
Section: utils
Maintainer: Michael Stone <mstone@debian.org>
Architecture: amd64
Version: 9.1-1
Conffiles:
 /etc/app.conf 0123456789abcdef0123456789abcdef
 /etc/not-packed.conf 0123456789abcdef0123456789abcdef
Description: GNU core utilities

Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Version: 12.4+deb12u12
Description: Debian base system miscellaneous files

Package: unrelated
Status: install ok installed
Priority: optional
Section: misc
Architecture: all
Version: 1
Description: installed, but owns nothing the image holds
"""


def _debian_root(tmp_path: Path) -> Path:
    root = make_root(tmp_path / "root")
    dpkg = root / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "status").write_text(STATUS)
    (root / "etc/app.conf").write_text("setting = 1\n")
    (root / "usr/lib/os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian"\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/debian_version").write_text("12.12\n")
    lists = {
        "libc6:amd64": [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/share/doc/libc6/copyright",
        ],
        "coreutils:amd64": ["/bin/true", "/etc/app.conf", "/usr/share/doc/coreutils/copyright"],
        "base-files:amd64": [
            "/etc/os-release",
            "/usr/lib/os-release",
            "/etc/debian_version",
            "/usr/share/doc/base-files/copyright",
        ],
        "unrelated": ["/usr/share/unrelated"],
    }
    for name, paths in lists.items():
        (dpkg / "info" / f"{name}.list").write_text("\n".join(["/.", *paths]) + "\n")
        package = name.split(":")[0]
        doc = root / "usr/share/doc" / package
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "copyright").write_text(f"{package}: GPL-2+\n")
    libc = (root / "usr/lib/x86_64-linux-gnu/libc.so.6").read_bytes()
    (dpkg / "info/libc6:amd64.md5sums").write_text(
        f"{hashlib.md5(libc).hexdigest()}  lib/x86_64-linux-gnu/libc.so.6\n"
        "00000000000000000000000000000000  lib/x86_64-linux-gnu/libnot-packed.so.1\n"
    )
    return root


def _pack(root: Path, out: Path, *args: str) -> dict[str, object]:
    result = run("--root", str(root), "/bin/true", "-o", str(out), "--json", *args)
    assert result.returncode == 0, result.stderr
    manifest: dict[str, object] = json.loads(result.stdout)
    return manifest


def test_status_d_md5sums_copyright_and_os_release(tmp_path: Path) -> None:
    root = _debian_root(tmp_path)
    out = tmp_path / "out"
    _pack(root, out, "--extra", "/etc/app.conf")
    status_d = out / "rootfs/var/lib/dpkg/status.d"
    assert sorted(p.name for p in status_d.iterdir()) == [
        "base-files",
        "base-files.md5sums",
        "coreutils",
        "coreutils.md5sums",
        "libc6",
        "libc6.md5sums",
    ]
    libc6 = (status_d / "libc6").read_text()
    assert libc6.startswith("Package: libc6\nStatus: install ok installed\n")
    assert "Source: glibc\nVersion: 2.36-9+deb12u4\n" in libc6
    assert "Conffiles" not in libc6  # its conffile is not in the image
    assert " the system.\n" in libc6  # continuation lines kept
    coreutils = (status_d / "coreutils").read_text()
    assert "Conffiles:\n /etc/app.conf 0123456789abcdef0123456789abcdef\n" in coreutils
    assert "not-packed.conf" not in coreutils
    # md5sums: the root's own lines for packed files, computed ones for files it lacks.
    staged = out / "rootfs"
    md5 = {
        line.split("  ")[1]: line.split("  ")[0]
        for line in (status_d / "libc6.md5sums").read_text().splitlines()
    }
    assert "lib/x86_64-linux-gnu/libnot-packed.so.1" not in md5
    for name, digest in md5.items():
        assert hashlib.md5((staged / name).read_bytes()).hexdigest() == digest, name
    assert "usr/share/doc/libc6/copyright" in md5
    assert "etc/app.conf" in (status_d / "coreutils.md5sums").read_text()
    for package in ("libc6", "coreutils", "base-files"):
        assert (staged / f"usr/share/doc/{package}/copyright").is_file()
    assert os.readlink(staged / "etc/os-release") == "../usr/lib/os-release"
    assert (staged / "etc/debian_version").read_text() == "12.12\n"
    assert not (staged / "var/lib/dpkg/status").exists()
    assert not (staged / "var/lib/dpkg/info").exists()
    assert not (status_d / "unrelated").exists()


def test_no_package_metadata_leaves_it_all_out(tmp_path: Path) -> None:
    root = _debian_root(tmp_path)
    out = tmp_path / "out"
    _pack(root, out, "--no-package-metadata")
    staged = out / "rootfs"
    assert not (staged / "var").exists()
    assert not (staged / "usr/share/doc").exists()
    assert not (staged / "etc/os-release").exists()


def test_size_report_by_package(tmp_path: Path) -> None:
    root = _debian_root(tmp_path)
    manifest = _pack(root, tmp_path / "out")
    packages = manifest["packages"]
    assert isinstance(packages, list)
    by_name = {item["package"]: item for item in packages}
    libc = (root / "usr/lib/x86_64-linux-gnu/libc.so.6").stat().st_size
    loader = (root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").stat().st_size
    copyright_size = len(b"libc6: GPL-2+\n")
    assert by_name["libc6"]["bytes"] == libc + loader + copyright_size
    assert by_name["libc6"]["files"] == 3
    assert by_name[None]["files"] >= 6  # status.d entries: files of no package
    assert [item["bytes"] for item in packages] == sorted(
        (item["bytes"] for item in packages), reverse=True
    )
    listed = run("--root", str(root), "--list", "--sizes", "--json", "/bin/true")
    assert listed.returncode == 0, listed.stderr
    closure = {item["package"]: item for item in json.loads(listed.stdout)["packages"]}
    assert closure["libc6"]["bytes"] == libc + loader  # the closure alone: no copyright
    assert set(closure) == {"libc6", "coreutils"}


def test_a_root_without_dpkg_says_so_once(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    result = run("--root", str(root), "/bin/true", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "dpkg database" in line]
    assert lines == [
        "scratchpack: the root has no dpkg database: the image gets no package metadata, and "
        "its SBOMs list files only"
    ]


def test_distroless_copies_the_status_d_of_what_it_copies(tmp_path: Path) -> None:
    root = _debian_root(tmp_path)
    out = tmp_path / "out"
    _pack(root, out, "--distroless", "base", "--extra", "/etc/app.conf")
    text = (out / "Dockerfile.distroless").read_text()
    assert f'COPY --from=build ["{out}/distroless/", "/"]' in text
    status_d = out / "distroless" / "var" / "lib" / "dpkg" / "status.d"
    rootfs_status_d = out / "rootfs" / "var" / "lib" / "dpkg" / "status.d"
    coreutils = (status_d / "coreutils").read_bytes()
    assert coreutils == (rootfs_status_d / "coreutils").read_bytes()
    assert not (status_d / "libc6").exists()  # the base image ships libc6 and its entry
