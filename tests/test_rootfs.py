"""FsRoot resolves paths as chroot does: links are clamped at the top of the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundler.errors import UsageError
from bundler.loader.rootfs import FsRoot, SymlinkLoop


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/libx.so.1").write_bytes(b"inside")
    (root / "lib").symlink_to("usr/lib")  # merged /usr, relative
    (root / "abs").symlink_to("/usr/lib")  # absolute: must stay inside the root
    (root / "up").symlink_to("../../../../..")  # climbs: clamped at the top
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "dir").mkdir()
    (root / "dir/link").symlink_to("../usr")
    return root


def test_relative_and_absolute_links_stay_inside(tree: Path) -> None:
    fs = FsRoot(str(tree))
    assert fs.realpath("/lib/libx.so.1") == "/usr/lib/libx.so.1"
    assert fs.realpath("/abs/libx.so.1") == "/usr/lib/libx.so.1"
    assert fs.read_bytes("/abs/libx.so.1") == b"inside"


def test_dotdot_never_climbs_out(tree: Path) -> None:
    fs = FsRoot(str(tree))
    assert fs.realpath("/../../..") == "/"
    assert fs.realpath("/up/usr/lib/libx.so.1") == "/usr/lib/libx.so.1"
    assert fs.is_file("/up/up/usr/lib/libx.so.1")


def test_dotdot_after_a_link_climbs_from_its_target(tree: Path) -> None:
    # /dir/link -> ../usr, so /dir/link/.. is / (the kernel's answer), not /dir.
    fs = FsRoot(str(tree))
    assert fs.realpath("/dir/link/../lib/libx.so.1") == "/usr/lib/libx.so.1"


def test_link_to_a_host_file_reads_the_root_copy(tree: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (tree / "escape").symlink_to(str(secret))
    fs = FsRoot(str(tree))
    assert not fs.is_file("/escape")
    assert fs.real_host_path("/escape").startswith(str(tree))


def test_symlink_loop_is_reported(tree: Path) -> None:
    fs = FsRoot(str(tree))
    with pytest.raises(SymlinkLoop):
        fs.realpath("/loop1/x")
    assert fs.stat("/loop1") is None


def test_missing_components_are_kept(tree: Path) -> None:
    fs = FsRoot(str(tree))
    assert fs.realpath("/lib/nope/../x") == "/usr/lib/x"
    assert not fs.is_file("/lib/nope")


def test_host_root_uses_the_kernel(tmp_path: Path) -> None:
    fs = FsRoot("/")
    target = tmp_path / "t"
    target.write_text("x")
    link = tmp_path / "l"
    link.symlink_to(target)
    assert fs.realpath(str(link)) == os.path.realpath(target)


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        FsRoot(str(tmp_path / "absent"))


def test_image_path_of_host(tree: Path) -> None:
    fs = FsRoot(str(tree))
    assert fs.image_path_of_host(str(tree / "usr/lib")) == "/usr/lib"
    assert fs.image_path_of_host("/etc/passwd") is None
