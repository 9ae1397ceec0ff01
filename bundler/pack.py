"""Packing, start to end: closures -> plan (every check) -> staging tree, tarball, Dockerfiles.

Nothing is written until the whole plan stands; then each output is swapped into place.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import posixpath
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bundler import __version__, packages
from bundler.errors import ScratchpackError, UsageError
from bundler.image.build import image_platform, image_spec
from bundler.image.dockerfile import ImageConfig, render_distroless, render_scratch, shipped_by_base
from bundler.image.layers import complete_for_sharing
from bundler.image.spec import DEFAULT_MAX_LAYERS
from bundler.loader.closure import Binary, BinaryKind, collect
from bundler.loader.ldconfig import DEFAULT_GLIBC
from bundler.loader.ldso import GLIBC
from bundler.loader.programs import locate
from bundler.loader.resolve import Resolver
from bundler.loader.rootfs import FsRoot
from bundler.packages.contents import Contents, build_contents, python_packages
from bundler.packages.dpkg import Database, open_database
from bundler.packages.metadata import (
    metadata_paths,
    metadata_sources,
    package_metadata,
    packed_owners,
    sizes_by_package,
)
from bundler.packages.pyapps import add_python
from bundler.runtime.languages import warn_runtimes_without_modules
from bundler.runtime.needs import Runtime, expand_groups, trace_user
from bundler.runtime.python_codecs import codec_modules
from bundler.staging.blobs import (
    DIGESTS,
    CompressionOptions,
    Compressor,
    cache_path,
    compressor,
)
from bundler.staging.blobs import DPKG as DPKG_MEMO
from bundler.staging.blobs import RECIPE as COMPRESSION
from bundler.staging.digests import DigestMemo, code_key
from bundler.staging.output import OutputDir
from bundler.staging.plan import (
    DIR,
    EXTRA,
    FILE,
    HARDLINK,
    SYMLINK,
    Entry,
    EntryKind,
    Plan,
    Planner,
    PlanOptions,
)
from bundler.staging.pycache import hash_pycs
from bundler.staging.secrets import refuse_secrets
from bundler.staging.tree import build_tree, tar_recipe, tree_recipe, write_tarball

if TYPE_CHECKING:
    from bundler.image.registry import CredentialStore, PushResult, TlsSettings
    from bundler.image.spec import ImageSpec

log = logging.getLogger(__name__)

ROOTFS, TARBALL, DOCKERFILE, DISTROLESS, DISTROLESS_TREE = (
    "rootfs",
    "rootfs.tar.gz",
    "Dockerfile",
    "Dockerfile.distroless",
    "distroless",
)
SPDX_FILE, CYCLONEDX_FILE = "sbom.spdx.json", "sbom.cdx.json"
LD_SO_CACHE = "/etc/ld.so.cache"


@dataclass(frozen=True)
class TraceRun:
    """One traced run: ``program`` (a path or a name; None for the entrypoint) with ``args``."""

    program: str | None
    args: tuple[str, ...]


@dataclass(frozen=True)
class RuntimeRequest:
    """What ldd cannot see, asked for: --with groups (--tz), --mkdir; --user is the image's."""

    with_groups: tuple[str, ...] = ()  # nss, certs, tzdata, users, tmp, gconv, base
    tz: str | None = None
    mkdirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TraceRequest:
    """--trace and --trace-cmd (one run each), the exit codes that are fine, whom they run as."""

    runs: tuple[TraceRun, ...] = ()
    ok_exits: frozenset[int] = frozenset({0})
    user: str | None = None  # --trace-user


@dataclass(frozen=True)
class LayeredRequest:
    """The image in layers by package, no daemon: --oci, --docker-archive, --tag, --max-layers."""

    oci: str | None = None  # an OCI image layout to add the image to
    docker_archive: str | None = None  # a tarball for docker load
    tag: str | None = None  # the image's name there (default: the entrypoint's file name)
    max_layers: int = DEFAULT_MAX_LAYERS


@dataclass(frozen=True)
class PushRequest:
    """--push REF and how hard to try: --insecure-registry, --push-retries, -timeout, -jobs."""

    reference: str
    insecure: bool = False  # plain HTTP and unverified TLS allowed
    retries: int = 5  # tries after the first, per request
    timeout: float = 300.0  # seconds one blob or manifest may keep failing
    jobs: int = 4  # blobs uploaded at once


