"""Which hardware-capability subdirectories the loader searches, from the CPU's features.

glibc 2.33 and later search ``DIR/glibc-hwcaps/<level>/`` before every directory ``DIR``, best
level first, for the levels the CPU supports. Loaders from 2.33 to 2.36 (and all older ones) then
also search the legacy subdirectories in every combination: ``tls``, the platform (AT_PLATFORM,
possibly refined by glibc) and the name of each bit of ``AT_HWCAP & HWCAP_IMPORTANT``
(``elf/dl-hwcaps.c``: the combinations are built from [hwcap names by bit, platform, tls], each
path naming them last first, so ``tls/PLATFORM/HIGHEST-BIT/.../LOWEST-BIT``). ldconfig files
libraries of those subdirectories in ld.so.cache with the same bits, and the loader takes such
an entry only when the CPU has them. glibc 2.37 dropped the legacy subdirectories.

HWCAP_IMPORTANT in glibc 2.36, per architecture (``sysdeps/*/dl-procinfo.h``, ``dl-hwcap.h``);
a name counts when the CPU has the feature of that name (as /proc/cpuinfo spells it):

==================  =============================================  ==========================
loader              names (AT_HWCAP bit), the first glibc           platform
==================  =============================================  ==========================
x86-64, x32         x86_64 (1, always); avx512_1 (2, Intel with     x86_64; on Intel (2.26+)
                    AVX512CD, BW, DQ, VL and no AVX512ER), 2.26+    haswell or xeon_phi
i386                sse2 (0), 2.26+                                 i686 (i586 without CMOV)
aarch64             atomics (8: ARMv8.1 LSE), 2.28+                 aarch64
arm (hard float)    vfp (6), neon (12)                              the kernel's (not modelled)
powerpc, ppc64      dfp (10), altivec (28)                          the kernel's (power9 ...)
s390x               zarch (1), ldisp (4), eimm (5), dfp (6),        the kernel's (z14 ...)
                    vx (11), vxe (13), vxe2 (15)
sparc64             ultra3 (5), blkinit (6), n2 (7)                 none
sparc (32-bit)      v9 (4), ultra3 (5), blkinit (6), n2 (7)         none
riscv64, loongarch  none (the generic dl-procinfo.h: 0)             the kernel's
==================  =============================================  ==========================

Only the x86-64, i386 and aarch64 rows are checked against real loaders (tests/test_arm64.py
runs the aarch64 one under qemu); on ppc64 and s390x the kernel names the CPU model as the
platform, which ``DEFAULT_PLATFORM`` does not know (it keeps a placeholder).

So on an aarch64 CPU with the atomics extension (ARMv8.1 and later: Graviton2+, Ampere, qemu's
default CPU) a 2.28-2.36 loader searches ``tls/aarch64/atomics, tls/aarch64, tls/atomics, tls,
aarch64/atomics, aarch64, atomics, .`` under every directory, as LD_DEBUG=libs shows; on x86-64
``tls/x86_64/x86_64 ... x86_64, .`` (platform and hwcap share the name), and on an i386 loader
``tls/i686/sse2 ... sse2, .``.

The CPU is described by feature names. On the host they come from /proc/cpuinfo (the CLI reads
it once and passes them in, so tests can pretend to be any CPU); for a root of another machine
they default to ``DEFAULT_FEATURES``, and ``--cpu-features`` states them for any root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bundler.errors import UsageError
from bundler.loader.elf import (
    EM_386,
    EM_AARCH64,
    EM_ARM,
    EM_PPC,
    EM_PPC64,
    EM_RISCV,
    EM_S390,
    EM_SPARC,
    EM_SPARCV9,
    EM_X86_64,
)

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
    (EM_X86_64, 32): "x86_64",  # x32 processes get the kernel's x86-64 platform
    (EM_386, 32): "i686",
    (EM_AARCH64, 64): "aarch64",
    (EM_PPC64, 64): "powerpc64le",
    (EM_S390, 64): "s390x",
}

HASWELL_FEATURES = frozenset({"avx2", "bmi1", "bmi2", "abm", "movbe", "popcnt", "fma"})
# glibc's x86 refinements of dl_hwcap and dl_platform look at Intel CPUs only
# (sysdeps/x86/cpu-features.c: cpu_features->basic.kind == arch_kind_intel, in every release
# from 2.26 to 2.41 and beyond). /proc/cpuinfo's vendor_id is kept among the features under
# this name; --cpu-features takes it, or "intel", to state an Intel target CPU.
INTEL = "genuineintel"
_VENDOR_ALIASES = {"intel": INTEL}
# AVX512CD usable implies AVX512F usable (before 2.33 both were tested), for both refinements.
XEON_PHI_FEATURES = frozenset({"avx512f", "avx512cd", "avx512er", "avx512pf"})
AVX512_1_FEATURES = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})

# HWCAP_IMPORTANT of glibc 2.36 other than x86's, as (AT_HWCAP bit, name) in bit order, with the
# first glibc whose loader searches them (see the table above).
IMPORTANT_HWCAPS: dict[tuple[int, int], tuple[tuple[int, str], ...]] = {
    (EM_AARCH64, 64): ((8, "atomics"),),
    (EM_ARM, 32): ((6, "vfp"), (12, "neon")),
    (EM_PPC, 32): ((10, "dfp"), (28, "altivec")),
    (EM_PPC64, 64): ((10, "dfp"), (28, "altivec")),
    (EM_S390, 64): (
        (1, "zarch"),
        (4, "ldisp"),
        (5, "eimm"),
        (6, "dfp"),
        (11, "vx"),
        (13, "vxe"),
        (15, "vxe2"),
    ),
    (EM_SPARCV9, 64): ((5, "ultra3"), (6, "blkinit"), (7, "n2")),
    (EM_SPARC, 32): ((4, "v9"), (5, "ultra3"), (6, "blkinit"), (7, "n2")),
}
IMPORTANT_SINCE: dict[int, tuple[int, int]] = {EM_AARCH64: (2, 28)}

# The target CPU of a root of another machine than the host's, unless --cpu-features says:
# the architecture's common baseline plus what qemu's default CPU and current servers have.
# Only the names that steer the loader matter (HWCAP_IMPORTANT, glibc-hwcaps levels).
DEFAULT_FEATURES: dict[int, frozenset[str]] = {
    EM_X86_64: frozenset({"sse2"}),  # x86-64 baseline: no glibc-hwcaps level, no haswell
    EM_386: frozenset({"sse2"}),  # every x86-64 CPU running i386 code
    EM_AARCH64: frozenset({"fp", "asimd", "atomics"}),  # ARMv8.1+: Graviton2+, Ampere, qemu
    EM_ARM: frozenset({"vfp", "neon"}),  # ARMv7 hard float on ARMv8 CPUs
    EM_PPC64: frozenset({"dfp", "altivec"}),  # POWER8, the ppc64el baseline
    EM_S390: frozenset({"zarch", "ldisp", "eimm", "dfp"}),  # z196, the s390x baseline
}

# uname's machine names for the e_machine values whose code the host CPU runs natively, so
# that /proc/cpuinfo describes the CPU those loaders see.
HOST_MACHINES: dict[str, frozenset[int]] = {
    "x86_64": frozenset({EM_X86_64, EM_386}),
    "i686": frozenset({EM_386}),
    "aarch64": frozenset({EM_AARCH64}),
    "armv7l": frozenset({EM_ARM}),
    "ppc64le": frozenset({EM_PPC64}),
    "ppc64": frozenset({EM_PPC64}),
    "s390x": frozenset({EM_S390}),
    "riscv64": frozenset({EM_RISCV}),
}
_FEATURE = re.compile(r"^[a-z0-9_.-]+$")


def cpu_flags_from_cpuinfo(text: str) -> frozenset[str]:
    """The feature names of the first processor in /proc/cpuinfo (x86 'flags', arm 'Features',
    s390 'features'), and INTEL when its vendor_id says GenuineIntel."""
    flags: frozenset[str] = frozenset()
    vendor = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key in ("flags", "Features", "features") and not flags:
            flags = frozenset(value.split())
    return flags | ({INTEL} if vendor == "GenuineIntel" else set())


def parse_cpu_features_option(value: str) -> frozenset[str]:
    """--cpu-features: a comma list of feature names as /proc/cpuinfo spells them, or 'none';
    the vendor as its vendor_id spells it (``genuineintel``, also ``intel``) counts as one."""
    if value.strip() in ("", "none"):
        return frozenset()
    names = {n.strip().lower() for n in value.split(",") if n.strip()}
    names = {_VENDOR_ALIASES.get(n, n) for n in names}
    bad = sorted(n for n in names if not _FEATURE.match(n))
    if bad:
        raise UsageError(f"--cpu-features: not a feature name: {', '.join(bad)}")
    return frozenset(names)


def target_features(
    machine: int,
    host_flags: frozenset[str],
    host_machines: frozenset[int] | None,
    stated: frozenset[str] | None,
) -> frozenset[str]:
    """The features of the CPU a loader of ``machine`` runs on.

    ``stated``: what --cpu-features said, for every machine. Otherwise the host's own features
    when the host runs that machine's code (``host_machines`` None: always, as tests pretend),
    else ``DEFAULT_FEATURES`` of the machine.
    """
    if stated is not None:
        return stated
    if host_machines is None or machine in host_machines:
        return host_flags
    return DEFAULT_FEATURES.get(machine, frozenset())


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
    """The legacy subdirectory names a glibc of that version searches (none from 2.37 on),
    in the order ``legacy_subdirs`` combines them: tls, the platform, the hwcaps highest bit
    first."""
    if glibc >= (2, 37):
        return []
    platform = at_platform(machine, elf_class, glibc, cpu)
    names = [name for _, name in reversed(legacy_hwcaps(machine, elf_class, glibc, cpu))]
    return ["tls", *([platform] if platform else []), *names]


def legacy_hwcaps(
    machine: int, elf_class: int, glibc: tuple[int, int], cpu: frozenset[str]
) -> tuple[tuple[int, str], ...]:
    """``AT_HWCAP & HWCAP_IMPORTANT`` of this CPU for that loader, as (bit, name) in bit order."""
    if glibc >= (2, 37):
        return ()
    if machine == EM_X86_64:
        # HWCAP_X86_64 is always set (x32 too); avx512_1 is Skylake-class Intel, not Xeon Phi.
        avx512_1 = (
            glibc >= (2, 26) and INTEL in cpu and cpu >= AVX512_1_FEATURES and "avx512er" not in cpu
        )
        return ((1, "x86_64"),) + (((2, "avx512_1"),) if avx512_1 else ())
    if machine == EM_386:
        return ((0, "sse2"),) if glibc >= (2, 26) and "sse2" in cpu else ()
    if glibc < IMPORTANT_SINCE.get(machine, (0, 0)):
        return ()
    return tuple(
        (bit, name) for bit, name in IMPORTANT_HWCAPS.get((machine, elf_class), ()) if name in cpu
    )


def legacy_hwcap_mask(
    machine: int, elf_class: int, glibc: tuple[int, int], cpu: frozenset[str]
) -> int:
    """The same bits as one mask: the legacy ld.so.cache entries the loader accepts."""
    mask = 0
    for bit, _ in legacy_hwcaps(machine, elf_class, glibc, cpu):
        mask |= 1 << bit
    return mask


def at_platform(machine: int, elf_class: int, glibc: tuple[int, int], cpu: frozenset[str]) -> str:
    """What $PLATFORM expands to. From glibc 2.26 on, x86-64 loaders on Intel CPUs replace the
    kernel's x86_64 with xeon_phi (AVX512F, CD, ER and PF) or haswell (AVX2-class); 2.37 kept
    this (only the legacy folders and cache bits went), so $PLATFORM still says haswell."""
    if machine == EM_X86_64 and glibc >= (2, 26) and INTEL in cpu:  # x32 is __x86_64__ too
        if cpu >= XEON_PHI_FEATURES:
            return "xeon_phi"
        if cpu >= HASWELL_FEATURES:
            return "haswell"
    return DEFAULT_PLATFORM.get((machine, elf_class), "")
