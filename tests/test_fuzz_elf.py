"""Property-based fuzzing of the ELF reading layer, bounded for `make test` (~60 s in all).

Hypothesis mutates real ELF files of this machine (byte flips, truncations, interesting values
at header, program header and dynamic entry offsets): only BadElf and OSError may escape
read_elf and peek_header, and through the CLI a mutated library gives exit 0 (the loader
rejects or skips it: listed) or a one-line exit 2. ``FUZZ_EXAMPLES`` and ``FUZZ_CLI_EXAMPLES``
scale it; `make fuzz` runs fuzz/fuzz_elf.py for longer. A crash found becomes a test in
tests/test_hostile_elf.py.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from elfmut import INTERESTING, Elf, seed_datas  # noqa: E402
from fuzz_elf import CliCase, check_reader  # noqa: E402

SEEDS = seed_datas(limit=256 << 10)
FIELDS = []
for _data in SEEDS:
    try:
        FIELDS.append(Elf(bytearray(_data)).field_offsets())
    except (struct.error, IndexError):
        FIELDS.append([])

READER_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20000"))
CLI_EXAMPLES = int(os.environ.get("FUZZ_CLI_EXAMPLES", "1500"))
COMMON = settings(
    deadline=None,
    database=None,  # no .hypothesis/ in the work tree; failures print their reproduction
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",  # CI repeatable unless asked
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

value = st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1))
operation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 4095), st.integers(0, 255)),
    st.tuples(st.just("flip-anywhere"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 18), st.just(0)),
    st.tuples(st.just("field"), st.integers(0, 400), value),
)


@st.composite
def mutated_elf(draw: st.DrawFn) -> bytes:
    index = draw(st.integers(0, len(SEEDS) - 1))
    data = bytearray(SEEDS[index])
    fields = FIELDS[index]
    order = "<" if data[5] == 1 else ">"
    for kind, where, what in draw(st.lists(operation, min_size=1, max_size=6)):
        if not data:
            break
        if kind in ("flip", "flip-anywhere"):
            data[where % len(data)] = what
        elif kind == "truncate":
            del data[where % (len(data) + 1) :]
        elif fields:
            offset, fmt = fields[where % len(fields)]
            size = struct.calcsize(fmt)
            if offset + size <= len(data):
                struct.pack_into(order + fmt, data, offset, what & ((1 << (8 * size)) - 1))
    return bytes(data)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_fuzz_read_elf(scratch: Path) -> None:
    target = str(scratch / "input")

    @settings(COMMON, max_examples=READER_EXAMPLES)
    @given(mutated_elf())
    def reader(data: bytes) -> None:
        check_reader(data, target)

    reader()


def test_fuzz_library_through_the_cli(scratch: Path) -> None:
    case = CliCase(scratch)
    if not case.usable:
        pytest.skip("needs an x86-64 glibc host")

    @settings(COMMON, max_examples=CLI_EXAMPLES)
    @given(mutated_elf())
    def through_cli(data: bytes) -> None:
        case.check(data)

    through_cli()
