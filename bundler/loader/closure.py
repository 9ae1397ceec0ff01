"""The inventory of a run: every program named, its closure, and what is missing.

Programs are located, scripts lead to their interpreters, and every ELF file's closure comes
from one shared Resolver. With many programs the ELF headers are read by a small process pool
first (parsing is the costly part; resolution itself is dictionary work).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bundler.errors import BadElf, ScratchpackError
from bundler.loader.elf import ElfInfo, read_elf
from bundler.loader.ldso import GLIBC, Flavor, NamedEnum
from bundler.loader.programs import (
    MAX_SCRIPT_DEPTH,
    Script,
    classify,
    locate,
    script_programs,
)
from bundler.loader.resolve import Library, Resolver
from bundler.loader.versions import VersionMiss, version_misses

log = logging.getLogger(__name__)

# Below this many programs a pool costs more than it saves (fork + pickling ~ 30 ms).
POOL_THRESHOLD = 200


class BinaryKind(NamedEnum):
    DYNAMIC = "dynamic"  # has a PT_INTERP: the loader maps its libraries
    STATIC = "static"
    SCRIPT = "script"  # a #! script: its interpreter is a program of its own


@dataclass(frozen=True)
class Binary:
    """One program of the inventory, with what the loader maps for it."""

    path: str
    kind: BinaryKind
    interpreter: str | None  # PT_INTERP, or the #! program of a script; None for libraries
    flavor: Flavor | None  # None for static programs and scripts
    libraries: tuple[Library, ...]
    default_dirs: tuple[str, ...] = ()  # the loader's directories when there is no ld.so.cache
    version_misses: tuple[VersionMiss, ...] = ()  # symbol versions the loader would not find

    @property
    def problems(self) -> tuple[Library, ...]:
        return tuple(lib for lib in self.libraries if not lib.ok)

    @property
    def loader_file(self) -> str | None:
        """The dynamic loader the kernel maps for it (PT_INTERP), when it was found; a
        script's #! program is a program of its own, not this."""
        if self.kind != BinaryKind.DYNAMIC or not self.interpreter:
            return None
        return (
            None if any(lib.name == self.interpreter for lib in self.problems) else self.interpreter
        )

    @property
    def mapped(self) -> tuple[str, ...]:
        """Every file the loader maps for it, found: its loader file, then each library."""
        found = [lib.path for lib in self.libraries if lib.ok and lib.path]
        return (self.loader_file, *found) if self.loader_file else tuple(found)


def collect(
    resolver: Resolver,
    specs: Sequence[str],
    search_path: tuple[str, ...],
    cwd: str,
    workers: int = 0,
) -> list[Binary]:
    """Binaries for every program spec, scripts followed to their interpreters, in order."""
    root = resolver.root
    paths = [locate(root, spec, search_path, cwd) for spec in specs]
    if len(paths) >= POOL_THRESHOLD and workers != 1:
        _prime(resolver, paths, workers or (os.cpu_count() or 1))
    binaries: list[Binary] = []
    seen: set[str] = set()
    pending = list(paths)
    depth: dict[str, int] = dict.fromkeys(paths, 0)
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        script = classify(root, path)
        if script is not None:
            binaries.append(_script_binary(script))
            for program in script_programs(root, script, search_path, cwd):
                depth[program] = depth[path] + 1
                if depth[program] > MAX_SCRIPT_DEPTH:
                    raise BadElf(path, f"#! interpreters nested more than {MAX_SCRIPT_DEPTH} deep")
                pending.insert(0, program)
            continue
        binaries.append(_elf_binary(resolver, path))
    return binaries


def _script_binary(script: Script) -> Binary:
    return Binary(script.path, BinaryKind.SCRIPT, script.interpreter, None, ())


def _elf_binary(resolver: Resolver, path: str) -> Binary:
    closure = resolver.resolve(path)
    kind = BinaryKind.STATIC if closure.flavor is None else BinaryKind.DYNAMIC
    misses = version_misses(resolver, path, closure.libraries) if closure.flavor == GLIBC else ()
    return Binary(
        path,
        kind,
        closure.interpreter,
        closure.flavor,
        closure.libraries,
        closure.default_dirs,
        misses,
    )


def _prime(resolver: Resolver, paths: list[str], workers: int) -> None:
    """Read the ELF facts of many programs in parallel and hand them to the resolver."""
    from concurrent.futures import ProcessPoolExecutor  # 10 ms of imports only big runs need

    root = resolver.root
    jobs = []
    for path in paths:
        try:
            jobs.append(root.realpath(path))
        except ScratchpackError:
            continue  # reported when the program itself is resolved
    hosts = [root.host_path(p) for p in jobs]
    chunk = max(1, len(hosts) // (workers * 4))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_read_quietly, hosts, chunksize=chunk))
    resolver.prime({p: info for p, info in zip(jobs, results, strict=True) if info is not None})


def _read_quietly(host_path: str) -> ElfInfo | None:
    # Errors are left for the main process, which reports them with the image path.
    try:
        return read_elf(host_path)
    except (BadElf, OSError):
        return None


def to_json(binaries: Iterable[Binary]) -> dict[str, Any]:
    """The --list --json document."""
    listed = list(binaries)
    missing: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for binary in listed:
        for lib in binary.problems:
            if (lib.name, lib.needed_by) in seen:
                continue
            seen.add((lib.name, lib.needed_by))
            entry: dict[str, Any] = {"soname": lib.name, "needed_by": lib.needed_by}
            entry["chain"] = list(lib.chain)
            if lib.error:
                entry.update(path=lib.path, error=lib.error)
            missing.append(entry)
    for binary in listed:
        for miss in binary.version_misses:
            item = {"version": miss.version, "library": miss.library, "needed_by": miss.needed_by}
            if item not in missing:
                missing.append(item)
    return {"binaries": [_binary_json(b) for b in listed], "missing": missing}


def _binary_json(binary: Binary) -> dict[str, Any]:
    libraries = []
    for lib in binary.libraries:
        item: dict[str, Any] = {"soname": lib.name, "path": lib.path if lib.ok else None}
        if lib.via:
            item["via"] = lib.via
        if lib.error:
            item["error"] = lib.error
            item["file"] = lib.path
        libraries.append(item)
    document: dict[str, Any] = {
        "path": binary.path,
        "kind": binary.kind,
        "interpreter": binary.interpreter,
        "flavor": binary.flavor,
        "libraries": libraries,
    }
    if binary.version_misses:
        document["missing_versions"] = [
            {"version": m.version, "library": m.library, "needed_by": m.needed_by}
            for m in binary.version_misses
        ]
    return document


def file_list(binaries: Iterable[Binary]) -> list[str]:
    """Every in-image path to copy, each once: program, interpreter, libraries."""
    seen: dict[str, None] = {}
    for binary in binaries:
        seen.update(dict.fromkeys((binary.path, *binary.mapped)))
    return list(seen)
