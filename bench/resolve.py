#!/usr/bin/env python3
"""Time dependency resolution over this machine's dynamic ELF files: ldd vs lddtree vs scratchpack.

The corpus is every regular file (symbolic links are not followed, folders are walked
recursively) in /usr/bin, /usr/sbin, /usr/lib/x86_64-linux-gnu and /usr/libexec that is ELF and
has a PT_INTERP or PT_DYNAMIC program header. It is timed through:

  (a) ``ldd FILE``, one process per file, as users run it;
  (b) Debian's pax-utils ``lddtree FILE``, one process per file, as users run it
      (``--lddtree-batch`` times one ``lddtree FILE...`` call instead);
  (c) ``scratchpack --list --json FILE...``: one call with every file (split only if argv
      would exceed the system's limit).

Also times one program cold: ``scratchpack --list /usr/bin/python3`` (fresh process each time).
Targets: scratchpack >= 15x faster than ldd, >= 40x faster than lddtree, and a single
program in under 0.25 s. This is a measurement: it always exits 0 and says whether the targets
were met.

    .venv/bin/python bench/resolve.py [--limit N] [--json] [--no-lddtree] [--scratchpack CMD]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import stat
import statistics
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CORPUS_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu", "/usr/libexec")
SINGLE_PROGRAM = "/usr/bin/python3"
TARGET_LDD_RATIO = 15.0
TARGET_LDDTREE_RATIO = 40.0
TARGET_SINGLE_S = 0.25
PER_FILE_TIMEOUT = 60

PT_DYNAMIC = 2
PT_INTERP = 3


def is_dynamic_elf(path: str) -> bool:
    """ELF magic and a PT_INTERP or PT_DYNAMIC program header (read with struct only)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if len(ident) < 52 or ident[:4] != b"\x7fELF":
                return False
            cls, data = ident[4], ident[5]
            if cls not in (1, 2) or data not in (1, 2):
                return False
            end = "<" if data == 1 else ">"
            if cls == 2:
                phoff, phentsize, phnum = (
                    struct.unpack_from(end + "Q", ident, 32)[0],
                    *struct.unpack_from(end + "HH", ident, 54),
                )
            else:
                phoff, phentsize, phnum = (
                    struct.unpack_from(end + "I", ident, 28)[0],
                    *struct.unpack_from(end + "HH", ident, 42),
                )
            if phnum == 0 or phentsize < 4 or phnum > 4096:
                return False
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(len(table) // phentsize):
        (p_type,) = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type in (PT_DYNAMIC, PT_INTERP):
            return True
    return False


def build_corpus(dirs: Sequence[str] = CORPUS_DIRS) -> list[str]:
    files: list[str] = []
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and is_dynamic_elf(path):
                    files.append(path)
    return files


def warm_page_cache(files: Sequence[str]) -> None:
    """Read every file once so that no tool pays for a cold disk on behalf of the next."""
    for path in files:
        try:
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except OSError:
            pass


def time_per_file(argv_prefix: Sequence[str], files: Sequence[str], env: dict[str, str]) -> float:
    """Wall time of one process per file; exit codes are ignored (ldd fails on some files)."""
    start = time.perf_counter()
    for path in files:
        try:
            subprocess.run(
                [*argv_prefix, path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                timeout=PER_FILE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(
                f"  {argv_prefix[-1]} {path}: timed out after {PER_FILE_TIMEOUT} s", file=sys.stderr
            )
    return time.perf_counter() - start


def split_argv(prefix: Sequence[str], files: Sequence[str]) -> list[list[str]]:
    """As few command lines as the kernel's argument limit allows."""
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        arg_max = 128 * 1024
    env_size = sum(len(k) + len(v) + 2 + 8 for k, v in os.environ.items())
    budget = max(32 * 1024, arg_max - env_size - 64 * 1024)
    base = sum(len(a) + 1 + 8 for a in prefix)
    chunks: list[list[str]] = []
    current: list[str] = []
    size = base
    for path in files:
        cost = len(os.fsencode(path)) + 1 + 8  # string, NUL, pointer
        if current and size + cost > budget:
            chunks.append([*prefix, *current])
            current, size = [], base
        current.append(path)
        size += cost
    if current or not chunks:
        chunks.append([*prefix, *current])
    return chunks


def time_batch(
    prefix: Sequence[str], files: Sequence[str], env: dict[str, str]
) -> tuple[float, int, list[str], list[bytes]]:
    """Wall time of as few calls as possible; returns (seconds, calls, errors, stdouts)."""
    errors: list[str] = []
    outputs: list[bytes] = []
    chunks = split_argv(prefix, files)
    start = time.perf_counter()
    for argv in chunks:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False
        )
        outputs.append(proc.stdout)
        if proc.returncode != 0:
            errors.append(
                f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-500:]}"
            )
    return time.perf_counter() - start, len(chunks), errors, outputs


