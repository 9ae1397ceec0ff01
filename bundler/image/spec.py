"""What an image is made of, independent of how it is written: layers of plan entries, the
run configuration (the Dockerfile's ENTRYPOINT, ENV, USER ...), and the platform."""

from __future__ import annotations

from dataclasses import dataclass

from bundler.errors import UsageError
from bundler.image.dockerfile import ImageConfig
from bundler.loader.elf import (
    EM_386,
    EM_AARCH64,
    EM_ARM,
    EM_LOONGARCH,
    EM_MIPS,
    EM_PPC64,
    EM_RISCV,
    EM_S390,
    EM_X86_64,
)
from bundler.staging.plan import Entry

# ELF e_machine -> (GOARCH-style architecture, variant), as OCI platforms name them.
# Layers an image gets at most: well under Docker's limit of 125 (Nix's default is 100).
DEFAULT_MAX_LAYERS = 50


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``linux/arm64/v8``."""

    architecture: str
    os: str = "linux"
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its entries (parent folders included, each with its own metadata) and what
    it holds, for the image's history."""

    entries: tuple[Entry, ...]
    comment: str


@dataclass(frozen=True)
class ImageSpec:
    layers: tuple[LayerSpec, ...]
    config: ImageConfig
    platform: Platform
    epoch: int = 0  # SOURCE_DATE_EPOCH: the config's "created" and history times


def platform_of(machine: int, elf_class: int, little_endian: bool) -> Platform:
    """The OCI platform of programs of this ELF machine, class and byte order."""
    if machine == EM_X86_64:
        return Platform("amd64")
    if machine == EM_AARCH64 and elf_class == 64:
        return Platform("arm64", variant="v8")
    if machine == EM_386:
        return Platform("386")
    if machine == EM_ARM:
        return Platform("arm", variant="v7")
    if machine == EM_PPC64 and little_endian:
        return Platform("ppc64le")
    if machine == EM_PPC64:
        return Platform("ppc64")
    if machine == EM_S390:
        return Platform("s390x")
    if machine == EM_RISCV and elf_class == 64:
        return Platform("riscv64")
    if machine == EM_LOONGARCH:
        return Platform("loong64")
    if machine == EM_MIPS and elf_class == 64:
        return Platform("mips64le" if little_endian else "mips64")
    if machine == EM_MIPS:
        return Platform("mipsle" if little_endian else "mips")
    raise UsageError(f"ELF machine {machine} has no OCI platform name scratchpack knows")
