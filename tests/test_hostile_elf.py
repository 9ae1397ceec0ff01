"""Malformed ELF files, made at test time from real ones of this machine, through the CLI.

Whether the program given or a library found on the way: a file that fails the loader's own
header checks is a library the loader rejects (an incomplete closure: listed with an "error",
exit 1 when packing) or skips (another class or machine); a file that passes them but is
malformed further on is bad input: a one-line error naming it, exit 2. Never a traceback (the
CLI runs in-process here, so one fails the test), never a hang (an alarm), never memory
growing with a forged count (a subprocess under RLIMIT_AS).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root

from bundler.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from elfmut import (
    DT_NEEDED,
    DT_STRTAB,
    ET_CORE,
    ET_REL,
    PT_DYNAMIC,
    PT_INTERP,
    PT_NOTE,
    Elf,
)

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")

PROGRAM = "/usr/bin/true"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIB32 = next(
    (p for p in ("/usr/lib32/libc.so.6", "/lib/i386-linux-gnu/libc.so.6") if Path(p).exists()), None
)
TIME_LIMIT = 20  # seconds for one CLI run; the slowest real one here takes well under 1


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def on_alarm(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with deadline(TIME_LIMIT):
        code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_bad_input(result: tuple[int, str, str], name: str, what: str = "") -> None:
    """Exit 2 and exactly one line on stderr, naming the file (and what is wrong)."""
    code, _out, err = result
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"scratchpack: {name}: "), err
    assert what in err, err
    assert "Traceback" not in err


# -- the malformed files ----------------------------------------------------------------------


def patched(source: str, change: Callable[[Elf], object]) -> bytes:
    elf = Elf.read(source)
    change(elf)
    return bytes(elf.data)


def _set_segment(p_type: int, field: str, value: int) -> Callable[[Elf], object]:
    def change(elf: Elf) -> None:
        base = elf.segment(p_type)
        assert base is not None
        elf.set_phdr(base, field, value)

    return change


def _last_entry_past_the_end(elf: Elf) -> None:
    """The program header table ends one entry after the end of the file."""
    elf.set_header("e_phoff", len(elf.data) - elf.header("e_phentsize"))
    elf.set_header("e_phnum", 2)


def _needed_past_the_end(elf: Elf) -> None:
    assert elf.set_dyn_value(DT_NEEDED, len(elf.data) * 2)


def _needed_unterminated(elf: Elf) -> None:
    """DT_NEEDED at the last byte of the file, which is not a NUL: the string has no end."""
    strtab = elf.strtab_offset()
    assert strtab is not None
    elf.data[-1] = ord("x")
    assert elf.set_dyn_value(DT_NEEDED, len(elf.data) - 1 - strtab)


# (name, change, what the message says): all pass the loader's header checks, fail after.
PAST_THE_HEADER: list[tuple[str, Callable[[Elf], object], str]] = [
    ("e_phoff past the end", lambda e: e.set_header("e_phoff", 1 << 62), "past the end"),
    ("e_phoff at the end", lambda e: e.set_header("e_phoff", len(e.data)), "past the end"),
    ("e_phoff overflows", lambda e: e.set_header("e_phoff", (1 << 64) - 8), "past the end"),
    ("e_phnum huge", lambda e: e.set_header("e_phnum", 0xFFFF), "implausible"),
    ("e_phnum past the end", _last_entry_past_the_end, "past the end"),
    ("PT_DYNAMIC p_offset", _set_segment(PT_DYNAMIC, "p_offset", 1 << 40), "past the end"),
    ("PT_DYNAMIC p_filesz", _set_segment(PT_DYNAMIC, "p_filesz", 1 << 62), "past the end"),
    ("PT_INTERP p_offset", _set_segment(PT_INTERP, "p_offset", 1 << 40), "past the end"),
    ("PT_INTERP p_filesz", _set_segment(PT_INTERP, "p_filesz", 1 << 62), "implausible"),
    ("PT_NOTE p_offset", _set_segment(PT_NOTE, "p_offset", 1 << 40), "past the end"),
    ("DT_STRTAB unmapped", lambda e: e.set_dyn_value(DT_STRTAB, 1 << 60), "no loaded segment"),
    ("DT_NEEDED past the end", _needed_past_the_end, "past the end"),
    ("DT_NEEDED unterminated", _needed_unterminated, "not NUL-terminated"),
]
# Fail the header checks a program is judged by (e_phentsize is checked by us, and by glibc).
HEADER_ONLY: list[tuple[str, Callable[[Elf], object], str]] = [
    ("e_phentsize 13", lambda e: e.set_header("e_phentsize", 13), "program header size 13"),
    ("e_phentsize 0", lambda e: e.set_header("e_phentsize", 0), "program header size 0"),
    ("bad class", lambda e: e.data.__setitem__(4, 9), "unknown ELF class 9"),
    ("bad encoding", lambda e: e.data.__setitem__(5, 7), "unknown ELF data encoding 7"),
    (
        "magic broken after a valid start",
        lambda e: e.data.__setitem__(3, ord("G")),
        "neither an ELF",
    ),
    ("ET_REL", lambda e: e.set_header("e_type", ET_REL), "a relocatable object is not"),
    ("ET_CORE", lambda e: e.set_header("e_type", ET_CORE), "a core dump is not"),
    ("e_type 0xfe00", lambda e: e.set_header("e_type", 0xFE00), "an ELF file is not"),
]


def truncations(source: str) -> Iterator[tuple[int, bytes]]:
    data = Path(os.path.realpath(source)).read_bytes()
    for cut in Elf(bytearray(data)).boundaries():
        yield cut, data[:cut]


# -- the program given ------------------------------------------------------------------------


def _program(tmp_path: Path, data: bytes, name: str = "prog") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(("case", "change", "what"), PAST_THE_HEADER + HEADER_ONLY)
def test_forged_program(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: Callable[[Elf], object],
    what: str,
) -> None:
    program = _program(tmp_path, patched(PROGRAM, change))
    assert_bad_input(cli(capsys, "--list", program), program, what)
    assert_bad_input(cli(capsys, "--list", "--json", program), program, what)
    out = tmp_path / "out"
    assert_bad_input(cli(capsys, program, "-o", str(out)), program, what)
    assert not (out / "rootfs").exists() and not (out / "rootfs.tar.gz").exists()


@pytest.mark.parametrize("source", [PROGRAM, LIBC, *([LIB32] if LIB32 else [])])
def test_program_truncated_at_every_boundary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    cuts = 0
    for cut, data in truncations(source):
        program = _program(tmp_path, data)
        code, out, err = cli(capsys, "--list", program)
        if cut < 4:  # no magic left: neither ELF nor script
            assert_bad_input((code, out, err), program, "neither an ELF file")
            continue
        assert_bad_input((code, out, err), program)
        cuts += 1
    assert cuts > 30
    # And the pack, at a few of them (each writes nothing, but costs more).
    for cut, data in list(truncations(source))[4::10]:
        program = _program(tmp_path, data)
        out_dir = tmp_path / f"out{cut}"
        assert_bad_input(cli(capsys, program, "-q", "-o", str(out_dir)), program)
        assert not (out_dir / "rootfs.tar.gz").exists()


# The same forgeries with values that fit 32-bit fields.
PAST_THE_HEADER_32: list[tuple[str, Callable[[Elf], object], str]] = [
    ("e_phoff past the end", lambda e: e.set_header("e_phoff", 0xFFFFFFF0), "past the end"),
    ("e_phoff at the end", lambda e: e.set_header("e_phoff", len(e.data)), "past the end"),
    ("e_phnum huge", lambda e: e.set_header("e_phnum", 0xFFFF), "implausible"),
    ("e_phnum past the end", _last_entry_past_the_end, "past the end"),
    ("PT_DYNAMIC p_offset", _set_segment(PT_DYNAMIC, "p_offset", 0xF0000000), "past the end"),
    ("PT_DYNAMIC p_filesz", _set_segment(PT_DYNAMIC, "p_filesz", 0xFFFFFF00), "past the end"),
    ("DT_STRTAB unmapped", lambda e: e.set_dyn_value(DT_STRTAB, 0xF0000000), "no loaded"),
    ("DT_NEEDED past the end", _needed_past_the_end, "past the end"),
    ("DT_NEEDED unterminated", _needed_unterminated, "not NUL-terminated"),
]


@pytest.mark.skipif(LIB32 is None, reason="needs a 32-bit libc (gcc-multilib)")
@pytest.mark.parametrize(("case", "change", "what"), PAST_THE_HEADER_32 + HEADER_ONLY)
def test_forged_32_bit_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: Callable[[Elf], object],
    what: str,
) -> None:
    assert LIB32 is not None
    program = _program(tmp_path, patched(LIB32, change))
    assert_bad_input(cli(capsys, "--list", program), program, what)


def test_32_bit_and_big_endian_files_read_when_well_formed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not malformed at all: listed (their libraries, of another kind, are not found)."""
    big = _program(tmp_path, bytes(Elf.read(PROGRAM).to_big_endian().data), "big")
    code, out, err = cli(capsys, "--list", "--json", big)
    assert code == 0, err
    (binary,) = json.loads(out)["binaries"]
    assert binary["path"] == big and binary["libraries"][0]["soname"] == "libc.so.6"
    if LIB32:
        code, out, err = cli(capsys, "--list", "--json", LIB32)
        assert code == 0, err
        assert json.loads(out)["binaries"][0]["path"] == LIB32