@dataclass(frozen=True)
class PackOptions:
    """One pack, as the CLI asked for it: a small request for each stage."""

    output: str | None  # -o: rootfs/, the tarball and Dockerfiles; None: not written
    plan: PlanOptions
    image: ImageConfig  # entrypoint is filled in from the first program when empty
    search_path: tuple[str, ...] = ()  # PATH, for the programs named
    entrypoint: str | None = None  # --entrypoint: the program the image starts (default: first)
    runtime: RuntimeRequest = RuntimeRequest()
    trace: TraceRequest = TraceRequest()
    layered_image: LayeredRequest = LayeredRequest()
    push: PushRequest | None = None
    epoch: int = 0  # SOURCE_DATE_EPOCH: no mtime in the outputs is later
    distroless: str | None = None
    stage: str = "build"
    # Package metadata in the image (status.d, md5sums, copyright, os-release) and SBOMs.
    package_metadata: bool = True
    allow_secrets: tuple[str, ...] = ()  # --allow-secret GLOBs: secrets packed on purpose
    # -j and the layer cache (--cache-size, --no-cache): how tarball and layers are compressed.
    compression: CompressionOptions = field(default_factory=CompressionOptions)

    @property
    def layered(self) -> bool:
        """Whether an image is written in layers (by package) besides or instead of -o."""
        request = self.layered_image
        return bool(request.oci or request.docker_archive or self.push)


@dataclass(frozen=True)
class Packed:
    plan: Plan
    binaries: list[Binary]
    outputs: dict[str, Path]
    distroless_paths: list[str]
    image: WrittenImage | None = None
    # (package or None, bytes, files) of the image's regular files, largest first.
    sizes: tuple[tuple[str | None, int, int], ...] = ()


@dataclass(frozen=True)
class WrittenImage:
    """The layered image of a pack: its name, manifest digest and layers, and its push."""

    name: str
    digest: str | None  # of the manifest in the OCI layout (None without --oci or --push)
    platform: str
    layers: tuple[tuple[str, int], ...]  # (what the layer holds, entries)
    pushed: PushResult | None = None


Progress = Callable[[Entry], None]


@dataclass(frozen=True)
class Planned:
    """What make_plan decided: the plan, the closures it holds, and the root's dpkg database
    (read once for the whole pack; None when the root has none)."""

    plan: Plan
    binaries: list[Binary]
    database: Database | None
    # The digests this pack took, and those earlier ones took (saved once the pack is done).
    memo: DigestMemo = field(default_factory=DigestMemo, compare=False)


def make_plan(resolver: Resolver, specs: Sequence[str], options: PackOptions) -> Planned:
    """Resolve every program and --extra ELF file and turn it all into one plan.

    When the closure uses an optimised glibc-hwcaps variant, the plain one goes in too (as a
    CPU without any level resolves it), so the image runs on any CPU."""
    baseline = None
    if resolver.settings.hwcaps != ():
        baseline = Resolver(resolver.root, replace(resolver.settings, hwcaps=()))
    binaries = collect(resolver, specs, options.search_path, resolver.settings.cwd)
    image_platform(resolver, binaries)  # one machine per image: said before anything else
    entrypoint = _entrypoint(resolver, binaries, options)
    planner = Planner(resolver.root, options.plan, hint=resolver.conf_hint)
    planner.add_binaries(binaries)
    extra_elves = planner.add_extras(options.plan.extras)
    extra_elves += _add_runtime(planner, resolver, binaries, options)
    extra_elves += _add_traced(planner, resolver, entrypoint, binaries, options)
    database = open_database(resolver.root, cache_path(options.compression, DPKG_MEMO))
    python = add_python(planner, binaries, specs, bool(options.trace.runs), database)
    extra_elves += python.elves
    if extra_elves:
        known = {b.path for b in binaries}
        wanted = list(dict.fromkeys(p for p in extra_elves if p not in known))
        extra_binaries = collect(resolver, wanted, options.search_path, resolver.settings.cwd)
        planner.add_binaries(extra_binaries)
        binaries += extra_binaries
    if baseline is not None and _uses_hwcaps(binaries):
        log.info("the closure uses glibc-hwcaps variants; adding the baseline ones for other CPUs")
        paths = [b.path for b in binaries if b.kind != BinaryKind.SCRIPT]
        planner.add_binaries(collect(baseline, paths, options.search_path, resolver.settings.cwd))
    platform = image_platform(resolver, binaries)  # again, with what extras and traces added
    if options.layered and database is not None:
        with planner.because("shared layers: the other shared objects of a needed package"):
            complete_for_sharing(planner, database, binaries)
    if options.package_metadata:
        with planner.because("package metadata for scanners (--no-package-metadata)"):
            _add_package_metadata(planner, database)
    plan = planner.plan
    hash_pycs(plan)  # once every file is planned: a pyc and its source are judged together
    plan.platform = str(platform) if platform else None
    plan.programs.append(entrypoint)
    _check_entrypoint(resolver, entrypoint)
    if not options.trace.runs:
        warn_runtimes_without_modules(resolver.root, binaries, plan.entries)
    if _needs_ld_so_cache(binaries) and resolver.root.is_file(LD_SO_CACHE):
        log.info("%s goes in: some libraries are found only through it", LD_SO_CACHE)
        with planner.because("some libraries are found only through ld.so.cache"):
            planner.add_path(LD_SO_CACHE, EntryKind.CONFIG)
    ld_path = resolver.settings.ld_library_path
    vias = (lib.via for b in binaries for lib in b.libraries)
    if ld_path and any(via.endswith("LD_LIBRARY_PATH") for via in vias):
        plan.env["LD_LIBRARY_PATH"] = ld_path
    # Every file of the complete plan, whatever brought it, before anything is written.
    memo = DigestMemo(cache_path(options.compression, DIGESTS))
    refuse_secrets(plan, options.allow_secrets, memo)
    return Planned(plan, binaries, database, memo)


