#!/usr/bin/env python3
"""Build the ELF fixtures of the loader tests into a directory, and describe them.

    python testdata/build.py OUTDIR          # builds, prints the manifest as JSON

``build(outdir)`` returns the manifest: ``{"tools": {...}, "cases": [case, ...]}``. A case is one
program to resolve::

    {"name": "rpath_inherited",
     "program": "/abs/path/prog",      # what is given to ldd and to scratchpack
     "cwd": "/abs/dir",                 # both run there (relative DT_NEEDED paths)
     "env": {"LD_LIBRARY_PATH": "..."}, # extra environment for both
     "flavor": "glibc" | "musl" | "static" | "script",
     "oracle": "ldd" | "exec",          # exec: LD_TRACE_LOADED_OBJECTS=1 PROG (kernel exec)
     "expect": {"libs": {name: path or None},   # path among those mapped (None: name not found)
                "absent": [path, ...],           # decoys that must not be in the closure
                "ldd_error": "substring" or None},# the loader stops with this error
     "skip": None or "reason"}

Each scenario is a small directory tree; libraries of the same soname carry distinct VARIANT
strings so a copy is told apart by its path. Only the standard library is used; gcc is needed,
musl-gcc (musl-tools) for the musl cases, and ``gcc -m32`` (even without gcc-multilib: a
-nostdlib library is enough) for the wrong-class case.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from typing import Any

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
LIB_C = os.path.join(SRC, "lib.c")
MAIN_C = os.path.join(SRC, "main.c")
NOLIBC_C = os.path.join(SRC, "nolibc.c")
RTLD = "/lib64/ld-linux-x86-64.so.2"
MUSL_RTLD = "/lib/ld-musl-x86_64.so.1"

EM_AARCH64 = 183
DT_RUNPATH = 29
DT_AUXILIARY = 0x7FFFFFFD


class Builder:
    def __init__(self, out: str) -> None:
        self.out = os.path.abspath(out)
        self.cases: list[dict[str, Any]] = []
        self.log: list[str] = []

    # ----- compiling -------------------------------------------------------------------------
    def run(self, cmd: list[str], cwd: str | None = None) -> None:
        self.log.append(" ".join(cmd))
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"fixture build failed: {' '.join(cmd)}\n{proc.stderr}")

    def path(self, *parts: str) -> str:
        p = os.path.join(self.out, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    @staticmethod
    def _paths(flag: str, value: str | None) -> list[str]:
        if value is None:
            return []
        dtags = "--enable-new-dtags" if flag == "runpath" else "--disable-new-dtags"
        return [f"-Wl,{dtags}", f"-Wl,-rpath,{value}"]

    def lib(
        self,
        path: str,
        soname: str | None,
        variant: str,
        needs: tuple[str, ...] = (),
        rpath: str | None = None,
        runpath: str | None = None,
        cc: str = "gcc",
        extra: tuple[str, ...] = (),
    ) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cmd = [cc, "-shared", "-fPIC", "-O0", f'-DVARIANT="{variant}"', LIB_C, "-o", path]
        if soname is not None:
            cmd.append(f"-Wl,-soname,{soname}")
        cmd += self._paths("rpath", rpath) + self._paths("runpath", runpath)
        cmd += ["-Wl,--no-as-needed", *needs, *extra]
        self.run(cmd)
        return path

    def exe(
        self,
        path: str,
        needs: tuple[str, ...] = (),
        rpath: str | None = None,
        runpath: str | None = None,
        cc: str = "gcc",
        extra: tuple[str, ...] = (),
        src: str = MAIN_C,
        cwd: str | None = None,
    ) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cmd = [cc, "-O0", src, "-o", path]
        cmd += self._paths("rpath", rpath) + self._paths("runpath", runpath)
        cmd += ["-Wl,--no-as-needed", "-Wl,--allow-shlib-undefined", *needs, *extra]
        self.run(cmd, cwd=cwd)
        return path

    def case(
        self,
        name: str,
        program: str,
        libs: dict[str, str | None] | None = None,
        absent: tuple[str, ...] = (),
        flavor: str = "glibc",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        ldd_error: str | None = None,
        skip: str | None = None,
        note: str = "",
        oracle: str = "ldd",
        scratchpack_args: tuple[str, ...] = (),
        loader_confirms: bool = True,
    ) -> None:
        self.cases.append(
            {
                "name": name,
                "program": program,
                "cwd": cwd or os.path.dirname(program),
                "env": env or {},
                "flavor": flavor,
                "expect": {"libs": libs or {}, "absent": list(absent), "ldd_error": ldd_error},
                "skip": skip,
                "note": note,
                "oracle": oracle,
                # the CPU stated to scratchpack, for a case this machine's loader cannot run
                "scratchpack_args": list(scratchpack_args),
                "loader_confirms": loader_confirms,
            }
        )

    def skipped(self, name: str, reason: str, flavor: str = "glibc") -> None:
        self.case(name, program="", flavor=flavor, skip=reason, cwd=self.out)


# ----- ELF patching (fixtures of the wrong kind) --------------------------------------------------
def patch_bytes(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def retag_dynamic(path: str, old: int, new: int) -> None:
    """Change the tag of the first dynamic entry ``old`` of an ELF64 LE file to ``new``."""
    with open(path, "r+b") as f:
        data = f.read()
        (phoff,) = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", data, phoff + i * phentsize
            )
            if p_type != 2:  # PT_DYNAMIC
                continue
            for off in range(p_offset, p_offset + p_filesz, 16):
                (tag,) = struct.unpack_from("<q", data, off)
                if tag == old:
                    f.seek(off)
                    f.write(struct.pack("<q", new))
                    return
    raise RuntimeError(f"{path}: no dynamic tag {old:#x}")


# ----- what this machine's tools and loader can do ------------------------------------------------
def probe_loader() -> dict[str, Any]:
    """What this machine's loader searches, as ``ld.so --help`` reports it for this CPU.

    Every expectation that depends on the CPU is built from this, never from one vendor's
    answer: on AMD (and Intel without AVX2) the platform is ``x86_64``; glibc makes it
    ``haswell`` on Intel CPUs with AVX2, BMI and FMA (``xeon_phi`` on Xeon Phi), and adds the
    ``avx512_1`` folder on Intel CPUs with AVX-512.
    """
    if not os.path.exists(RTLD):
        return parse_loader_help("")
    return parse_loader_help(
        subprocess.run([RTLD, "--help"], capture_output=True, text=True).stdout
    )


def parse_loader_help(out: str) -> dict[str, Any]:
    """``probe_loader``'s facts from the text of ``ld.so --help``."""
    found: dict[str, Any] = {
        # glibc-hwcaps levels, best first
        "hwcaps_supported": re.findall(r"^\s+(x86-64-v\d) \(supported, searched\)", out, re.M),
        "legacy_supported": [],  # legacy folder names searched, in ld.so's order
        "platform": None,  # the legacy name ld.so marks AT_PLATFORM
        "legacy_bits": [],  # searched hwcap names other than the platform and tls
    }
    legacy = out.partition("Legacy HWCAP subdirectories")[2]
    for name, notes in re.findall(r"^\s+(\w+)(?: \((.*)\))?$", legacy, re.M):
        if "supported, searched" not in notes:
            continue
        found["legacy_supported"].append(name)
        if "AT_PLATFORM" in notes:
            found["platform"] = name
        elif name != "tls":
            found["legacy_bits"].append(name)
    return found


