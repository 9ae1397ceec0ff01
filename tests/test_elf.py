"""ELF facts against readelf, and hostile files: every failure is a BadElf naming the file."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bundler.errors import BadElf
from bundler.loader.elf import DF_1_NODEFLIB, read_elf

SAMPLES = ["/usr/bin/python3", "/usr/bin/ls", "/lib/x86_64-linux-gnu/libc.so.6", "/bin/bash"]


def _readelf(path: str) -> dict[str, object]:
    dyn = subprocess.run(["readelf", "-dW", path], capture_output=True, text=True).stdout
    prog = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True).stdout
    interp = re.search(r"\[Requesting program interpreter: (.*)\]", prog)
    one = lambda tag: (re.findall(rf"\({tag}\)\s+.*?\[(.*)\]", dyn) or [None])[0]  # noqa: E731
    return {
        "needed": tuple(re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dyn)),
        "soname": one("SONAME"),
        "rpath": one("RPATH"),
        "runpath": one("RUNPATH"),
        "interpreter": interp.group(1) if interp else None,
        "nodeflib": "NODEFLIB" in dyn,
    }


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
@pytest.mark.parametrize("path", [p for p in SAMPLES if Path(p).exists()])
def test_facts_match_readelf(path: str) -> None:
    info = read_elf(path)
    expected = _readelf(path)
    assert info.needed == expected["needed"]
    assert info.soname == expected["soname"]
    assert info.rpath == expected["rpath"]
    assert info.runpath == expected["runpath"]
    assert info.interpreter == expected["interpreter"]
    assert bool(info.flags_1 & DF_1_NODEFLIB) == expected["nodeflib"]
    assert info.ident.elf_class == 64 and info.ident.little_endian and info.ident.machine == 62


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
def test_facts_match_readelf_over_a_directory() -> None:
    checked = 0
    for path in sorted(Path("/usr/lib/x86_64-linux-gnu").glob("lib*.so.*"))[:150]:
        if path.is_symlink() or not path.is_file() or path.read_bytes()[:4] != b"\x7fELF":
            continue
        info = read_elf(str(path))
        expected = _readelf(str(path))
        assert (info.needed, info.soname, info.runpath) == (
            expected["needed"],
            expected["soname"],
            expected["runpath"],
        ), path
        checked += 1
    assert checked > 20


def _header_boundaries(data: bytes) -> list[int]:
    """Cut points at every header and table boundary of a 64-bit little-endian ELF file."""
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    cuts = {0, 1, 4, 5, 15, 16, 17, 52, 63, 64, phoff, phoff + 1}
    for i in range(phnum + 1):
        cuts.add(phoff + i * phentsize)
        cuts.add(phoff + i * phentsize - 1)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        (offset,) = struct.unpack_from("<Q", data, phoff + i * phentsize + 8)
        (filesz,) = struct.unpack_from("<Q", data, phoff + i * phentsize + 32)
        if p_type in (2, 3):  # PT_DYNAMIC, PT_INTERP
            cuts.update({offset, offset + 1, offset + filesz - 1})
    return sorted(c for c in cuts if 0 <= c < len(data))


def test_truncation_at_every_header_boundary(tmp_path: Path) -> None:
    data = Path("/usr/bin/python3").resolve().read_bytes()
    target = tmp_path / "cut"
    for cut in _header_boundaries(data):
        target.write_bytes(data[:cut])
        with pytest.raises(BadElf) as caught:
            read_elf(str(target), "/img/cut")
        assert str(caught.value).startswith("/img/cut: ")
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (0x20, "<Q", 1 << 60, "past the end"),  # e_phoff
        (0x38, "<H", 0xFFFF, "implausible"),  # e_phnum
        (0x36, "<H", 13, "program header size"),  # e_phentsize
        (4, "<B", 9, "unknown ELF class"),
        (5, "<B", 7, "unknown ELF data encoding"),
        (1, "<B", ord("X"), "not an ELF file"),
    ],
)
def test_forged_fields(tmp_path: Path, offset: int, fmt: str, value: int, message: str) -> None:
    data = bytearray(Path("/usr/bin/python3").resolve().read_bytes()[:65536])
    struct.pack_into(fmt, data, offset, value)
    target = tmp_path / "forged"
    target.write_bytes(bytes(data))
    with pytest.raises(BadElf, match=message):
        read_elf(str(target))


def test_dynamic_segment_out_of_range(tmp_path: Path) -> None:
    data = bytearray(Path("/usr/bin/python3").resolve().read_bytes())
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if struct.unpack_from("<I", data, base)[0] == 2:
            struct.pack_into("<Q", data, base + 8, len(data) + 4096)
    target = tmp_path / "dyn"
    target.write_bytes(bytes(data))
    with pytest.raises(BadElf, match="dynamic section lies past the end"):
        read_elf(str(target))


def test_static_program_has_no_dynamic(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    source = tmp_path / "s.c"
    source.write_text("int main(void){return 0;}\n")
    result = subprocess.run(["gcc", "-static", str(source), "-o", str(tmp_path / "s")])
    if result.returncode != 0:
        pytest.skip("no static libc")
    info = read_elf(str(tmp_path / "s"))
    assert info.interpreter is None and not info.needed and info.is_static