@pytest.mark.parametrize(("case", "change", "what"), PAST_THE_HEADER[:7])
def test_forged_big_endian_program(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: Callable[[Elf], object],
    what: str,
) -> None:
    elf = Elf.read(PROGRAM).to_big_endian()
    change(elf)
    program = _program(tmp_path, bytes(elf.data), "big")
    assert_bad_input(cli(capsys, "--list", program), program, what)


def test_real_relocatable_object_and_core_shaped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects = [
        p for p in ("/usr/lib/x86_64-linux-gnu/crt1.o", "/usr/lib32/crt1.o") if Path(p).exists()
    ]
    for path in objects:
        assert_bad_input(cli(capsys, "--list", path), path, "a relocatable object is not")
    core = _program(tmp_path, patched(PROGRAM, lambda e: e.set_header("e_type", ET_CORE)), "core")
    assert_bad_input(cli(capsys, core, "-o", str(tmp_path / "o")), core, "a core dump")


# -- a library found on the way ---------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


ROOT_LIBC = "usr/lib/x86_64-linux-gnu/libc.so.6"
IMAGE_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"  # as the loader finds it (/lib -> usr/lib)


def _replace_libc(root: Path, data: bytes) -> None:
    lib = root / ROOT_LIBC
    lib.unlink()
    lib.write_bytes(data)


