"""The command line: it parses, calls the stages and prints, and is the one place that picks
exit codes. The settings the core takes from the machine (SOURCE_DATE_EPOCH, LD_LIBRARY_PATH,
/proc/cpuinfo) are read here and passed in."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bundler import __version__
from bundler.errors import Interrupted, ScratchpackError, UsageError
from bundler.image.dockerfile import ImageConfig, parse_pairs
from bundler.image.spec import DEFAULT_MAX_LAYERS
from bundler.loader import hwcaps
from bundler.loader.closure import Binary, collect, file_list, to_json
from bundler.loader.elf import EM_X86_64
from bundler.loader.ldso import SearchSettings
from bundler.loader.programs import DEFAULT_PATH
from bundler.loader.resolve import Resolver
from bundler.loader.rootfs import FsRoot
from bundler.runtime.needs import GROUPS
from bundler.staging.plan import Entry, EntryType, Plan, PlanOptions

if TYPE_CHECKING:  # packing's modules are imported when a pack runs: --list starts faster
    from bundler.pack import Packed, PackOptions, PushRequest, RegistryAccess, TraceRun

log = logging.getLogger("bundler")

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_OUTPUT = "scratchpack-out"
CLEAR_LINE = "\r\033[K"  # back to the start of a terminal line, and erase it

HELP = """Pack PROGRAM and exactly the files its dynamic loader maps into a FROM scratch image.

PROGRAM is a path or a name on PATH; ELF programs, shared libraries and #! scripts are
accepted, hundreds at a time. Libraries are resolved as glibc's ld.so (or musl's loader)
resolves them: DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, ld.so.cache, the default directories,
glibc-hwcaps subdirectories and $ORIGIN/$LIB/$PLATFORM.

\b
Examples:
  scratchpack redis-server --extra /etc/redis/redis.conf -o out/
                                           out/rootfs/, out/rootfs.tar.gz, out/Dockerfile
  scratchpack --list redis-server          in-image paths, one per line
  scratchpack --list --json /usr/bin/curl  the closure as JSON, with what is missing
  scratchpack --list --root ./rootfs nginx resolve inside an unpacked image, as chroot would

\b
Exit codes: 0 done; 1 the closure is incomplete (missing libraries) or a file would take a
secret into the image (nothing written); 2 bad usage or bad input; 130 interrupted.
"""


# --help in sections that follow a user's questions, each option named once. Click lists options
# in one flat list; a formatter of a dozen lines does this without another dependency in every
# builder stage (cloup would add one for this alone). test_cli checks every option has a place.
HELP_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "What to pack",
        (
            "root",
            "list_only",
            "extra",
            "exclude_globs",
            "allow_secrets",
            "entrypoint",
            "allow_missing",
            "keep_setuid",
        ),
    ),
    (
        "Run-time files (what ldd cannot see)",
        ("with_groups", "tz", "mkdir", "dlopen_level", "no_libgcc_s"),
    ),
    ("Tracing a real run", ("trace", "trace_cmd", "trace_user", "trace_ok_exit")),
    (
        "The image's configuration",
        (
            "user",
            "cmd",
            "env",
            "expose",
            "workdir",
            "label",
            "tag",
            "max_layers",
            "no_package_metadata",
        ),
    ),
    (
        "Outputs",
        (
            "output",
            "oci",
            "docker_archive",
            "distroless",
            "stage",
            "as_json",
            "sizes",
            "cache_size",
            "no_cache",
            "clear_cache",
        ),
    ),
    ("Building and checking with Docker", ("build_tag", "verify", "verify_timeout")),
    ("Registries", ("push", "insecure_registry", "push_retries", "push_timeout", "push_jobs")),
    ("Loader settings", ("ld_library_path", "hwcaps_option", "cpu_features_option")),
    ("General", ("jobs", "verbose", "quiet", "version", "help")),
)


class SectionedCommand(click.Command):
    """A command whose --help lists its options under HELP_SECTIONS' headings."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        help_option = self.get_help_option(ctx)
        records = {
            "help" if param is help_option else str(param.name): record
            for param in self.get_params(ctx)
            if isinstance(param, click.Option) and (record := param.get_help_record(ctx))
        }
        for title, names in HELP_SECTIONS:
            rows = [records.pop(name) for name in names if name in records]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        if records:  # an option no section names yet: shown all the same
            with formatter.section("Other options"):
                formatter.write_dl(list(records.values()))


