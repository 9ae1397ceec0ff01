"""Trace mode: run the program once and keep every file it touched.

**Why strace.** Trace mode runs the program under the distribution's ``strace`` (Debian's
``strace`` package) and reads its log. strace sees every file system call the program and its
children make: the libraries the loader maps and those ``dlopen()`` opens later, Python's
stdlib and extension modules, gconv modules, NSS modules, certificates, configuration and data
files, programs started with ``execve`` (``-f`` follows every fork, thread and exec). It needs
nothing from the program (static programs and programs that do not use glibc's loader are
traced just as well) and no extra privileges: it starts the program as its own child, so it
works in a ``docker build`` RUN step, whose default seccomp profile allows ``ptrace`` on kernels
4.8 and later (chroot under ``--root`` only needs ``CAP_SYS_CHROOT``, which Docker grants by
default). ``LD_AUDIT`` was rejected because it only sees what glibc's loader loads: not a data
file, not Python's ``.py`` modules, not a program started by the traced one unless the variable
survives into it, and nothing at all for static or musl programs. Calling ``ptrace`` from
Python would reimplement strace (per-architecture syscall tables and argument decoding, fork
and exec following, signal forwarding) for no gain over a small, audited, packaged tool.

The log is read as a stream (memory grows with the number of distinct paths, not with the
length of the run). strace is asked for successful calls only (``-z``, so each call is one whole
line) with file descriptors decoded to paths (``-y``): ``openat(AT_FDCWD</srv>, "x", ...)``
names the process's working directory and ``openat(3</usr/lib>, "x", ...)`` the directory a
relative name is looked up in, so relative paths are resolved without replaying ``chdir``.
Under ``--root`` the program is started by a few lines of Python that chroot into the root, so
the paths the program names are in-image paths (the paths strace decodes from descriptors are
host paths, and are mapped back into the root). What the launcher does before its ``chroot`` is
ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from bundler.errors import BadElf, ProgramNotFound, ScratchpackError, UsageError
from bundler.loader.programs import started_first
from bundler.loader.rootfs import FsRoot, SymlinkLoop
from bundler.runtime.needs import UserIds

log = logging.getLogger(__name__)

STRACE = "strace"
# -f: follow forks, threads and execs; -qq: no attach/exit chatter; -z: successful calls only,
# each printed whole when it returns (no "<unfinished ...>" halves); -y: fds as <path>.
STRACE_OPTIONS = (
    "-f",
    "-qq",
    "-z",
    "-y",
    "-e",
    "trace=%file,%process,fchdir",
    "-e",
    "signal=none",
)
# Kernel file systems: their files are made at run time, never packed.
SPECIAL_TOPS = ("/proc", "/sys", "/dev")
# Linux follows at most 4 nested #! interpreters (and then the interpreter's PT_INTERP).
MAX_INTERPRETERS = 5
STDERR_TAIL_LINES = 3
STDERR_TAIL_BYTES = 4096
# Seconds to wait for killed processes to finish exiting after a timeout.
KILL_GRACE = 5.0

# Runs on the host until its chroot() (of the root, or of "/" when only the user changes):
# strace follows it into the program it execs, and its chroot() marks where the program's own
# calls begin. It takes the user's groups and ids after the chroot and exits 127 when it cannot
# chroot, switch user, chdir or exec, as chroot(1) does.
LAUNCHER = """\
import os, sys
root, cwd, ids, program = sys.argv[1:5]
try:
    os.chroot(root)
    if ids:
        uid, gid, groups = ids.split(":")
        os.setgroups([int(g) for g in groups.split(",") if g])
        os.setgid(int(gid))
        os.setuid(int(uid))
    os.chdir(cwd)
    os.execv(program, [program, *sys.argv[5:]])
except OSError as exc:
    sys.stderr.write(f"scratchpack trace: {exc.filename or program}: {exc.strerror}\\n")
    sys.exit(127)