@pytest.mark.parametrize(("case", "change", "what"), PAST_THE_HEADER)
def test_forged_library_in_a_root(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: Callable[[Elf], object],
    what: str,
) -> None:
    """It passes the loader's header checks: bad input, naming the library, exit 2."""
    if case.startswith("PT_INTERP") and Elf.read(LIBC).segment(PT_INTERP) is None:
        pytest.skip("this libc has no PT_INTERP")
    _replace_libc(root, patched(LIBC, change))
    assert_bad_input(cli(capsys, "--list", "--root", str(root), "/bin/true"), IMAGE_LIBC, what)
    assert_bad_input(
        cli(capsys, "--list", "--json", "--root", str(root), "/bin/true"), IMAGE_LIBC, what
    )
    out = tmp_path / "out"
    assert_bad_input(cli(capsys, "--root", str(root), "/bin/true", "-o", str(out)), IMAGE_LIBC)
    assert not out.exists() or not (out / "rootfs").exists()


def test_library_truncated_at_every_boundary(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for cut, data in truncations(LIBC):
        _replace_libc(root, data)
        code, out, err = cli(capsys, "--list", "--json", "--root", str(root), "/bin/true")
        if cut < 64:
            # glibc's open_verify: "file too short" (or "invalid ELF header"): the loader
            # stops there, so the closure is incomplete, listed with the error.
            assert code == 0, err
            (lib,) = json.loads(out)["binaries"][0]["libraries"]
            assert lib["path"] is None and lib["file"] == IMAGE_LIBC
            assert lib["error"] in ("file too short", "invalid ELF header"), lib
        else:
            assert_bad_input((code, out, err), IMAGE_LIBC)


# (change, the loader's message) for files the loader refuses at the header: incomplete closure.
LOADER_REJECTS: list[tuple[str, Callable[[Elf], object], str]] = [
    ("bad magic", lambda e: e.data.__setitem__(1, ord("X")), "invalid ELF header"),
    ("wrong OS ABI", lambda e: e.data.__setitem__(7, 97), "ELF file OS ABI invalid"),
    ("ABI version", lambda e: e.data.__setitem__(8, 9), "ELF file ABI version invalid"),
    ("EI_VERSION", lambda e: e.data.__setitem__(6, 2), "version ident does not match"),
    ("padding", lambda e: e.data.__setitem__(12, 1), "nonzero padding in e_ident"),
    ("e_version", lambda e: e.set_header("e_version", 7), "ELF file version does not match"),
    ("ET_REL", lambda e: e.set_header("e_type", ET_REL), "only ET_DYN and ET_EXEC"),
    ("ET_CORE", lambda e: e.set_header("e_type", ET_CORE), "only ET_DYN and ET_EXEC"),
    ("phentsize", lambda e: e.set_header("e_phentsize", 13), "phentsize not the expected size"),
    ("big-endian", lambda e: e.data.__setitem__(5, 2), ""),  # skipped or refused: see below
]


@pytest.mark.parametrize(("case", "change", "error"), LOADER_REJECTS)
def test_library_the_loader_rejects_is_an_incomplete_closure(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: Callable[[Elf], object],
    error: str,
) -> None:
    _replace_libc(root, patched(LIBC, change))
    code, out, err = cli(capsys, "--list", "--json", "--root", str(root), "/bin/true")
    assert code == 0, err
    doc = json.loads(out)
    (missing,) = doc["missing"]
    assert missing["soname"] == "libc.so.6"
    if error:
        assert error in missing["error"] and missing["path"] == IMAGE_LIBC
        assert f"libc.so.6: {missing['error']} (needed by /bin/true)" in err
    out_dir = tmp_path / "out"
    code, _out, err = cli(capsys, "--root", str(root), "/bin/true", "-o", str(out_dir))
    assert code == 1, err
    assert "nothing was written" in err and "Traceback" not in err
    assert not (out_dir / "rootfs").exists()


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("other machine", lambda e: e.set_header("e_machine", 183)),  # aarch64
        ("other class", lambda e: e.data.__setitem__(4, 1)),
    ],
)
def test_library_of_another_kind_is_skipped(
    root: Path, capsys: pytest.CaptureFixture[str], case: str, change: Callable[[Elf], object]
) -> None:
    """32- and 64-bit libraries share directories: the loader passes over them, not found."""
    _replace_libc(root, patched(LIBC, change))
    code, out, err = cli(capsys, "--list", "--json", "--root", str(root), "/bin/true")
    assert code == 0, err
    (missing,) = json.loads(out)["missing"]
    assert missing["soname"] == "libc.so.6" and "error" not in missing