@click.command(
    cls=SectionedCommand, help=HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.argument("programs", nargs=-1, required=True, metavar="PROGRAM...")
@click.option("--list", "list_only", is_flag=True, help="Print the closure; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option(
    "--sizes",
    is_flag=True,
    help="With --list: bytes and files per Debian package of the closure, largest first "
    "(a pack always reports its largest packages, and --json all of them).",
)
@click.option(
    "--no-package-metadata",
    is_flag=True,
    help="Leave out what scanners read (var/lib/dpkg/status.d/, md5sums, copyright files, "
    "os-release) and the SBOMs.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for rootfs/, rootfs.tar.gz and Dockerfile (created; other files left alone). "
    f"Default: ./{DEFAULT_OUTPUT}, unless --oci or --docker-archive is given.",
)
@click.option(
    "--oci",
    default=None,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Add the image to this OCI image layout (created if absent), in layers by Debian "
    "package that images from one root share; no Docker Engine needed.",
)
@click.option(
    "--docker-archive",
    default=None,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write the layered image as a tarball `docker load -i FILE` takes.",
)
@click.option(
    "--tag",
    default=None,
    metavar="NAME",
    help="The image's name in --oci (ref.name, replaced if present) and --docker-archive "
    "(:latest added without a tag). Default: the entrypoint's file name.",
)
@click.option(
    "--push",
    default=None,
    metavar="REF",
    help="Push the image (or the image index --tag names in --oci) to a registry through its "
    "HTTP API, no daemon: e.g. registry.example:5000/team/redis:7. Credentials from the Docker "
    "config; TLS trusting what Docker trusts (/etc/docker/certs.d).",
)
@click.option(
    "--insecure-registry",
    is_flag=True,
    help="With --push: allow plain HTTP and unverified TLS to that registry.",
)
@click.option(
    "--push-retries",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    metavar="N",
    help="With --push: try a request again up to N times after a passing fault (HTTP 408, "
    "429, 500, 502, 503, 504; a connection reset, cut or timed out), waiting longer each time "
    "or as Retry-After asks. An upload that moves on starts its count anew.",
)
@click.option(
    "--push-timeout",
    type=click.FloatRange(0, min_open=True),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="With --push: give up on a blob or manifest that keeps failing for this long, naming "
    "it and its last error.",
)
@click.option(
    "--push-jobs",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    metavar="N",
    help="With --push: upload N blobs at once.",
)
@click.option(
    "--max-layers",
    type=click.IntRange(1, 120),
    default=DEFAULT_MAX_LAYERS,
    show_default=True,
    help="At most this many layers; the packages least likely shared are merged on top.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Resolve inside this unpacked image or sysroot (its PATH, ld.so.cache, links), "
    "never reading outside it.",
)
@click.option(
    "--extra",
    multiple=True,
    metavar="PATH",
    help="Also pack PATH: a file, a folder (recursively) or a glob; ELF files bring their "
    "closure. Repeatable.",
)
@click.option(
    "--exclude",
    "exclude_globs",
    multiple=True,
    metavar="GLOB",
    help="Leave out files --extra, --with and traces would bring (as .dockerignore does): "
    "a GLOB with a / matches the in-image path (/srv/app/*.log), one without matches any name "
    "on it (.git, *.pem); a matching folder takes its content. Repeatable.",
)
@click.option(
    "--allow-secret",
    "allow_secrets",
    multiple=True,
    metavar="GLOB",
    help="Pack a file the secrets check refuses, on purpose (a TLS key the service needs); "
    "GLOB as for --exclude. Recorded in --json and in the SBOMs. Repeatable.",
)
@click.option(
    "--with",
    "with_groups",
    multiple=True,
    type=click.Choice(list(GROUPS)),
    help="Run-time files ldd cannot see: nss (nsswitch.conf and its modules), certs (CA bundle, "
    "SSL_CERT_FILE), tzdata, users (passwd/group as distroless), tmp (/tmp 1777), gconv "
    "(iconv modules); base = nss+certs+tzdata+users+tmp. Repeatable.",
)
@click.option(
    "--tz", default=None, metavar="ZONE", help="With --with tzdata: only ZONE, as /etc/localtime."
)
@click.option(
    "--mkdir",
    multiple=True,
    metavar="PATH[:MODE[:OWNER]]",
    help="An empty folder in the image (owner by name or id; default the --user). Repeatable.",
)
@click.option(
    "--entrypoint",
    default=None,
    metavar="PROGRAM",
    help="Which of the PROGRAMs the image starts (path or file name). Default: the first.",
)
@click.option(
    "--trace",
    multiple=True,
    metavar="ARGS",
    help="Run the entrypoint once with ARGS under strace (chroot under --root) and pack every "
    "file it opened: dlopen()ed modules, Python's stdlib, data. Repeatable.",
)
@click.option(
    "--trace-cmd",
    multiple=True,
    metavar="'PROGRAM ARGS'",
    help="Like --trace, for any program (a PROGRAM's file name, a path, or a name on PATH): "
    "e.g. --trace-cmd 'initdb -D /tmp/db' while the image starts postgres. Repeatable.",
)
@click.option(
    "--trace-user",
    default=None,
    metavar="USER",
    help="Run the traced programs as USER (name or uid of the root's passwd, with its groups): "
    "for programs that refuse root.",
)
@click.option(
    "--trace-ok-exit",
    default="0",
    metavar="CODES",
    help="Exit codes of a traced run that are fine (comma list).",
)
@click.option("--allow-missing", is_flag=True, help="Pack even if a library is not found.")
@click.option("--keep-setuid", is_flag=True, help="Keep setuid/setgid bits (dropped by default).")
@click.option("--cmd", default=None, metavar="ARGS", help="Default arguments (Dockerfile CMD).")
@click.option("--env", multiple=True, metavar="KEY=VALUE", help="ENV in the image. Repeatable.")
@click.option("--expose", multiple=True, metavar="PORT", help="EXPOSE a port. Repeatable.")
@click.option("--workdir", default=None, metavar="DIR", help="WORKDIR of the image.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="LABEL. Repeatable.")
@click.option(
    "--user",
    default=None,
    metavar="USER",
    help="USER the image runs as; a name's passwd and group entries are copied from the root.",
)
@click.option(
    "--distroless",
    type=click.Choice(["static", "base", "cc"]),
    default=None,
    help="Also write Dockerfile.distroless: COPY --from lines onto gcr.io/distroless/VARIANT.",
)
@click.option(
    "--stage", default="build", show_default=True, help="Builder stage name for COPY --from."
)
@click.option(
    "--build", "build_tag", default=None, metavar="TAG", help="docker build the image as TAG."
)
@click.option(
    "--verify",
    default=None,
    metavar="ARGS",
    help="With --build: run the image once with ARGS (e.g. --version); fail if it fails.",
)
@click.option(
    "--verify-timeout",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="Seconds --verify waits for the image to exit before it fails.",
)
@click.option(
    "--ld-library-path",
    default=None,
    metavar="DIRS",
    help="LD_LIBRARY_PATH for the search. Default: the environment's, except under --root.",
)
@click.option(
    "--hwcaps",
    "hwcaps_option",
    default=None,
    metavar="LEVELS",
    help="glibc-hwcaps levels the target CPU supports, e.g. x86-64-v3,x86-64-v2, or 'none'. "
    "Default: this machine's.",
)
@click.option(
    "--cpu-features",
    "cpu_features_option",
    default=None,
    metavar="NAMES",
    help="Features of the target CPU as /proc/cpuinfo names them, e.g. atomics, or 'none', and "
    "its vendor (genuineintel or intel: haswell/, xeon_phi/, avx512_1/ are Intel's); they "
    "pick the legacy hwcap folders (aarch64 atomics/, i386 sse2/ ...) of glibc up to 2.36. "
    "Default: this machine's for a root of its own architecture, else that architecture's "
    "usual server CPU (aarch64: atomics).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(0, 64),
    default=0,
    help="Parser processes for many programs, and compression threads (0: one per core). "
    "The bytes written are the same for any number.",
)
@click.option(
    "--cache-size",
    default="1G",
    show_default=True,
    envvar="SCRATCHPACK_CACHE_SIZE",
    metavar="SIZE",
    help="Bound of the layer cache in $XDG_CACHE_HOME/scratchpack (~/.cache/scratchpack): "
    "compressed layers and tarballs by the digest of their tar, so an unchanged one is never "
    "compressed twice; least recently used go first. Bytes, or with K, M, G; 0 turns it off "
    "(env SCRATCHPACK_CACHE_SIZE).",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Neither read nor fill the layer cache, nor the memos of what earlier packs read and "
    "wrote: every file is read and every output written (an --oci layout still reuses its own "
    "blobs).",
)
@click.option(
    "--clear-cache",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, _param, value: _clear_cache(ctx, value),
    help="Empty the layer cache and the memos, say how much it freed, and exit.",
)
@click.option(
    "--dlopen",
    "dlopen_level",
    type=click.Choice(["none", "required", "recommended", "suggested"]),
    default="recommended",
    show_default=True,
    help="Follow .note.dlopen entries up to this priority.",
)
@click.option(
    "--no-libgcc-s",
    is_flag=True,
    help="Leave out libgcc_s.so.1 (glibc dlopen()s it for pthread_cancel and unwinding).",
)
@click.option("-v", "--verbose", count=True, help="Explain each decision (-vv: every probe).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(__version__, prog_name="scratchpack")
def command(**opts: Any) -> None:
    _configure_logging(opts["verbose"], opts["quiet"])
    fsroot = FsRoot(opts["root"] or "/")
    settings = _settings(
        fsroot, opts["ld_library_path"], opts["hwcaps_option"], opts["cpu_features_option"]
    )
    levels = ("required", "recommended", "suggested")
    wanted = (
        levels[: levels.index(opts["dlopen_level"]) + 1] if opts["dlopen_level"] != "none" else ()
    )
    settings = replace(
        settings, dlopen_priorities=frozenset(wanted), libgcc_s=not opts["no_libgcc_s"]
    )
    search_path = _search_path(fsroot)
    resolver = Resolver(fsroot, settings)
    if opts["list_only"]:
        cwd = settings.cwd
        binaries = collect(resolver, opts["programs"], search_path, cwd, workers=opts["jobs"])
        if opts["sizes"]:
            _print_sizes(resolver, binaries, opts["as_json"])
        else:
            _print_listing(binaries, opts["as_json"])
        _warn_missing(resolver, binaries)
        return
    if opts["sizes"]:
        raise UsageError("--sizes goes with --list (a pack reports sizes by itself)")
    if opts["verify"] is not None and not opts["build_tag"]:
        raise UsageError("--verify needs --build TAG")
    if opts["trace_user"] and not (opts["trace"] or opts["trace_cmd"]):
        raise UsageError("--trace-user needs --trace or --trace-cmd")
    if opts["build_tag"]:
        from bundler.image.engine import check_tag

        check_tag(opts["build_tag"])
    _split_args(opts["verify"], "--verify")
    _pack(opts, resolver, search_path)


def _warn_missing(resolver: Resolver, binaries: list[Binary]) -> None:
    for miss in dict.fromkeys(m for b in binaries for m in b.version_misses):
        log.warning("%s", miss.message())
    for binary in binaries:
        for lib in binary.problems:
            what = lib.error or "not found"
            log.warning("%s: %s (needed by %s)", lib.name, what, " <- ".join(lib.chain))
            hint = None if lib.error else resolver.conf_hint(lib.name, lib.chain[-1])
            if hint:
                log.warning("  hint: %s", hint)


def _pack(opts: dict[str, Any], resolver: Resolver, search_path: tuple[str, ...]) -> None:
    from bundler.pack import (
        LayeredRequest,
        PackOptions,
        RuntimeRequest,
        TraceRequest,
        make_plan,
        manifest,
        write_outputs,
    )
    from bundler.staging.blobs import CompressionOptions

    if opts["insecure_registry"] and not opts["push"]:
        raise UsageError("--insecure-registry goes with --push")
    for flag in ("push_retries", "push_timeout", "push_jobs"):
        source = click.get_current_context().get_parameter_source(flag)
        if source == click.core.ParameterSource.COMMANDLINE and not opts["push"]:
            raise UsageError(f"--{flag.replace('_', '-')} goes with --push")

    layered = opts["oci"] or opts["docker_archive"] or opts["push"]
    output = opts["output"] or (None if layered else DEFAULT_OUTPUT)
    output = os.path.abspath(output) if output else None
    oci = os.path.abspath(opts["oci"]) if opts["oci"] else None
    archive = os.path.abspath(opts["docker_archive"]) if opts["docker_archive"] else None
    if oci and output and os.path.realpath(oci) == os.path.realpath(output):
        raise UsageError(f"--oci {opts['oci']}: the -o folder itself; give them different folders")
    if opts["tag"] and not layered:
        raise UsageError("--tag names the image of --oci or --docker-archive; give one of them")
    if opts["build_tag"] and output is None:
        raise UsageError("--build builds the -o folder: give -o too")
    options = PackOptions(
        output=output,
        plan=PlanOptions(
            extras=tuple(opts["extra"]),
            allow_missing=opts["allow_missing"],
            keep_setuid=opts["keep_setuid"],
            # Never pack our own outputs (a folder of them, or an --oci layout, under /).
            exclude=tuple(os.path.realpath(p) for p in (output, oci, archive) if p),
            exclude_globs=tuple(opts["exclude_globs"]),
            ephemeral=_runtime_mounts() if resolver.root.is_host else frozenset(),
        ),
        image=ImageConfig(
            entrypoint=(),
            cmd=_split_args(opts["cmd"], "--cmd"),
            env=parse_pairs(opts["env"], "--env"),
            expose=tuple(opts["expose"]),
            workdir=opts["workdir"],
            labels=parse_pairs(opts["label"], "--label"),
            user=opts["user"],
        ),
        epoch=_source_date_epoch(),
        distroless=opts["distroless"],
        stage=opts["stage"],
        search_path=search_path,
        entrypoint=opts["entrypoint"],
        runtime=RuntimeRequest(
            with_groups=tuple(opts["with_groups"]), tz=opts["tz"], mkdirs=tuple(opts["mkdir"])
        ),
        trace=TraceRequest(
            runs=_trace_runs(opts["trace"], opts["trace_cmd"]),
            ok_exits=_exit_codes(opts["trace_ok_exit"]),
            user=opts["trace_user"],
        ),
        layered_image=LayeredRequest(
            oci=oci, docker_archive=archive, tag=opts["tag"], max_layers=opts["max_layers"]
        ),
        push=_push_request(opts),
        package_metadata=not opts["no_package_metadata"],
        allow_secrets=tuple(opts["allow_secrets"]),
        compression=CompressionOptions(
            workers=opts["jobs"],
            cache_folder=None if opts["no_cache"] else str(_cache_folder()),
            cache_bytes=_cache_bytes(opts["cache_size"]),
        ),
    )
    _warn_public_config(options.image)
    planned = make_plan(resolver, opts["programs"], options)
    registry = _registry_access(opts["quiet"]) if opts["push"] else None
    with _progress(planned.plan, opts["quiet"]) as tick:
        packed = write_outputs(planned, options, resolver, tick, registry)
    if opts["as_json"]:
        click.echo(json.dumps(manifest(packed), indent=2 if sys.stdout.isatty() else None))
    if not opts["quiet"]:
        _summary(packed, options)
    if packed.image and packed.image.pushed and not opts["as_json"]:
        click.echo(packed.image.pushed.digest)  # on stdout, for scripts: the digest to deploy
    if opts["build_tag"] and output:
        verify = _split_args(opts["verify"], "--verify")
        platform = planned.plan.platform
        _build(opts["build_tag"], verify, opts["verify_timeout"], Path(output), platform)


def _push_request(opts: dict[str, Any]) -> PushRequest | None:
    from bundler.pack import PushRequest

    if not opts["push"]:
        return None
    return PushRequest(
        opts["push"],
        insecure=opts["insecure_registry"],
        retries=opts["push_retries"],
        timeout=opts["push_timeout"],
        jobs=opts["push_jobs"],
    )


def _warn_public_config(config: ImageConfig) -> None:
    """--env and --label values that look like secrets: the image config is public."""
    from bundler.staging.secrets import scan_value

    for option, pairs in (("--env", config.env), ("--label", config.labels)):
        for key, value in pairs:
            rules = scan_value(value)
            if rules:
                log.warning(
                    "%s %s: the value matches %s; the image config is public (anyone who pulls "
                    "the image reads it): pass secrets at run time instead",
                    option,
                    key,
                    ", ".join(rules),
                )


def _registry_access(quiet: bool) -> RegistryAccess:
    """--push's view of the user's Docker setup, read once here at the edge."""
    from bundler.image.registry import CredentialStore, TlsSettings
    from bundler.pack import RegistryAccess

    terminal = not quiet and sys.stderr.isatty()

    def say(line: str) -> None:
        # On a terminal, over the byte meter's line; it is drawn again at the next bytes.
        click.echo(f"{CLEAR_LINE if terminal else ''}scratchpack: {line}", err=True)

    def meter(sent: int, total: int) -> None:
        click.echo(
            f"{CLEAR_LINE}scratchpack: uploading {_size(sent)} of {_size(total)}",
            err=True,
            nl=False,
        )

    progress = None if quiet else say
    return RegistryAccess(
        CredentialStore.from_docker_config(),
        TlsSettings(),
        progress,
        meter if terminal else None,
    )


def _summary(packed: Packed, options: PackOptions) -> None:
    from bundler.pack import TARBALL

    plan = packed.plan
    files = sum(1 for e in plan.entries.values() if e.type == EntryType.FILE)
    what = f"scratchpack: packed {files} files ({_size(plan.total_bytes)})"
    if options.output:
        tarball = packed.outputs[TARBALL].stat().st_size
        click.echo(
            f"{what} into {options.output}: rootfs/, {TARBALL} ({_size(tarball)}), Dockerfile"
            + (", Dockerfile.distroless" if options.distroless else ""),
            err=True,
        )
    if packed.sizes:
        top = ", ".join(
            f"{name or '(no package)'} {_size(size)}" for name, size, _count in packed.sizes[:5]
        )
        click.echo(f"scratchpack: largest packages: {top} (--json lists all)", err=True)
    image = packed.image
    if image is None:
        return
    request = options.layered_image
    where = [f"{request.oci} ({image.digest})"] if request.oci else []
    where += [f"{request.docker_archive} (docker load)"] if request.docker_archive else []
    if where:
        click.echo(
            f"{what} as image {image.name}, {image.platform}, {len(image.layers)} layers: "
            + ", ".join(where),
            err=True,
        )
    if image.pushed is not None:
        result = image.pushed
        click.echo(
            f"scratchpack: pushed {result.reference} ({result.digest}, {image.platform}, "
            f"{len(image.layers)} layers): {result.uploaded} blobs uploaded "
            f"({_size(result.bytes_uploaded)}), {result.mounted} mounted, {result.present} "
            "already there",
            err=True,
        )


def _split_args(text: str | None, option: str) -> tuple[str, ...] | None:
    """Split ARGS as a shell would, before any work is done."""
    if text is None:
        return None
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None


def _trace_runs(traces: Sequence[str], commands: Sequence[str]) -> tuple[TraceRun, ...]:
    """--trace ARGS (the entrypoint's) then --trace-cmd 'PROGRAM ARGS', split before any work."""
    from bundler.pack import TraceRun

    runs = [TraceRun(None, _split_args(text, "--trace") or ()) for text in traces]
    for text in commands:
        words = _split_args(text, "--trace-cmd") or ()
        if not words:
            raise UsageError(f"--trace-cmd {text!r}: expected a program and its arguments")
        runs.append(TraceRun(words[0], words[1:]))
    return tuple(runs)


def _build(
    tag: str,
    verify: tuple[str, ...] | None,
    timeout: float,
    context: Path,
    platform: str | None,
) -> None:
    from bundler.image.engine import build_image, connect, verify_image

    client = connect()
    image = build_image(client, context, tag, platform=platform)
    click.echo(f"{image.id} {tag} {_size(image.size)}")
    if verify is not None:
        output = verify_image(client, tag, verify, timeout, platform=platform)
        log.info("%s %s: %s", tag, " ".join(verify), output.strip())


@contextlib.contextmanager
def _progress(plan: Plan, quiet: bool) -> Iterator[Callable[[Entry], None] | None]:
    """A bar on stderr for long work, when stderr is a terminal; each entry is done twice."""
    big = len(plan.entries) >= 300 or plan.total_bytes >= 100 << 20
    if quiet or not big or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=2 * len(plan.entries), label="packing", file=sys.stderr) as bar:
        yield lambda _entry: bar.update(1)


def _runtime_mounts() -> frozenset[str]:
    """Which of /etc/hosts, /etc/resolv.conf, /etc/hostname the container runtime bind-mounted
    here (a docker build RUN step does): /proc/self/mountinfo lists them as mount points."""
    names = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    points = set()
    for line in _read_text("/proc/self/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in names:
            points.add(fields[4])
    return frozenset(points)


def _exit_codes(text: str) -> frozenset[int]:
    try:
        return frozenset(int(code) for code in text.split(",") if code.strip())
    except ValueError:
        raise UsageError(f"--trace-ok-exit {text!r}: expected numbers like 0,1") from None


def _cache_folder() -> Path:
    """$XDG_CACHE_HOME/scratchpack, or ~/.cache/scratchpack (XDG base directories)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "scratchpack"


def _clear_cache(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from bundler.staging.blobs import LayerCache

    folder = _cache_folder()
    freed = LayerCache(folder).clear()
    click.echo(f"scratchpack: layer cache {folder} emptied ({_size(freed)} freed)", err=True)
    ctx.exit(EXIT_OK)


def _cache_bytes(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "")
    if not number.isdigit():
        raise UsageError(f"--cache-size {text!r}: expected bytes, or a number with K, M or G")
    return int(number) * units[unit]


def _source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r}: expected whole seconds since 1970")
    return int(value)


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{count} B"


def _settings(
    root: FsRoot,
    ld_library_path: str | None,
    hwcaps_option: str | None,
    cpu_features_option: str | None = None,
) -> SearchSettings:
    if ld_library_path is None and root.is_host:
        ld_library_path = os.environ.get("LD_LIBRARY_PATH")
    cpu = hwcaps.cpu_flags_from_cpuinfo(_read_text("/proc/cpuinfo"))
    levels = None
    if hwcaps_option is not None:
        levels = hwcaps.parse_hwcaps_option(hwcaps_option, EM_X86_64)
    stated = None
    if cpu_features_option is not None:
        stated = hwcaps.parse_cpu_features_option(cpu_features_option)
    cwd = os.getcwd() if root.is_host else "/"
    return SearchSettings(
        ld_library_path=ld_library_path,
        cpu_flags=cpu,
        # /proc/cpuinfo describes the CPU of a root of this machine's own architecture only.
        host_machines=hwcaps.HOST_MACHINES.get(os.uname().machine, frozenset()),
        cpu_features=stated,
        hwcaps=levels,
        cwd=cwd,
    )


def _search_path(root: FsRoot) -> tuple[str, ...]:
    if not root.is_host:
        return DEFAULT_PATH
    value = os.environ.get("PATH")
    return tuple(value.split(":")) if value else DEFAULT_PATH


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _print_sizes(resolver: Resolver, binaries: list[Binary], as_json: bool) -> None:
    """--list --sizes: what the closure costs per package, without packing."""
    from bundler.pack import closure_sizes, size_json

    sizes = closure_sizes(resolver, binaries)
    if as_json:
        click.echo(json.dumps({"packages": size_json(sizes)}))
        return
    if not sizes:
        log.warning("the root has no dpkg database: no sizes by package")
    for name, size, count in sizes:
        files = "file " if count == 1 else "files"
        click.echo(f"{_size(size):>10} {count:>5} {files}  {name or '(no package)'}")


def _print_listing(binaries: list[Binary], as_json: bool) -> None:
    if as_json:
        document: dict[str, Any] = to_json(binaries)
        # Pretty for a person; compact (and 5x faster to encode) for a pipe.
        indent = 2 if sys.stdout.isatty() else None
        click.echo(json.dumps(document, indent=indent))
        return
    out = sys.stdout.buffer
    for path in file_list(binaries):
        out.write(os.fsencode(path) + b"\n")  # file names are bytes; not every one is UTF-8
    out.flush()


def _configure_logging(verbose: int, quiet: bool) -> None:
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    level = logging.ERROR if quiet else levels[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scratchpack: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _on_signal(_signum: int, _frame: object) -> None:
    raise Interrupted


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: maps every outcome to an exit code, and never shows a traceback."""
    # A file-size limit must give an error we can report, not kill us halfway through a write.
    handlers: dict[signal.Signals, Any] = {
        signal.SIGXFSZ: signal.SIG_IGN,
        signal.SIGINT: _on_signal,
        signal.SIGTERM: _on_signal,
    }
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        return _run(argv)
    finally:
        for number, handler in previous.items():  # in-process callers (tests) get theirs back
            signal.signal(number, handler)


def _run(argv: Sequence[str] | None) -> int:
    try:
        command.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except (click.exceptions.Abort, KeyboardInterrupt, Interrupted):
        click.echo("scratchpack: interrupted; outputs were left as they were", err=True)
        return EXIT_INTERRUPTED
    except ScratchpackError as exc:
        click.echo(f"scratchpack: {exc}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (| head): not an error of ours; keep Python from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK
