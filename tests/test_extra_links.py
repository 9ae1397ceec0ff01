"""--extra and symbolic links: a link stays a link, and what it names arrives with it.

Debian is full of links to folders: ``/usr/share/nginx/modules -> ../../lib/nginx/modules``,
``/usr/share/perl/5.36 -> 5.36.0``, ``/usr/lib/ssl/certs -> /etc/ssl/certs``. Packing the link
and an empty folder broke those programs; these fixtures pin the rules, negative cases included:
loops and links that leave the root are packed as links with a warning and never followed, and
an error names the --extra argument that led to it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")

ZLIB = "/lib/x86_64-linux-gnu/libz.so.1"


def _root(tmp_path: Path) -> Path:
    """A root shaped like Debian's nginx, perl and openssl folders."""
    root = make_root(tmp_path / "root", libs=[ZLIB])
    modules = root / "usr/lib/nginx/modules"
    modules.mkdir(parents=True)
    # An ELF module in the link's target: it must bring its own closure (libz here).
    plugin = modules / "ngx_http_echo_module.so"
    shutil.copy2(os.path.realpath(_needs_libz()), plugin)
    (root / "usr/share/nginx").mkdir(parents=True)
    (root / "usr/share/nginx/modules").symlink_to("../../lib/nginx/modules")
    perl = root / "usr/share/perl/5.36.0"
    (perl / "File").mkdir(parents=True)
    (perl / "POSIX.pm").write_text("package POSIX; 1;\n")
    (perl / "File/Spec.pm").write_text("package File::Spec; 1;\n")
    (root / "usr/share/perl/5.36").symlink_to("5.36.0")
    # A link inside a link's target, chained: certs -> /etc/ssl/certs, whose entries are links.
    (root / "usr/share/ca").mkdir(parents=True)
    (root / "usr/share/ca/one.crt").write_text("CERT ONE")
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/one.pem").symlink_to("/usr/share/ca/one.crt")
    (root / "usr/lib/ssl").mkdir(parents=True)
    (root / "usr/lib/ssl/certs").symlink_to("/etc/ssl/certs")
    (root / "usr/lib/ssl/openssl.cnf").write_text("# conf\n")
    return root


def _needs_libz() -> str:
    """A host library whose DT_NEEDED names libz (so the module's closure has something)."""
    for candidate in ("/lib/x86_64-linux-gnu/libpng16.so.16", "/lib/x86_64-linux-gnu/libxml2.so.2"):
        if os.path.exists(candidate):
            return candidate
    pytest.skip("needs a host library linked with libz (libpng16 or libxml2)")


def _pack(root: Path, out: Path, *extras: str) -> tuple[int, str]:
    args = ["--root", str(root), "/bin/true", "-o", str(out), "--allow-missing"]
    for extra in extras:
        args += ["--extra", extra]
    result = run(*args)
    return result.returncode, result.stderr


def test_named_link_to_a_folder_brings_its_content_and_the_elf_closures(tmp_path: Path) -> None:
    root = _root(tmp_path)
    out = tmp_path / "out"
    code, err = _pack(root, out, "/usr/share/nginx/modules", "/usr/share/perl/5.36")
    assert code == 0, err
    staged = out / "rootfs"
    assert os.readlink(staged / "usr/share/nginx/modules") == "../../lib/nginx/modules"
    assert (staged / "usr/lib/nginx/modules/ngx_http_echo_module.so").is_file()
    assert (staged / "usr/share/nginx/modules/ngx_http_echo_module.so").is_file()  # via the link
    assert (staged / "usr/lib/x86_64-linux-gnu/libz.so.1").exists(), "the module's closure"
    assert os.readlink(staged / "usr/share/perl/5.36") == "5.36.0"
    assert (staged / "usr/share/perl/5.36/POSIX.pm").read_text().startswith("package POSIX")
    assert (staged / "usr/share/perl/5.36.0/File/Spec.pm").is_file()


def test_links_found_inside_an_extra_folder_are_followed_recursively(tmp_path: Path) -> None:
    root = _root(tmp_path)
    out = tmp_path / "out"
    code, err = _pack(root, out, "/usr/lib/ssl", "/usr/share/nginx")
    assert code == 0, err
    staged = out / "rootfs"
    assert os.readlink(staged / "usr/lib/ssl/certs") == "/etc/ssl/certs"
    assert os.readlink(staged / "etc/ssl/certs/one.pem") == "/usr/share/ca/one.crt"
    assert (staged / "usr/share/ca/one.crt").read_text() == "CERT ONE"
    assert (staged / "usr/lib/nginx/modules/ngx_http_echo_module.so").is_file()
    assert "warning" not in err.lower() and "loop" not in err


def test_a_loop_is_packed_as_a_link_with_a_warning(tmp_path: Path) -> None:
    root = _root(tmp_path)
    conf = root / "etc/app"
    (conf / "sub").mkdir(parents=True)
    (conf / "sub/a.conf").write_text("a")
    (conf / "sub/up").symlink_to("..")  # a folder that holds the link itself
    (conf / "top").symlink_to("/")
    (conf / "ping").symlink_to("pong")
    (conf / "pong").symlink_to("ping")
    out = tmp_path / "out"
    code, err = _pack(root, out, "/etc/app")
    assert code == 0, err
    staged = out / "rootfs"
    assert (staged / "etc/app/sub/a.conf").read_text() == "a"
    assert os.readlink(staged / "etc/app/sub/up") == ".."
    assert os.readlink(staged / "etc/app/top") == "/"
    assert os.readlink(staged / "etc/app/ping") == "pong"
    assert not (staged / "usr/bin/true").is_symlink()
    for name in ("up", "top"):
        assert f"/etc/app/{'sub/' if name == 'up' else ''}{name}: a link to" in err
        assert "a folder that holds the link itself" in err
    assert "/etc/app/ping: a loop of symbolic links" in err
    # Nothing of the root beyond what was named came in through "top" or "up".
    assert not (staged / "usr/share/perl").exists()


def test_a_link_that_leaves_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("HOST SECRET")
    root = _root(tmp_path)
    (root / "etc/app").mkdir()
    depth = len(root.parts) + 4
    (root / "etc/app/escape").symlink_to("../" * depth + str(outside).lstrip("/"))
    out = tmp_path / "out"
    code, err = _pack(root, out, "/etc/app")
    assert code == 0, err
    assert "/etc/app/escape: a link to" in err and "leaves the root" in err
    staged = out / "rootfs"
    assert (staged / "etc/app/escape").is_symlink()
    blob = b"".join(p.read_bytes() for p in staged.rglob("*") if p.is_file() and not p.is_symlink())
    assert b"HOST SECRET" not in blob


def test_a_dangling_link_inside_a_folder_is_kept_with_a_warning(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc/app").mkdir()
    (root / "etc/app/gone").symlink_to("/usr/share/removed.conf")
    out = tmp_path / "out"
    code, err = _pack(root, out, "/etc/app")
    assert code == 0, err
    assert os.readlink(out / "rootfs/etc/app/gone") == "/usr/share/removed.conf"
    assert "/etc/app/gone: a link to /usr/share/removed.conf, which is not in the root" in err


def test_an_error_names_the_extra_argument_as_written(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc/app").mkdir()
    (root / "etc/app/conf").symlink_to("/HOST-SECRET")
    out = tmp_path / "out"
    code, err = _pack(root, out, "/etc/app/c*")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("scratchpack: --extra /etc/app/c*: /etc/app/conf is a link to")
    assert "/HOST-SECRET, which is not in the root" in lines[0]
    assert not out.exists()
