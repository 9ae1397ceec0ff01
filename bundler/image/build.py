"""From a plan to an image: its layers, its config and its platform, then the writers."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bundler.errors import UsageError
from bundler.image.dockerfile import ImageConfig
from bundler.image.layers import plan_layers
from bundler.image.spec import ImageSpec, Platform, platform_of
from bundler.loader.closure import Binary, BinaryKind
from bundler.loader.resolve import Resolver
from bundler.packages.dpkg import Database
from bundler.staging.plan import Plan

log = logging.getLogger(__name__)


def image_platform(resolver: Resolver, binaries: Sequence[Binary]) -> Platform | None:
    """The one platform of every ELF program (an image runs on one CPU architecture); None
    when there is no ELF program (a script that is its own interpreter)."""
    machines: dict[Platform, str] = {}
    for binary in binaries:
        if binary.kind == BinaryKind.SCRIPT:
            continue
        ident = resolver.elf(binary.path).ident
        platform = platform_of(ident.machine, ident.elf_class, ident.little_endian)
        machines.setdefault(platform, binary.path)
    if len(machines) > 1:
        shown = ", ".join(f"{path} is {platform}" for platform, path in machines.items())
        raise UsageError(f"programs of different machines cannot share one image: {shown}")
    return next(iter(machines), None)


def image_spec(
    plan: Plan,
    binaries: Sequence[Binary],
    resolver: Resolver,
    database: Database | None,
    config: ImageConfig,
    epoch: int,
    max_layers: int,
) -> ImageSpec:
    interpreters = [b.loader_file for b in binaries if b.loader_file]
    layers = plan_layers(plan, database, interpreters, max_layers)
    platform = image_platform(resolver, binaries)
    if platform is None:
        raise UsageError("no ELF program to take the image's platform from")
    log.info("image: %s, %d layers", platform, len(layers))
    return ImageSpec(tuple(layers), config, platform, epoch)