def _add_package_metadata(planner: Planner, database: Database | None) -> None:
    """What scanners read in a scratch image: the owners' status.d entries and md5sums, their
    copyright files, base-files' os-release (once every other file is planned)."""
    if database is None:
        log.warning(
            "the root has no dpkg database: the image gets no package metadata, and its SBOMs "
            "list files only"
        )
        return
    for path in metadata_sources(planner.plan, database):
        planner.add_path(path, EntryKind.METADATA)
    for path, data in sorted(package_metadata(planner.plan, database).generated.items()):
        planner.add_generated(path, data, kind=EntryKind.METADATA)


def _add_runtime(
    planner: Planner, resolver: Resolver, binaries: list[Binary], options: PackOptions
) -> list[str]:
    """--with groups, --user and --mkdir; returns the ELF files (NSS modules...) to resolve."""
    user = options.image.user
    if not (options.runtime.with_groups or user or options.runtime.mkdirs):
        return []
    glibc = _first_glibc(resolver, binaries)
    loader = resolver.loader_of(glibc) if glibc else None
    version = loader.version if loader else DEFAULT_GLIBC
    runtime = Runtime(resolver.root, version, options.plan.ephemeral)
    added = runtime.add
    whys: dict[str, str] = {}  # what each path, generated file or folder is there for

    def note(why: str, step: Callable[[], None]) -> None:
        generated = dict(added.generated)
        counts = len(added.paths), len(added.directories), len(added.libraries)
        step()
        new = added.paths[counts[0] :] + [d.path for d in added.directories[counts[1] :]]
        new += [f"lib:{name}" for name in added.libraries[counts[2] :]]
        new += [p for p in added.links if p not in whys]
        for key in new:
            whys.setdefault(key, why)
        for path, data in added.generated.items():
            if generated.get(path) != data:  # passwd: --with users, then --user's account
                whys[path] = f"{whys[path]}, {why}" if path in whys else why

    for group in expand_groups(options.runtime.with_groups):
        tz = options.runtime.tz
        note(f"--with {group}", functools.partial(runtime.groups, [group], tz))
    if user:
        note(f"--user {user}", functools.partial(runtime.user, user))
    for spec in options.runtime.mkdirs:
        note(f"--mkdir {spec}", functools.partial(runtime.mkdir, spec))
    elves: list[str] = []
    for path in added.paths:
        elves += planner.add_extras([path], "--with", why=whys.get(path))
    for path, data in sorted(added.generated.items()):
        with planner.because(f"{whys.get(path, '')}: written by scratchpack".lstrip(": ")):
            planner.add_generated(path, data)
    for path, target in sorted(added.links.items()):
        with planner.because(whys.get(path, "")):
            planner.add_symlink(path, target)
    for new in added.directories:
        with planner.because(whys.get(new.path, "")):
            planner.add_directory(new.path, new.mode, new.uid, new.gid)
    planner.plan.env.update(added.env)
    for soname in added.libraries:
        found = resolver.find_library(soname, glibc) if glibc else None
        if found is None:
            # Debian's stock nsswitch.conf names db and nis, whose modules few roots have:
            # every user would meet this, and glibc skips the service, so it is no warning.
            log.info(
                "%s: named in nsswitch.conf but not in the root; glibc skips that service", soname
            )
            continue
        log.info("%s => %s (named in nsswitch.conf)", soname, found)
        why = whys.get(f"lib:{soname}", "--with nss")
        planner.program_why.setdefault(found, f"{why}: {soname} named in nsswitch.conf")
        elves.append(found)
    return elves


