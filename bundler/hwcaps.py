"""Which hardware-capability subdirectories the loader searches, from the CPU's features.

glibc 2.33 and later search ``DIR/glibc-hwcaps/<level>/`` before every directory ``DIR``, best
level first, for the levels the CPU supports. Loaders from 2.33 to 2.36 then also search the
legacy subdirectories (``tls``, the platform, hardware-capability names) in every combination.
Both lists are computed here from the CPU feature names the kernel reports in /proc/cpuinfo;
the CLI reads that file once and passes the flags in, so tests can pretend to be any CPU.
"""

from __future__ import annotations

from collections.abc import Iterable

from bundler.errors import UsageError

EM_X86_64 = 62
EM_PPC64 = 21
EM_S390 = 22

# glibc's sysdeps/x86/get-isa-level.h, spelt as /proc/cpuinfo spells the features
# (pni is SSE3, lahf_lm is LAHF-SAHF in 64-bit mode, abm includes LZCNT).
X86_64_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("x86-64-v2", frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})),
    (
        "x86-64-v3",
        frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ),
    ("x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
)

# Every glibc-hwcaps name any glibc knows, per machine, best first (for --hwcaps validation).
KNOWN_SUBDIRS: dict[int, tuple[str, ...]] = {
    EM_X86_64: ("x86-64-v4", "x86-64-v3", "x86-64-v2"),
    EM_PPC64: ("power10", "power9"),
    EM_S390: ("z16", "z15", "z14", "z13"),
}

# AT_PLATFORM as the kernel and glibc report it, when no CPU-dependent refinement applies.
DEFAULT_PLATFORM: dict[tuple[int, int], str] = {
    (EM_X86_64, 64): "x86_64",
    (3, 32): "i686",  # EM_386
    (183, 64): "aarch64",  # EM_AARCH64
    (EM_PPC64, 64): "powerpc64le",
    (EM_S390, 64): "s390x",
}

HASWELL_FEATURES = frozenset({"avx2", "bmi1", "bmi2", "abm", "movbe", "popcnt", "fma"})


def cpu_flags_from_cpuinfo(text: str) -> frozenset[str]:
    """The feature names of the first processor in /proc/cpuinfo (x86 'flags', arm 'Features')."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def supported_subdirs(machine: int, cpu_flags: frozenset[str]) -> tuple[str, ...]:
    """glibc-hwcaps subdirectory names this CPU supports, best first."""
    if machine != EM_X86_64:
        return ()  # other machines' levels come from AT_HWCAP bits we cannot see here: --hwcaps
    supported: list[str] = []
    for name, needs in X86_64_LEVELS:
        if not needs <= cpu_flags:
            break  # each level includes the one below it
        supported.append(name)
    return tuple(reversed(supported))


def parse_hwcaps_option(value: str, machine: int) -> tuple[str, ...]:
    """--hwcaps: a comma list of subdirectory names, or 'none'; kept in glibc's priority order."""
    if value.strip() in ("", "none"):
        return ()
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = KNOWN_SUBDIRS.get(machine, ())
    unknown = [n for n in names if known and n not in known]
    if unknown:
        raise UsageError(
            f"--hwcaps: unknown level {', '.join(unknown)} (this machine knows {', '.join(known)})"
        )
    return tuple(sorted(names, key=known.index)) if known else tuple(names)


def legacy_subdirs(names: Iterable[str]) -> tuple[str, ...]:
    """Every combination of the legacy names, in the order glibc 2.36 searches them.

    For names (n0, n1, ... nk-1) the combinations are taken by bit mask from all-set down to
    none, n0 being the highest bit, and joined in list order; the empty one (the directory
    itself) comes last. On x86-64 with (tls, x86_64, x86_64) this gives tls/x86_64/x86_64,
    tls/x86_64, tls/x86_64, tls, x86_64/x86_64, x86_64, x86_64, '' as LD_DEBUG=libs shows.
    """
    items = list(names)
    count = len(items)
    result = []
    for mask in range((1 << count) - 1, -1, -1):
        chosen = [items[i] for i in range(count) if mask & (1 << (count - 1 - i))]
        result.append("/".join(chosen))
    return tuple(result)


def legacy_names(
    machine: int, elf_class: int, glibc: tuple[int, int], cpu: frozenset[str]
) -> list[str]:
    """The legacy subdirectory names a glibc of that version searches (none from 2.37 on)."""
    if glibc >= (2, 37):
        return []
    platform = at_platform(machine, elf_class, glibc, cpu)
    if machine == EM_X86_64 and elf_class == 64:
        # HWCAP_X86_64 is always set; avx512_1 needs Xeon Phi's AVX512ER/PF.
        hwcaps = ["x86_64"] + (["avx512_1"] if {"avx512er", "avx512pf"} <= cpu else [])
        return ["tls", *hwcaps, platform]
    return ["tls", platform] if platform else ["tls"]


def at_platform(machine: int, elf_class: int, glibc: tuple[int, int], cpu: frozenset[str]) -> str:
    """What $PLATFORM expands to. glibc 2.26 to 2.32 said 'haswell' on AVX2-class CPUs."""
    haswell_era = (2, 26) <= glibc < (2, 33)
    if machine == EM_X86_64 and elf_class == 64 and haswell_era and cpu >= HASWELL_FEATURES:
        return "xeon_phi" if {"avx512er", "avx512pf"} <= cpu else "haswell"
    return DEFAULT_PLATFORM.get((machine, elf_class), "")