def describe_loader(tools: dict[str, Any]) -> str:
    """One line naming what the machine's loader reported, for test reports."""
    return (
        f"ld.so: platform {tools.get('platform') or 'unknown'}; glibc-hwcaps "
        f"{', '.join(tools.get('hwcaps_supported') or ['none'])}; legacy folders searched "
        f"{', '.join(tools.get('legacy_supported') or ['none'])}"
    )


def probe_tools() -> dict[str, Any]:
    tools: dict[str, Any] = {"gcc": shutil.which("gcc") is not None}
    tools["musl_gcc"] = shutil.which("musl-gcc") is not None and os.path.exists(MUSL_RTLD)
    tools["m32"] = None
    tools["static"] = False
    tools.update(probe_loader())
    if not tools["gcc"]:
        return tools
    with tempfile.TemporaryDirectory() as tmp:

        def ok(*args: str) -> bool:
            return subprocess.run(["gcc", *args], capture_output=True, cwd=tmp).returncode == 0

        if ok("-m32", MAIN_C, "-o", "a32"):
            tools["m32"] = "multilib"
        elif ok("-m32", "-nostdlib", "-shared", "-fPIC", LIB_C, "-o", "l32.so"):
            tools["m32"] = "nostdlib"
        tools["static"] = ok("-static", MAIN_C, "-o", "st") and ok(
            "-static-pie", MAIN_C, "-o", "stp"
        )
    return tools