"""


class TracerMissing(ScratchpackError):
    """strace is not installed (or not on PATH)."""

    exit_code = 2


class TraceNotStarted(ScratchpackError):
    """strace ran but the program never started under it (ptrace refused, chroot refused,
    the file cannot be executed)."""

    exit_code = 2


class TraceFailed(ScratchpackError):
    """The traced program exited with a code not allowed, or ran past the timeout."""

    exit_code = 1


@dataclass(frozen=True)
class TraceResult:
    """What one run of the program touched, as in-image paths."""

    program: str
    args: tuple[str, ...]
    exit_code: int
    files: tuple[str, ...]  # regular files (or links to them), first seen first
    directories: tuple[str, ...]  # directories opened, listed, stat'ed, entered or written into
    reasons: dict[str, str] = field(default_factory=dict)  # path -> how it was seen
    # Paths the run made (mkdir, creat, the new name of a rename): its output, not its input.
    created: frozenset[str] = frozenset()
    # Paths the run opened for writing, or made: whether it changed them, their ctime tells.
    written: frozenset[str] = frozenset()
    # Files only looked at (stat, access, readlink), never opened, mapped or executed: their
    # existence may matter, but an ELF file among them is not loaded, so brings no closure.
    looked_at: frozenset[str] = frozenset()


def trace_program(
    root: FsRoot,
    program: str,
    args: Sequence[str],
    *,
    ok_exits: frozenset[int] = frozenset({0}),
    exclude: Sequence[str] = (),
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    user: UserIds | None = None,
) -> TraceResult:
    """Run ``program`` (an image path) with ``args`` under strace and collect what it touched.

    Under a non-host root the program runs chrooted into it (the caller must be allowed to
    chroot); ``cwd`` is the in-image working directory (``/``, as Docker's default WORKDIR).
    ``exclude`` holds host paths whose files are never reported (the output folder). ``env``
    defaults to ours, with ``PWD`` set to ``cwd`` (shells check it against their directory);
    with a ``user`` (whom the program runs as: initdb refuses root), with its ``HOME``, ``USER``
    and ``LOGNAME`` too.
    """
    strace = _find_strace()
    _check_program(root, program, cwd)
    with tempfile.TemporaryDirectory(prefix="scratchpack-trace-") as work:
        log_path = os.path.join(work, "strace.log")
        stderr_path = os.path.join(work, "stderr")
        launched = not root.is_host or user is not None
        command, host_cwd = _command(strace, log_path, root, program, args, cwd, user)
        log.info("tracing %s%s", _shown(program, args), f" as {user.name}" if user else "")
        log.debug("trace command: %s", shlex.join(command))
        run_env = dict(env) if env is not None else {**os.environ, "PWD": cwd}
        if user is not None:
            run_env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
        exit_code = _run(command, host_cwd, run_env, timeout, work, stderr_path, program)
        collector = _Collector(root, [*exclude, work])
        started = _read_log(log_path, collector, root, cwd, launched)
        stderr_tail = _tail(stderr_path)
    log.debug("stderr of %s under trace: %s", program, _one_line(stderr_tail))
    if not started:
        raise TraceNotStarted(f"{program}: did not start under strace: {_one_line(stderr_tail)}")
    if exit_code not in ok_exits:
        raise TraceFailed(_exit_message(program, args, exit_code, ok_exits, stderr_tail))
    log.info(
        "trace of %s: exit %d, %d files, %d directories",
        program,
        exit_code,
        len(collector.files),
        len(collector.directories),
    )
    return TraceResult(
        program=program,
        args=tuple(args),
        exit_code=exit_code,
        files=tuple(collector.files),
        directories=tuple(collector.directories),
        reasons=collector.reasons,
        created=frozenset(collector.created),
        written=frozenset(collector.written),
        looked_at=frozenset(p for p in collector.files if collector.ranks[p] == _SEEN),
    )


# -- running ------------------------------------------------------------------------------------


def _find_strace() -> str:
    found = shutil.which(STRACE)
    if found is None:
        raise TracerMissing(
            "--trace needs strace, which is not on PATH: apt-get install strace "
            "(apk add strace, dnf install strace)"
        )
    return found


def _check_program(root: FsRoot, program: str, cwd: str) -> None:
    if not program.startswith("/"):
        raise UsageError(f"{program}: trace needs the program's absolute in-image path")
    where = "" if root.is_host else f" in {root.top}"
    if not root.is_file(program):
        raise ProgramNotFound(f"{program}: no such program{where}")
    if not cwd.startswith("/") or not root.is_dir(cwd):
        raise UsageError(f"{cwd}: the trace's working directory is not a directory{where}")


def _command(
    strace: str,
    log_path: str,
    root: FsRoot,
    program: str,
    args: Sequence[str],
    cwd: str,
    user: UserIds | None,
) -> tuple[list[str], str]:
    """The command line, and the host folder to start it in."""
    head = [strace, *STRACE_OPTIONS, "-o", log_path, "--"]
    if root.is_host and user is None:
        return [*head, program, *args], cwd
    # -I -S: the host's PYTHON* variables and site-packages must not change the launcher.
    ids = f"{user.uid}:{user.gid}:{','.join(map(str, user.groups))}" if user else ""
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, root.top, cwd, ids, program]
    return [*head, *launcher, *args], "/"


def _run(
    command: list[str],
    host_cwd: str,
    env: dict[str, str],
    timeout: float,
    work: str,
    stderr_path: str,
    program: str,
) -> int:
    """Run the traced command, its output into files (never ours); its exit code."""
    with (
        open(os.path.join(work, "stdout"), "wb") as stdout,
        open(stderr_path, "wb") as stderr,
    ):
        # A session of its own: on timeout the whole group goes, and nothing reads our tty.
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=host_cwd,
            env=env,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_trace(proc)
            raise TraceFailed(
                f"{program}: still running after {timeout:g} s under trace (killed); a server "
                "or a program that leaves a daemon behind needs arguments that make it exit"
            ) from None


def _kill_trace(proc: subprocess.Popen[bytes]) -> None:
    """Kill strace and every process it traces, including those that left its session."""
    tracees = _tracees(proc.pid)
    for pid in tracees:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # SIGKILL is only sent: let the exits finish, so nothing still writes when we return.
    deadline = time.monotonic() + KILL_GRACE
    while any(_alive(pid) for pid in tracees) and time.monotonic() < deadline:
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _tracees(tracer: int) -> list[int]:
    """Processes whose tracer is ``tracer`` (a daemon that called setsid() is still one)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"TracerPid:"):
                        if int(line.split()[1]) == tracer:
                            found.append(int(name))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return found