def _first_glibc(resolver: Resolver, binaries: Sequence[Binary]) -> str | None:
    return next((b.path for b in binaries if b.flavor == GLIBC), None)


def _entrypoint(resolver: Resolver, binaries: list[Binary], options: PackOptions) -> str:
    """The program the image starts: --entrypoint, one of the programs named, or the first."""
    if options.entrypoint is None:
        return binaries[0].path
    try:
        found = _program_named(resolver, binaries, options.entrypoint, options)
    except ScratchpackError:
        found = None  # not a file, not on PATH: not packed either
    if found not in {b.path for b in binaries}:
        named = ", ".join(b.path for b in binaries)
        raise UsageError(
            f"--entrypoint {options.entrypoint}: not one of the programs packed ({named}); "
            "name it as a PROGRAM too"
        )
    return str(found)


def _program_named(
    resolver: Resolver, binaries: Sequence[Binary], spec: str, options: PackOptions
) -> str:
    """The program ``spec`` names: a packed one by path or by file name (``postgres`` for
    /usr/lib/postgresql/15/bin/postgres, which is not on PATH), else a path or a name on PATH."""
    paths = [b.path for b in binaries]
    if "/" not in spec:
        by_name = [p for p in paths if posixpath.basename(p) == spec]
        if by_name:
            return by_name[0]
    located = locate(resolver.root, spec, options.search_path, resolver.settings.cwd)
    real = resolver.root.realpath(located)
    return next((p for p in paths if resolver.root.realpath(p) == real), located)


def _add_traced(
    planner: Planner,
    resolver: Resolver,
    entrypoint: str,
    binaries: list[Binary],
    options: PackOptions,
) -> list[str]:
    """--trace and --trace-cmd: run each program once and keep what it opened."""
    if not options.trace.runs:
        return []
    from bundler.runtime.trace import trace_program  # strace is only needed here

    root = resolver.root
    user = trace_user(root, options.trace.user) if options.trace.user else None
    elves: list[str] = []
    for run in options.trace.runs:
        # A script runs through its #! as it would; a program not packed yet is packed by the
        # trace itself (it is executed).
        program = entrypoint
        if run.program is not None:
            try:
                program = _program_named(resolver, binaries, run.program, options)
            except ScratchpackError as exc:
                raise UsageError(f"--trace-cmd {run.program}: {exc}") from None
        started = time.time() - 1  # ctime has coarse granularity on some filesystems
        result = trace_program(
            root,
            program,
            run.args,
            ok_exits=options.trace.ok_exits,
            exclude=options.plan.exclude,
            user=user,
        )
        shown = " ".join(shlex.quote(a) for a in run.args)
        log.info("traced %s %s: %d files", program, shown, len(result.files))
        if run.program is None:
            traced = f"--trace {_quoted(shown)} (runs {program})"
        else:
            command = " ".join(shlex.quote(a) for a in (run.program, *run.args))
            traced = f"--trace-cmd {_quoted(command)}"
        # Folders (a whole codec package) go in with their content, as an --extra would.
        codecs = codec_modules(resolver.root, result.files)
        elves += planner.add_extras(codecs, "--trace", why=f"{traced}: a codec package it used")
        written = {root.realpath(path) for path in result.written}
        for path in result.files:
            if path in planner.plan.entries:
                continue
            glob = planner.excluded_by(path, root.realpath(path))
            if glob is not None:
                log.info("%s: left out (--exclude %s)", path, glob)
                continue
            changed = root.realpath(path) in written and _changed_since(root, path, started)
            if changed or path in options.plan.ephemeral:
                # Output of the traced run (a pid file, a log) or the build container's own
                # files, not input the program needs.
                log.info("%s: left out, the traced run wrote it", path)
                continue
            reason = result.reasons.get(path, "used")
            log.info("%s: added (traced: %s)", path, reason)
            with planner.because(f"{traced}: {reason}"):
                planner.add_path(path, EntryKind.TRACED)
            if path not in result.looked_at and planner.is_elf(path):
                elves.append(path)
        for directory in result.directories:
            if _made_by(result.created, directory):
                # Made by the traced run (initdb's data folder): an image holding it would make
                # the same run refuse ("exists but is not empty"), and a volume inherit it.
                log.info("%s: left out, the traced run made it", directory)
            elif root.lstat(directory) is not None:
                with planner.because(f"{traced}: {result.reasons.get(directory, 'used')}"):
                    planner.add_path(directory, EntryKind.TRACED)
    return elves


