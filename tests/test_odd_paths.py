"""Odd paths: programs that are not programs, names that are not UTF-8, paths near PATH_MAX,
and FIFOs, sockets and device nodes under --extra (skipped with a warning, never opened).

Each run is a subprocess with a timeout: a FIFO opened by mistake would block it for ever.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")

TRUE = os.path.realpath(shutil.which("true") or "/usr/bin/true")
PATH_MAX, NAME_MAX = 4096, 255


def run(
    *args: str | bytes, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def one_line_error(result: subprocess.CompletedProcess[bytes], *fragments: str) -> str:
    err = os.fsdecode(result.stderr)
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("scratchpack: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


# -- programs that are not programs -----------------------------------------------------------


def test_program_is_a_directory(tmp_path: Path) -> None:
    one_line_error(run("--list", str(tmp_path)), f"{tmp_path}: is a directory")
    one_line_error(run(str(tmp_path), "-o", str(tmp_path / "o")), "is a directory")


def test_program_is_missing(tmp_path: Path) -> None:
    one_line_error(run("--list", str(tmp_path / "nope")), f"{tmp_path}/nope: no such file")
    one_line_error(run("--list", str(tmp_path / "no/such/dir/x")), "no such file")


def test_program_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    one_line_error(run("--list", str(tmp_path / "a")), "too many levels of symbolic links")
    one_line_error(run(str(tmp_path / "a"), "-o", str(tmp_path / "o")), "too many levels")
    root = make_root(tmp_path / "root")
    (root / "usr/bin/x").symlink_to("/usr/bin/y")
    (root / "usr/bin/y").symlink_to("x")
    one_line_error(run("--list", "--root", str(root), "/usr/bin/x"), "/usr/bin/x: too many levels")


def test_program_not_executable(tmp_path: Path) -> None:
    """Given by path it is read as ldd reads it (a library is not executable either); as a
    name on PATH it is passed over, as execvp does."""
    program = tmp_path / "noexec"
    shutil.copy(TRUE, program)
    program.chmod(0o644)
    listed = run("--list", str(program))
    assert listed.returncode == 0 and listed.stdout.splitlines()[0] == os.fsencode(program)
    one_line_error(
        run("--list", "noexec", env={"PATH": str(tmp_path)}, cwd=Path("/")),
        "noexec: no such program on PATH",
    )


def test_name_not_on_path() -> None:
    one_line_error(run("--list", "no-such-program-xyz"), "no-such-program-xyz: no such program")


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_special_file_as_program_is_never_opened(tmp_path: Path, kind: str) -> None:
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    else:
        os.mknod(path, 0o600 | 0o020000, os.makedev(5, 0))  # /dev/tty
    one_line_error(run("--list", str(path)), f"{path}: is not a regular file")
    one_line_error(run(str(path), "-o", str(tmp_path / "o")), "is not a regular file")


# -- names that are not UTF-8 ------------------------------------------------------------------


@pytest.fixture
def latin1_tree(tmp_path: Path) -> bytes:
    """A folder whose names are Latin-1 bytes, invalid UTF-8: a program and a data file."""
    top = os.fsencode(tmp_path) + b"/caf\xe9-\xff\xfe"
    os.mkdir(top)
    shutil.copy(TRUE, os.fsdecode(top + b"/pr\xf6g"))
    with open(top + b"/donn\xe9es.txt", "wb") as handle:
        handle.write(b"data\n")
    os.mkdir(top + b"/sub\x80")
    os.symlink(b"../donn\xe9es.txt", top + b"/sub\x80/lien\xe9")
    return top


def test_non_utf8_names_list_plain_and_json(latin1_tree: bytes) -> None:
    program = latin1_tree + b"/pr\xf6g"
    plain = run("--list", program)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0] == program  # byte for byte
    as_json = run("--list", "--json", program)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)  # valid JSON; names as surrogate escapes
    assert os.fsencode(doc["binaries"][0]["path"]) == program
    missing = run("--list", latin1_tree + b"/absent\xe9")
    assert missing.returncode == 2 and b"Traceback" not in missing.stderr


def test_non_utf8_names_packed_byte_for_byte(latin1_tree: bytes, tmp_path: Path) -> None:
    program = latin1_tree + b"/pr\xf6g"
    out = tmp_path / "out"
    result = run(program, "-q", "--extra", latin1_tree, "-o", str(out))
    assert result.returncode == 0, result.stderr
    staged = os.fsencode(out / "rootfs") + latin1_tree
    assert sorted(os.listdir(staged)) == [b"donn\xe9es.txt", b"pr\xf6g", b"sub\x80"]
    assert os.readlink(staged + b"/sub\x80/lien\xe9") == b"../donn\xe9es.txt"
    with open(staged + b"/donn\xe9es.txt", "rb") as handle:
        assert handle.read() == b"data\n"
    raw = gzip.decompress((out / "rootfs.tar.gz").read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as tar:
        names = {os.fsencode(m.name) for m in tar.getmembers()}
    inside = latin1_tree.lstrip(b"/")
    assert {
        inside + b"/pr\xf6g",
        inside + b"/donn\xe9es.txt",
        inside + b"/sub\x80/lien\xe9",
    } <= names
    # The raw tar headers hold the bytes themselves, not an encoding of them.
    assert inside + b"/pr\xf6g" in raw
    dockerfile = (out / "Dockerfile").read_bytes()
    assert b"ENTRYPOINT" in dockerfile


def test_non_utf8_script_line(tmp_path: Path) -> None:
    """Found by review: a #! argument that is not UTF-8 was a UnicodeDecodeError traceback."""
    script = tmp_path / "s"
    script.write_bytes(b"#!/no/such/interp\xe9 arg\xe9\n")
    script.chmod(0o755)
    one_line_error(run("--list", str(script)), "no such file")
    env_script = tmp_path / "e"
    env_script.write_bytes(b"#!/usr/bin/env na\xefve\n")
    env_script.chmod(0o755)
    one_line_error(run("--list", str(env_script)), "no such program")