def _tail(path: str) -> list[str]:
    """The last few non-empty lines of a file."""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - STDERR_TAIL_BYTES))
        text = handle.read().decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [line[:200] for line in lines[-STDERR_TAIL_LINES:]]


def _shown(program: str, args: Sequence[str]) -> str:
    """The command as a shell would take it, on one line (a -c script may span several)."""
    text = shlex.join([program, *args]).replace("\n", "\\n")
    return text if len(text) <= 200 else text[:197] + "..."


def _one_line(lines: list[str]) -> str:
    return " | ".join(lines) if lines else "(nothing on stderr)"


def _exit_message(
    program: str, args: Sequence[str], code: int, ok_exits: frozenset[int], stderr: list[str]
) -> str:
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}" if -code in _SIGNALS else "was killed"
    else:
        how = f"exited with code {code}"
    allowed = ", ".join(str(c) for c in sorted(ok_exits)) or "none"
    return (
        f"{_shown(program, args)}: {how} under trace (allowed: {allowed}); "
        f"stderr: {_one_line(stderr)}"
    )


_SIGNALS = {int(s) for s in signal.Signals}


# -- reading the log ----------------------------------------------------------------------------

# "1234  name(args) = ret..."; -f prefixes every line with the pid.
_LINE = re.compile(rb"^(\d+) +([a-z0-9_]+)\((.*)$", re.S)
_TOKEN = re.compile(
    rb'"(?:[^"\\]|\\.)*"'  # a quoted string, C escapes inside
    rb"|<(?:[^>\\]|\\.)*>"  # a decoded fd: <path>, '>' escaped inside
    rb"|/\*.*?\*/"  # a comment: /* 35 vars */
    rb"|[(\[{]|[)\]}]|,"
    rb'|[^"<,()\[\]{}/]+'
    rb"|.",
    re.S,
)
_RETURN = re.compile(rb"\s*= (-?\d+|0x[0-9a-f]+|\?)")
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.S)
_SIMPLE_ESCAPES = {b"n": 10, b"t": 9, b"r": 13, b"v": 11, b"f": 12, b"a": 7, b"b": 8}

