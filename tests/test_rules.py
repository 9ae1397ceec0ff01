"""Small rules of the loaders, each checked on its own: tokens, hwcaps, #! lines, PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.errors import BadElf, ProgramNotFound, UsageError
from bundler.loader import hwcaps
from bundler.loader.ldso import DEFAULT_GLIBC, LoaderFactory, SearchSettings
from bundler.loader.programs import locate, parse_script
from bundler.loader.resolve import _musl_reserved, expand_tokens
from bundler.loader.rootfs import FsRoot

V4_CPU = frozenset(
    "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave "
    "avx512f avx512bw avx512cd avx512dq avx512vl".split()
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$ORIGIN/../lib", "/opt/app/bin/../lib"),
        ("${ORIGIN}/x", "/opt/app/bin/x"),
        ("/a/$LIB/b", "/a/lib/x86_64-linux-gnu/b"),
        ("/a/${LIB}", "/a/lib/x86_64-linux-gnu"),
        ("/p/$PLATFORM", "/p/x86_64"),
        ("/p/${PLATFORM}/q", "/p/x86_64/q"),
        ("$ORIGINX/y", "$ORIGINX/y"),  # an identifier character follows: not a token
        ("$ORIGIN_1", "$ORIGIN_1"),
        ("/cost/$5", "/cost/$5"),  # unknown tokens stay as written
        ("$ORIGIN-x", "/opt/app/bin-x"),
    ],
)
def test_expand_tokens(text: str, expected: str) -> None:
    assert (
        expand_tokens(text, origin="/opt/app/bin", lib="lib/x86_64-linux-gnu", platform="x86_64")
        == expected
    )


def test_unknown_origin_drops_the_element() -> None:
    assert expand_tokens("$ORIGIN/lib", origin=None, lib="lib", platform="x86_64") is None


def test_x86_64_levels_follow_the_cpu() -> None:
    assert hwcaps.supported_subdirs(62, V4_CPU) == ("x86-64-v4", "x86-64-v3", "x86-64-v2")
    v2 = frozenset("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx".split())
    assert hwcaps.supported_subdirs(62, v2) == ("x86-64-v2",)
    assert hwcaps.supported_subdirs(62, frozenset({"sse2"})) == ()


def test_cpuinfo_flags() -> None:
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\nflags\t\t: other\n"
    assert hwcaps.cpu_flags_from_cpuinfo(text) == frozenset({"fpu", "sse2", "avx2"})


def test_hwcaps_option_is_ordered_and_checked() -> None:
    assert hwcaps.parse_hwcaps_option("x86-64-v2,x86-64-v3", 62) == ("x86-64-v3", "x86-64-v2")
    assert hwcaps.parse_hwcaps_option("none", 62) == ()
    with pytest.raises(UsageError, match="unknown level"):
        hwcaps.parse_hwcaps_option("x86-64-v9", 62)


def test_legacy_subdirs_in_glibc_order() -> None:
    # As LD_DEBUG=libs prints on glibc 2.36 x86-64.
    assert hwcaps.legacy_subdirs(["tls", "x86_64", "x86_64"]) == (
        "tls/x86_64/x86_64",
        "tls/x86_64",
        "tls/x86_64",
        "tls",
        "x86_64/x86_64",
        "x86_64",
        "x86_64",
        "",
    )
    assert hwcaps.legacy_names(62, 64, (2, 37), V4_CPU) == []
    assert hwcaps.legacy_names(62, 64, (2, 36), V4_CPU) == ["tls", "x86_64", "x86_64"]


def test_platform_by_glibc_era() -> None:
    # sysdeps/x86/cpu-features.c (2.26 and later) refines the platform on Intel CPUs only.
    intel = V4_CPU | {hwcaps.INTEL}
    assert hwcaps.at_platform(62, 64, (2, 36), V4_CPU) == "x86_64"
    assert hwcaps.at_platform(62, 64, (2, 36), intel) == "haswell"
    assert hwcaps.at_platform(62, 64, (2, 31), intel) == "haswell"
    assert hwcaps.at_platform(62, 64, (2, 25), intel) == "x86_64"
    assert hwcaps.at_platform(62, 64, (2, 36), intel | {"avx512er", "avx512pf"}) == "xeon_phi"
    assert hwcaps.at_platform(3, 32, (2, 36), V4_CPU) == "i686"


def test_intel_rules_by_release() -> None:
    """sysdeps/x86/cpu-features.c sets the platform and HWCAP_X86_AVX512_1 on Intel only, from
    2.26 to 2.41; the legacy folders (and so avx512_1) end with 2.36, $PLATFORM stays."""
    intel = V4_CPU | {hwcaps.INTEL}
    for glibc in ((2, 26), (2, 31), (2, 36)):
        assert hwcaps.legacy_names(62, 64, glibc, intel) == ["tls", "haswell", "avx512_1", "x86_64"]
        assert hwcaps.legacy_names(62, 64, glibc, V4_CPU) == ["tls", "x86_64", "x86_64"]
    assert hwcaps.legacy_hwcap_mask(62, 64, (2, 36), intel) == 0b110
    assert hwcaps.legacy_names(62, 64, (2, 41), intel) == []
    assert hwcaps.legacy_hwcap_mask(62, 64, (2, 41), intel) == 0
    assert hwcaps.at_platform(62, 64, (2, 41), intel) == "haswell"
    # AVX512CD usable needs AVX512F usable: without it, neither avx512_1 nor xeon_phi.
    no_f = intel - {"avx512f"}
    assert hwcaps.legacy_names(62, 64, (2, 36), no_f) == ["tls", "haswell", "x86_64"]
    phi = intel | {"avx512er", "avx512pf"}
    assert hwcaps.at_platform(62, 64, (2, 36), phi - {"avx512f"}) == "haswell"
    # Xeon Phi: its platform, and no avx512_1 (AVX512ER).
    assert hwcaps.legacy_names(62, 64, (2, 36), phi) == ["tls", "xeon_phi", "x86_64"]
    # The vendor is stated as /proc/cpuinfo's vendor_id spells it, or as "intel".
    assert hwcaps.INTEL in hwcaps.parse_cpu_features_option("Intel,avx2")
    assert hwcaps.INTEL in hwcaps.parse_cpu_features_option("GenuineIntel,avx2")
    assert hwcaps.INTEL not in hwcaps.parse_cpu_features_option("authenticamd,avx2")


def test_legacy_names_per_architecture() -> None:
    """tls, the platform, then the HWCAP_IMPORTANT names highest bit first (elf/dl-hwcaps.c)."""
    intel = V4_CPU | {hwcaps.INTEL}
    # Skylake-class Intel: avx512_1 (bit 2) before x86_64 (bit 1), under the haswell platform.
    assert hwcaps.legacy_names(62, 64, (2, 36), intel) == ["tls", "haswell", "avx512_1", "x86_64"]
    # i386 on glibc 2.36, as LD_DEBUG=libs shows: tls/i686/sse2, tls/i686, tls/sse2, tls ...
    assert hwcaps.legacy_names(3, 32, (2, 36), frozenset({"sse2"})) == ["tls", "i686", "sse2"]
    assert hwcaps.legacy_names(183, 64, (2, 36), frozenset({"atomics"})) == [
        "tls",
        "aarch64",
        "atomics",
    ]
    assert hwcaps.legacy_names(183, 64, (2, 27), frozenset({"atomics"})) == ["tls", "aarch64"]
    assert hwcaps.legacy_names(183, 64, (2, 36), frozenset()) == ["tls", "aarch64"]
    assert hwcaps.legacy_subdirs(["tls", "aarch64", "atomics"]) == (
        "tls/aarch64/atomics",
        "tls/aarch64",
        "tls/atomics",
        "tls",
        "aarch64/atomics",
        "aarch64",
        "atomics",
        "",
    )
    assert hwcaps.legacy_hwcap_mask(183, 64, (2, 36), frozenset({"atomics"})) == 1 << 8
    assert hwcaps.legacy_hwcap_mask(183, 64, (2, 37), frozenset({"atomics"})) == 0
    assert hwcaps.legacy_hwcap_mask(3, 32, (2, 36), frozenset({"sse2"})) == 1


def test_target_cpu_of_a_foreign_root() -> None:
    host = frozenset({"avx2", "sse2"})
    native = frozenset({62, 3})
    assert hwcaps.target_features(62, host, native, None) == host
    assert hwcaps.target_features(183, host, native, None) == hwcaps.DEFAULT_FEATURES[183]
    assert "atomics" in hwcaps.DEFAULT_FEATURES[183]
    assert hwcaps.target_features(183, host, native, frozenset()) == frozenset()
    assert hwcaps.target_features(243, host, native, None) == frozenset()
    assert hwcaps.parse_cpu_features_option("Atomics, asimd") == {"atomics", "asimd"}
    assert hwcaps.parse_cpu_features_option("none") == frozenset()
    with pytest.raises(UsageError, match="not a feature name"):
        hwcaps.parse_cpu_features_option("atomics,a b")


def test_cpuinfo_vendor_and_arm_features() -> None:
    x86 = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2\n"
    assert hwcaps.cpu_flags_from_cpuinfo(x86) == {"fpu", "avx2", hwcaps.INTEL}
    arm = "processor\t: 0\nFeatures\t: fp asimd atomics\nCPU implementer\t: 0x41\n"
    assert hwcaps.cpu_flags_from_cpuinfo(arm) == {"fp", "asimd", "atomics"}


@pytest.mark.parametrize(
    ("name", "reserved"),
    [
        ("libc.so", True),
        ("libc.musl-x86_64.so.1", True),
        ("libpthread.so.0", True),
        ("libcrypto.so.3", False),
        ("libm.so.6", True),
        ("libmagic.so.1", False),
    ],
)
def test_musl_reserved_names(name: str, reserved: bool) -> None:
    assert _musl_reserved(name) is reserved


@pytest.mark.parametrize(
    ("head", "interpreter", "argument"),
    [
        (b"#!/bin/sh\necho", "/bin/sh", None),
        (b"#! /usr/bin/env python3\n", "/usr/bin/env", "python3"),
        (b"#!/usr/bin/perl -w -T\n", "/usr/bin/perl", "-w -T"),
        (b"#!\t/bin/bash\t-e\n", "/bin/bash", "-e"),
    ],
)
def test_shebang_lines(head: bytes, interpreter: str, argument: str | None) -> None:
    script = parse_script("/s", head)
    assert script is not None
    assert (script.interpreter, script.argument) == (interpreter, argument)


def test_not_a_script() -> None:
    assert parse_script("/s", b"\x7fELF") is None
    with pytest.raises(BadElf, match="empty #! line"):
        parse_script("/s", b"#!   \n")


def test_locate_on_path_and_by_path(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    tool = root / "usr/bin/tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (root / "usr/bin/data").write_text("x")  # not executable: not a program on PATH
    fs = FsRoot(str(root))
    search = ("/usr/local/bin", "/bin", "/usr/bin")
    assert locate(fs, "tool", search, "/") == "/bin/tool"
    assert locate(fs, "/usr/bin/tool", search, "/") == "/usr/bin/tool"
    assert locate(fs, str(tool), search, "/") == "/usr/bin/tool"
    with pytest.raises(ProgramNotFound, match="data: no such program"):
        locate(fs, "data", search, "/")
    with pytest.raises(UsageError, match="is a directory"):
        locate(fs, "/usr/bin", search, "/")
    with pytest.raises(ProgramNotFound, match="no such file"):
        locate(fs, "/usr/bin/absent", search, "/")


def test_locate_relative_on_the_host(tmp_path: Path) -> None:
    tool = tmp_path / "t"
    tool.write_text("x")
    tool.chmod(0o755)
    assert locate(FsRoot("/"), "t", (str(tmp_path),), "/") == str(tool)
    assert locate(FsRoot("/"), "./t", (), str(tmp_path)) == str(tool)


def test_levels_agree_with_this_machines_loader() -> None:
    import subprocess

    ld_so = Path("/lib64/ld-linux-x86-64.so.2")
    if not ld_so.exists():
        pytest.skip("no x86-64 glibc loader here")
    text = subprocess.run([str(ld_so), "--help"], capture_output=True, text=True).stdout
    block = text.split("glibc-hwcaps directories, in priority order:")[1].split("\n\n")[0]
    searched = tuple(
        line.split()[0] for line in block.splitlines() if "supported, searched" in line
    )
    cpu = hwcaps.cpu_flags_from_cpuinfo(Path("/proc/cpuinfo").read_text())
    assert hwcaps.supported_subdirs(62, cpu) == searched


def test_glibc_release_sources_in_order(tmp_path: Path) -> None:
    """The loader's text, then the file PT_INTERP leads to (ld-2.N.so), then libc.so.6's text,
    then 2.36 (loader.LoaderFactory.glibc_release)."""
    libdir = tmp_path / "lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (tmp_path / "lib64").mkdir()
    (libdir / "ld-2.30.so").write_bytes(b"\x7fELF no text here")
    (tmp_path / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-2.30.so")
    (libdir / "ld-linux-x86-64.so.2").write_bytes(b"\x7fELF no text here")
    (libdir / "libc.so.6").write_bytes(b"GNU C Library (x) stable release version 2.29.\n")
    factory = LoaderFactory(FsRoot(str(tmp_path)), SearchSettings())
    dirs = ("/lib/x86_64-linux-gnu",)
    release = factory.glibc_release
    text = b"ld.so (x) stable release version 2.41."
    assert release("/lib64/ld-linux-x86-64.so.2", text, dirs) == ((2, 41), "the loader's text")
    name = ((2, 30), "the loader's file name")
    assert release("/lib64/ld-linux-x86-64.so.2", b"", dirs) == name
    libc = ((2, 29), "/lib/x86_64-linux-gnu/libc.so.6's text")
    assert release("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"", dirs) == libc
    assert release("/nonexistent", b"", ("/usr/lib",))[0] == DEFAULT_GLIBC