# ----- the scenarios ------------------------------------------------------------------------------
def s_rpath_runpath(b: Builder) -> None:
    # RPATH of the executable is used for a library's DT_NEEDED (chain up the loaders).
    d = b.path("rpath_inherited")
    lb = b.lib(f"{d}/dirB/libB.so.1", "libB.so.1", "B")
    b.lib(f"{d}/decoy/libB.so.1", "libB.so.1", "decoy")
    la = b.lib(f"{d}/dirA/libA.so.1", "libA.so.1", "A", needs=(lb,))
    # libA has its own RPATH first: searched before the executable's.
    lc = b.lib(f"{d}/dirC/libC.so.1", "libC.so.1", "C")
    b.lib(f"{d}/dirB/libC.so.1", "libC.so.1", "C-in-B")
    la2 = b.lib(f"{d}/dirA2/libA2.so.1", "libA2.so.1", "A2", needs=(lc,), rpath=f"{d}/dirC")
    prog = b.exe(f"{d}/prog", needs=(la, la2), rpath=f"{d}/dirA:{d}/dirA2:{d}/dirB")
    b.case(
        "rpath_inherited",
        prog,
        libs={
            "libA.so.1": f"{d}/dirA/libA.so.1",
            "libB.so.1": f"{d}/dirB/libB.so.1",
            "libA2.so.1": f"{d}/dirA2/libA2.so.1",
            "libC.so.1": f"{d}/dirC/libC.so.1",
        },
        absent=(f"{d}/decoy/libB.so.1", f"{d}/dirB/libC.so.1"),
    )
    # Three levels: exe RPATH -> libM (no paths) -> libN (no paths) -> libO, found by exe RPATH.
    lo = b.lib(f"{d}/deep/o/libO.so.1", "libO.so.1", "O")
    ln = b.lib(f"{d}/deep/n/libN.so.1", "libN.so.1", "N", needs=(lo,))
    lm = b.lib(f"{d}/deep/m/libM.so.1", "libM.so.1", "M", needs=(ln,))
    prog = b.exe(f"{d}/prog3", needs=(lm,), rpath=f"{d}/deep/m:{d}/deep/n:{d}/deep/o")
    b.case(
        "rpath_inherited_3_levels",
        prog,
        libs={"libO.so.1": f"{d}/deep/o/libO.so.1", "libN.so.1": f"{d}/deep/n/libN.so.1"},
    )

    # RUNPATH of the executable is not inherited.
    d = b.path("runpath_not_inherited")
    lb = b.lib(f"{d}/dirB/libB.so.1", "libB.so.1", "B")
    la = b.lib(f"{d}/dirA/libA.so.1", "libA.so.1", "A", needs=(lb,))
    prog = b.exe(f"{d}/prog", needs=(la,), runpath=f"{d}/dirA:{d}/dirB")
    b.case(
        "runpath_not_inherited", prog, libs={"libA.so.1": f"{d}/dirA/libA.so.1", "libB.so.1": None}
    )

    # A RUNPATH on a library disables its loaders' RPATH chain for its lookups.
    d = b.path("runpath_disables_chain")
    lb = b.lib(f"{d}/exe_rpath/libB.so.1", "libB.so.1", "B")
    lc = b.lib(f"{d}/own_runpath/libC.so.1", "libC.so.1", "C")
    b.lib(f"{d}/exe_rpath/libC.so.1", "libC.so.1", "C-decoy")
    la = b.lib(f"{d}/dirA/libA.so.1", "libA.so.1", "A", needs=(lb, lc), runpath=f"{d}/own_runpath")
    prog = b.exe(f"{d}/prog", needs=(la,), rpath=f"{d}/dirA:{d}/exe_rpath")
    b.case(
        "runpath_disables_chain",
        prog,
        libs={
            "libA.so.1": f"{d}/dirA/libA.so.1",
            "libB.so.1": None,
            "libC.so.1": f"{d}/own_runpath/libC.so.1",
        },
        absent=(f"{d}/exe_rpath/libC.so.1",),
    )

    # An object with both DT_RPATH and DT_RUNPATH: the RPATH is ignored.
    d = b.path("rpath_and_runpath")
    b.lib(f"{d}/in_rpath/libH.so.1", "libH.so.1", "H-rpath")
    lh = b.lib(f"{d}/in_runpath/libH.so.1", "libH.so.1", "H-runpath")
    lo = b.lib(f"{d}/in_rpath/libOnlyRpath.so.1", "libOnlyRpath.so.1", "R")
    # ld writes one of the two; -f (DT_AUXILIARY) carries the second string, retagged RUNPATH.
    le = b.lib(
        f"{d}/dirE/libE.so.1",
        "libE.so.1",
        "E",
        needs=(lh, lo),
        rpath=f"{d}/in_rpath",
        extra=(f"-Wl,-f,{d}/in_runpath",),
    )
    retag_dynamic(le, DT_AUXILIARY, DT_RUNPATH)
    prog = b.exe(f"{d}/prog", needs=(le,), rpath=f"{d}/dirE")
    b.case(
        "rpath_and_runpath",
        prog,
        libs={
            "libE.so.1": f"{d}/dirE/libE.so.1",
            "libH.so.1": f"{d}/in_runpath/libH.so.1",
            "libOnlyRpath.so.1": None,
        },
        absent=(f"{d}/in_rpath/libH.so.1",),
    )


def s_ld_library_path(b: Builder) -> None:
    d = b.path("ld_library_path")
    b.lib(f"{d}/env/libL.so.1", "libL.so.1", "env")
    b.lib(f"{d}/env/libEnvOnly.so.1", "libEnvOnly.so.1", "env-only")
    b.lib(f"{d}/rpath/libL.so.1", "libL.so.1", "rpath")
    b.lib(f"{d}/runpath/libL.so.1", "libL.so.1", "runpath")
    ll = f"{d}/rpath/libL.so.1"
    le = f"{d}/env/libEnvOnly.so.1"
    env = {"LD_LIBRARY_PATH": f"{d}/does-not-exist:{d}/env"}
    p1 = b.exe(f"{d}/prog_rpath", needs=(ll, le), rpath=f"{d}/rpath")
    b.case(
        "ld_library_path_after_rpath",
        p1,
        env=env,
        libs={"libL.so.1": f"{d}/rpath/libL.so.1", "libEnvOnly.so.1": f"{d}/env/libEnvOnly.so.1"},
        absent=(f"{d}/env/libL.so.1",),
    )
    p2 = b.exe(f"{d}/prog_runpath", needs=(ll, le), runpath=f"{d}/runpath")
    b.case(
        "ld_library_path_before_runpath",
        p2,
        env=env,
        libs={"libL.so.1": f"{d}/env/libL.so.1"},
        absent=(f"{d}/runpath/libL.so.1",),
    )
    b.case(
        "runpath_without_ld_library_path",
        p2,
        libs={"libL.so.1": f"{d}/runpath/libL.so.1", "libEnvOnly.so.1": None},
    )