# syscall -> (index of its dirfd argument or None, index of its path argument)
_PATH_CALLS: dict[str, tuple[int | None, int]] = {
    "open": (None, 0),
    "openat": (0, 1),
    "openat2": (0, 1),
    "creat": (None, 0),
    "stat": (None, 0),
    "lstat": (None, 0),
    "stat64": (None, 0),
    "lstat64": (None, 0),
    "newfstatat": (0, 1),
    "fstatat64": (0, 1),
    "statx": (0, 1),
    "access": (None, 0),
    "faccessat": (0, 1),
    "faccessat2": (0, 1),
    "readlink": (None, 0),
    "readlinkat": (0, 1),
    "execve": (None, 0),
    "execveat": (0, 1),
    "chdir": (None, 0),
    "mkdir": (None, 0),
    "mkdirat": (0, 1),
    # The new name of a rename, a link or a symlink: made by the run (an atomic write, a folder
    # moved into place, git's objects, linked into place from a temporary file).
    "rename": (None, 1),
    "renameat": (2, 3),
    "renameat2": (2, 3),
    "link": (None, 1),
    "linkat": (2, 3),
    "symlink": (None, 1),
    "symlinkat": (1, 2),
}
_OPENS = frozenset({"open", "openat", "openat2"})
_EXECS = frozenset({"execve", "execveat"})
# Calls that make their path: what the program needs is the folder they make it in, and the
# path itself is an output of the run.
_MAKES = frozenset(
    {"creat", "mkdir", "mkdirat", "rename", "renameat", "renameat2"}
    | {"link", "linkat", "symlink", "symlinkat"}
)
_FORKS = frozenset({"clone", "clone3", "fork", "vfork"})
# Every other call of the traced classes (unlink, rename, wait4, ...) is skipped unparsed.
_WANTED = frozenset(name.encode() for name in {*_PATH_CALLS, *_FORKS, "fchdir", "chroot"})


@dataclass(frozen=True)
class _Call:
    pid: int
    name: str
    args: tuple[bytes, ...]
    ret: bytes


def _parse_line(line: bytes) -> _Call | None:
    """One log line as a call, or None for anything else (a truncated last line, ...)."""
    match = _LINE.match(line.rstrip(b"\n"))
    if match is None or match.group(2) not in _WANTED:
        return None
    args: list[bytes] = []
    current: list[bytes] = []
    depth = 0
    rest = match.group(3)
    for token in _TOKEN.finditer(rest):
        text = token.group()
        if depth == 0 and text in (b",", b")"):
            args.append(b"".join(current).strip())
            current = []
            if text == b")":
                ret = _RETURN.match(rest, token.end())
                if ret is None:
                    return None
                return _Call(int(match.group(1)), match.group(2).decode(), tuple(args), ret[1])
            continue
        if text in (b"(", b"[", b"{"):
            depth += 1
        elif text in (b")", b"]", b"}"):
            depth -= 1
        current.append(text)
    return None


def _unquote(text: bytes) -> str | None:
    """A path from a quoted strace string; None if it is not one or was cut short."""
    if len(text) < 2 or not text.startswith(b'"') or not text.endswith(b'"'):
        return None
    return os.fsdecode(_ESCAPE.sub(_unescape_one, text[1:-1]))


