"""Trace mode runs real programs of this machine under strace and keeps what they touched.

Most tests need strace (Debian's ``strace`` package, installed by ``make deps``); tests under a
root need to be allowed to chroot (root, as in a builder stage). A few feed a hand-written log
to the parser, for the orders and spellings a real run produces only by chance.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root

from bundler.errors import ProgramNotFound, UsageError
from bundler.loader.rootfs import FsRoot
from bundler.runtime.trace import (
    TraceFailed,
    TraceNotStarted,
    TracerMissing,
    _Collector,
    _parse_log,
    trace_program,
)

HOST = FsRoot("/")
PYTHON = "/usr/bin/python3"
SH = "/bin/sh"
# A fixed PATH: which cat the shell finds must not depend on the developer's PATH.
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1"}

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)"
)
needs_chroot = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
needs_glibc = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")


def _resolved(root: FsRoot, paths: tuple[str, ...]) -> set[str]:
    return {root.realpath(p) for p in paths}


def _assert_nothing_special(paths: tuple[str, ...]) -> None:
    for path in paths:
        for top in ("/proc", "/sys", "/dev"):
            assert path != top and not path.startswith(top + "/"), path


# -- the host root ------------------------------------------------------------------------------


@needs_strace
def test_python_imports_stdlib_extension_and_library() -> None:
    if not os.path.exists(PYTHON):
        pytest.skip(f"needs {PYTHON}")
    probe = subprocess.run(
        [PYTHON, "-c", "import sqlite3, sysconfig; print(sysconfig.get_paths()['stdlib'])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"{PYTHON} has no sqlite3 module")
    stdlib = probe.stdout.strip()

    result = trace_program(HOST, PYTHON, ["-c", "import json, sqlite3"], env=ENV)

    assert result.exit_code == 0
    assert result.files[0] == PYTHON and result.reasons[PYTHON] == "execve"
    assert f"{stdlib}/json/__init__.py" in result.files
    names = {os.path.basename(p) for p in _resolved(HOST, result.files)}
    assert any(n.startswith("_sqlite3.") and n.endswith(".so") for n in names), names
    assert any(n.startswith("libsqlite3.so") for n in names), names
    assert stdlib in result.directories
    # The loader maps it without a call strace could see: added from PT_INTERP.
    assert any(r.startswith("interpreter of ") for r in result.reasons.values())
    assert len(set(result.files)) == len(result.files)
    assert set(result.reasons) == set(result.files) | set(result.directories)
    _assert_nothing_special(result.files + result.directories)


@needs_strace
def test_shell_reports_what_it_reads_and_runs_never_dev_or_proc() -> None:
    result = trace_program(
        HOST,
        SH,
        [
            "-c",
            "cat /etc/hostname >/dev/null; cat /proc/self/status /sys/kernel/uevent_seqnum; exit 0",
        ],
        env=ENV,
    )
    assert "/etc/hostname" in result.files
    assert result.reasons["/etc/hostname"].startswith("openat O_RDONLY")
    cat = next(p for p in result.files if os.path.basename(p) == "cat")
    assert result.reasons[cat] == "execve"
    _assert_nothing_special(result.files + result.directories)


@needs_strace
def test_relative_paths_dirfds_dotdot_and_odd_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub/in-sub").write_text("x")
    (data / "beside").write_text("x")
    odd = 'a"b\\c>d\ne\tf é'
    (data / odd).write_text("x")
    (tmp_path / "link").symlink_to("data/sub")  # link/../beside is data/beside, not ./beside
    script = textwrap.dedent(
        f"""
        import os
        open("link/../beside").close()
        fd = os.open("data", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open({odd!r}, os.O_RDONLY, dir_fd=fd))
        os.stat("sub/in-sub", dir_fd=fd)
        os.chdir("data/sub")
        os.access("in-sub", os.R_OK)
        """
    )
    result = trace_program(HOST, PYTHON, ["-c", script], cwd=str(tmp_path), env=ENV)
    real = os.path.realpath(tmp_path)
    for path in (f"{real}/data/beside", f"{real}/data/{odd}", f"{real}/data/sub/in-sub"):
        assert path in _resolved(HOST, result.files), path
    assert f"{real}/data" in _resolved(HOST, result.directories)
    assert f"{real}/data/sub" in _resolved(HOST, result.directories)


@needs_strace
def test_child_runs_a_relative_program_after_cd(tmp_path: Path) -> None:
    result = trace_program(
        HOST, SH, ["-c", "cd /usr/bin && ./cat /etc/hostname >/dev/null"], env=ENV
    )
    assert result.reasons.get("/usr/bin/cat") == "execve"


@needs_strace
def test_outputs_are_not_inputs_but_their_folder_is(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    out.mkdir()
    result = trace_program(HOST, SH, ["-c", f"echo hi > {out}/run.log"], env=ENV)
    real = os.path.realpath(out)
    assert f"{real}/run.log" not in _resolved(HOST, result.files)
    assert real in _resolved(HOST, result.directories)
    assert result.reasons[str(out)].startswith("parent of ")


@needs_strace
def test_script_reports_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "hello"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    result = trace_program(HOST, str(script), [], env=ENV)
    assert result.files[:2] == (str(script), "/bin/sh")
    assert result.reasons["/bin/sh"] == f"interpreter of {script}"


@needs_strace
def test_exclude_hides_a_folder(tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    hidden = tmp_path / "out"
    hidden.mkdir()
    (hidden / "secret.txt").write_text("x")
    kept.write_text("x")
    args = ["-c", f"cat {kept} {hidden}/secret.txt; ls {hidden} >/dev/null"]
    result = trace_program(HOST, SH, args, exclude=[str(hidden)], env=ENV)
    assert str(kept) in result.files
    assert not [p for p in result.files + result.directories if p.startswith(str(hidden))]
    unhidden = trace_program(HOST, SH, args, env=ENV)
    assert f"{hidden}/secret.txt" in unhidden.files


@needs_strace
def test_failing_program_is_an_error_unless_allowed() -> None:
    with pytest.raises(TraceFailed) as caught:
        trace_program(HOST, SH, ["-c", "echo first >&2; echo 'went wrong' >&2; exit 3"], env=ENV)
    message = str(caught.value)
    assert caught.value.exit_code == 1
    assert "exited with code 3" in message and "went wrong" in message
    assert "\n" not in message
    result = trace_program(HOST, SH, ["-c", "exit 3"], ok_exits=frozenset({0, 3}), env=ENV)
    assert result.exit_code == 3
    with pytest.raises(TraceFailed) as caught:
        trace_program(HOST, SH, ["-c", "true\nkill -TERM $$\n"], env=ENV)
    assert "killed by SIGTERM" in str(caught.value) and "\n" not in str(caught.value)


@needs_strace
def test_program_output_is_captured(capfd: pytest.CaptureFixture[str]) -> None:
    trace_program(HOST, SH, ["-c", "echo to-stdout; echo to-stderr >&2"], env=ENV)
    seen = capfd.readouterr()
    assert "to-stdout" not in seen.out and "to-stderr" not in seen.err


@needs_strace
def test_hanging_program_is_killed_with_its_daemons(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The daemon leaves the session (setsid): killing the process group would miss it.
    command = f"setsid sleep 300 & echo $! > {pids}; echo $$ >> {pids}; exec sleep 300"
    with pytest.raises(TraceFailed, match="still running after 1 s"):
        trace_program(HOST, SH, ["-c", command], timeout=1, env=ENV)
    for pid in pids.read_text().split():
        state = _state(int(pid))
        deadline = time.monotonic() + 10
        while state not in ("Z", "X", "gone") and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL is sent; the kernel takes a moment to finish the exit
            state = _state(int(pid))
        assert state in ("Z", "X", "gone"), f"pid {pid} still alive ({state})"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_tracer_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TracerMissing) as caught:
        trace_program(HOST, SH, ["-c", "true"])
    assert caught.value.exit_code == 2
    assert "apt-get install strace" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_tracer_that_cannot_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What strace says when ptrace is refused (an old Docker seccomp profile) is shown."""
    fake = tmp_path / "strace"
    fake.write_text(
        "#!/bin/sh\necho 'strace: PTRACE_TRACEME: Operation not permitted' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TraceNotStarted, match="PTRACE_TRACEME: Operation not permitted"):
        trace_program(HOST, SH, ["-c", "true"])


def test_missing_program_or_working_directory() -> None:
    with pytest.raises(ProgramNotFound):
        trace_program(HOST, "/no/such/program", [])
    with pytest.raises(UsageError, match="working directory"):
        trace_program(HOST, SH, [], cwd="/no/such/folder")


# -- under a root -------------------------------------------------------------------------------


@needs_strace
@needs_chroot
@needs_glibc
def test_small_root_paths_are_in_image(tmp_path: Path) -> None:
    top = make_root(tmp_path / "root", programs=["/usr/bin/dash", "/usr/bin/cat"])
    (top / "etc/data").write_text("in the image\n")
    host_only = tmp_path / "host-only.txt"
    host_only.write_text("never in the image\n")
    root = FsRoot(str(top))
    command = f"cd /etc && cat ./data; cat {host_only}; exit 0"
    result = trace_program(root, "/usr/bin/dash", ["-c", command], env=ENV)
    assert result.files[0] == "/usr/bin/dash"
    assert "/etc/data" in result.files
    assert result.reasons["/usr/bin/cat"] == "execve"
    assert "/etc" in result.directories
    _assert_in_image(root, result.files + result.directories, host_only)


@needs_strace
@needs_chroot
@pytest.mark.debootstrap
@pytest.mark.slow
def test_debootstrap_python_under_root(debootstrap_root: Path, tmp_path: Path) -> None:
    root = FsRoot(str(debootstrap_root))
    host_only = tmp_path / "host-only.py"
    host_only.write_text("")
    script = (
        "import json, os, sys\n"
        f"assert not os.path.exists({str(host_only)!r})\n"
        "fd = os.open('/etc', os.O_RDONLY)\n"
        "os.close(os.open('debian_version', os.O_RDONLY, dir_fd=fd))\n"
    )
    result = trace_program(root, PYTHON, ["-c", script], env=ENV)
    assert result.files[0] == PYTHON
    assert "/usr/lib/python3.11/json/__init__.py" in result.files
    assert "/etc/debian_version" in result.files
    assert "/usr/lib/python3.11" in result.directories
    _assert_in_image(root, result.files + result.directories, host_only)


def _assert_in_image(root: FsRoot, paths: tuple[str, ...], host_only: Path) -> None:
    for path in paths:
        assert path.startswith("/") and not path.startswith(root.top), path
        assert root.lstat(path) is not None, f"{path} is not in the root"
        assert root.stat(path) is not None
    assert str(host_only) not in paths
    _assert_nothing_special(paths)


# -- the parser, on logs written by hand --------------------------------------------------------


def _tree(tmp_path: Path) -> FsRoot:
    top = tmp_path / "root"
    for name in ("usr/bin/tool", "usr/lib/libx.so.1", "etc/conf", "srv/app/rel.txt"):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text("x")
    (top / "usr/bin/tool").chmod(0o755)
    (top / "lib").symlink_to("usr/lib")
    (top / "dev").mkdir()
    os.mkfifo(top / "srv/fifo")
    return FsRoot(str(top))


def _feed(root: FsRoot, text: str) -> tuple[_Collector, bool]:
    collector = _Collector(root, [])
    started = _parse_log(io.BytesIO(text.encode()), collector, root, "/", not root.is_host)
    return collector, started


def test_parser_ignores_the_launcher_and_maps_decoded_host_paths(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    top = root.top
    log = f"""\
10 execve("/usr/bin/python3", ["python3"], 0x1 /* 3 vars */) = 0
10 openat(AT_FDCWD</work>, "/etc/conf", O_RDONLY|O_CLOEXEC) = 3</etc/conf>
10 chroot("{top}") = 0
10 chdir("/") = 0
10 execve("/usr/bin/tool", ["tool"], 0x2 /* 3 vars */) = 0
10 openat(AT_FDCWD<{top}>, "/lib/libx.so.1", O_RDONLY|O_CLOEXEC) = 3<{top}/usr/lib/libx.so.1>
10 openat(3<{top}/srv/app>, "rel.txt", O_RDONLY) = 4<{top}/srv/app/rel.txt>
10 openat(3</elsewhere>, "rel.txt", O_RDONLY) = 4</elsewhere/rel.txt>
10 newfstatat(3<{top}/usr/lib/libx.so.1>, "", {{st_mode=S_IFREG|0644, ...}}, AT_EMPTY_PATH) = 0
10 openat(AT_FDCWD<{top}>, "/dev/null", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 5</dev/null>
10 openat(AT_FDCWD<{top}>, "/srv/fifo", O_RDONLY) = 5<{top}/srv/fifo>
10 openat(AT_FDCWD<{top}>, "/usr/bin/../../etc/conf", O_RDONLY) = 5<{top}/etc/conf>
"""
    collector, started = _feed(root, log)
    assert started
    assert list(collector.files) == [
        "/usr/bin/tool",
        "/lib/libx.so.1",
        "/srv/app/rel.txt",
        "/etc/conf",
    ]
    assert list(collector.directories) == ["/"]
    assert collector.reasons["/etc/conf"] == "openat O_RDONLY"


def test_parser_child_logs_before_its_parent_fork_line(tmp_path: Path) -> None:
    """A call is logged when it returns: a vfork child's exec comes before the vfork."""
    root = _tree(tmp_path)
    log = f"""\
20 chroot("{root.top}") = 0
20 execve("/usr/bin/tool", ["tool"], 0x1 /* 1 var */) = 0
20 chdir("/srv") = 0
21 execve("../usr/bin/tool", ["tool"], 0x1 /* 1 var */) = 0
21 access("app/rel.txt", R_OK) = 0
20 vfork() = 21
22 chdir("/etc") = 0
22 access("conf", F_OK) = 0
20 clone(child_stack=NULL, flags=SIGCHLD) = 22
23 stat("/usr/lib/libx.so.1", {{st_mode=S_IFREG|0644, ...}}) = 0
"""
    collector, started = _feed(root, log)
    assert started
    assert list(collector.files) == [
        "/usr/bin/tool",
        "/srv/app/rel.txt",
        "/etc/conf",
        "/usr/lib/libx.so.1",
    ]
    assert collector.reasons["/srv/app/rel.txt"] == "access"
    assert collector.reasons["/etc/conf"] == "access"
    assert list(collector.directories) == ["/srv", "/etc"]


def test_parser_unescapes_strace_strings(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    top = root.top
    name = 'q"b\\s>\n\t é'
    (Path(top) / "etc" / name).write_text("x")
    log = (
        f'30 chroot("{top}") = 0\n'
        '30 execve("/usr/bin/tool", ["tool"], 0x1) = 0\n'
        f'30 openat(AT_FDCWD<{top}>, "/etc/q\\"b\\\\s>\\n\\t \\303\\251", O_RDONLY) = 3\n'
        f'30 openat(3<{top}/\\145tc>, "conf", O_RDONLY) = 4\n'
        f'30 openat2(AT_FDCWD<{top}>, "/srv/app/rel.txt", {{flags=O_RDONLY}}, 24) = 3\n'
        f'30 openat(AT_FDCWD<{top}>, "/etc/conf) = 9 (x", O_WRONLY) = 3\n'
        '30 readlink("/lib", "usr/lib", 4096) = 7\n'
    )
    collector, _ = _feed(root, log)
    assert list(collector.files) == [
        "/usr/bin/tool",
        f"/etc/{name}",
        "/etc/conf",
        "/srv/app/rel.txt",
    ]
    assert collector.reasons["/etc/conf"] == "openat O_RDONLY"
    # Written (O_WRONLY): only its folder counts.
    assert list(collector.directories) == ["/etc", "/lib"]