def _quoted(text: str) -> str:
    """ARGS as a user would have quoted them on the command line."""
    if "'" not in text:
        return f"'{text}'"
    plain = not any(ch in text for ch in '"\\$`')  # nothing a shell expands in "..."
    return f'"{text}"' if plain else shlex.quote(text)


def _made_by(created: frozenset[str], path: str) -> bool:
    """Whether ``path`` is, or lies inside, a folder the run made."""
    while path != "/":
        if path in created:
            return True
        path = posixpath.dirname(path)
    return False


def _changed_since(root: FsRoot, path: str, started: float) -> bool:
    """Whether a file the run opened for writing was changed during the run: its ctime. Only
    asked of files strace saw written, so a file made just before the run stays an input."""
    st = root.lstat(path)
    return st is not None and st.st_ctime >= started and not root.is_dir(path)


def _check_entrypoint(resolver: Resolver, program: str) -> None:
    st = resolver.root.stat(program)
    if st is not None and not st.st_mode & 0o111:
        raise UsageError(f"{program}: not executable, so the image could not start it")


def _uses_hwcaps(binaries: Sequence[Binary]) -> bool:
    return any("/glibc-hwcaps/" in (lib.path or "") for b in binaries for lib in b.libraries)


def _needs_ld_so_cache(binaries: Sequence[Binary]) -> bool:
    """A library found through the cache outside the loader's own directories is lost
    without the cache (a /usr/local/lib or a directory named in ld.so.conf.d)."""
    for binary in binaries:
        for lib in binary.libraries:
            if lib.via.endswith("ld.so.cache") and lib.path:
                directory = posixpath.dirname(lib.path).split("/glibc-hwcaps/")[0]
                if directory not in binary.default_dirs:
                    return True
    return False


def write_outputs(
    planned: Planned,
    options: PackOptions,
    resolver: Resolver,
    progress: Progress | None = None,
    registry: RegistryAccess | None = None,
) -> Packed:
    """Every output asked for; ``registry`` (credentials, TLS, progress lines) for --push."""
    with compressor(options.compression, planned.memo) as packer:
        return _write_outputs(planned, options, resolver, packer, progress, registry)


def _write_outputs(
    planned: Planned,
    options: PackOptions,
    resolver: Resolver,
    packer: Compressor,
    progress: Progress | None,
    registry: RegistryAccess | None,
) -> Packed:
    plan, binaries, database = planned.plan, planned.binaries, planned.database
    entries = plan.sorted_entries()
    config = options.image
    if not config.entrypoint:
        config = replace(config, entrypoint=(plan.programs[0],))
    if plan.env:
        config = replace(config, env=(*sorted(plan.env.items()), *config.env))
    outputs: dict[str, Path] = {}
    distroless_paths: list[str] = []
    name = options.layered_image.tag or posixpath.basename(plan.programs[0])
    # Who owns each packed file: asked once, for the SBOMs and for the size report.
    owners = packed_owners(plan, database) if database is not None else {}
    sboms = None
    if options.package_metadata:
        contents = build_contents(plan, database, owners, name, options.epoch, packer.memo)
        sboms = SbomDocuments(contents, packer.memo)
    image = None
    if options.layered:
        image = _write_image(planned, options, resolver, config, name, sboms, registry, packer)
    sizes = tuple(sizes_by_package(plan, _with_distributions(plan, owners)))
    if options.output is None:
        return Packed(plan, binaries, outputs, distroless_paths, image, sizes)
    # What the tree and the tarball are made from, one digest (known files are not read).
    recipe = tar_recipe(entries, options.epoch, packer.memo)
    with OutputDir(options.output, packer.records).locked() as out, out.transaction() as txn:
        outputs[ROOTFS] = txn.write_tree(
            ROOTFS,
            lambda top: build_tree(entries, top, options.epoch, progress),
            tree_recipe(recipe) if recipe is not None else None,
        )
        outputs[TARBALL] = txn.write_file(
            TARBALL,
            lambda handle: write_tarball(
                entries, handle, options.epoch, progress, packer, Path(handle.name), recipe
            ),
            recipe=f"{recipe.key} {COMPRESSION}" if recipe is not None else None,
        )
        outputs[DOCKERFILE] = txn.write_text(DOCKERFILE, render_scratch(config, TARBALL))
        if options.distroless:
            shipped = shipped_by_base(resolver.root, database, options.distroless)
            distroless_paths = _distroless_paths(plan, binaries, resolver, shipped)
            tree = _distroless_tree(plan, resolver, database, distroless_paths, shipped)
            outputs[DISTROLESS_TREE] = txn.write_tree(
                DISTROLESS_TREE, lambda top: build_tree(tree, top, options.epoch, None)
            )
            source = posixpath.join(options.output, DISTROLESS_TREE)
            text = render_distroless(config, options.distroless, options.stage, source)
            outputs[DISTROLESS] = txn.write_text(DISTROLESS, text)
        else:
            # Ours, from an earlier run: they would describe another pack.
            out.remove(DISTROLESS)
            out.remove(DISTROLESS_TREE)
        for sbom_name in (SPDX_FILE, CYCLONEDX_FILE):
            if sboms is not None:
                outputs[sbom_name] = txn.write_file(
                    sbom_name,
                    functools.partial(sboms.write, sbom_name),
                    recipe=sboms.recipe,
                )
            else:
                out.remove(sbom_name)  # ours, from an earlier run with package metadata
    return Packed(plan, binaries, outputs, distroless_paths, image, sizes)