def test_a_real_32_bit_library_is_skipped(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if LIB32 is None:
        pytest.skip("needs a 32-bit libc (gcc-multilib)")
    _replace_libc(root, Path(os.path.realpath(LIB32)).read_bytes())
    code, out, err = cli(capsys, "--list", "--json", "--root", str(root), "/bin/true")
    assert code == 0, err
    (missing,) = json.loads(out)["missing"]
    assert "error" not in missing


@pytest.fixture(scope="module")
def rpath_program(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(program linked with -rpath /opt/lib against libfoo.so.1, libfoo.so.1), built by gcc."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    work = tmp_path_factory.mktemp("rpath")
    (work / "foo.c").write_text("int foo(void) { return 0; }\n")
    (work / "main.c").write_text("int foo(void);\nint main(void) { return foo(); }\n")
    lib, prog = work / "libfoo.so.1", work / "prog"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o", str(lib), str(work / "foo.c")],
        check=True,
    )
    subprocess.run(
        ["gcc", "-o", str(prog), str(work / "main.c"), str(lib), "-Wl,-rpath,/opt/lib"],
        check=True,
    )
    return prog, lib


@pytest.mark.parametrize(("case", "change", "what"), PAST_THE_HEADER[:8])
def test_forged_library_in_an_rpath_directory(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rpath_program: tuple[Path, Path],
    case: str,
    change: Callable[[Elf], object],
    what: str,
) -> None:
    prog, lib = rpath_program
    if case.startswith("PT_INTERP") and Elf.read(lib).segment(PT_INTERP) is None:
        pytest.skip("the library has no PT_INTERP")
    shutil.copy2(prog, root / "usr/bin/prog")
    (root / "opt/lib").mkdir(parents=True)
    (root / "opt/lib/libfoo.so.1").write_bytes(patched(str(lib), change))
    result = cli(capsys, "--list", "--root", str(root), "/usr/bin/prog")
    assert_bad_input(result, "/opt/lib/libfoo.so.1", what)
    out = tmp_path / "out"
    assert_bad_input(
        cli(capsys, "--root", str(root), "/usr/bin/prog", "-o", str(out)), "/opt/lib/libfoo.so.1"
    )
    # The intact library resolves through the RPATH.
    shutil.copy2(lib, root / "opt/lib/libfoo.so.1")
    code, listed, err = cli(capsys, "--list", "--root", str(root), "/usr/bin/prog")
    assert code == 0 and "/opt/lib/libfoo.so.1" in listed.splitlines(), err


def test_special_files_as_libraries_are_never_opened(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO without a writer would block open() for ever; a device node may act on open."""
    lib = root / ROOT_LIBC
    lib.unlink()
    os.mkfifo(lib)
    code, out, err = cli(capsys, "--list", "--json", "--root", str(root), "/bin/true")
    assert code == 0, err
    assert json.loads(out)["missing"][0]["error"] == "file too short"
    lib.unlink()
    os.mknod(lib, 0o600 | 0o020000, os.makedev(5, 0))  # /dev/tty: opening it is not harmless
    code, out, err = cli(capsys, "--list", "--json", "--root", str(root), "/bin/true")
    assert code == 0 and json.loads(out)["missing"][0]["error"] == "file too short", err


# -- memory and time: forged sizes in sparse files ----------------------------------------------

MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: the CLI needs a fraction of it


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited,
    )


def _sparse(path: Path, data: bytes, size: int = 64 << 30) -> None:
    """``data`` at the start of a sparse file of ``size`` bytes: every forged offset and size up
    to there is "inside the file", so only a cap on what is read keeps memory bounded."""
    path.write_bytes(data)
    os.truncate(path, size)


@pytest.mark.parametrize(
    ("case", "change", "what"),
    [
        ("PT_INTERP", _set_segment(PT_INTERP, "p_filesz", 32 << 30), "PT_INTERP of"),
        ("PT_DYNAMIC", _set_segment(PT_DYNAMIC, "p_filesz", 32 << 30), ""),
        ("PT_NOTE", _set_segment(PT_NOTE, "p_filesz", 32 << 30), ""),
        ("e_phnum", lambda e: e.set_header("e_phnum", 0xFFFE), "implausible"),
        ("DT_NEEDED far", lambda e: e.set_dyn_value(DT_NEEDED, 40 << 30), ""),
    ],
)
def test_forged_sizes_in_a_sparse_program_use_bounded_memory(
    tmp_path: Path, case: str, change: Callable[[Elf], object], what: str
) -> None:
    program = tmp_path / "sparse"
    _sparse(program, patched(PROGRAM, change))
    program.chmod(0o755)
    result = run_limited("--list", str(program))
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        assert result.stderr.startswith(f"scratchpack: {program}: ") and what in result.stderr


def test_many_forged_note_segments_are_read_once(tmp_path: Path) -> None:
    """4000 PT_NOTE entries naming one big .note.dlopen: read (and parsed) within one budget."""
    elf = Elf.read(PROGRAM)
    entries = [{"feature": "f", "soname": ["libnothere.so.1"], "priority": "suggested"}] * 3000
    desc = json.dumps(entries).encode() + b"\0"
    desc += b"\0" * (-len(desc) % 4)
    note = len(desc).to_bytes(4, "little")
    note = (4).to_bytes(4, "little") + note + (0x407C0C0A).to_bytes(4, "little") + b"FDO\0" + desc
    phentsize = elf.header("e_phentsize")
    table = bytearray()
    note_at = len(elf.data)
    elf.data += note
    template = bytearray(elf.data[elf.phdr_offsets()[0] : elf.phdr_offsets()[0] + phentsize])
    for base in elf.phdr_offsets():
        table += elf.data[base : base + phentsize]
    one = Elf(template)
    one.data[0:4] = PT_NOTE.to_bytes(4, "little")
    for field, value in (("p_offset", note_at), ("p_filesz", len(note)), ("p_align", 4)):
        offset, _fmt = {"p_offset": (8, "Q"), "p_filesz": (32, "Q"), "p_align": (48, "Q")}[field]
        one.data[offset : offset + 8] = value.to_bytes(8, "little")
    table += bytes(one.data) * 4000
    elf.set_header("e_phoff", len(elf.data))
    elf.set_header("e_phnum", len(table) // phentsize)
    elf.data += table
    program = tmp_path / "notes"
    program.write_bytes(bytes(elf.data))
    program.chmod(0o755)
    result = run_limited("--list", "--dlopen", "suggested", str(program))
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr, result.stderr


def test_deeply_nested_dlopen_note_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: json.loads of "[[[[..." raised RecursionError, a traceback."""
    elf = Elf.read(PROGRAM)
    desc = b"[" * 100000 + b"]" * 100000 + b"\0"
    desc += b"\0" * (-len(desc) % 4)
    note = (4).to_bytes(4, "little") + len(desc).to_bytes(4, "little")
    note += (0x407C0C0A).to_bytes(4, "little") + b"FDO\0" + desc
    base = elf.segment(PT_NOTE)
    assert base is not None
    elf.set_phdr(base, "p_offset", len(elf.data))
    elf.set_phdr(base, "p_filesz", len(note))
    elf.set_phdr(base, "p_align", 4)
    elf.data += note
    program = _program(tmp_path, bytes(elf.data))
    assert_bad_input(cli(capsys, "--list", program), program, ".note.dlopen holds no valid JSON")
