"""Hostile roots: every link under --root resolves inside it, as chroot would, clamped at its
top; `..` never climbs out; an --extra outside the root is an error. The roots here link to
host files marked with a secret, and a copy of each file at the same path inside the root is
marked differently: the root's copy must be what is listed and packed, the host's content
must reach no output (rootfs/, rootfs.tar.gz, Dockerfile, --list, --json).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakeroot import MULTIARCH, host_has_glibc_x86_64, make_root

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")

HOST_MARK = b"HOST-SECRET-7f3a"
ROOT_MARK = b"ROOT-COPY-19c2"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args], capture_output=True, timeout=120
    )


def everything_written(out: Path, *results: subprocess.CompletedProcess[bytes]) -> bytes:
    blob = b"".join(r.stdout + r.stderr for r in results)
    if (out / "rootfs").exists():
        for path in (out / "rootfs").rglob("*"):
            if path.is_file() and not path.is_symlink():
                blob += path.read_bytes()
    if (out / "rootfs.tar.gz").exists():
        blob += gzip.decompress((out / "rootfs.tar.gz").read_bytes())
    if (out / "Dockerfile").exists():
        blob += (out / "Dockerfile").read_bytes()
    return blob


def marked_copy(source: str, target: Path, mark: bytes) -> None:
    """A working copy of an ELF file with a mark appended (the loader ignores trailing bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(Path(os.path.realpath(source)).read_bytes() + mark)
    target.chmod(0o755)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Host files a hostile root points at: a program, a libc and a secret, all marked."""
    top = tmp_path / "host"
    marked_copy("/usr/bin/true", top / "bin/true", HOST_MARK)
    marked_copy(LIBC, top / "lib/libc.so.6", HOST_MARK)
    (top / "secret").write_bytes(HOST_MARK + b"\n")
    (top / "secrets").mkdir()
    (top / "secrets/key").write_bytes(HOST_MARK + b"\n")
    return top


def shadow(root: Path, host_path: Path, mark: bytes = ROOT_MARK) -> None:
    """The root's own file at the host path's spelling: what a chroot would find there."""
    inside = root / str(host_path).lstrip("/")
    if host_path.is_dir():
        inside.mkdir(parents=True, exist_ok=True)
        for item in host_path.iterdir():
            shadow(root, item, mark)
    elif host_path.read_bytes().startswith(b"\x7fELF"):
        source = "/usr/bin/true" if host_path.name == "true" else LIBC
        marked_copy(source, inside, mark)
    else:
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.write_bytes(mark + b"\n")


def test_program_path_through_absolute_and_relative_links(tmp_path: Path, host: Path) -> None:
    root = make_root(tmp_path / "root", programs=())
    (root / "usr/bin/abs").symlink_to(host / "bin/true")
    (root / "usr/bin/rel").symlink_to("../../../../../../../../.." + str(host / "bin/true"))
    (root / "opt").mkdir()
    (root / "opt/dir").symlink_to(host / "bin")  # a directory link in the program's path
    shadow(root, host / "bin/true")
    for program in ("/usr/bin/abs", "/usr/bin/rel", "/opt/dir/true"):
        listed = run("--list", "--json", "--root", str(root), program)
        assert listed.returncode == 0, listed.stderr
        out = tmp_path / f"out{program.replace('/', '_')}"
        packed = run("--root", str(root), program, "-o", str(out))
        assert packed.returncode == 0, packed.stderr
        blob = everything_written(out, listed, packed)
        assert HOST_MARK not in blob
        assert ROOT_MARK in blob  # the root's copy is what was packed
        # The program as spelt, its links kept as links with their text.
        spelt = out / "rootfs" / program.lstrip("/")
        assert spelt.exists() or spelt.is_symlink()


def test_library_directories_linking_out_of_the_root(tmp_path: Path, host: Path) -> None:
    root = make_root(tmp_path / "root")
    multiarch = root / MULTIARCH
    (multiarch / "libc.so.6").unlink()
    (multiarch / "libc.so.6").symlink_to(host / "lib/libc.so.6")  # absolute, to the host
    shadow(root, host / "lib/libc.so.6")
    listed = run("--list", "--json", "--root", str(root), "/bin/true")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["missing"] == []
    out = tmp_path / "out"
    packed = run("--root", str(root), "/bin/true", "-o", str(out))
    assert packed.returncode == 0, packed.stderr
    blob = everything_written(out, listed, packed)
    assert HOST_MARK not in blob and ROOT_MARK in blob


def test_whole_library_directory_is_a_link_out(tmp_path: Path, host: Path) -> None:
    """/usr/lib/x86_64-linux-gnu itself points at a host folder (relative, climbing with ..)."""
    root = make_root(tmp_path / "root")
    multiarch = root / MULTIARCH
    shutil.move(str(multiarch), str(tmp_path / "moved"))
    multiarch.symlink_to("../../../../../../../../../.." + str(host / "lib"))
    shadow(root, host / "lib")
    # The root's copy of that folder has the loader too (it is found through /lib64 -> ...).
    shutil.copy2(tmp_path / "moved/ld-linux-x86-64.so.2", root / str(host / "lib").lstrip("/"))
    listed = run("--list", "--json", "--root", str(root), "/bin/true")
    assert listed.returncode == 0, listed.stderr
    out = tmp_path / "out"
    packed = run("--root", str(root), "/bin/true", "-o", str(out))
    assert packed.returncode == 0, packed.stderr
    blob = everything_written(out, listed, packed)
    assert HOST_MARK not in blob and ROOT_MARK in blob


def test_rpath_and_ld_so_conf_directories_linking_out(tmp_path: Path, host: Path) -> None:
    """Directories named by ld.so.conf (and the cache-less default search) are root paths."""
    root = make_root(tmp_path / "root")
    (root / MULTIARCH / "libc.so.6").unlink()
    (root / "opt").mkdir()
    (root / "opt/lib").symlink_to(host / "lib")
    (root / "etc/ld.so.conf").write_text(f"{host / 'lib'}\n/opt/lib\n")
    shadow(root, host / "lib")
    listed = run(
        "--list", "--json", "--root", str(root), "--ld-library-path", "/opt/lib", "/bin/true"
    )
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["missing"] == []
    out = tmp_path / "out"
    packed = run("--root", str(root), "--ld-library-path", "/opt/lib", "/bin/true", "-o", str(out))
    assert packed.returncode == 0, packed.stderr
    blob = everything_written(out, listed, packed)
    assert HOST_MARK not in blob and ROOT_MARK in blob


def test_extras_through_links_and_dotdot(tmp_path: Path, host: Path) -> None:
    root = make_root(tmp_path / "root")
    etc = root / "etc"
    (etc / "abs").symlink_to(host / "secret")
    (etc / "rel").symlink_to("../../../../../../../.." + str(host / "secret"))
    (etc / "dir").symlink_to(host / "secrets")
    shadow(root, host / "secret")
    shadow(root, host / "secrets")
    out = tmp_path / "out"
    packed = run(
        "--root",
        str(root),
        "/bin/true",
        "-o",
        str(out),
        "--extra",
        "/etc/abs",
        "--extra",
        "/etc/rel",
        "--extra",
        "/etc/dir",
        "--extra",
        "/../../../.." + str(host / "secret"),
        "--extra",
        "/etc/../../../" + str(host / "secrets") + "/*",
    )
    assert packed.returncode == 0, packed.stderr
    blob = everything_written(out, packed)
    assert HOST_MARK not in blob
    assert blob.count(ROOT_MARK) >= 3
    assert os.readlink(out / "rootfs/etc/abs") == str(host / "secret")  # kept as spelt
    assert (out / "rootfs" / str(host / "secret").lstrip("/")).read_bytes() == ROOT_MARK + b"\n"


def test_extra_outside_the_root_is_an_error(tmp_path: Path, host: Path) -> None:
    root = make_root(tmp_path / "root")
    out = tmp_path / "out"
    for spec in (str(host / "secret"), "relative/path"):
        result = run("--root", str(root), "/bin/true", "-o", str(out), "--extra", spec)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count(b"\n") == 1 and spec.encode() in result.stderr
    assert not (out / "rootfs").exists()
    # A host path *into* the root is taken as the image path it names.
    (root / "etc/inside").write_text("in\n")
    result = run(
        "--root", str(root), "/bin/true", "-q", "-o", str(out), "--extra", str(root / "etc/inside")
    )
    assert result.returncode == 0, result.stderr
    assert (out / "rootfs/etc/inside").read_text() == "in\n"


def test_dotdot_in_the_program_path_never_climbs_out(tmp_path: Path, host: Path) -> None:
    root = make_root(tmp_path / "root")
    shadow(root, host / "bin/true")
    program = "/../../../../.." + str(host / "bin/true")
    listed = run("--list", "--root", str(root), program)
    assert listed.returncode == 0, listed.stderr
    out = tmp_path / "out"
    packed = run("--root", str(root), program, "-o", str(out))
    assert packed.returncode == 0, packed.stderr
    blob = everything_written(out, listed, packed)
    assert HOST_MARK not in blob and ROOT_MARK in blob


def test_link_to_a_host_file_missing_from_the_root_is_missing(tmp_path: Path, host: Path) -> None:
    """No copy inside the root: the link dangles there, so nothing is read from the host."""
    root = make_root(tmp_path / "root")
    (root / MULTIARCH / "libc.so.6").unlink()
    (root / MULTIARCH / "libc.so.6").symlink_to(host / "lib/libc.so.6")
    (root / "etc/abs").symlink_to(host / "secret")
    listed = run("--list", "--json", "--root", str(root), "/bin/true")
    assert json.loads(listed.stdout)["missing"][0]["soname"] == "libc.so.6"
    out = tmp_path / "out"
    packed = run(
        "--root", str(root), "/bin/true", "-o", str(out), "--allow-missing", "--extra", "/etc/abs"
    )
    blob = everything_written(out, listed, packed)
    assert HOST_MARK not in blob
    assert packed.returncode in (0, 2) and b"Traceback" not in packed.stderr


def test_hostile_loader_files_in_the_root(tmp_path: Path) -> None:
    """The root's ld.so.cache, loader and nsswitch.conf are huge sparse files: bounded reads,
    no MemoryError, no traceback."""
    for name in ("etc/ld.so.cache", "etc/nsswitch.conf"):
        root = make_root(tmp_path / name.replace("/", "_"))
        target = root / name
        target.write_bytes(b"x")
        os.truncate(target, 64 << 30)
        listed = run("--list", "--root", str(root), "/bin/true")
        assert b"Traceback" not in listed.stderr and listed.returncode in (0, 2), listed.stderr
        packed = run("--root", str(root), "/bin/true", "--with", "nss", "-o", str(tmp_path / "o"))
        assert b"Traceback" not in packed.stderr, packed.stderr
        assert packed.returncode in (0, 2)
        if packed.returncode == 2:
            assert b"too large to be read" in packed.stderr