def s_dst(b: Builder, tools: dict[str, Any]) -> None:
    d = b.path("origin")
    # $ORIGIN of the program and ${ORIGIN} of a library.
    lp = b.lib(f"{d}/lib/sub/libP.so.1", "libP.so.1", "P")
    lo = b.lib(f"{d}/lib/libO.so.1", "libO.so.1", "O", needs=(lp,), runpath="${ORIGIN}/sub")
    prog = b.exe(f"{d}/bin/prog", needs=(lo,), rpath="$ORIGIN/../lib")
    b.case(
        "origin",
        prog,
        libs={"libO.so.1": f"{d}/bin/../lib/libO.so.1", "libP.so.1": f"{d}/lib/sub/libP.so.1"},
    )
    # A library that is a symlink into another directory: $ORIGIN is where it was found.
    lu = b.lib(f"{d}/found/libU.so.1", "libU.so.1", "U-found-dir")
    b.lib(f"{d}/store/libU.so.1", "libU.so.1", "U-real-dir")
    b.lib(f"{d}/store/libT.so.1.0", "libT.so.1", "T", needs=(lu,), runpath="$ORIGIN")
    os.symlink("../store/libT.so.1.0", f"{d}/found/libT.so.1")
    prog = b.exe(f"{d}/prog_symlinked_lib", needs=(f"{d}/found/libT.so.1",), rpath=f"{d}/found")
    b.case(
        "origin_of_symlinked_lib",
        prog,
        libs={"libT.so.1": f"{d}/found/libT.so.1", "libU.so.1": f"{d}/found/libU.so.1"},
        absent=(f"{d}/store/libU.so.1",),
    )
    # Reached through a symlinked directory: "$ORIGIN/../x" is resolved by the kernel from the
    # link (linkdir -> deep/real, so .. is deep), not cut lexically.
    b.lib(f"{d}/deep/q2/libR.so.1", "libR.so.1", "R-kernel")
    b.lib(f"{d}/q2/libR.so.1", "libR.so.1", "R-lexical")
    lq = b.lib(
        f"{d}/deep/real/libQ.so.1",
        "libQ.so.1",
        "Q",
        needs=(f"{d}/q2/libR.so.1",),
        runpath="$ORIGIN/../q2",
    )
    os.symlink("deep/real", f"{d}/linkdir")
    prog = b.exe(f"{d}/prog_symlinked_dir", needs=(lq,), rpath=f"{d}/linkdir")
    b.case(
        "origin_through_symlinked_dir",
        prog,
        libs={"libQ.so.1": f"{d}/linkdir/libQ.so.1", "libR.so.1": f"{d}/deep/q2/libR.so.1"},
        absent=(f"{d}/q2/libR.so.1",),
    )
    # The program itself given through a symlink. ldd runs "ld.so PROG", which takes $ORIGIN
    # from the path as given (bin/../lib); a real exec takes it from /proc/self/exe, the real
    # path (real/bin/../lib). The pack must hold what the exec maps: the oracle here is the
    # exec trace (LD_TRACE_LOADED_OBJECTS=1 PROG), not ldd.
    b.lib(f"{d}/symexe/real/lib/libS.so.1", "libS.so.1", "S-real")
    ls_ = b.lib(f"{d}/symexe/lib/libS.so.1", "libS.so.1", "S-link")
    b.exe(f"{d}/symexe/real/bin/prog", needs=(ls_,), rpath="$ORIGIN/../lib")
    os.makedirs(f"{d}/symexe/bin")
    os.symlink("../real/bin/prog", f"{d}/symexe/bin/prog")
    b.case(
        "origin_of_symlinked_program",
        f"{d}/symexe/bin/prog",
        oracle="exec",
        libs={"libS.so.1": f"{d}/symexe/real/lib/libS.so.1"},
        absent=(f"{d}/symexe/lib/libS.so.1",),
    )

    # $LIB and $PLATFORM (plain and braced): this glibc (Debian) expands $LIB to
    # lib/x86_64-linux-gnu and $PLATFORM to the platform its ld.so reports for this CPU
    # (x86_64, or haswell on Intel CPUs with AVX2); a folder of the other name is a decoy.
    platform = tools["platform"] or "x86_64"
    decoy = "haswell" if platform == "x86_64" else "x86_64"
    d = b.path("lib_platform")
    b.lib(f"{d}/a/lib/x86_64-linux-gnu/libLib1.so.1", "libLib1.so.1", "LIB-debian")
    b.lib(f"{d}/a/lib/libLib1.so.1", "libLib1.so.1", "LIB-plain")
    b.lib(f"{d}/a/lib64/libLib1.so.1", "libLib1.so.1", "LIB-lib64")
    b.lib(f"{d}/b/lib/x86_64-linux-gnu/libLib2.so.1", "libLib2.so.1", "LIB-debian")
    b.lib(f"{d}/c/{platform}/libPlat1.so.1", "libPlat1.so.1", "PLATFORM")
    b.lib(f"{d}/c/{decoy}/libPlat1.so.1", "libPlat1.so.1", "not-PLATFORM")
    b.lib(f"{d}/e/{platform}/libPlat2.so.1", "libPlat2.so.1", "PLATFORM")
    needs = tuple(
        f"{d}/{p}"
        for p in (
            "a/lib/x86_64-linux-gnu/libLib1.so.1",
            "b/lib/x86_64-linux-gnu/libLib2.so.1",
            f"c/{platform}/libPlat1.so.1",
            f"e/{platform}/libPlat2.so.1",
        )
    )
    prog = b.exe(
        f"{d}/prog",
        needs=needs,
        rpath=f"{d}/a/$LIB:{d}/b/${{LIB}}:{d}/c/$PLATFORM:{d}/e/${{PLATFORM}}",
    )
    b.case(
        "lib_platform",
        prog,
        libs={
            "libLib1.so.1": f"{d}/a/lib/x86_64-linux-gnu/libLib1.so.1",
            "libLib2.so.1": f"{d}/b/lib/x86_64-linux-gnu/libLib2.so.1",
            "libPlat1.so.1": f"{d}/c/{platform}/libPlat1.so.1",
            "libPlat2.so.1": f"{d}/e/{platform}/libPlat2.so.1",
        },
        absent=(
            f"{d}/a/lib/libLib1.so.1",
            f"{d}/a/lib64/libLib1.so.1",
            f"{d}/c/{decoy}/libPlat1.so.1",
        ),
    )


