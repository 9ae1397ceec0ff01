"""The legacy hwcap folder of i386 loaders: HWCAP_IMPORTANT = HWCAP_X86_SSE2 (glibc 2.26-2.36).

A 2.36 i386 loader on any x86-64 CPU searches ``tls/i686/sse2, tls/i686, tls/sse2, tls,
i686/sse2, i686, sse2, .`` under every directory (platform before hwcap names); this host's own
i386 loader, started by ldd, is the oracle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lddcompare as lc

pytestmark = [
    pytest.mark.ldd,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
    pytest.mark.skipif(
        not os.path.exists("/lib/ld-linux.so.2"), reason="no i386 loader (gcc-multilib)"
    ),
]

# (folders holding a copy, the one the loader takes)
CASES = {
    "sse2": (("sse2", ""), "sse2"),
    "i686_first": (("i686", "sse2", ""), "i686"),
    "i686_sse2": (("i686/sse2", "i686", "tls", ""), "tls"),
    "tls_i686_sse2": (("tls/i686/sse2", "tls/i686", "tls/sse2", "i686/sse2", ""), "tls/i686/sse2"),
}


def _gcc(*args: str) -> None:
    proc = subprocess.run(["gcc", "-m32", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"gcc -m32 cannot link here: {proc.stderr.strip()[:200]}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_i386_legacy_folders(tmp_path: Path, name: str) -> None:
    folders, want = CASES[name]
    (tmp_path / "lib.c").write_text("int f(void) { return 1; }\n")
    (tmp_path / "main.c").write_text("int f(void);\nint main(void) { return f(); }\n")
    lib = tmp_path / "lib"
    for folder in folders:
        (lib / folder).mkdir(parents=True, exist_ok=True)
        _gcc(
            "-shared",
            "-fPIC",
            "-Wl,-soname,libf.so.1",
            "-o",
            str(lib / folder / "libf.so.1"),
            str(tmp_path / "lib.c"),
        )
    prog = str(tmp_path / "prog")
    _gcc(
        "-o",
        prog,
        str(tmp_path / "main.c"),
        str(lib / "libf.so.1"),
        f"-Wl,-rpath,{lib}",
        "-Wl,--disable-new-dtags",
    )
    trace = lc.run_ldd(prog)
    expected = os.path.realpath(lib / want / "libf.so.1")
    assert expected in trace.mapped(), trace.raw
    binaries, _ = lc.parse_json(lc.run_scratchpack([prog]).stdout)
    problems = lc.diff(binaries[0], trace)
    assert not problems, "\n".join(problems) + "\n" + trace.raw
