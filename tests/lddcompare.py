"""Compare ``scratchpack --list --json`` with the loader's own trace (glibc ``ldd``, musl's
``ld-musl-*.so.1 --list``). Used by test_vs_ldd.py and test_corpus.py.

What is compared, per program:
- the set of real paths of every object mapped (libraries and the interpreter; ``linux-vdso`` and
  other kernel-provided objects excluded), on both sides;
- the set of sonames that are not found;
- the interpreter: the JSON's must be one of ldd's lines without ``=>``.
When ld.so stops with an error (``error while loading shared libraries``) ldd lists nothing; the
parse records the error and the comparison reports it unless the caller handles it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f...)"   glibc and musl
# "\tlibfoo.so.1 => not found"                                      glibc
# "\t/lib64/ld-linux-x86-64.so.2 (0x00007f...)"                     interpreter / path DT_NEEDED
# "\tlinux-vdso.so.1 (0x00007f...)"                                 kernel vDSO
# "\tlinux-vdso.so.1 =>  (0x00007f...)"                             old glibc vDSO form
_ARROW = re.compile(r"^\s*(?P<name>.+?) => (?P<path>.*?)(?: \((?P<addr>0x[0-9a-f]+)\))?\s*$")
_PLAIN = re.compile(r"^\s*(?P<path>.+?) \((?P<addr>0x[0-9a-f]+)\)\s*$")
_VDSO = re.compile(r"^linux-(vdso|gate)[\w.-]*\.so(\.\d+)*$")
# musl: "Error loading shared library libx.so.1: No such file or directory (needed by /p)"
_MUSL_MISSING = re.compile(
    r"^Error loading shared library (?P<name>\S+): (?P<why>.+?)(?: \(needed by (?P<by>.+)\))?$"
)
_GLIBC_ERROR = re.compile(r"error while loading shared libraries: (?P<msg>.*)$")


@dataclass
class LddResult:
    """One program as its loader's trace describes it."""

    libs: list[tuple[str, str | None]] = field(default_factory=list)  # (name, path) "=>" lines
    plain: list[str] = field(default_factory=list)  # lines without "=>" (interpreter, path libs)
    not_dynamic: bool = False  # "not a dynamic executable" / "statically linked"
    error: str | None = None  # ld.so stopped the load (the message after the colon)
    raw: str = ""

    @property
    def missing(self) -> set[str]:
        return {name for name, path in self.libs if path is None}

    def mapped(self, cwd: str = "/", realpath: Callable[[str], str] | None = None) -> set[str]:
        """Real paths of every mapped object: "=>" targets and plain lines."""
        rp = realpath or _host_realpath
        paths = [p for _, p in self.libs if p is not None] + list(self.plain)
        return {rp(posixpath.join(cwd, p)) for p in paths}


def _host_realpath(path: str) -> str:
    return os.path.realpath(path)


def parse_ldd(text: str) -> LddResult:
    """Parse glibc ldd or musl ``--list`` output (stdout and stderr together)."""
    res = LddResult(raw=text)
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line in ("not a dynamic executable", "statically linked") or line.endswith(
            ": not a dynamic executable"
        ):
            res.not_dynamic = True
            continue
        m = _GLIBC_ERROR.search(line)
        if m:
            res.error = m.group("msg")
            continue
        m = _MUSL_MISSING.match(line)
        if m:
            if "No such file" in m.group("why"):
                res.libs.append((m.group("name"), None))
            else:
                res.error = line
            continue
        if line.startswith("Error relocating ") or line.startswith("ldd: warning"):
            continue  # musl --list resolves symbols too; not the resolver's business
        m = _ARROW.match(line)
        if m:
            name, path = m.group("name"), m.group("path").strip()
            if _VDSO.match(name):
                continue
            if path == "not found":
                res.libs.append((name, None))
            elif path == "" and m.group("addr"):
                continue  # "linux-vdso.so.1 =>  (0x...)"
            else:
                res.libs.append((name, path))
            continue
        m = _PLAIN.match(line)
        if m:
            if _VDSO.match(posixpath.basename(m.group("path"))):
                continue
            res.plain.append(m.group("path"))
            continue
        raise ValueError(f"unparsed ldd line: {raw_line!r}\n--- whole output:\n{text}")
    return res


# ----- running the two sides -------------------------------------------------------------------
MUSL_INTERP = re.compile(r"/ld-musl-[\w-]+\.so\.1$")