def closure_sizes(
    resolver: Resolver, binaries: Sequence[Binary]
) -> list[tuple[str | None, int, int]]:
    """--list --sizes: what the closures alone cost per package, without packing."""
    planner = Planner(resolver.root, PlanOptions(allow_missing=True))
    planner.add_binaries(binaries)
    return size_report(planner.plan, open_database(resolver.root))


def size_report(plan: Plan, database: Database | None) -> list[tuple[str | None, int, int]]:
    """Which package costs how many bytes and files (no package: None); [] without dpkg."""
    if database is None:
        return []
    return sizes_by_package(plan, packed_owners(plan, database))


def _with_distributions(plan: Plan, owners: dict[str, str]) -> dict[str, str]:
    """The Debian owners of packed files, and ``pypi:NAME`` for each file of a Python
    distribution no Debian package owns: the size report groups by both."""
    packages, by_dist = python_packages(plan)
    names = {p.dist_info: f"pypi:{p.key}" for p in packages}
    grouped = {path: names[d] for path, d in by_dist.items() if d in names}
    grouped.update(owners)
    return grouped


# bundler/packages/sbom.py, by its path: imported only when a document is written.
SBOM_CODE = f"{__version__} {code_key(str(Path(packages.__file__).with_name('sbom.py')))}"


class SbomDocuments:
    """The SPDX and CycloneDX documents of the image (its packages and every file), made when
    first asked for: an unchanged repack needs only their recipe, and the digests an earlier
    pack made of them (MEMO)."""

    def __init__(self, contents: Contents, memo: DigestMemo) -> None:
        self.contents = contents
        self.memo = memo
        # The documents are a function of the contents (frozen dataclasses of strings,
        # numbers and tuples, whose repr says all they hold) and of the code that writes them.
        described = f"{SBOM_CODE}\0{contents!r}".encode("utf-8", "surrogateescape")
        self.recipe = "sbom " + hashlib.sha256(described).hexdigest()

    @functools.cached_property
    def documents(self) -> dict[str, bytes]:
        from bundler.packages.sbom import cyclonedx_document, document_bytes, spdx_document

        documents = {
            SPDX_FILE: document_bytes(spdx_document(self.contents)),
            CYCLONEDX_FILE: document_bytes(cyclonedx_document(self.contents)),
        }
        for name, data in documents.items():
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            self.memo.remember(f"{self.recipe} {name}", digest, len(data))
        return documents

    def known(self, name: str) -> tuple[str, int] | None:
        """(digest, size) of document NAME, when a pack made it from the same recipe."""
        return self.memo.made(f"{self.recipe} {name}")

    def document(self, name: str) -> bytes:
        return self.documents[name]

    def write(self, name: str, handle: BinaryIO) -> None:
        handle.write(self.documents[name])


def _write_image(
    planned: Planned,
    options: PackOptions,
    resolver: Resolver,
    config: ImageConfig,
    name: str,
    sboms: SbomDocuments | None,
    registry: RegistryAccess | None,
    packer: Compressor,
) -> WrittenImage:
    """--oci, --docker-archive and --push: the plan as a layered image, no daemon involved. In
    a layout, the SBOMs are attached to the image as OCI artifacts (``subject``); --push sends
    the image from the --oci layout (the whole image index when NAME holds several platforms
    there), else from a layout of its own made for the push."""
    plan, binaries = planned.plan, planned.binaries
    spec = image_spec(
        plan,
        binaries,
        resolver,
        planned.database,
        config,
        options.epoch,
        options.layered_image.max_layers,
    )
    digest = None
    pushed = None
    request = options.layered_image
    if request.oci:
        digest = _into_layout(request.oci, spec, name, sboms, packer)
        log.info("%s: image %s (%s) in %s", name, digest, spec.platform, request.oci)
    if options.push:
        import tempfile  # only a push without --oci needs it

        with tempfile.TemporaryDirectory(prefix="scratchpack-push-") as scratch:
            layout = request.oci or _made_layout(scratch, spec, name, sboms, packer)
            pushed = _push(layout, name, options, registry or RegistryAccess())
        digest = digest or pushed.digest
    if request.docker_archive:
        from bundler.image.archive import write_docker_archive

        write_docker_archive(
            request.docker_archive, spec, name, compressor=packer, records=packer.records
        )
        log.info("%s: written for docker load as %s", request.docker_archive, name)
    layers = tuple((layer.comment, len(layer.entries)) for layer in spec.layers)
    return WrittenImage(name, digest, str(spec.platform), layers, pushed)


