"""Every resolution rule on fixtures built with gcc at test time, checked against the loader.

Each case of testdata/build.py is checked twice: the loader's own trace (glibc ldd, musl --list)
must show the file the scenario was designed to pick (so the fixture proves what it claims), and
``scratchpack --list --json`` must agree with that trace and pick the same file.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lddcompare as lc
from conftest import LOADER_REPORT

REPO = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.ldd,
    pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd: not a glibc host"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
]


def _load_build() -> Any:
    spec = importlib.util.spec_from_file_location("testdata_build", REPO / "testdata" / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BUILD = _load_build()
# What this machine's ld.so searches for its CPU: every CPU-dependent expectation comes from it.
LOADER = BUILD.describe_loader(BUILD.probe_loader())


@pytest.fixture(scope="session")
def manifest(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("elf-fixtures")
    request.config.stash[LOADER_REPORT] = LOADER
    return BUILD.build(str(out))  # type: ignore[no-any-return]


# The case names, known without building (the parametrization must not compile anything).
CASE_NAMES = [
    "rpath_inherited",
    "rpath_inherited_3_levels",
    "runpath_not_inherited",
    "runpath_disables_chain",
    "rpath_and_runpath",
    "ld_library_path_after_rpath",
    "ld_library_path_before_runpath",
    "runpath_without_ld_library_path",
    "origin",
    "origin_of_symlinked_lib",
    "origin_through_symlinked_dir",
    "origin_of_symlinked_program",
    "lib_platform",
    "slash_needed",
    "slash_soname_reuse",
    "nodeflib",
    "nodeflib_control",
    "hwcaps",
    "hwcaps_runpath",
    "hwcaps_ld_library_path",
    "legacy_hwcaps",
    "legacy_hwcaps_intel",
    "wrong_class",
    "wrong_machine",
    "wrong_data_and_machine",
    "wrong_machine_and_osabi",
    "osabi_gnu_accepted",
    "fatal_data",
    "fatal_osabi",
    "fatal_abiversion",
    "fatal_not_elf",
    "fatal_padding",
    "fatal_eversion_machine",
    "soname_reuse_first_wins",
    "soname_reuse_breadth_first",
    "missing",
    "static",
    "static_pie",
    "script_sh",
    "script_args_sh",
    "musl_plain",
    "musl_rpath",
    "musl_ld_library_path_first",
    "musl_runpath_inherited",
    "musl_missing",
]
# Cases build.py may replace by one skipped entry of another name.
SKIP_GROUPS = {"musl": "musl_", "hwcaps": "hwcaps", "static": "static", "all": ""}


def get_case(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for case in manifest["cases"]:
        if case["name"] == name:
            if case["skip"]:
                pytest.skip(case["skip"])
            return case
    for case in manifest["cases"]:
        group = SKIP_GROUPS.get(case["name"])
        if case["skip"] and group is not None and name.startswith(group):
            pytest.skip(case["skip"])
    raise AssertionError(f"testdata/build.py built no case {name!r}")


def test_case_names_cover_manifest(manifest: dict[str, Any]) -> None:
    built = {c["name"] for c in manifest["cases"] if not c["skip"]}
    assert built - set(CASE_NAMES) == set(), "add the new cases to CASE_NAMES"


def check_expectations(
    case: dict[str, Any], mapped: set[str], missing: set[str], side: str
) -> list[str]:
    """The files the scenario was built to pick (mapped: real paths)."""
    problems = []
    cwd = case["cwd"]
    for name, want in case["expect"]["libs"].items():
        if want is None:
            if name not in missing:
                problems.append(
                    f"{side}: {name} should be 'not found' (missing: {sorted(missing)})"
                )
        elif os.path.realpath(posixpath.join(cwd, want)) not in mapped:
            problems.append(f"{side}: {name} should be {want} (mapped: {sorted(mapped)})")
    for path in case["expect"]["absent"]:
        if os.path.realpath(path) in mapped:
            problems.append(f"{side}: {path} must not be mapped")
    return problems


def trace(case: dict[str, Any]) -> lc.LddResult:
    return lc.run_ldd(
        case["program"], case["env"], case["cwd"], exec_trace=case.get("oracle") == "exec"
    )


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fixture_matches_loader(manifest: dict[str, Any], name: str) -> None:
    """The loader itself picks what the scenario says (else the fixture proves nothing)."""
    case = get_case(manifest, name)
    if not case["loader_confirms"]:
        pytest.skip(f"this CPU's loader cannot confirm it ({case['note']})")
    res = trace(case)
    flavor, expect = case["flavor"], case["expect"]
    if expect["ldd_error"]:
        assert res.error and expect["ldd_error"] in res.error, res.raw
        return
    assert res.error is None, res.raw
    if flavor in ("static", "script"):
        assert res.not_dynamic and not res.libs and not res.plain, res.raw
        return
    assert not res.not_dynamic, res.raw
    problems = check_expectations(case, res.mapped(case["cwd"]), res.missing, "loader")
    assert not problems, "\n".join([*problems, res.raw, LOADER])
    if case.get("oracle") == "exec":
        # ldd itself differs here (the reason this case uses the exec trace): prove it still
        # does, so the divergence stays documented and known.
        plain = lc.run_ldd(case["program"], case["env"], case["cwd"])
        assert plain.mapped(case["cwd"]) != res.mapped(case["cwd"]), plain.raw


def scratchpack(case: dict[str, Any]) -> tuple[list[lc.Listed], list[dict[str, Any]]]:
    proc = lc.run_scratchpack(
        [case["program"]], case["scratchpack_args"], env=case["env"], cwd=case["cwd"]
    )
    return lc.parse_json(proc.stdout)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_scratchpack_matches_loader(manifest: dict[str, Any], name: str) -> None:
    case = get_case(manifest, name)
    cwd, expect, flavor = case["cwd"], case["expect"], case["flavor"]

    if expect["ldd_error"]:
        # ld.so stops the whole load at the bad candidate (it does not skip it): scratchpack
        # must not quietly pick the next candidate; it reports the file and ld.so's message
        # (exit 0 for --list, as for any incomplete closure) or fails naming the file.
        bad = expect["libs"]["libfoo.so.1"]
        proc = lc.run_scratchpack([case["program"]], env=case["env"], cwd=cwd, check=False)
        if proc.returncode != 0:
            assert bad in proc.stderr and expect["ldd_error"] in proc.stderr, proc.stderr
            return
        binaries, _ = lc.parse_json(proc.stdout)
        res = trace(case)
        problems = lc.diff(binaries[0], res, cwd)
        for absent in expect["absent"]:
            if os.path.realpath(absent) in binaries[0].mapped(cwd):
                problems.append(f"{absent} must not be mapped")
        assert not problems, "\n".join(problems)
        return

    binaries, missing = scratchpack(case)
    if flavor == "static":
        assert len(binaries) == 1, binaries
        assert binaries[0].interpreter is None and binaries[0].libs == [], binaries[0]
        assert missing == []
        return
    if flavor == "script":
        # The script's interpreter program is resolved in turn: compare with ldd of it.
        sh = os.path.realpath("/bin/sh")
        named = {os.path.realpath(p) for b in binaries for p in (b.path, b.interpreter) if p}
        assert sh in named, f"/bin/sh ({sh}) not listed: {binaries}"
        res = lc.run_ldd(sh)
        ours = set().union(*(b.mapped() for b in binaries)) - {sh}
        assert ours == res.mapped(), (ours, res.raw)
        return

    assert len(binaries) == 1, binaries
    listed = binaries[0]
    problems = check_expectations(case, listed.mapped(cwd), listed.missing, "scratchpack")
    if not case["loader_confirms"]:  # the CPU stated to scratchpack is not this one
        assert not problems, "\n".join([*problems, f"scratchpack: {listed}"])
        return
    res = trace(case)
    problems += lc.diff(listed, res, cwd)
    found = [f"ldd:\n{res.raw}", f"scratchpack: {listed}", LOADER]
    assert not problems, "\n".join([*problems, *found])
    # Every missing soname is reported at the top level too, with who needed it.
    assert {m["soname"] for m in missing} == listed.missing, missing
    assert all(m.get("needed_by") for m in missing), missing
    if flavor == "musl":
        assert listed.interpreter is not None and lc.MUSL_INTERP.search(listed.interpreter)


def test_ldd_parser_formats() -> None:
    """The parser on the formats seen in the wild (no fixture needed)."""
    glibc = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibfoo.so.1 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f01)\n"
        "\t/abs/libabs.so (0x00007f02)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n"
    )
    r = lc.parse_ldd(glibc)
    assert r.libs == [("libfoo.so.1", None), ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6")]
    assert r.plain == ["/abs/libabs.so", "/lib64/ld-linux-x86-64.so.2"]
    assert r.missing == {"libfoo.so.1"} and r.error is None and not r.not_dynamic
    musl = (
        "\t/lib/ld-musl-x86_64.so.1 (0x7f8af6798000)\n"
        "Error loading shared library libgone.so.1: No such file or directory (needed by /p)\n"
        "\tlibm1.so.1 => /r/libm1.so.1 (0x7f8af6700000)\n"
        "\tlibc.so => /lib/ld-musl-x86_64.so.1 (0x7f8af6798000)\n"
        "Error relocating /p: f: symbol not found\n"
    )
    r = lc.parse_ldd(musl)
    assert r.missing == {"libgone.so.1"}
    assert ("libc.so", "/lib/ld-musl-x86_64.so.1") in r.libs
    assert r.plain == ["/lib/ld-musl-x86_64.so.1"]
    r = lc.parse_ldd("p: error while loading shared libraries: /a/x.so: invalid ELF header\n")
    assert r.error == "/a/x.so: invalid ELF header"
    assert lc.parse_ldd("\tnot a dynamic executable\n").not_dynamic
    assert lc.parse_ldd("\tstatically linked\n").not_dynamic
    with pytest.raises(ValueError):
        lc.parse_ldd("something else entirely\n")


def test_diff_detects_disagreement() -> None:
    """The comparison is not vacuous: each kind of disagreement is reported."""
    res = lc.parse_ldd(
        "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x1)\n"
        "\tlibgone.so.1 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x3)\n"
    )
    interp = "/lib64/ld-linux-x86-64.so.2"
    libs = [
        ("libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"),
        ("libgone.so.1", None),
        ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
    ]
    assert lc.diff(lc.Listed("/p", interp, libs), res) == []
    assert lc.diff(lc.Listed("/p", interp, libs[1:]), res)  # a library less
    assert lc.diff(lc.Listed("/p", interp, [*libs[:1], *libs[2:]]), res)  # not-found lost
    assert lc.diff(lc.Listed("/p", "/lib/ld-musl-x86_64.so.1", libs), res)  # interpreter
    assert lc.diff(lc.Listed("/p", None, []), lc.parse_ldd("\tnot a dynamic executable\n")) == []
    assert lc.diff(lc.Listed("/p", interp, []), lc.parse_ldd("\tnot a dynamic executable\n"))


# ``ld.so --help`` of glibc 2.36 on the two kinds of x86-64 server CPU (its last two sections).
AMD_HELP = """Subdirectories of glibc-hwcaps directories, in priority order:
  x86-64-v4 (supported, searched)
  x86-64-v3 (supported, searched)
  x86-64-v2 (supported, searched)