def _unescape_one(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code[:1] == b"x" and len(code) == 3:
        return bytes([int(code[1:], 16)])
    if code[:1].isdigit():
        return bytes([int(code, 8) & 0xFF])
    return bytes([_SIMPLE_ESCAPES.get(code, code[0])])


def _decoded_fd(text: bytes) -> str | None:
    """The host path strace decoded for an fd argument ("AT_FDCWD</srv>", "3</usr/lib>")."""
    start = text.find(b"<")
    if start < 0 or not text.endswith(b">"):
        return None
    path = os.fsdecode(_ESCAPE.sub(_unescape_one, text[start + 1 : -1]))
    return path if path.startswith("/") else None  # not "socket:[12]", "pipe:[3]", ...


class _Cwds:
    """Each process's working directory (image path), as far as the log has told it.

    A forked child can log calls before its parent's fork line (strace prints a call when it
    returns); a relative path seen before the child's directory is known waits for it.
    """

    def __init__(self) -> None:
        self.known: dict[int, str] = {}
        self.waiting: dict[int, list[tuple[str, str, str]]] = {}

    def set(self, pid: int, cwd: str, collector: _Collector) -> None:
        self.known[pid] = cwd
        for path, reason, how in self.waiting.pop(pid, []):
            collector.offer(posixpath.join(cwd, path), reason, how)

    def offer_relative(
        self, pid: int, path: str, reason: str, how: str, collector: _Collector
    ) -> None:
        cwd = self.known.get(pid)
        if cwd is None:
            self.waiting.setdefault(pid, []).append((path, reason, how))
        else:
            collector.offer(posixpath.join(cwd, path), reason, how)


def _parse_log(
    handle: BinaryIO, collector: _Collector, root: FsRoot, cwd: str, launched: bool
) -> bool:
    """Feed every call of the log to the collector; whether the program was started at all.

    ``launched``: the program was started by the launcher, whose own calls up to its chroot()
    are not the program's."""
    cwds = _Cwds()
    chrooted = not launched
    started = False
    first_pid: int | None = None
    for call in _calls(handle):
        if first_pid is None:
            first_pid = call.pid
            if root.is_host:
                cwds.set(call.pid, cwd, collector)
        if not chrooted:
            chrooted = call.name == "chroot" and call.pid == first_pid
            continue
        if call.name in _EXECS and call.pid == first_pid:
            started = True
        _handle(call, cwds, collector, root)
    for pid, waiting in cwds.waiting.items():
        log.debug("pid %d: working directory never known, %d relative paths", pid, len(waiting))
    return started


def _read_log(log_path: str, collector: _Collector, root: FsRoot, cwd: str, launched: bool) -> bool:
    if not os.path.exists(log_path):
        return False  # strace gave up before it opened its log
    with open(log_path, "rb") as handle:
        return _parse_log(handle, collector, root, cwd, launched)


def _calls(handle: BinaryIO) -> Iterator[_Call]:
    for line in handle:
        call = _parse_line(line)
        if call is not None:
            yield call


def _handle(call: _Call, cwds: _Cwds, collector: _Collector, root: FsRoot) -> None:
    if call.name in _FORKS:
        child = int(call.ret) if call.ret.isdigit() else None
        parent_cwd = cwds.known.get(call.pid)
        if child is not None and parent_cwd is not None and child not in cwds.known:
            cwds.set(child, parent_cwd, collector)
        return
    if call.name == "fchdir":
        where = _image_of(root, _decoded_fd(call.args[0]) if call.args else None)
        if where is not None:
            cwds.set(call.pid, where, collector)
            collector.offer(where, "fchdir", "any")
        return
    spec = _PATH_CALLS.get(call.name)
    if spec is None or len(call.args) <= spec[1]:
        return
    _learn_cwd(call, cwds, collector, root)
    path = _unquote(call.args[spec[1]])
    if not path:  # "" with AT_EMPTY_PATH: the call is about the fd, seen when it was opened
        return
    reason, how = _classify(call)
    if path.startswith("/"):
        collector.offer(path, reason, how)
    elif spec[0] is not None and not call.args[spec[0]].startswith(b"AT_FDCWD"):
        base = _image_of(root, _decoded_fd(call.args[spec[0]]))
        if base is not None:
            collector.offer(posixpath.join(base, path), reason, how)
    else:
        cwds.offer_relative(call.pid, path, reason, how, collector)
    if call.name == "chdir":
        _after_chdir(call.pid, path, cwds, collector)


def _learn_cwd(call: _Call, cwds: _Cwds, collector: _Collector, root: FsRoot) -> None:
    """ "AT_FDCWD</srv>" tells the process's working directory at the time of the call."""
    first = call.args[0] if call.args else b""
    if first.startswith(b"AT_FDCWD<"):
        where = _image_of(root, _decoded_fd(first))
        if where is not None and cwds.known.get(call.pid) != where:
            cwds.set(call.pid, where, collector)


def _after_chdir(pid: int, path: str, cwds: _Cwds, collector: _Collector) -> None:
    if path.startswith("/"):
        cwds.set(pid, path, collector)
    elif pid in cwds.known:
        # Not normpath: ".." after a link is left for _clean to apply as the kernel does.
        cwds.set(pid, posixpath.join(cwds.known[pid], path), collector)
    # else: still unknown; the next "AT_FDCWD<...>" of this process tells it.


def _classify(call: _Call) -> tuple[str, str]:
    """How the path was used (for -v), and what to keep: "any", "exec", "parent" (its folder)
    or "made" (its folder; the path itself is an output of the run)."""
    if call.name in _EXECS:
        return call.name, "exec"
    if call.name in _MAKES:
        return call.name, "made"
    if call.name in _OPENS:
        flags = _open_flags(call)
        mode = next((m for m in ("O_WRONLY", "O_RDWR") if m in flags), "O_RDONLY")
        if "O_TMPFILE" in flags:
            return f"{call.name} O_TMPFILE", "any"
        # Written, or made afresh: an output of this run. Its folder must exist, not the file
        # (whether the file is new is told by its ctime: O_CREAT also opens existing files).
        if mode == "O_WRONLY" or ("O_CREAT" in flags and ("O_TRUNC" in flags or "O_EXCL" in flags)):
            return f"{call.name} {mode}", "parent"
        return f"{call.name} {mode}", "any"
    return call.name, "any"


def _open_flags(call: _Call) -> set[str]:
    index = 1 if call.name == "open" else 2
    if len(call.args) <= index:
        return set()
    text = call.args[index].decode("ascii", "replace")
    if call.name == "openat2":  # {flags=O_RDONLY|O_CLOEXEC, resolve=..., mode=0}
        found = re.search(r"flags=([A-Z0-9_|x]+)", text)
        text = found.group(1) if found else ""
    return set(text.split("|"))


def _image_of(root: FsRoot, host_path: str | None) -> str | None:
    """The image path of a path strace decoded from an fd (a host path), None if outside."""
    if host_path is None:
        return None
    return root.image_path_of_host(host_path)


# -- keeping what was seen ----------------------------------------------------------------------


# How a path was used, strongest first.
_EXECUTED, _OPENED, _SEEN = 0, 1, 2


class _Collector:
    """Files and folders seen, first seen first, each kept only when it exists in the root."""

    def __init__(self, root: FsRoot, exclude: Iterable[str]) -> None:
        self.root = root
        self.exclude = tuple(os.path.realpath(path) for path in exclude)
        self.files: dict[str, None] = {}
        self.directories: dict[str, None] = {}
        self.reasons: dict[str, str] = {}
        self.ranks: dict[str, int] = {}
        self.created: dict[str, None] = {}
        self.written: dict[str, None] = {}
        # (path, how) pairs already judged: a library is opened by every process that loads it.
        self.seen: set[tuple[str, str]] = set()

    def offer(self, path: str, reason: str, how: str) -> None:
        clean = _clean(self.root, path)
        if clean is None or (clean, how) in self.seen:
            return
        self.seen.add((clean, how))
        if how == "made":
            self.created[clean] = None
        if how in ("parent", "made") or "O_RDWR" in reason:
            self.written[clean] = None
        if how in ("parent", "made"):
            parent = posixpath.dirname(clean)
            self._keep(parent, f"parent of {clean} ({reason})", _SEEN, dirs_only=True)
            return
        rank = _EXECUTED if how == "exec" else _OPENED if reason.startswith("open") else _SEEN
        kind = self._keep(clean, reason, rank)
        if kind == "file" and how == "exec":
            self._interpreters(clean, 0)

    def _keep(self, path: str, reason: str, rank: int, dirs_only: bool = False) -> str | None:
        """Record ``path`` if it exists in the root; "file", "dir" or None."""
        if path in self.reasons:
            if rank < self.ranks[path]:  # -v tells the strongest use: "execve" beats "stat"
                self.reasons[path], self.ranks[path] = reason, rank
            return "file" if path in self.files else "dir"
        kind = self._kind(path)
        if kind is None or (dirs_only and kind != "dir"):
            return None
        (self.files if kind == "file" else self.directories)[path] = None
        self.reasons[path], self.ranks[path] = reason, rank
        return kind

    def _kind(self, path: str) -> str | None:
        if _special(path):
            return None
        try:
            resolved = self.root.realpath(path)
        except SymlinkLoop:
            return None
        if _special(resolved) or self.root.lies_in(resolved, self.exclude):
            return None
        st = self.root.stat(resolved)
        if st is None:
            return None
        if stat.S_ISREG(st.st_mode):
            return "file"
        return "dir" if stat.S_ISDIR(st.st_mode) else None  # sockets, fifos: made at run time

    def _interpreters(self, path: str, depth: int) -> None:
        """The kernel loads a script's interpreter and an ELF's PT_INTERP without a call that
        strace could see: add them as execve would find them."""
        interpreter = self._interpreter_of(path)
        if interpreter is None or depth >= MAX_INTERPRETERS:
            return
        if self._keep(interpreter, f"interpreter of {path}", _EXECUTED) == "file":
            self._interpreters(interpreter, depth + 1)

    def _interpreter_of(self, path: str) -> str | None:
        try:
            return started_first(self.root, path)
        except (UsageError, BadElf) as exc:
            log.debug("%s: cannot read its interpreter: %s", path, exc)
            return None


def _clean(root: FsRoot, path: str) -> str | None:
    """An absolute path without "." and "//"; ".." is applied as the kernel would (after the
    links before it), so "/usr/lib/../x" is not mistaken for "/usr/x" when lib is a link."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." not in parts:
        return "/" + "/".join(parts)
    try:
        if parts[-1] == "..":
            return root.realpath("/" + "/".join(parts))
        return posixpath.join(root.realpath("/" + "/".join(parts[:-1])), parts[-1])
    except SymlinkLoop:
        return None


def _special(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in SPECIAL_TOPS)