@dataclass(frozen=True)
class RegistryAccess:
    """What --push needs from the edge: credentials and TLS trust as Docker keeps them, and
    where to report each blob."""

    credentials: CredentialStore | None = None
    tls: TlsSettings | None = None
    progress: Callable[[str], None] | None = None
    meter: Callable[[int, int], None] | None = None  # (bytes sent, bytes to send)


def _into_layout(
    layout: str, spec: ImageSpec, name: str, sboms: SbomDocuments | None, packer: Compressor
) -> str:
    from bundler.image.oci import write_oci_layout
    from bundler.image.referrers import CYCLONEDX_JSON, SPDX_JSON, attach_artifact

    digest = write_oci_layout(layout, spec, name, compressor=packer)
    if sboms is not None:
        for file_name, kind in ((SPDX_FILE, SPDX_JSON), (CYCLONEDX_FILE, CYCLONEDX_JSON)):
            made = functools.partial(sboms.document, file_name)
            known = sboms.known(file_name)
            attach_artifact(layout, digest, kind, kind, made, title=file_name, known=known)
    return digest


def _made_layout(
    scratch: str, spec: ImageSpec, name: str, sboms: SbomDocuments | None, packer: Compressor
) -> str:
    layout = os.path.join(scratch, "oci")
    _into_layout(layout, spec, name, sboms, packer)
    return layout


def _push(layout: str, name: str, options: PackOptions, registry: RegistryAccess) -> PushResult:
    from bundler.image.registry import RetryPolicy, push

    request = options.push
    assert request is not None
    return push(
        layout,
        name,
        request.reference,
        credentials=registry.credentials,
        tls=registry.tls,
        insecure=request.insecure,
        progress=registry.progress,
        retry=RetryPolicy(attempts=request.retries + 1, total=request.timeout),
        jobs=request.jobs,
        meter=registry.meter,
    )


def _distroless_tree(
    plan: Plan,
    resolver: Resolver,
    database: Database | None,
    paths: list[str],
    shipped: tuple[set[str], set[str]],
) -> list[Entry]:
    """What the distroless base lacks, as one tree to COPY onto it: each path as a file (COPY
    would follow its links) in its link-free folder, the status.d entries of the packages
    those files come from (the base has its own packages' entries), the root's top-level links
    to folders (``/lib -> usr/lib``) the base has none of, the folders --mkdir makes, and the
    folders above all that."""
    root = resolver.root
    chosen: dict[str, Entry] = {}
    for path in paths:
        entry = _file_behind(plan, root, path)
        if entry is None:
            log.info("%s: not a file of the plan; not in the distroless tree", path)
            continue
        dest = _link_free(root, path)
        chosen[dest] = replace(entry, path=dest)
    if database is not None:
        owners = sorted({p for p in map(database.owner, paths) if p})
        for path in metadata_paths(owners):
            if path in plan.entries:
                chosen[path] = plan.entries[path]
    for entry in plan.sorted_entries():
        if entry.type == DIR and entry.kind == EXTRA:
            # --mkdir's folders (and --user's home): the program writes there, as its owner.
            dest = _link_free(root, entry.path)
            chosen[dest] = replace(entry, path=dest)
    shipped_paths, _sonames = shipped
    shipped_tops = {p.split("/")[1] for p in shipped_paths if p.count("/") >= 2}
    for path in paths:
        top = "/" + path.split("/")[1]
        link = plan.entries.get(top)
        if link is not None and link.type == SYMLINK and top[1:] not in shipped_tops:
            chosen[top] = link  # the program's own name for it (/lib64/ld-linux-x86-64.so.2)
    for path in list(chosen):
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in chosen:
            folder_entry = plan.entries.get(parent)
            if folder_entry is None or folder_entry.type != DIR:
                folder_entry = Entry(parent, DIR, 0o755, EntryKind.PARENT)
            chosen[parent] = folder_entry
            parent = posixpath.dirname(parent)
    return [chosen[p] for p in sorted(chosen)]