def s_slash(b: Builder) -> None:
    d = b.path("slash_needed")
    # No soname: DT_NEEDED is the path given on the link line (absolute, relative to the cwd).
    b.lib(f"{d}/abs/libabs.so", None, "abs")
    b.lib(f"{d}/rel/librel.so", None, "rel")
    lc = b.lib(f"{d}/other/libC.so.1", "libC.so.1", "C")
    prog = b.exe(
        f"{d}/prog", cwd=d, rpath=f"{d}/other", needs=(f"{d}/abs/libabs.so", "rel/librel.so", lc)
    )
    b.case(
        "slash_needed",
        prog,
        cwd=d,
        libs={
            f"{d}/abs/libabs.so": f"{d}/abs/libabs.so",
            "rel/librel.so": f"{d}/rel/librel.so",
            "libC.so.1": f"{d}/other/libC.so.1",
        },
    )
    # A library loaded by path whose SONAME another object needs later: reused, not searched
    # (it exists nowhere else). DT_NEEDED is the path because the file had no soname at link
    # time; it is rebuilt in place with one afterwards.
    tmp = b.lib(f"{d}/tmp/libByName.so.1", "libByName.so.1", "tmp")
    ln = b.lib(f"{d}/other/libNeedsByName.so.1", "libNeedsByName.so.1", "N", needs=(tmp,))
    p = f"{d}/abs/libbyname-real.so"
    b.lib(p, None, "by-path-no-soname")
    prog = b.exe(f"{d}/prog_reuse", rpath=f"{d}/other", needs=(p, ln))
    os.remove(p)
    b.lib(p, "libByName.so.1", "by-path")
    shutil.rmtree(f"{d}/tmp")
    b.case(
        "slash_soname_reuse",
        prog,
        libs={p: p, "libNeedsByName.so.1": f"{d}/other/libNeedsByName.so.1"},
    )


def s_nodeflib(b: Builder) -> None:
    d = b.path("nodeflib")
    lr = b.lib(f"{d}/r/libr.so.1", "libr.so.1", "r")
    libm = "/lib/x86_64-linux-gnu/libm.so.6"
    if not os.path.exists(libm):
        b.skipped("nodeflib", f"{libm} missing")
        return
    # -nostdlib: the program needs only libr.so.1 (RPATH) and libm.so.6 (default dirs/cache).
    prog = b.exe(
        f"{d}/prog",
        src=NOLIBC_C,
        needs=(lr, libm),
        rpath=f"{d}/r",
        extra=("-nostdlib", "-Wl,-z,nodefaultlib"),
    )
    b.case("nodeflib", prog, libs={"libr.so.1": f"{d}/r/libr.so.1", "libm.so.6": None})
    prog = b.exe(
        f"{d}/prog_deflib", src=NOLIBC_C, needs=(lr, libm), rpath=f"{d}/r", extra=("-nostdlib",)
    )
    b.case("nodeflib_control", prog, libs={"libr.so.1": f"{d}/r/libr.so.1", "libm.so.6": libm})


def s_hwcaps(b: Builder, tools: dict[str, Any]) -> None:
    d = b.path("hwcaps")
    sup = tools["hwcaps_supported"]
    if "x86-64-v2" not in sup:
        b.skipped("hwcaps", "the CPU does not support x86-64-v2 (ld.so --help)")
        return
    lh = b.lib(f"{d}/h/libh.so.1", "libh.so.1", "plain")
    b.lib(f"{d}/h/glibc-hwcaps/x86-64-v2/libh.so.1", "libh.so.1", "x86-64-v2")
    # v2 and v3 variants: the highest supported level wins.
    lv = b.lib(f"{d}/v/libv.so.1", "libv.so.1", "plain")
    b.lib(f"{d}/v/glibc-hwcaps/x86-64-v2/libv.so.1", "libv.so.1", "x86-64-v2")
    b.lib(f"{d}/v/glibc-hwcaps/x86-64-v3/libv.so.1", "libv.so.1", "x86-64-v3")
    b.lib(f"{d}/v/glibc-hwcaps/x86-64-v9/libv.so.1", "libv.so.1", "x86-64-v9-unknown")
    best_v = "x86-64-v3" if "x86-64-v3" in sup else "x86-64-v2"
    # A hwcaps lib in the first dir only beats a plain one in an earlier... later dir: per dir.
    lk = b.lib(f"{d}/k2/libk.so.1", "libk.so.1", "k2-plain")
    b.lib(f"{d}/k1/libk.so.1", "libk.so.1", "k1-plain")
    b.lib(f"{d}/k2/glibc-hwcaps/x86-64-v2/libk.so.1", "libk.so.1", "k2-v2")
    needs = (lh, lv, lk)
    prog = b.exe(f"{d}/prog", needs=needs, rpath=f"{d}/h:{d}/v:{d}/k1:{d}/k2")
    b.case(
        "hwcaps",
        prog,
        libs={
            "libh.so.1": f"{d}/h/glibc-hwcaps/x86-64-v2/libh.so.1",
            "libv.so.1": f"{d}/v/glibc-hwcaps/{best_v}/libv.so.1",
            "libk.so.1": f"{d}/k1/libk.so.1",
        },
        absent=(f"{d}/h/libh.so.1", f"{d}/v/libv.so.1", f"{d}/k2/glibc-hwcaps/x86-64-v2/libk.so.1"),
    )
    # Same under RUNPATH and LD_LIBRARY_PATH.
    prog = b.exe(f"{d}/prog_runpath", needs=(lh,), runpath=f"{d}/h")
    b.case("hwcaps_runpath", prog, libs={"libh.so.1": f"{d}/h/glibc-hwcaps/x86-64-v2/libh.so.1"})
    prog = b.exe(f"{d}/prog_env", needs=(lh,))
    b.case(
        "hwcaps_ld_library_path",
        prog,
        env={"LD_LIBRARY_PATH": f"{d}/h"},
        libs={"libh.so.1": f"{d}/h/glibc-hwcaps/x86-64-v2/libh.so.1"},
    )

    s_legacy_hwcaps(b, tools)
    s_legacy_hwcaps_intel(b, tools)