Legacy HWCAP subdirectories under library search path directories:
  x86_64 (AT_PLATFORM; supported, searched)
  tls (supported, searched)
  avx512_1
  x86_64 (supported, searched)
"""
INTEL_HELP = AMD_HELP.replace("  x86_64 (AT_PLATFORM", "  haswell (AT_PLATFORM").replace(
    "  avx512_1\n", "  avx512_1 (supported, searched)\n"
)


def test_loader_report_is_read_for_either_vendor() -> None:
    amd, intel = BUILD.parse_loader_help(AMD_HELP), BUILD.parse_loader_help(INTEL_HELP)
    assert amd["platform"] == "x86_64" and amd["legacy_bits"] == ["x86_64"]
    assert intel["platform"] == "haswell" and intel["legacy_bits"] == ["avx512_1", "x86_64"]
    assert intel["hwcaps_supported"] == ["x86-64-v4", "x86-64-v3", "x86-64-v2"]
    assert intel["legacy_supported"] == ["haswell", "tls", "avx512_1", "x86_64"]


@pytest.mark.parametrize("vendor", ["amd", "intel"])
def test_cpu_cases_as_built_on_either_vendor(tmp_path: Path, vendor: str) -> None:
    """The CPU-dependent fixtures, built as they would be on the other kind of machine too, are
    what scratchpack picks for that machine's CPU stated with --cpu-features: a fixture written
    for one vendor's answer fails this on the other's."""
    built = BUILD.build(str(tmp_path), {"amd": AMD_HELP, "intel": INTEL_HELP}[vendor])
    stated = {
        "amd": "authenticamd," + BUILD.INTEL_AVX512.partition(",")[2],
        "intel": BUILD.INTEL_AVX512,
    }
    for name in ("lib_platform", "legacy_hwcaps"):
        case = get_case(built, name)
        proc = lc.run_scratchpack(
            [case["program"]], ["--cpu-features", stated[vendor]], env=case["env"], cwd=case["cwd"]
        )
        binaries, _ = lc.parse_json(proc.stdout)
        listed = binaries[0]
        problems = check_expectations(case, listed.mapped(case["cwd"]), listed.missing, vendor)
        assert not problems, "\n".join([*problems, f"scratchpack: {listed}"])