def _link_free(root: FsRoot, path: str) -> str:
    """PATH with the links of its folders resolved (its own name kept)."""
    return posixpath.join(root.realpath(posixpath.dirname(path)), posixpath.basename(path))


def _file_behind(plan: Plan, root: FsRoot, path: str) -> Entry | None:
    """The regular file of the plan that PATH names, links followed."""
    entry = plan.entries.get(path) or plan.entries.get(root.realpath(path))
    for _ in range(40):
        if entry is None or entry.type == FILE:
            return entry
        if entry.type == HARDLINK and entry.target is not None:
            entry = plan.entries.get(entry.target)
        elif entry.type == SYMLINK and entry.target is not None:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.target))
            entry = plan.entries.get(target) or plan.entries.get(root.realpath(target))
        else:
            return None
    return None


def _distroless_paths(
    plan: Plan, binaries: list[Binary], resolver: Resolver, shipped: tuple[set[str], set[str]]
) -> list[str]:
    """Every path the loader opens (and every extra) that the base image does not ship."""
    root = resolver.root
    shipped_paths, shipped_sonames = shipped
    wanted: dict[str, None] = {}
    for binary in binaries:
        wanted.update(dict.fromkeys((binary.path, *binary.mapped)))
    for entry in plan.sorted_entries():
        if entry.kind in (EntryKind.EXTRA, EntryKind.CONFIG) and entry.type in (
            FILE,
            HARDLINK,
            SYMLINK,
        ):
            wanted.setdefault(entry.path)

    def in_base(path: str) -> bool:
        name = posixpath.basename(path)
        return (
            path in shipped_paths or root.realpath(path) in shipped_paths or name in shipped_sonames
        )

    return [path for path in wanted if not in_base(path)]


def manifest(packed: Packed) -> dict[str, Any]:
    """The --json document of a pack: every entry, totals, and the outputs."""
    files = []
    allowed: dict[str, list[dict[str, Any]]] = {}
    for secret in packed.plan.allowed_secrets:
        allowed.setdefault(secret.path, []).append(
            {"rule": secret.rule, "line": secret.line, "glob": secret.glob}
        )
    for entry in packed.plan.sorted_entries():
        item: dict[str, Any] = {
            "path": entry.path,
            "type": entry.type,
            "kind": entry.kind,
            "mode": f"{entry.mode:04o}",
            "why": entry.why,
        }
        if entry.path in allowed:
            item["allowed_secrets"] = allowed[entry.path]
        if entry.type == FILE:
            item.update(source=entry.source or "generated", size=entry.size)
            if entry.data is not None or entry.source:
                digest = hashlib.sha256()
                packed.plan.hash_content(entry, digest)
                item["sha256"] = digest.hexdigest()
        elif entry.target is not None:
            item["target"] = entry.target
        files.append(item)
    counts: dict[str, int] = {}
    for entry in packed.plan.entries.values():
        counts[entry.type] = counts.get(entry.type, 0) + 1
    document: dict[str, Any] = {
        "programs": [b.path for b in packed.binaries],
        "files": files,
        "totals": {"entries": len(files), "bytes": packed.plan.total_bytes, **counts},
        "outputs": {name: str(path) for name, path in packed.outputs.items()},
        "missing": [
            {"soname": lib.name, "needed_by": lib.needed_by, "chain": list(lib.chain)}
            for b in packed.binaries
            for lib in b.problems
        ],
    }
    document["secrets_allowed"] = [
        {"path": path, **finding} for path, findings in allowed.items() for finding in findings
    ]
    if packed.sizes:
        document["packages"] = size_json(packed.sizes)
    if packed.image is not None:
        image = packed.image
        document["image"] = {
            "name": image.name,
            "digest": image.digest,
            "platform": image.platform,
            "layers": [{"holds": holds, "entries": count} for holds, count in image.layers],
        }
        if image.pushed is not None:
            result = image.pushed
            document["image"]["pushed"] = {
                "reference": str(result.reference),
                "digest": result.digest,
                "uploaded": result.uploaded,
                "mounted": result.mounted,
                "present": result.present,
                "bytes_uploaded": result.bytes_uploaded,
            }
    return document


def size_json(sizes: Sequence[tuple[str | None, int, int]]) -> list[dict[str, Any]]:
    """The size report as JSON; ``package`` is null for files of no package."""
    return [{"package": name, "bytes": size, "files": count} for name, size, count in sizes]
