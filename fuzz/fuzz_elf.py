"""Fuzzing harness for the ELF reading layer: bundler.loader.elf.read_elf and peek_header, and the
resolver's handling of a mutated library through the CLI (in-process, a fraction of inputs).

Mutates real ELF files of this machine (byte flips, truncations, interesting values patched
at header, program header and dynamic entry offsets; see elfmut.py). Only BadElf and OSError
may escape the reading layer; the CLI may only exit 0 (a library the loader rejects is listed
with its error), or 2 with one line naming the file. Anything else is a crash: its input is
saved under fuzz/crashes/ and the run exits 1.

    python fuzz/fuzz_elf.py [--seconds N] [--seed S] [--cli-every K]
    make fuzz FUZZ_SECONDS=600

A crash found here becomes a regression test in tests/test_hostile_elf.py.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from elfmut import mutate, seed_datas  # noqa: E402

from bundler.errors import BadElf  # noqa: E402
from bundler.loader.elf import peek_header, read_elf  # noqa: E402

CRASHES = HERE / "crashes"


def check_reader(data: bytes, path: str) -> None:
    """Raise AssertionError (or whatever escaped) when the reading layer misbehaves."""
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        info = read_elf(path, "/fuzzed")
    except BadElf as exc:
        assert str(exc).startswith("/fuzzed: ") and "\n" not in str(exc), str(exc)
    except OSError:
        pass
    else:
        assert isinstance(info.needed, tuple)
    try:
        header = peek_header(path)
    except OSError:
        pass
    else:
        assert header.size == len(data) and len(header.data) <= 64


class CliCase:
    """A fake root whose libc is replaced by each input; /bin/true listed through the CLI."""

    def __init__(self, top: Path) -> None:
        from fakeroot import host_has_glibc_x86_64, make_root

        self.usable = host_has_glibc_x86_64()
        if self.usable:
            self.root = make_root(top / "root")
            self.libc = self.root / "usr/lib/x86_64-linux-gnu/libc.so.6"

    def check(self, data: bytes) -> None:
        from bundler.cli import main

        self.libc.unlink(missing_ok=True)
        self.libc.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--list", "--json", "-q", "--root", str(self.root), "/bin/true"])
        text = err.getvalue()
        assert code in (0, 2), (code, text)
        if code == 2:
            assert text.count("\n") == 1 and text.startswith("scratchpack: "), text
        assert "Traceback" not in text


def save_crash(data: bytes, error: BaseException) -> Path:
    CRASHES.mkdir(exist_ok=True)
    name = hashlib.sha256(data).hexdigest()[:16]
    path = CRASHES / f"crash-{name}.elf"
    path.write_bytes(data)
    (CRASHES / f"crash-{name}.txt").write_text("".join(traceback.format_exception(error)))
    return path


def fuzz(seconds: float, seed: int, cli_every: int) -> tuple[int, int, list[Path]]:
    """Run for ``seconds``; returns (inputs to the reader, inputs through the CLI, crashes)."""
    rnd = random.Random(seed)
    seeds = seed_datas()
    crashes: list[Path] = []
    seen: set[str] = set()
    reader_runs = cli_runs = 0
    with tempfile.TemporaryDirectory() as work:
        target = os.path.join(work, "input")
        cli = CliCase(Path(work)) if cli_every else None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = mutate(rnd.choice(seeds), rnd)
            for stage in ("reader", "cli"):
                if stage == "cli" and not (cli and cli.usable and reader_runs % cli_every == 0):
                    continue
                try:
                    if stage == "reader":
                        reader_runs += 1
                        check_reader(data, target)
                    else:
                        assert cli is not None
                        cli_runs += 1
                        cli.check(data)
                except Exception as exc:  # anything but BadElf/OSError is what we hunt
                    where = "".join(traceback.format_exception(exc)[-2:])
                    if where not in seen:
                        seen.add(where)
                        crashes.append(save_crash(data, exc))
                        print(f"CRASH ({stage}): {exc!r} -> {crashes[-1]}", file=sys.stderr)
    return reader_runs, cli_runs, crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 60)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", time.time())))
    parser.add_argument("--cli-every", type=int, default=50, help="0: reader only")
    args = parser.parse_args()
    reader_runs, cli_runs, crashes = fuzz(args.seconds, args.seed, args.cli_every)
    print(
        f"fuzz_elf: seed {args.seed}, {args.seconds:.0f} s: {reader_runs} inputs read, "
        f"{cli_runs} through the CLI, {len(crashes)} distinct crashes"
    )
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