def test_non_utf8_needed_name(tmp_path: Path) -> None:
    data = Path(TRUE).read_bytes()
    assert b"libc.so.6\0" in data
    program = tmp_path / "prog"
    program.write_bytes(data.replace(b"libc.so.6\0", b"lib\xe9.so.6\0", 1))
    program.chmod(0o755)
    result = run("--list", "--json", str(program))
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    (missing,) = json.loads(result.stdout)["missing"]
    assert os.fsencode(missing["soname"]) == b"lib\xe9.so.6"
    plain = run("--list", str(program))
    assert plain.returncode == 0 and b"Traceback" not in plain.stderr


# -- long paths -------------------------------------------------------------------------------


def _deep_program(top: Path, length: int) -> Path:
    """A copy of true at a path of exactly ``length`` bytes, in components of 200."""
    directory = str(top)
    while len(directory) + 201 + 10 < length:
        directory += "/" + "d" * 200
    last = length - len(directory) - 1 - len("/t")
    directory += "/" + "e" * last
    os.makedirs(directory)
    program = Path(directory) / "t"
    shutil.copy(TRUE, program)
    assert len(str(program)) == length
    return program


def test_path_near_path_max(tmp_path: Path) -> None:
    program = _deep_program(tmp_path / "x", PATH_MAX - 10)
    listed = run("--list", str(program))
    assert listed.returncode == 0 and listed.stdout.splitlines()[0] == os.fsencode(program)
    # Packed under out/.scratchpack-tmp-PID-rootfs/ it is longer than PATH_MAX: a clear error,
    # nothing left behind.
    out = tmp_path / "out"
    err = one_line_error(run(str(program), "-o", str(out)), "File name too long")
    assert "previous outputs are unchanged" in err
    assert sorted(p.name for p in out.iterdir()) == [".scratchpack.lock"]


def test_long_path_that_fits_is_packed(tmp_path: Path) -> None:
    program = _deep_program(tmp_path / "x", 3000)
    out = tmp_path / "o"
    result = run(str(program), "-q", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "rootfs" / str(program).lstrip("/")).is_file()


def test_component_longer_than_name_max(tmp_path: Path) -> None:
    name = tmp_path / ("n" * (NAME_MAX + 1))
    one_line_error(run("--list", str(name)), "no such file")
    one_line_error(run("--list", "a" * 5000), "no such program")
    one_line_error(run("--list", "/" + "/".join(["x" * 250] * 30)), "no such file")


# -- special files under --extra ---------------------------------------------------------------


@pytest.fixture
def specials(tmp_path: Path) -> Path:
    root = make_root(tmp_path / "root")
    folder = root / "etc/special"
    folder.mkdir()
    (folder / "plain").write_text("plain\n")
    os.mkfifo(folder / "fifo")  # no writer: open() would block for ever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock"))
    os.mknod(folder / "tty", 0o600 | 0o020000, os.makedev(5, 0))
    os.mknod(folder / "loop", 0o600 | 0o060000, os.makedev(7, 0))
    return root


def test_special_files_under_extra_are_skipped_with_a_warning(
    specials: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run("--root", str(specials), "/bin/true", "--extra", "/etc/special", "-o", str(out))
    assert result.returncode == 0, result.stderr
    err = os.fsdecode(result.stderr)
    for name, kind in (("fifo", "FIFO"), ("sock", "socket"), ("tty", "device node")):
        assert f"/etc/special/{name}: skipped, a {kind} is not packed" in err
    assert "/etc/special/loop: skipped, a device node" in err
    assert sorted(os.listdir(out / "rootfs/etc/special")) == ["plain"]
    with tarfile.open(out / "rootfs.tar.gz") as tar:
        names = [m.name for m in tar.getmembers() if m.name.startswith("etc/special")]
    assert names == ["etc/special", "etc/special/plain"]


def test_special_files_named_or_globbed_under_extra(specials: Path, tmp_path: Path) -> None:
    for spec in ("/etc/special/fifo", "/etc/special/*", "/etc/special/tty"):
        result = run(
            "--root", str(specials), "/bin/true", "--extra", spec, "-o", str(tmp_path / "o")
        )
        assert result.returncode == 0, result.stderr
        assert b"skipped, a " in result.stderr


def test_link_to_a_special_file_under_extra_is_never_opened(specials: Path, tmp_path: Path) -> None:
    """Through a link it is skipped with a warning, as the special file itself is."""
    (specials / "etc/to-fifo").symlink_to("special/fifo")
    out = tmp_path / "o"
    result = run("--root", str(specials), "/bin/true", "--extra", "/etc/to-fifo", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert b"/etc/to-fifo: skipped, a FIFO is not packed" in result.stderr
    assert not (out / "rootfs/etc/to-fifo").is_symlink()


def test_host_special_files_under_extra(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    result = run(
        "true", "--extra", str(tmp_path / "fifo"), "--extra", "/dev/null", "-o", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    assert b"fifo: skipped, a FIFO" in result.stderr
    assert b"/dev/null: skipped, a device node" in result.stderr


# -- exit codes --------------------------------------------------------------------------------


def test_help_documents_the_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    text = " ".join(os.fsdecode(result.stdout).split())
    assert "Exit codes: 0 done; 1 the closure is incomplete" in text
    assert "2 bad usage or bad input; 130 interrupted" in text
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for row in ("| 0 ", "| 1 ", "| 2 ", "| 130 "):
        assert row in section