def s_legacy_hwcaps(b: Builder, tools: dict[str, Any]) -> None:
    """Legacy hwcap folders (still searched by glibc 2.36, after glibc-hwcaps), named after what
    this machine's ld.so searches: the platform P and the hwcap names B, in all combinations
    ``tls/P/B-high/.../B-low`` down to the plain folder (on AMD: tls/x86_64/x86_64, tls/x86_64,
    tls, x86_64/x86_64, x86_64, then the folder)."""
    leg, platform, bits = tools["legacy_supported"], tools["platform"], tools["legacy_bits"]
    if "tls" not in leg or not platform or not bits:
        b.skipped("legacy_hwcaps", f"ld.so searches no tls, platform and hwcap folders: {leg}")
        return
    low = bits[-1]  # the lowest bit is named last
    d = b.path("legacy_hwcaps")
    lt = b.lib(f"{d}/t/libt.so.1", "libt.so.1", "plain")
    b.lib(f"{d}/t/tls/libt.so.1", "libt.so.1", "tls")
    lx = b.lib(f"{d}/x/libx.so.1", "libx.so.1", "plain")
    b.lib(f"{d}/x/{platform}/libx.so.1", "libx.so.1", "platform")
    ly = b.lib(f"{d}/y/liby.so.1", "liby.so.1", "plain")
    b.lib(f"{d}/y/tls/liby.so.1", "liby.so.1", "tls")
    b.lib(f"{d}/y/{platform}/liby.so.1", "liby.so.1", "platform")
    b.lib(f"{d}/y/tls/{platform}/liby.so.1", "liby.so.1", "tls/platform")
    lw = b.lib(f"{d}/w/libw.so.1", "libw.so.1", "plain")
    b.lib(f"{d}/w/{platform}/{low}/libw.so.1", "libw.so.1", "platform/bit")
    b.lib(f"{d}/w/{platform}/libw.so.1", "libw.so.1", "platform")
    needs = [lt, lx, ly, lw]
    libs = {
        "libt.so.1": f"{d}/t/tls/libt.so.1",
        "libx.so.1": f"{d}/x/{platform}/libx.so.1",
        "liby.so.1": f"{d}/y/tls/{platform}/liby.so.1",
        "libw.so.1": f"{d}/w/{platform}/{low}/libw.so.1",
    }
    if "x86-64-v2" in tools["hwcaps_supported"]:
        needs.append(b.lib(f"{d}/z/libz9.so.1", "libz9.so.1", "plain"))
        b.lib(f"{d}/z/tls/libz9.so.1", "libz9.so.1", "tls")
        b.lib(f"{d}/z/glibc-hwcaps/x86-64-v2/libz9.so.1", "libz9.so.1", "x86-64-v2")
        libs["libz9.so.1"] = f"{d}/z/glibc-hwcaps/x86-64-v2/libz9.so.1"
    rpath = ":".join(f"{d}/{sub}" for sub in "txywz")
    b.case("legacy_hwcaps", b.exe(f"{d}/prog", needs=tuple(needs), rpath=rpath), libs=libs)


# An Intel CPU with AVX2, BMI, FMA and AVX-512 (Skylake-SP and later), as --cpu-features states
# it: glibc 2.36 gives it the platform haswell and the hwcap folder avx512_1.
INTEL_AVX512 = (
    "intel,cx16,lahf_lm,popcnt,pni,sse4_1,sse4_2,ssse3,avx,avx2,bmi1,bmi2,f16c,fma,abm,movbe,"
    "xsave,avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
)


def s_legacy_hwcaps_intel(b: Builder, tools: dict[str, Any]) -> None:
    """The Intel-only legacy folders on any CPU: scratchpack is told the CPU (--cpu-features),
    and where this machine's ld.so searches haswell and avx512_1 itself, it confirms the
    fixture. The order is glibc 2.36's for [x86_64, avx512_1, haswell, tls]: tls/haswell/
    avx512_1/x86_64 first ... tls, haswell/avx512_1/x86_64 ... avx512_1, x86_64, the folder."""
    d = b.path("legacy_hwcaps_intel")
    names = {
        # soname: (folders, the one that wins)
        "libi1.so.1": (("", "haswell", "x86_64"), "haswell"),
        "libi2.so.1": (("x86_64", "avx512_1", "avx512_1/x86_64"), "avx512_1/x86_64"),
        "libi3.so.1": (("haswell/x86_64", "haswell/avx512_1"), "haswell/avx512_1"),
        "libi4.so.1": (("haswell/avx512_1/x86_64", "tls"), "tls"),
        "libi5.so.1": (
            ("tls/haswell", "tls/haswell/avx512_1/x86_64"),
            "tls/haswell/avx512_1/x86_64",
        ),
    }
    needs, libs = [], {}
    for index, (soname, (folders, winner)) in enumerate(names.items()):
        top = f"{d}/l{index}"
        for folder in folders:
            path = posixpath.join(top, folder, soname)
            made = b.lib(path, soname, folder or "plain")
            if folder == winner:
                needs.append(made)
                libs[soname] = path
    rpath = ":".join(f"{d}/l{index}" for index in range(len(names)))
    confirms = tools["platform"] == "haswell" and "avx512_1" in tools["legacy_bits"]
    b.case(
        "legacy_hwcaps_intel",
        b.exe(f"{d}/prog", needs=tuple(needs), rpath=rpath),
        libs=libs,
        scratchpack_args=("--cpu-features", INTEL_AVX512),
        loader_confirms=confirms,
        note="" if confirms else describe_loader(tools) + ": checked by scratchpack alone",
    )


