"""The command line: the only place that reads the environment, prints, and picks exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from bundler import __version__, hwcaps
from bundler.errors import ScratchpackError
from bundler.inventory import Binary, collect, file_list, to_json
from bundler.loader import SearchSettings
from bundler.programs import DEFAULT_PATH
from bundler.resolve import Resolver
from bundler.rootfs import FsRoot

log = logging.getLogger("bundler")

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

HELP = """Pack PROGRAM and exactly the files its dynamic loader maps into a FROM scratch image.

PROGRAM is a path or a name on PATH; ELF programs, shared libraries and #! scripts are
accepted, hundreds at a time. Libraries are resolved as glibc's ld.so (or musl's loader)
resolves them: DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, ld.so.cache, the default directories,
glibc-hwcaps subdirectories and $ORIGIN/$LIB/$PLATFORM.

\b
Examples:
  scratchpack --list redis-server          in-image paths, one per line
  scratchpack --list --json /usr/bin/curl  the closure as JSON, with what is missing
  scratchpack --list --root ./rootfs nginx resolve inside an unpacked image, as chroot would

\b
Exit codes: 0 done; 1 the closure is incomplete (missing libraries); 2 bad usage or bad
input; 130 interrupted.
"""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("programs", nargs=-1, required=True, metavar="PROGRAM...")
@click.option("--list", "list_only", is_flag=True, help="Print the closure; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Resolve inside this unpacked image or sysroot (its PATH, ld.so.cache, links), "
    "never reading outside it.",
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
    "-j",
    "--jobs",
    type=click.IntRange(0, 64),
    default=0,
    help="Parser processes for many programs (0: one per core).",
)
@click.option("-v", "--verbose", count=True, help="Explain each decision (-vv: every probe).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(__version__, prog_name="scratchpack")
def command(
    programs: Sequence[str],
    list_only: bool,
    as_json: bool,
    root: str | None,
    ld_library_path: str | None,
    hwcaps_option: str | None,
    jobs: int,
    verbose: int,
    quiet: bool,
) -> None:
    _configure_logging(verbose, quiet)
    if not list_only:
        raise ScratchpackError("nothing to do: pass --list to print the closure")
    fsroot = FsRoot(root or "/")
    settings = _settings(fsroot, ld_library_path, hwcaps_option)
    search_path = _search_path(fsroot)
    cwd = os.getcwd() if fsroot.is_host else "/"
    binaries = collect(Resolver(fsroot, settings), programs, search_path, cwd, workers=jobs)
    _print_listing(binaries, as_json)
    for binary in binaries:
        for lib in binary.problems:
            what = lib.error or "not found"
            log.warning("%s: %s (needed by %s)", lib.name, what, " <- ".join(lib.chain))


def _settings(
    root: FsRoot, ld_library_path: str | None, hwcaps_option: str | None
) -> SearchSettings:
    if ld_library_path is None and root.is_host:
        ld_library_path = os.environ.get("LD_LIBRARY_PATH")
    cpu = hwcaps.cpu_flags_from_cpuinfo(_read_text("/proc/cpuinfo"))
    levels = None
    if hwcaps_option is not None:
        levels = hwcaps.parse_hwcaps_option(hwcaps_option, hwcaps.EM_X86_64)
    cwd = os.getcwd() if root.is_host else "/"
    return SearchSettings(ld_library_path=ld_library_path, cpu_flags=cpu, hwcaps=levels, cwd=cwd)


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


def _print_listing(binaries: list[Binary], as_json: bool) -> None:
    if as_json:
        document: dict[str, Any] = to_json(binaries)
        # Pretty for a person; compact (and 5x faster to encode) for a pipe.
        indent = 2 if sys.stdout.isatty() else None
        click.echo(json.dumps(document, indent=indent))
        return
    for path in file_list(binaries):
        click.echo(path)


def _configure_logging(verbose: int, quiet: bool) -> None:
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    level = logging.ERROR if quiet else levels[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scratchpack: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: maps every outcome to an exit code, and never shows a traceback."""
    try:
        command.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("scratchpack: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("scratchpack: interrupted", err=True)
        return EXIT_INTERRUPTED
    except ScratchpackError as exc:
        click.echo(f"scratchpack: {exc}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (| head): not an error of ours; keep Python from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
