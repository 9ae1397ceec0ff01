"""The command line as a user drives it: output shapes, --root, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from fakeroot import make_root, run

from bundler.cli import HELP_SECTIONS, command, main

LOADER = "/lib64/ld-linux-x86-64.so.2"
needs_glibc_x86_64 = pytest.mark.skipif(
    not Path(LOADER).exists(), reason="needs an x86-64 glibc host"
)


@needs_glibc_x86_64
def test_plain_list_of_a_program_on_path() -> None:
    result = run("--list", "ls")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == shutil.which("ls")
    assert lines[1] == LOADER
    assert any(line.endswith("/libc.so.6") for line in lines)
    assert len(lines) == len(set(lines))


@needs_glibc_x86_64
def test_json_shape() -> None:
    result = run("--list", "--json", "/bin/ls")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"binaries", "missing"}
    (binary,) = doc["binaries"]
    assert binary["path"] == "/bin/ls"
    assert binary["interpreter"] == LOADER
    sonames = [lib["soname"] for lib in binary["libraries"]]
    assert "libc.so.6" in sonames
    assert all(lib["path"] and lib["path"].startswith("/") for lib in binary["libraries"])
    assert doc["missing"] == []


def test_missing_program_is_one_line_exit_2() -> None:
    result = run("--list", "no-such-program-xyz")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no-such-program-xyz" in result.stderr and "Traceback" not in result.stderr


def test_a_directory_is_not_a_program() -> None:
    result = run("--list", "/usr")
    assert result.returncode == 2
    assert "/usr: is a directory" in result.stderr


def test_not_elf_not_script(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    result = run("--list", str(junk))
    assert result.returncode == 2
    assert f"{junk}: neither an ELF file nor a #! script" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert run("--list").returncode == 2
    assert run("--list", "--hwcaps", "x86-64-v9", "ls").returncode == 2
    assert run("--bogus-flag", "ls").returncode == 2


def test_help_teaches() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("--list", "--json", "--root", "Exit codes", "Examples"):
        assert word in result.stdout


def _fake_root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


@needs_glibc_x86_64
def test_root_resolves_inside_the_root(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    result = run("--list", "--json", "--root", str(root), "true")
    assert result.returncode == 0, result.stderr
    (binary,) = json.loads(result.stdout)["binaries"]
    assert binary["path"] == "/usr/bin/true"  # found on the root's PATH
    assert binary["libraries"] == [
        {"soname": "libc.so.6", "path": "/lib/x86_64-linux-gnu/libc.so.6", "via": "default"}
    ]


@needs_glibc_x86_64
def test_root_missing_library_is_listed_and_exit_0(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    (root / "usr/lib/x86_64-linux-gnu/libc.so.6").unlink()
    result = run("--list", "--json", "--root", str(root), "/bin/true")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["missing"][0]["soname"] == "libc.so.6"
    assert doc["missing"][0]["needed_by"] == "/bin/true"
    assert doc["binaries"][0]["libraries"] == [{"soname": "libc.so.6", "path": None}]
    assert "libc.so.6: not found (needed by /bin/true)" in result.stderr


@needs_glibc_x86_64
def test_root_never_reads_a_host_library_through_a_link(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    libc = root / "usr/lib/x86_64-linux-gnu/libc.so.6"
    libc.unlink()
    libc.symlink_to("/lib/x86_64-linux-gnu/libc.so.6")  # exists on the host, not in the root
    result = run("--list", "--json", "--root", str(root), "/bin/true")
    doc = json.loads(result.stdout)
    assert doc["missing"] and doc["missing"][0]["soname"] == "libc.so.6"


@needs_glibc_x86_64
def test_scripts_bring_their_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    doc = json.loads(run("--list", "--json", str(script)).stdout)
    kinds = [(b["path"], b["kind"]) for b in doc["binaries"]]
    assert kinds[0] == (str(script), "script")
    assert kinds[1] == ("/bin/sh", "dynamic")


@needs_glibc_x86_64
def test_many_programs_same_answer_with_and_without_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    libs = sorted(str(p) for p in Path("/usr/lib/x86_64-linux-gnu").glob("lib*.so.*"))
    libs = [p for p in libs if Path(p).is_file() and Path(p).read_bytes()[:4] == b"\x7fELF"][:300]
    assert main(["--list", "--json", "-j", "1", *libs]) == 0
    single = capsys.readouterr().out
    assert main(["--list", "--json", "-j", "2", *libs]) == 0
    pooled = capsys.readouterr().out
    assert single == pooled
    assert len(json.loads(single)["binaries"]) == len(libs)


def test_relocatable_object_is_not_a_program(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    source = tmp_path / "r.c"
    source.write_text("int f(void) { return 1; }\n")
    subprocess.run(["gcc", "-c", str(source), "-o", str(tmp_path / "r.o")], check=True)
    result = run("--list", str(tmp_path / "r.o"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"scratchpack: {tmp_path}/r.o: a relocatable object is not a program or library\n"
    )


def test_help_in_sections_names_every_option_once() -> None:
    placed = [name for _title, names in HELP_SECTIONS for name in names]
    assert len(placed) == len(set(placed)), "an option in two sections"
    options = {p.name for p in command.params if isinstance(p, click.Option)} | {"help"}
    assert options - set(placed) == set(), "options with no section in --help"
    assert set(placed) - options == set(), "sections name options that do not exist"
    text = run("--help").stdout
    titles = [title for title, _names in HELP_SECTIONS]
    where = [text.index(f"\n{title}:\n") for title in titles]
    assert where == sorted(where)
    assert "Other options" not in text
    # each option under its own heading: --trace-user among the tracing ones
    tracing = text[text.index("Tracing a real run:") : text.index("The image's configuration:")]
    assert "--trace-user" in tracing and "--tag" not in tracing


@needs_glibc_x86_64
def test_allow_missing_packs_without_a_missing_loader(tmp_path: Path) -> None:
    """A root whose program names a loader the root lacks: refused, and with --allow-missing
    packed without it (the plan does not try to copy a file that is not there)."""
    root = _fake_root(tmp_path)
    (root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unlink()
    refused = run("--root", str(root), "true", "-o", str(tmp_path / "refused"), "-q")
    assert refused.returncode == 1, refused.stderr
    assert "ld-linux-x86-64.so.2" in refused.stderr
    out = tmp_path / "out"
    packed = run("--root", str(root), "true", "--allow-missing", "-o", str(out), "-q")
    assert packed.returncode == 0, packed.stderr
    assert (out / "rootfs/usr/bin/true").is_file()
    assert not (out / "rootfs/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").exists()