def s_wrong_kind(b: Builder, tools: dict[str, Any]) -> None:
    d = b.path("wrong_kind")
    good = b.lib(f"{d}/good/libfoo.so.1", "libfoo.so.1", "good")

    def variant(name: str, patch: list[tuple[int, bytes]]) -> str:
        path = f"{d}/{name}/libfoo.so.1"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy(good, path)
        for off, data in patch:
            patch_bytes(path, off, data)
        return path

    def prog(name: str, bad: str) -> str:
        return b.exe(f"{d}/prog_{name}", needs=(good,), rpath=f"{os.path.dirname(bad)}:{d}/good")

    if tools["m32"]:
        path = f"{d}/class32/libfoo.so.1"
        b.lib(path, "libfoo.so.1", "32-bit", cc="gcc", extra=("-m32", "-nostdlib"))
        b.case(
            "wrong_class",
            prog("class32", path),
            libs={"libfoo.so.1": f"{d}/good/libfoo.so.1"},
            absent=(path,),
        )
    else:
        b.skipped("wrong_class", "gcc -m32 cannot build a 32-bit library here")
    bad = variant("machine", [(18, struct.pack("<H", EM_AARCH64))])
    b.case(
        "wrong_machine",
        prog("machine", bad),
        libs={"libfoo.so.1": f"{d}/good/libfoo.so.1"},
        absent=(bad,),
    )
    # A real big-endian object: e_machine read little-endian does not match: skipped.
    bad = variant("bigendian", [(5, b"\x02"), (18, b"\x00\x3e")])
    b.case(
        "wrong_data_and_machine",
        prog("bigendian", bad),
        libs={"libfoo.so.1": f"{d}/good/libfoo.so.1"},
        absent=(bad,),
    )
    # Any bad e_ident byte with a foreign e_machine: skipped too (the machine is checked first).
    bad = variant("machine_osabi", [(7, bytes([97])), (18, struct.pack("<H", EM_AARCH64))])
    b.case(
        "wrong_machine_and_osabi",
        prog("machine_osabi", bad),
        libs={"libfoo.so.1": f"{d}/good/libfoo.so.1"},
        absent=(bad,),
    )
    # ELFOSABI_GNU (3) is accepted like SYSV.
    ok = variant("osabi_gnu", [(7, b"\x03")])
    b.case("osabi_gnu_accepted", prog("osabi_gnu", ok), libs={"libfoo.so.1": ok})
    # Fatal in glibc 2.36 (not skipped): ld.so stops the whole load at this candidate.
    for name, patch, msg in (
        ("data", [(5, b"\x02")], "ELF file data encoding not little-endian"),
        ("osabi", [(7, bytes([97]))], "ELF file OS ABI invalid"),
        ("abiversion", [(8, b"\x01")], "ELF file ABI version invalid"),
        ("not_elf", [(0, b"#!/bin/sh\n" + b"#" * 64)], "invalid ELF header"),
        ("padding", [(9, b"\x01")], "nonzero padding in e_ident"),
        # e_version is checked before e_machine when e_ident is sound: fatal despite the machine.
        (
            "eversion_machine",
            [(20, b"\x02\0\0\0"), (18, struct.pack("<H", EM_AARCH64))],
            "ELF file version does not match current one",
        ),
    ):
        bad = variant(name, patch)
        b.case(
            f"fatal_{name}",
            prog(name, bad),
            libs={"libfoo.so.1": bad},
            ldd_error=msg,
            absent=(f"{d}/good/libfoo.so.1",),
        )