def find_scratchpack(requested: str | None) -> list[str] | None:
    if requested:
        return shlex.split(requested)
    beside = Path(sys.executable).parent / "scratchpack"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("scratchpack")
    return [found] if found else None


def lddtree_command() -> tuple[list[str] | None, str]:
    """pax-utils' lddtree is a Python script that needs pyelftools: run it with a python3 that
    has it (on Debian /usr/bin/python3 with python3-pyelftools, which pax-utils depends on), as
    a stock Debian shell would; a python3 earlier on PATH (pyenv, a venv) may lack it."""
    lddtree = shutil.which("lddtree") or (
        "/usr/bin/lddtree" if os.path.exists("/usr/bin/lddtree") else None
    )
    if lddtree is None:
        return None, "lddtree is not installed (Debian package pax-utils)"
    try:
        with open(lddtree, "rb") as f:
            first = f.readline()
    except OSError as exc:
        return None, f"{lddtree}: {exc}"
    if not first.startswith(b"#!") or b"python" not in first:
        return [lddtree], lddtree  # the C/shell implementation of other distributions
    candidates = ["/usr/bin/python3", shutil.which("python3") or ""]
    for py in candidates:
        if py and os.path.exists(py):
            ok = (
                subprocess.run(
                    [py, "-c", "import elftools"], capture_output=True, check=False
                ).returncode
                == 0
            )
            if ok:
                return [py, lddtree], f"{py} {lddtree}"
    return None, f"{lddtree} needs pyelftools for python3 (Debian package python3-pyelftools)"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:8.3f} s"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:6.1f}x"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, metavar="N", help="use only the first N corpus files")
    ap.add_argument("--json", action="store_true", help="print machine-readable results")
    ap.add_argument("--no-ldd", action="store_true", help="do not time ldd")
    ap.add_argument("--no-lddtree", action="store_true", help="do not time lddtree")
    ap.add_argument(
        "--lddtree-batch",
        action="store_true",
        help="time one `lddtree FILE...` call instead of one process per file",
    )
    ap.add_argument(
        "--scratchpack", metavar="CMD", help="scratchpack command (default: the venv's or PATH's)"
    )
    ap.add_argument("--no-warm", action="store_true", help="do not pre-read the corpus files")
    ap.add_argument(
        "--single-runs", type=int, default=5, metavar="N", help="cold single-program runs"
    )
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    t0 = time.perf_counter()
    corpus = build_corpus()
    scan_s = time.perf_counter() - t0
    full_size = len(corpus)
    if args.limit is not None:
        corpus = corpus[: max(0, args.limit)]
    log(f"corpus: {len(corpus)} dynamic ELF files (of {full_size}; scanned in {scan_s:.2f} s)")
    if not args.no_warm:
        warm_page_cache(corpus)

    env = dict(os.environ)
    env.setdefault("LC_ALL", "C")
    # The host's loader configuration only: ldd and scratchpack both honour LD_LIBRARY_PATH.
    env.pop("LD_LIBRARY_PATH", None)
    notes: list[str] = []
    results: dict[str, Any] = {
        "corpus_dirs": list(CORPUS_DIRS),
        "corpus_size": len(corpus),
        "corpus_size_full": full_size,
        "cpus": os.cpu_count(),
    }

    ldd_s: float | None = None
    if not args.no_ldd:
        ldd = shutil.which("ldd")
        if ldd:
            log("timing ldd, one process per file ...")
            ldd_s = time_per_file([ldd], corpus, env)
        else:
            notes.append("ldd not found")
    results["ldd_s"] = ldd_s
    results["ldd_mode"] = "one process per file"

    lddtree_s: float | None = None
    lddtree_mode = None
    if not args.no_lddtree:
        cmd, how = lddtree_command()
        if cmd is None:
            notes.append(how)
        elif args.lddtree_batch:
            lddtree_mode = f"one call with all files: {how} FILE..."
            log(f"timing lddtree, {lddtree_mode} ...")
            lddtree_s, _, errs, _ = time_batch(cmd, corpus, env)
            notes += [f"lddtree: {e}" for e in errs[:3]]
        else:
            lddtree_mode = f"one process per file: {how} FILE"
            log(f"timing lddtree, {lddtree_mode} ...")
            lddtree_s = time_per_file(cmd, corpus, env)
    results["lddtree_s"] = lddtree_s
    results["lddtree_mode"] = lddtree_mode

    sp_s: float | None = None
    sp_ok = False
    single: list[float] = []
    single_ok = True
    sp = find_scratchpack(args.scratchpack)
    if sp is None:
        notes.append("scratchpack not found (run `make venv`)")
    else:
        log(f"timing {' '.join(sp)} --list --json FILE... ...")
        sp_s, calls, errs, outs = time_batch([*sp, "--list", "--json"], corpus, env)
        results["scratchpack_calls"] = calls
        if errs:
            notes += [f"scratchpack: {e}" for e in errs[:3]]
            results["scratchpack_errors"] = errs
        sp_ok = not errs
        listed = 0
        for out in outs:
            try:
                listed += len(json.loads(out).get("binaries", []))
            except (ValueError, AttributeError):
                notes.append("scratchpack --list --json printed something that is not JSON")
                sp_ok = False
                break
        results["scratchpack_binaries_listed"] = listed
        if listed != len(corpus):
            notes.append(f"scratchpack listed {listed} binaries for {len(corpus)} files")
            sp_ok = False
        if os.path.exists(SINGLE_PROGRAM):
            log(f"timing {SINGLE_PROGRAM} alone, {args.single_runs} fresh processes ...")
            for _ in range(max(1, args.single_runs)):
                s = time.perf_counter()
                rc = subprocess.run(
                    [*sp, "--list", SINGLE_PROGRAM],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    check=False,
                ).returncode
                single.append(time.perf_counter() - s)
                if rc != 0:
                    notes.append(f"scratchpack --list {SINGLE_PROGRAM} exited {rc}")
                    single_ok = False
                    break
    results["scratchpack_s"] = sp_s
    results["single_program"] = SINGLE_PROGRAM
    results["single_first_s"] = single[0] if single else None
    results["single_median_s"] = statistics.median(single) if single else None

    # A failed or incomplete scratchpack run measures nothing.
    r_ldd = ratio(ldd_s, sp_s) if sp_ok else None
    r_tree = ratio(lddtree_s, sp_s) if sp_ok else None
    results["scratchpack_ok"] = sp_ok
    results["ldd_over_scratchpack"] = r_ldd
    results["lddtree_over_scratchpack"] = r_tree
    targets = {
        f"ldd/scratchpack >= {TARGET_LDD_RATIO:g}": (
            None if r_ldd is None else r_ldd >= TARGET_LDD_RATIO
        ),
        f"lddtree/scratchpack >= {TARGET_LDDTREE_RATIO:g}": (
            None if r_tree is None else r_tree >= TARGET_LDDTREE_RATIO
        ),
        f"single program < {TARGET_SINGLE_S:g} s": (
            None if not (single and single_ok) else statistics.median(single) < TARGET_SINGLE_S
        ),
    }
    results["targets"] = targets
    results["notes"] = notes
    if args.limit is not None:
        notes.append("--limit: ratios over a subset are not the whole corpus's")

    if args.json:
        print(json.dumps(results, indent=2))
        return 0

    print()
    print(f"corpus:       {len(corpus)} files")
    print(f"ldd:          {fmt_s(ldd_s)}   (one process per file)")
    print(f"lddtree:      {fmt_s(lddtree_s)}   ({lddtree_mode or 'not run'})")
    calls = results.get("scratchpack_calls", 1)
    print(f"scratchpack:  {fmt_s(sp_s)}   ({calls} --list --json call{'s' if calls != 1 else ''})")
    print(f"ldd / scratchpack:      {fmt_x(r_ldd)}  (target >= {TARGET_LDD_RATIO:g}x)")
    print(f"lddtree / scratchpack:  {fmt_x(r_tree)}  (target >= {TARGET_LDDTREE_RATIO:g}x)")
    if single:
        print(
            f"single program ({SINGLE_PROGRAM}), cold: median {statistics.median(single):.3f} s, "
            f"first {single[0]:.3f} s over {len(single)} runs (target < {TARGET_SINGLE_S:g} s)"
        )
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met' if met is False else 'not measured'}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception:  # a measurement: report, never fail the caller
        traceback.print_exc()
    sys.exit(0)