def read_interp(path: str) -> str | None:
    """PT_INTERP of an ELF file (None when absent or not ELF); enough to pick the tracer."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return None
            is64 = head[4] == 2
            end = "<" if head[5] == 1 else ">"
            if is64:
                (phoff,) = struct.unpack_from(end + "Q", head, 0x20)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
            else:
                (phoff,) = struct.unpack_from(end + "I", head, 0x1C)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
            for i in range(phnum):
                (p_type,) = struct.unpack_from(end + "I", ph, i * phentsize)
                if p_type != 3:
                    continue
                if is64:
                    (p_offset,) = struct.unpack_from(end + "Q", ph, i * phentsize + 8)
                    (p_filesz,) = struct.unpack_from(end + "Q", ph, i * phentsize + 32)
                else:
                    (p_offset,) = struct.unpack_from(end + "I", ph, i * phentsize + 4)
                    (p_filesz,) = struct.unpack_from(end + "I", ph, i * phentsize + 16)
                f.seek(p_offset)
                return f.read(p_filesz).split(b"\0")[0].decode()
    except OSError:
        return None
    return None


def run_ldd(
    program: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    exec_trace: bool = False,
) -> LddResult:
    """Trace one program with its own loader: musl's ``--list`` for musl programs (glibc's ldd
    would execute them), glibc's ldd otherwise. ``exec_trace``: execute the program itself with
    LD_TRACE_LOADED_OBJECTS=1 (the kernel starts ld.so; only differs from ldd in $ORIGIN of a
    program reached through a symbolic link)."""
    full_env = dict(os.environ)
    full_env.pop("LD_LIBRARY_PATH", None)
    full_env.pop("LD_PRELOAD", None)
    full_env.update(env or {})
    interp = read_interp(posixpath.join(cwd or "", program))
    if interp and MUSL_INTERP.search(interp):
        cmd = [interp, "--list", program]
    elif exec_trace:
        full_env["LD_TRACE_LOADED_OBJECTS"] = "1"
        cmd = [program]
    else:
        cmd = ["ldd", program]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60, check=False
    )
    return parse_ldd(proc.stdout + proc.stderr)


def scratchpack_cmd() -> list[str]:
    return [sys.executable, "-m", "bundler"]


def run_scratchpack(
    programs: Sequence[str],
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("LD_LIBRARY_PATH", None)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run(
        # ldd shows what the loader maps at start-up: no dlopen()ed libraries.
        [
            *scratchpack_cmd(),
            "--list",
            "--json",
            "--dlopen",
            "none",
            "--no-libgcc-s",
            *extra,
            "--",
            *programs,
        ],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"scratchpack failed (exit {proc.returncode}) on {list(programs)[:5]}...:\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc


@dataclass
class Listed:
    """One program as ``scratchpack --list --json`` describes it."""

    path: str
    interpreter: str | None
    libs: list[tuple[str, str | None]]
    # Libraries whose candidate stops ld.so: (soname, file, message), e.g. a file whose OS ABI
    # is invalid; ld.so reports "FILE: MESSAGE" and maps nothing.
    errors: list[tuple[str, str | None, str]] = field(default_factory=list)

    @property
    def missing(self) -> set[str]:
        return {name for name, path in self.libs if path is None}

    def mapped(self, cwd: str = "/", realpath: Callable[[str], str] | None = None) -> set[str]:
        rp = realpath or _host_realpath
        paths = [p for _, p in self.libs if p is not None]
        if self.interpreter:
            paths.append(self.interpreter)
        return {rp(posixpath.join(cwd, p)) for p in paths}


def parse_json(stdout: str) -> tuple[list[Listed], list[dict[str, Any]]]:
    doc = json.loads(stdout)
    assert set(doc) >= {"binaries", "missing"}, f"JSON keys: {sorted(doc)}"
    out = []
    for b in doc["binaries"]:
        libs = [(lib["soname"], lib["path"]) for lib in b["libraries"]]
        errors = [
            (lib["soname"], lib.get("file"), lib["error"])
            for lib in b["libraries"]
            if lib.get("error")
        ]
        out.append(Listed(b["path"], b["interpreter"], libs, errors))
    return out, doc["missing"]


def diff(
    listed: Listed,
    ldd: LddResult,
    cwd: str = "/",
    realpath: Callable[[str], str] | None = None,
) -> list[str]:
    """Differences between the two descriptions of one program; empty when they agree."""
    problems: list[str] = []
    ours_err = {f"{file}: {msg}" if file else msg for _, file, msg in listed.errors}
    if ldd.error is not None:
        if ldd.error not in ours_err:
            problems.append(
                f"ld.so stops with {ldd.error!r}; scratchpack: errors {sorted(ours_err)}, "
                f"maps {sorted(listed.mapped(cwd, realpath))}"
            )
        return problems
    if ours_err:
        problems.append(f"scratchpack reports load errors {sorted(ours_err)}; ld.so loads fine")
    rp = realpath or _host_realpath
    ours, theirs = listed.mapped(cwd, realpath), ldd.mapped(cwd, realpath)
    if ldd.not_dynamic and not theirs:
        if listed.interpreter is not None or listed.libs:
            # ldd says "statically linked" also for shared objects without DT_NEEDED.
            problems.append(
                f"ldd: not dynamic / no dependencies; scratchpack: interpreter "
                f"{listed.interpreter}, libraries {listed.libs}"
            )
        return problems
    if ours != theirs:
        if only := sorted(ours - theirs):
            problems.append(f"only scratchpack: {only}")
        if only := sorted(theirs - ours):
            problems.append(f"only ldd: {only}")
    if listed.missing != ldd.missing:
        problems.append(
            f"not found: scratchpack {sorted(listed.missing)} ldd {sorted(ldd.missing)}"
        )
    if listed.interpreter is not None:
        plain = {rp(posixpath.join(cwd, p)) for p in ldd.plain}
        if rp(posixpath.join(cwd, listed.interpreter)) not in plain:
            problems.append(f"interpreter {listed.interpreter} not among ldd's {ldd.plain}")
    return problems


def format_report(failures: Iterable[tuple[str, list[str]]], limit: int = 60) -> str:
    lines = []
    failures = list(failures)
    for path, problems in failures[:limit]:
        lines.append(f"{path}:")
        lines.extend(f"    {p}" for p in problems)
    if len(failures) > limit:
        lines.append(f"... and {len(failures) - limit} more")
    return "\n".join(lines)
