"""Malformed ELF files made from real ones: field offsets, patches, truncation points, mutators.

Shared by tests/test_hostile_elf.py, tests/test_fuzz_elf.py and fuzz/fuzz_elf.py. Offsets are
the ELF specification's (gABI), written out here rather than taken from bundler.loader.elf, so
that a mistake there is not repeated here.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# (offset, struct format) of the ELF header fields after e_ident, per class.
EHDR = {
    64: {
        "e_type": (16, "H"),
        "e_machine": (18, "H"),
        "e_version": (20, "I"),
        "e_entry": (24, "Q"),
        "e_phoff": (32, "Q"),
        "e_shoff": (40, "Q"),
        "e_flags": (48, "I"),
        "e_ehsize": (52, "H"),
        "e_phentsize": (54, "H"),
        "e_phnum": (56, "H"),
        "e_shentsize": (58, "H"),
        "e_shnum": (60, "H"),
        "e_shstrndx": (62, "H"),
    },
    32: {
        "e_type": (16, "H"),
        "e_machine": (18, "H"),
        "e_version": (20, "I"),
        "e_entry": (24, "I"),
        "e_phoff": (28, "I"),
        "e_shoff": (32, "I"),
        "e_flags": (36, "I"),
        "e_ehsize": (40, "H"),
        "e_phentsize": (42, "H"),
        "e_phnum": (44, "H"),
        "e_shentsize": (46, "H"),
        "e_shnum": (48, "H"),
        "e_shstrndx": (50, "H"),
    },
}
PHDR = {
    64: {
        "p_type": (0, "I"),
        "p_flags": (4, "I"),
        "p_offset": (8, "Q"),
        "p_vaddr": (16, "Q"),
        "p_paddr": (24, "Q"),
        "p_filesz": (32, "Q"),
        "p_memsz": (40, "Q"),
        "p_align": (48, "Q"),
    },
    32: {
        "p_type": (0, "I"),
        "p_offset": (4, "I"),
        "p_vaddr": (8, "I"),
        "p_paddr": (12, "I"),
        "p_filesz": (16, "I"),
        "p_memsz": (20, "I"),
        "p_flags": (24, "I"),
        "p_align": (28, "I"),
    },
}
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 14, 15, 29
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
# Version records, the same in both classes: (offset, struct format) of each field, in order.
VERNEED = ((0, "H"), (2, "H"), (4, "I"), (8, "I"), (12, "I"))  # version cnt file aux next
VERNAUX = ((0, "I"), (4, "H"), (6, "H"), (8, "I"), (12, "I"))  # hash flags other name next
VERDEF = ((0, "H"), (2, "H"), (4, "H"), (6, "H"), (8, "I"), (12, "I"), (16, "I"))
VERDAUX = ((0, "I"), (4, "I"))  # name next
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4

# Values that break parsers: zero, one, the top of every width, sign bits.
INTERESTING = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 32,
    1 << 62,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
)


@dataclass
class Elf:
    """A mutable view of an ELF file's header, program headers and dynamic array."""

    data: bytearray

    @classmethod
    def read(cls, path: str | Path) -> Elf:
        return cls(bytearray(Path(os.path.realpath(path)).read_bytes()))

    @property
    def elf_class(self) -> int:
        return 64 if self.data[4] == 2 else 32

    @property
    def order(self) -> str:
        return "<" if self.data[5] == 1 else ">"

    def get(self, offset: int, fmt: str) -> int:
        return int(struct.unpack_from(self.order + fmt, self.data, offset)[0])

    def put(self, offset: int, fmt: str, value: int) -> None:
        size = struct.calcsize(fmt)
        value &= (1 << (8 * size)) - 1  # wrap to the field's width
        struct.pack_into(self.order + fmt, self.data, offset, value)

    def header(self, name: str) -> int:
        return self.get(*EHDR[self.elf_class][name])

    def set_header(self, name: str, value: int) -> None:
        offset, fmt = EHDR[self.elf_class][name]
        self.put(offset, fmt, value)

    def phdr_offsets(self) -> list[int]:
        phoff, size, count = (
            self.header("e_phoff"),
            self.header("e_phentsize"),
            self.header("e_phnum"),
        )
        return [phoff + i * size for i in range(count)]

    def phdr(self, base: int, name: str) -> int:
        return self.get(base + PHDR[self.elf_class][name][0], PHDR[self.elf_class][name][1])

    def set_phdr(self, base: int, name: str, value: int) -> None:
        offset, fmt = PHDR[self.elf_class][name]
        self.put(base + offset, fmt, value)

    def segment(self, p_type: int) -> int | None:
        """The program header offset of the first segment of a type."""
        return next((b for b in self.phdr_offsets() if self.phdr(b, "p_type") == p_type), None)

    def dyn_entries(self) -> Iterator[tuple[int, int, int]]:
        """(file offset of the entry, d_tag, d_val) up to DT_NULL."""
        base = self.segment(PT_DYNAMIC)
        if base is None:
            return
        fmt = "Q" if self.elf_class == 64 else "I"
        size = struct.calcsize(fmt)
        offset = self.phdr(base, "p_offset")
        end = offset + self.phdr(base, "p_filesz")
        while offset + 2 * size <= min(end, len(self.data)):
            tag, value = self.get(offset, fmt), self.get(offset + size, fmt)
            yield offset, tag, value
            if tag == DT_NULL:
                return
            offset += 2 * size

    def set_dyn_value(self, tag: int, value: int, which: int = 0) -> bool:
        fmt = "Q" if self.elf_class == 64 else "I"
        seen = 0
        for offset, entry_tag, _ in self.dyn_entries():
            if entry_tag == tag:
                if seen == which:
                    self.put(offset + struct.calcsize(fmt), fmt, value)
                    return True
                seen += 1
        return False

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        for base in self.phdr_offsets():
            if self.phdr(base, "p_type") != PT_LOAD:
                continue
            start, size = self.phdr(base, "p_vaddr"), self.phdr(base, "p_filesz")
            if start <= vaddr < start + size:
                return vaddr - start + self.phdr(base, "p_offset")
        return None

    def strtab_offset(self) -> int | None:
        strtab = next((v for _o, t, v in self.dyn_entries() if t == DT_STRTAB), None)
        return None if strtab is None else self.vaddr_to_offset(strtab)

    def field_offsets(self) -> list[tuple[int, str]]:
        """(file offset, format) of every header, program header and dynamic field: where
        patches hurt most."""
        found = [(offset, fmt) for offset, fmt in EHDR[self.elf_class].values()]
        found += [(i, "B") for i in range(16)]
        if self.header("e_phentsize") == (56 if self.elf_class == 64 else 32):
            for base in self.phdr_offsets():
                if base + self.header("e_phentsize") > len(self.data):
                    break
                found += [(base + off, fmt) for off, fmt in PHDR[self.elf_class].values()]
        fmt = "Q" if self.elf_class == 64 else "I"
        try:
            entries = list(self.dyn_entries())
        except struct.error:
            entries = []
        for offset, _tag, _value in entries[:64]:
            found += [(offset, fmt), (offset + struct.calcsize(fmt), fmt)]
        return found

    def boundaries(self) -> list[int]:
        """Truncation points: every header, table and string boundary, and one byte either side."""
        cuts = {0, 1, 3, 4, 5, 15, 16, 17, 51, 52, 53, 63, 64, 65}
        phoff, entsize = self.header("e_phoff"), self.header("e_phentsize")
        for i in range(self.header("e_phnum") + 1):
            cuts.update({phoff + i * entsize - 1, phoff + i * entsize, phoff + i * entsize + 1})
        for base in self.phdr_offsets():
            p_type = self.phdr(base, "p_type")
            if p_type in (PT_DYNAMIC, PT_INTERP, PT_NOTE):
                start, size = self.phdr(base, "p_offset"), self.phdr(base, "p_filesz")
                cuts.update({start - 1, start, start + 1, start + size - 1, start + size // 2})
        strtab = self.strtab_offset()
        if strtab is not None:
            for _offset, tag, value in self.dyn_entries():
                if tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH):
                    cuts.update({strtab + value, strtab + value + 1})
            for offset, _tag, _value in self.dyn_entries():
                cuts.update({offset, offset + 8})
        return sorted(c for c in cuts if 0 <= c < len(self.data))

    def to_big_endian(self) -> Elf:
        """The same file with every header, program header and dynamic entry byte-swapped:
        a well-formed big-endian ELF file (its code is of course not runnable)."""
        assert self.order == "<"
        swapped = Elf(bytearray(self.data))
        swapped.data[5] = 2
        for name, (offset, fmt) in EHDR[self.elf_class].items():
            del name
            swapped.put(offset, fmt, self.get(offset, fmt))
        for base in self.phdr_offsets():
            for offset, fmt in PHDR[self.elf_class].values():
                swapped.put(base + offset, fmt, self.get(base + offset, fmt))
        fmt = "Q" if self.elf_class == 64 else "I"
        for offset, tag, value in list(self.dyn_entries()):
            swapped.put(offset, fmt, tag)
            swapped.put(offset + struct.calcsize(fmt), fmt, value)
        self._swap_versions(swapped)
        # Notes (build id, ABI tag) keep their little-endian words: not read for BE-ness here.
        return swapped

    def _swap_versions(self, swapped: Elf) -> None:
        """.gnu.version_r and .gnu.version_d records, which the loader reads too."""
        dyn = {tag: value for _o, tag, value in self.dyn_entries()}
        for tag, count_tag, head, aux_fields, head_next, aux_link in (
            (DT_VERNEED, DT_VERNEEDNUM, VERNEED, VERNAUX, 12, (1, 8)),
            (DT_VERDEF, DT_VERDEFNUM, VERDEF, VERDAUX, 16, (3, 12)),
        ):
            offset = self.vaddr_to_offset(dyn[tag]) if tag in dyn else None
            for _ in range(dyn.get(count_tag, 0) if offset is not None else 0):
                assert offset is not None
                values = [self.get(offset + at, fmt) for at, fmt in head]
                for (at, fmt), value in zip(head, values, strict=True):
                    swapped.put(offset + at, fmt, value)
                aux = offset + values[-2]  # vn_aux / vd_aux
                for _ in range(values[aux_link[0]]):  # vn_cnt / vd_cnt
                    aux_values = [self.get(aux + at, fmt) for at, fmt in aux_fields]
                    for (at, fmt), value in zip(aux_fields, aux_values, strict=True):
                        swapped.put(aux + at, fmt, value)
                    if not aux_values[-1]:
                        break
                    aux += aux_values[-1]
                if not self.get(offset + head_next, "I"):
                    break
                offset += self.get(offset + head_next, "I")


def mutate(data: bytes, rnd: random.Random, rounds: int | None = None) -> bytes:
    """A random mix of byte flips, interesting-value patches at field offsets, and truncation."""
    out = bytearray(data)
    try:
        fields = Elf(bytearray(data)).field_offsets()
    except (struct.error, IndexError):
        fields = []
    for _ in range(rounds or rnd.randint(1, 6)):
        if not out:
            break
        choice = rnd.random()
        if choice < 0.35 and fields:
            offset, fmt = rnd.choice(fields)
            size = struct.calcsize(fmt)
            if offset + size <= len(out):
                value = rnd.choice((*INTERESTING, len(out), len(out) - 1, rnd.getrandbits(64)))
                value &= (1 << (8 * size)) - 1
                order = "<" if out[5:6] != b"\x02" else ">"
                struct.pack_into(order + fmt, out, offset, value)
        elif choice < 0.7:
            # Mostly in the headers, where the parser looks; sometimes anywhere.
            span = len(out) if rnd.random() < 0.2 else min(len(out), 4096)
            out[rnd.randrange(span)] = rnd.randrange(256)
        elif choice < 0.85:
            out = out[: rnd.randrange(len(out) + 1)]
        else:
            start = rnd.randrange(min(len(out), 4096))
            out[start : start + 8] = bytes(rnd.randrange(256) for _ in range(8))
    return bytes(out)


def seed_files() -> list[Path]:
    """Real ELF files of this machine in every shape we can find (64/32-bit, program, library,
    relocatable object); at least one exists on any Linux host with Python."""
    candidates = [
        "/usr/bin/true",
        "/bin/true",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib32/libc.so.6",
        "/usr/lib32/ld-linux.so.2",
        "/lib/i386-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/crt1.o",
        "/usr/lib/x86_64-linux-gnu/Scrt1.o",
        "/usr/lib32/crt1.o",
        os.path.realpath("/proc/self/exe"),
    ]
    seen: dict[str, Path] = {}
    for candidate in candidates:
        real = os.path.realpath(candidate)
        try:
            with open(real, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    seen.setdefault(real, Path(real))
        except OSError:
            continue
    return list(seen.values())


def seed_datas(limit: int = 1 << 20) -> list[bytes]:
    """The seed files' bytes (the first ``limit``, enough for every header and table of
    interest in small files), plus a big-endian rewrite of the first 64-bit one."""
    datas = []
    for path in seed_files():
        data = path.read_bytes()
        datas.append(data if len(data) <= limit else data[:limit])
    full = next((Elf.read(p) for p in seed_files() if Elf.read(p).elf_class == 64), None)
    if full is not None and full.order == "<":
        datas.append(bytes(full.to_big_endian().data))
    return datas