def s_reuse_and_missing(b: Builder) -> None:
    d = b.path("soname_reuse")
    s1 = b.lib(f"{d}/a/sub/libS.so.1", "libS.so.1", "via-A")
    b.lib(f"{d}/b/sub/libS.so.1", "libS.so.1", "via-B")
    la = b.lib(f"{d}/a/libA.so.1", "libA.so.1", "A", needs=(s1,), runpath=f"{d}/a/sub")
    lb = b.lib(f"{d}/b/libB.so.1", "libB.so.1", "B", needs=(s1,), runpath=f"{d}/b/sub")
    prog = b.exe(f"{d}/prog", needs=(la, lb), rpath=f"{d}/a:{d}/b")
    b.case(
        "soname_reuse_first_wins",
        prog,
        libs={"libS.so.1": f"{d}/a/sub/libS.so.1"},
        absent=(f"{d}/b/sub/libS.so.1",),
    )
    # Breadth first: the program's own libS (second DT_NEEDED) is loaded before libA's.
    b.lib(f"{d}/x/libS.so.1", "libS.so.1", "via-exe")
    prog = b.exe(f"{d}/prog_bfs", needs=(la, s1), rpath=f"{d}/a:{d}/x")
    b.case(
        "soname_reuse_breadth_first",
        prog,
        libs={"libS.so.1": f"{d}/x/libS.so.1"},
        absent=(f"{d}/a/sub/libS.so.1",),
    )

    d = b.path("missing")
    gone = b.lib(f"{d}/gone/libnowhere.so.1", "libnowhere.so.1", "gone")
    gone2 = b.lib(f"{d}/gone/libnowhere2.so.1", "libnowhere2.so.1", "gone")
    lf = b.lib(f"{d}/lib/libfound.so.1", "libfound.so.1", "found", needs=(gone2,))
    prog = b.exe(f"{d}/prog", needs=(gone, lf), rpath=f"{d}/lib")
    shutil.rmtree(f"{d}/gone")
    b.case(
        "missing",
        prog,
        libs={
            "libnowhere.so.1": None,
            "libnowhere2.so.1": None,
            "libfound.so.1": f"{d}/lib/libfound.so.1",
        },
    )


def s_static_script(b: Builder, tools: dict[str, Any]) -> None:
    d = b.path("static")
    if tools["static"]:
        b.case("static", b.exe(f"{d}/prog_static", extra=("-static",)), flavor="static")
        b.case("static_pie", b.exe(f"{d}/prog_static_pie", extra=("-static-pie",)), flavor="static")
    else:
        b.skipped("static", "gcc -static/-static-pie cannot link here (libc.a?)")
    for name, text in (
        ("script.sh", "#!/bin/sh\necho hi\n"),
        ("script_args.sh", "#! /bin/sh -e\necho hi\n"),
    ):
        path = f"{d}/{name}"
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        b.case(name.replace(".", "_"), path, flavor="script")


def s_musl(b: Builder, tools: dict[str, Any]) -> None:
    if not tools["musl_gcc"]:
        b.skipped("musl", "musl-gcc (musl-tools) or /lib/ld-musl-x86_64.so.1 missing", "musl")
        return
    d = b.path("musl")
    mc = "musl-gcc"
    prog = b.exe(f"{d}/prog_plain", cc=mc)
    b.case("musl_plain", prog, flavor="musl", libs={"libc.so": MUSL_RTLD})
    lm = b.lib(f"{d}/r/libm1.so.1", "libm1.so.1", "musl-rpath", cc=mc)
    prog = b.exe(f"{d}/prog_rpath", cc=mc, needs=(lm,), rpath=f"{d}/r")
    b.case("musl_rpath", prog, flavor="musl", libs={"libm1.so.1": f"{d}/r/libm1.so.1"})
    # musl searches LD_LIBRARY_PATH before RPATH (glibc: after).
    b.lib(f"{d}/env/libm1.so.1", "libm1.so.1", "musl-env", cc=mc)
    b.case(
        "musl_ld_library_path_first",
        prog,
        flavor="musl",
        env={"LD_LIBRARY_PATH": f"{d}/env"},
        libs={"libm1.so.1": f"{d}/env/libm1.so.1"},
        absent=(f"{d}/r/libm1.so.1",),
    )
    # musl inherits RUNPATH like RPATH up the chain of loaders (glibc does not), and $ORIGIN.
    lb = b.lib(f"{d}/b/libmb.so.1", "libmb.so.1", "musl-b", cc=mc)
    la = b.lib(f"{d}/a/libma.so.1", "libma.so.1", "musl-a", cc=mc, needs=(lb,))
    prog = b.exe(f"{d}/bin/prog_runpath", cc=mc, needs=(la,), runpath="$ORIGIN/../a:${ORIGIN}/../b")
    b.case(
        "musl_runpath_inherited",
        prog,
        flavor="musl",
        libs={"libma.so.1": f"{d}/bin/../a/libma.so.1", "libmb.so.1": f"{d}/bin/../b/libmb.so.1"},
    )
    gone = b.lib(f"{d}/gone/libmgone.so.1", "libmgone.so.1", "gone", cc=mc)
    prog = b.exe(f"{d}/prog_missing", cc=mc, needs=(gone, lm), rpath=f"{d}/r")
    shutil.rmtree(f"{d}/gone")
    b.case(
        "musl_missing",
        prog,
        flavor="musl",
        libs={"libmgone.so.1": None, "libm1.so.1": f"{d}/r/libm1.so.1"},
    )


def build(out: str, loader_help: str | None = None) -> dict[str, Any]:
    """Build every scenario into ``out`` (created; must be empty or absent) and return the
    manifest. ``loader_help``, the text of another machine's ``ld.so --help``, builds the
    CPU-dependent cases as they would be built there."""
    os.makedirs(out, exist_ok=True)
    tools = probe_tools()
    if loader_help is not None:
        tools.update(parse_loader_help(loader_help))
    b = Builder(out)
    if not tools["gcc"]:
        b.skipped("all", "gcc is not installed")
        return {"tools": tools, "cases": b.cases, "out": b.out}
    s_rpath_runpath(b)
    s_ld_library_path(b)
    s_dst(b, tools)
    s_slash(b)
    s_nodeflib(b)
    s_hwcaps(b, tools)
    s_wrong_kind(b, tools)
    s_reuse_and_missing(b)
    s_static_script(b, tools)
    s_musl(b, tools)
    return {"tools": tools, "cases": b.cases, "out": b.out}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(json.dumps(build(argv[1]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
