"""An interpreter packed without its modules is told so, in one line, with what to add."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

from bundler.loader.closure import Binary
from bundler.loader.rootfs import FsRoot
from bundler.runtime.languages import runtimes_without_modules
from bundler.staging.plan import Plan

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")


def _root(tmp_path: Path) -> Path:
    """python3 -> python3.11 (a copy of true), perl, node and their module folders."""
    root = make_root(tmp_path / "root")
    bin_ = root / "usr/bin"
    for name in ("python3.11", "perl", "node", "tool"):
        (bin_ / name).write_bytes(Path("/usr/bin/true").read_bytes())
        (bin_ / name).chmod(0o755)
    (bin_ / "python3").symlink_to("python3.11")
    stdlib = root / "usr/lib/python3.11/encodings"
    stdlib.mkdir(parents=True)
    (stdlib / "__init__.py").write_text("# codecs\n" * 100)
    (root / "usr/lib/python3.10").mkdir()  # another version's: not this interpreter's
    (root / "usr/lib/python3.10/os.py").write_text("x")
    (root / "usr/local/lib/python3.11/dist-packages").mkdir(parents=True)  # empty: not named
    (root / "usr/share/perl/5.36.0").mkdir(parents=True)
    (root / "usr/share/perl/5.36.0/POSIX.pm").write_text("1;\n")
    (root / "usr/share/nodejs/acorn").mkdir(parents=True)
    (root / "usr/share/nodejs/acorn/acorn.js").write_text("//\n")
    return root


def _binary(path: str) -> Binary:
    return Binary(path, "dynamic", "/lib64/ld-linux-x86-64.so.2", "glibc", ())


def test_each_language_is_found_with_its_own_folders(tmp_path: Path) -> None:
    root = FsRoot(str(_root(tmp_path)))
    found = runtimes_without_modules(
        root,
        [_binary(f"/usr/bin/{name}") for name in ("python3", "perl", "node", "tool")],
        Plan().entries,
    )
    by_program = {item.program: item for item in found}
    assert set(by_program) == {"/usr/bin/python3", "/usr/bin/perl", "/usr/bin/node"}
    python = by_program["/usr/bin/python3"]
    assert python.language == "Python"
    assert python.folders == ("/usr/lib/python3.11",)  # not 3.10, not the empty site folder
    assert python.size == len("# codecs\n" * 100)
    assert by_program["/usr/bin/perl"].folders == ("/usr/share/perl/5.36.0",)
    assert by_program["/usr/bin/node"].folders == ("/usr/share/nodejs",)


def test_pack_warns_in_one_line_and_names_what_to_add(tmp_path: Path) -> None:
    root = _root(tmp_path)
    result = run("--root", str(root), "python3", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "interpreter" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(
        "scratchpack: /usr/bin/python3: a Python interpreter packed without its modules "
        "(/usr/lib/python3.11; 0.0 MB)"
    )
    assert "--trace 'ARGS'" in warnings[0] and "--extra" in warnings[0]


def test_no_warning_once_the_modules_are_packed_or_traced(tmp_path: Path) -> None:
    root = _root(tmp_path)
    extra = run(
        "--root", str(root), "python3", "--extra", "/usr/lib/python3.11", "-o", str(tmp_path / "a")
    )
    assert extra.returncode == 0, extra.stderr
    assert "interpreter" not in extra.stderr
    plain = run("--root", str(root), "tool", "-o", str(tmp_path / "b"))
    assert plain.returncode == 0 and "interpreter" not in plain.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="a trace under --root needs chroot (root)")
def test_no_warning_with_a_trace(tmp_path: Path) -> None:
    import shutil

    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    root = _root(tmp_path)
    traced = run("--root", str(root), "perl", "--trace", "", "-o", str(tmp_path / "c"))
    assert traced.returncode == 0, traced.stderr
    assert "interpreter" not in traced.stderr
