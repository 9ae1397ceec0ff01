"""Symbol versions: what each loaded object needs (``GLIBC_2.34`` from ``libc.so.6``) against
what the library that was found defines, checked as glibc's loader checks them after loading
(``elf/dl-version.c``): a need the library does not define stops the program at start-up with
``version `GLIBC_2.34' not found (required by ...)``, the classic failure of a program built on
a newer distribution than the root it is packed from. A weak need, or a library without any
version definitions, only gets a note under ``LD_DEBUG``; neither is a miss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bundler.errors import BadElf
from bundler.loader.elf import VersionNeed
from bundler.loader.resolve import Library, Resolver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionMiss:
    version: str  # GLIBC_2.34
    library: str  # the file that lacks it, as the loader opened it
    needed_by: str  # the object that needs it

    def message(self) -> str:
        """ldd's words for it."""
        return f"{self.library}: version `{self.version}' not found (required by {self.needed_by})"


def version_misses(
    resolver: Resolver, program: str, libraries: Sequence[Library]
) -> tuple[VersionMiss, ...]:
    """Every non-weak version need of the program and its libraries that the library found
    for it does not define, in load order."""
    providers: dict[str, str] = {}  # DT_NEEDED name -> path of the object loaded for it
    for lib in libraries:
        if lib.ok and lib.path:
            providers.setdefault(lib.name, lib.path)
    objects = [program, *dict.fromkeys(lib.path for lib in libraries if lib.ok and lib.path)]
    misses: list[VersionMiss] = []
    for path in objects:
        for need in _needs(resolver, path):
            provider = providers.get(need.file)
            if provider is None or need.weak:
                continue  # not loaded at all: reported as a missing library instead
            defined = _definitions(resolver, provider)
            if defined is not None and need.version not in defined:
                misses.append(VersionMiss(need.version, provider, path))
    return tuple(dict.fromkeys(misses))


def _needs(resolver: Resolver, path: str) -> tuple[VersionNeed, ...]:
    try:
        return resolver.elf(path).version_needs
    except BadElf:
        return ()  # reported where the file itself is resolved


def _definitions(resolver: Resolver, path: str) -> frozenset[str] | None:
    try:
        return resolver.elf(path).version_defs
    except BadElf:
        return None
