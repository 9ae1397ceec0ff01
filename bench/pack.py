#!/usr/bin/env python3
"""Time packing against ``tar | gzip -6`` of the same files, in the same run.

For each program (default: redis-server, and node as a large image) of a root (default: the
cached Debian bookworm tree the tests build, .cache/debootstrap-bookworm), the files are found
by one ``scratchpack -o`` pack; then, each the median of --repeat runs:

  (a) baseline: ``tar -cf - -C rootfs . | gzip -6 > /dev/null`` of those files;
  (b) floor:    ``tar -cf - -C rootfs . | sha256sum``: what an unchanged repack cannot beat;
  (c) resolve:  ``scratchpack --list PROGRAM``: the start-up and resolution every call pays;
  (d) for ``-o``, ``--oci`` and ``--docker-archive``: the first pack (empty layer cache, new
      output) and an unchanged repack (same output, cache as the first pack left it), each a
      whole ``scratchpack`` process.

Ratios are wall times over the baseline's (targets: first pack <= 1.0x, unchanged repack
<= 0.2x); CPU times (user + system of the processes) over the baseline's are printed beside
them, as what the work costs whatever else loads the machine.
This is a measurement: it always exits 0 and says whether the targets were met.

    .venv/bin/python bench/pack.py [--root DIR] [--program P]... [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / ".cache" / "debootstrap-bookworm"
DEFAULT_PROGRAMS = ("redis-server", "node")
MODES = {"-o": "out", "--oci": "oci", "--docker-archive": "image.tar"}
TARGET_FIRST = 1.0
TARGET_REPACK = 0.2


def scratchpack_command() -> list[str]:
    venv = REPO / ".venv" / "bin" / "scratchpack"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "bundler"]


CPU: dict[int, float] = {}  # id(run) -> median CPU seconds (user + system) of its last timing


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], None], repeat: int, before: Callable[[], None] | None = None) -> float:
    """The median wall time of RUN over REPEAT runs; BEFORE (untimed) ahead of each. The
    median CPU time of the processes RUN waited for goes in CPU[id(run)]: on a machine others
    load, wall time says what a user waits, CPU time what the work costs."""
    times, cpu = [], []
    for _ in range(repeat):
        if before is not None:
            before()
        started, cpu_started = time.perf_counter(), _children_cpu()
        run()
        times.append(time.perf_counter() - started)
        cpu.append(_children_cpu() - cpu_started)
    CPU[id(run)] = statistics.median(cpu)
    return statistics.median(times)


def timed_cpu(
    run: Callable[[], None], repeat: int, before: Callable[[], None] | None = None
) -> tuple[float, float]:
    """(wall, CPU) medians of RUN, as ``timed``."""
    wall = timed(run, repeat, before)
    return wall, CPU[id(run)]


def shell(command: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)

    return run


def pack(argv: Sequence[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)

    return run


def bench_program(
    root: Path, program: str, repeat: int, jobs: int, scratch: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    base = [*scratchpack_command(), "--root", str(root), program, "-q", "-j", str(jobs)]
    # As an installed wheel runs: its modules' bytecode compiled once (pip does it at install),
    # not compiled again at every start because the environment forbids writing it.
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "bundler")], check=True)
    files = scratch / "files"
    subprocess.run([*base, "-o", str(files), "--no-cache"], check=True, env=env)
    rootfs = files / "rootfs"
    size = sum(p.stat().st_size for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink())
    tar = f"tar -cf - -C {rootfs} ."
    baseline, baseline_cpu = timed_cpu(shell(f"{tar} | gzip -6 > /dev/null"), repeat)
    floor = timed(shell(f"{tar} | sha256sum > /dev/null"), repeat)
    listing = [*scratchpack_command(), "--root", str(root), program, "--list"]
    resolve = timed(pack(listing, env), repeat)
    log(f"{program}: {size / 1e6:.1f} MB of files; tar | gzip -6 {baseline:.2f} s")
    found: dict[str, Any] = {
        "program": program,
        "bytes": size,
        "baseline_s": baseline,
        "baseline_cpu_s": baseline_cpu,
        "floor_s": floor,
        "floor_x": floor / baseline,
        "resolve_s": resolve,
        "resolve_x": resolve / baseline,
        "modes": {},
    }
    for option, name in MODES.items():
        target = scratch / name

        def fresh(target: Path = target) -> None:
            shutil.rmtree(scratch / "cache", ignore_errors=True)
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)

        argv = [*base, option, str(target)]
        first, first_cpu = timed_cpu(pack(argv, env), repeat, before=fresh)
        # The last first pack's output and cache.
        repack, repack_cpu = timed_cpu(pack(argv, env), repeat)
        found["modes"][option] = {
            "first_s": first,
            "first_x": first / baseline,
            "first_cpu_x": first_cpu / baseline_cpu,
            "repack_s": repack,
            "repack_x": repack / baseline,
            "repack_cpu_x": repack_cpu / baseline_cpu,
        }
        log(
            f"  {option:17} first {first:6.2f} s {first / baseline:5.2f}x   "
            f"repack {repack:6.2f} s {repack / baseline:5.2f}x   "
            f"(CPU {first_cpu / baseline_cpu:.2f}x, {repack_cpu / baseline_cpu:.2f}x)"
        )
        fresh()
    return found


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the root to pack from")
    ap.add_argument(
        "--program", action="append", help="a program to pack (repeatable; default: %(default)s)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is kept)")
    ap.add_argument("-j", "--jobs", type=int, default=0, help="scratchpack -j (0: every core)")
    ap.add_argument("--json", action="store_true", help="print machine-readable results")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    if not (args.root / "usr").is_dir():
        log(f"{args.root}: no such root (the tests build it: .cache/debootstrap-bookworm)")
        return 0
    programs = args.program or list(DEFAULT_PROGRAMS)
    log(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, root {args.root}")
    results = []
    for program in programs:
        with tempfile.TemporaryDirectory(prefix="scratchpack-bench-") as scratch:
            found = bench_program(args.root, program, args.repeat, args.jobs, Path(scratch), log)
            results.append(found)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print()
    print(
        f"{'program':14} {'mode':17} {'first':>7} {'repack':>7}   (wall time, x tar | gzip -6)"
        "   CPU: first  repack"
    )
    met = True
    for result in results:
        for option, mode in result["modes"].items():
            first, repack = mode["first_x"], mode["repack_x"]
            cpu = f"{mode['first_cpu_x']:6.2f}x {mode['repack_cpu_x']:6.2f}x"
            print(f"{result['program']:14} {option:17} {first:6.2f}x {repack:6.2f}x{'':31}{cpu}")
            met = met and mode["first_x"] <= TARGET_FIRST and mode["repack_x"] <= TARGET_REPACK
        print(
            f"{result['program']:14} {'(floor: tar|sha)':17} {'':7} {result['floor_x']:6.2f}x"
            f"   resolve alone (--list) {result['resolve_x']:.2f}x"
        )
    print(
        f"targets (first <= {TARGET_FIRST:g}x, unchanged repack <= {TARGET_REPACK:g}x): "
        + ("met" if met else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
