"""Outputs under stress: runs killed at random moments (SIGINT, SIGTERM, SIGKILL), a full
disk, a file-size limit, two runs into one folder, and files in the folder that are not ours.

After every kill each output is either absent or exactly a complete earlier one: rootfs.tar.gz
byte for byte (it is reproducible), rootfs/ entry for entry, the Dockerfile whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from bundler.staging.output import LOCK_NAME, TEMP_PREFIX

pytestmark = pytest.mark.skipif(shutil.which("true") is None, reason="needs true")

PROGRAM = shutil.which("python3") or "true"
ZONEINFO = "/usr/share/zoneinfo"
OURS = {"rootfs", "rootfs.tar.gz", "Dockerfile", "sbom.spdx.json", "sbom.cdx.json", LOCK_NAME}


def command(out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "bundler", PROGRAM, "-o", str(out), *extra]
    if Path(ZONEINFO).is_dir():
        args += ["--extra", ZONEINFO]  # thousands of small files: kills land mid-write
    return args


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=300, **kwargs)  # type: ignore[call-overload,no-any-return]


def tree_digest(top: Path) -> str:
    """Every entry of a staged tree: path, type, mode, content or link text."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            digest.update(os.fsencode(path.relative_to(top)) + b"\0")
            digest.update(f"{stat.S_IFMT(st.st_mode)}:{stat.S_IMODE(st.st_mode)}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.fsencode(os.readlink(path)))
            elif stat.S_ISREG(st.st_mode):
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def snapshot(out: Path) -> dict[str, str | None]:
    """Each output's identity, or None when absent."""
    found: dict[str, str | None] = {}
    rootfs = out / "rootfs"
    found["rootfs"] = tree_digest(rootfs) if rootfs.is_dir() else None
    for name in ("rootfs.tar.gz", "Dockerfile", "sbom.spdx.json", "sbom.cdx.json"):
        path = out / name
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return found


def temporaries(out: Path) -> dict[str, str]:
    """Each temporary output in OUT, by name, with a digest of what it holds."""
    found = {}
    for path in out.iterdir():
        if path.name.startswith(TEMP_PREFIX):
            found[path.name] = (
                tree_digest(path)
                if path.is_dir()
                else hashlib.sha256(path.read_bytes()).hexdigest()
            )
    return found


def check_tarball_complete(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())  # a truncated gzip raises here
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getmembers()


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str | None]]:
    """Complete outputs of the two configurations the killed runs use."""
    refs = []
    for index, extra in enumerate(((), ("--extra", "/etc/hostname", "--cmd", "--version"))):
        out = tmp_path_factory.mktemp("ref") / f"out{index}"
        result = run(command(out, "-q", *extra))
        assert result.returncode == 0, result.stderr
        refs.append(snapshot(out))
    assert refs[0]["rootfs.tar.gz"] != refs[1]["rootfs.tar.gz"]
    return refs


CONFIGS: list[tuple[str, ...]] = [(), ("--extra", "/etc/hostname", "--cmd", "--version")]


def test_killed_at_random_moments(tmp_path: Path, references: list[dict[str, str | None]]) -> None:
    if not Path("/etc/hostname").exists():
        pytest.skip("needs /etc/hostname")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "keep").mkdir()
    (out / "keep/data").write_bytes(b"\x00\x01")
    start = time.monotonic()
    complete = run(command(out, "-q"))
    assert complete.returncode == 0, complete.stderr
    full_time = time.monotonic() - start
    # Signals before the imports are done are another matter (test_interrupt_during_startup).
    startup = _startup_time()
    rnd = random.Random(int(os.environ.get("KILL_SEED", "5")))
    kills = {"SIGINT": 0, "SIGTERM": 0, "SIGKILL": 0}
    mid_write = 0
    # Run until 24 runs were signalled: on a loaded machine a run may finish before its signal
    # (and such runs are checked too), so the number of attempts is bounded, not fixed.
    for attempt in range(80):
        if sum(kills.values()) >= 24:
            break
        config = attempt % 2
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)[attempt % 3]
        stale = temporaries(out)  # what an earlier SIGKILL left: the next run's to remove
        launched = time.monotonic()
        proc = subprocess.Popen(
            command(out, "-q", *CONFIGS[config]), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # Never before scratchpack handles signals, however long a busy machine makes the
        # interpreter's own start (that window is test_interrupt_during_startup's); every
        # fourth run while it writes its outputs, the others at a random moment of the run.
        moment = launched + rnd.uniform(startup, full_time * 1.1)
        _wait_until_handled(proc)
        if attempt % 4 == 3:
            _wait_until_writing(proc, out, set(stale))
            moment = time.monotonic() + rnd.uniform(0, 0.01)
        time.sleep(max(0.0, moment - time.monotonic()))
        if proc.poll() is None:
            temps = [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
            temps = [p for p in temps if p.name not in stale]  # its own, not a dead run's
            mid_write += bool(temps)
            proc.send_signal(sig)
            kills[sig.name] += 1
        _stdout, stderr = proc.communicate(timeout=120)
        err = stderr.decode(errors="replace")
        assert "Traceback" not in err, err
        state = snapshot(out)
        if proc.returncode in (130, -signal.SIGKILL):
            if proc.returncode == 130:
                lines = [line for line in err.splitlines() if line.strip()]
                assert lines == [lines[0]] and lines[0].startswith("scratchpack: interrupted"), err
        else:
            assert proc.returncode == 0, err  # finished before the signal
        for name, value in state.items():
            allowed = {None, references[0][name], references[1][name]}
            assert value in allowed, f"attempt {attempt} ({sig.name}): {name} is half-written"
        if state["rootfs.tar.gz"] is not None:
            check_tarball_complete(out / "rootfs.tar.gz")
        names = {p.name for p in out.iterdir()}
        leftovers = temporaries(out)
        if proc.returncode == 0:
            assert not leftovers, f"a complete run left {set(leftovers)}"
        elif sig != signal.SIGKILL:
            # Ctrl-C or SIGTERM before the run took the folder's lock: the folder as it found
            # it; after: its own temporaries gone, and a dead run's with them, never in part.
            assert leftovers in ({}, stale), (
                f"{sig.name} left {set(leftovers)}; before it: {set(stale)}"
            )
        assert names - set(leftovers) <= OURS | {"notes.txt", "keep"}
        assert (out / "notes.txt").read_text() == "mine\n"
        assert (out / "keep/data").read_bytes() == b"\x00\x01"
    assert sum(kills.values()) >= 24, kills
    assert mid_write >= 5, f"only {mid_write} kills landed while outputs were being written"
    # The next run cleans what SIGKILL left and completes.
    final = run(command(out, "-q"))
    assert final.returncode == 0, final.stderr
    assert snapshot(out) == references[0]
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert (out / "notes.txt").read_text() == "mine\n"


def _wait_until_handled(proc: subprocess.Popen[bytes]) -> None:
    """Until the process catches SIGTERM (its first line of Python ran), or has ended."""
    status = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", status.read_text(), re.M)
            if caught and int(caught.group(1), 16) & (1 << (signal.SIGTERM - 1)):
                return
        time.sleep(0.001)


def _wait_until_writing(proc: subprocess.Popen[bytes], out: Path, stale: set[str]) -> None:
    """Until a temporary output of its own appears in OUT, or the process has ended."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(TEMP_PREFIX) and p.name not in stale for p in out.iterdir()):
            return
        time.sleep(0.001)


def _startup_time() -> float:
    """How long the interpreter takes to import the CLI (a --version run), plus a margin."""
    start = time.monotonic()
    run([sys.executable, "-m", "bundler", "--version"])
    return time.monotonic() - start + 0.1


def test_interrupt_during_startup() -> None:
    """From scratchpack's first line on (the interpreter's own start is Python's), a signal
    while the CLI is imported ends the run in one line with exit 130."""
    startup = _startup_time() - 0.1
    interrupted = 0
    for fraction in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        for sig in (signal.SIGINT, signal.SIGTERM):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bundler", "--version"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            _wait_until_handled(proc)
            time.sleep(startup * fraction)
            proc.send_signal(sig)
            _stdout, stderr = proc.communicate(timeout=60)
            assert b"Traceback" not in stderr, stderr
            assert proc.returncode in (0, 130), (sig.name, proc.returncode, stderr)
            if proc.returncode == 130:
                interrupted += 1
                assert stderr.decode().startswith("scratchpack: interrupted"), stderr
                assert len(stderr.decode().splitlines()) == 1, stderr
    assert interrupted >= 4, "the signals all came after the imports: nothing was tested"


def test_interrupted_run_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(command(out, "-q"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Wait until it writes (a temporary file appears), then interrupt.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(p.name.startswith(TEMP_PREFIX) for p in out.iterdir()):
                break
            time.sleep(0.01)
        proc.send_signal(sig)
        _stdout, stderr = proc.communicate(timeout=60)
        if proc.returncode == 0:
            continue  # it finished first; the random-kill test covers the rest
        assert proc.returncode == 130, stderr
        lines = [line for line in stderr.decode().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("scratchpack: interrupted"), stderr
        assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


# -- a full disk and a file-size limit ---------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 3 MB tmpfs (root only; skipped elsewhere)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_keeps_the_previous_output(small_disk: Path, tmp_path: Path) -> None:
    out = small_disk / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    # A small pack that fits: a static-ish closure of true is ~2.5 MB staged + tarball; use a
    # hand-made root with only a tiny program so the first run fits.
    tiny = tmp_path / "root"
    (tiny / "bin").mkdir(parents=True)
    (tiny / "bin/tiny").write_bytes(b"#!/bin/tiny\n")  # a script naming itself: no closure
    (tiny / "bin/tiny").chmod(0o755)
    first = run(
        [sys.executable, "-m", "bundler", "--root", str(tiny), "/bin/tiny", "-q", "-o", str(out)]
    )
    if first.returncode != 0:
        pytest.skip(f"a script-only pack is not accepted here: {first.stderr!r}")
    before = snapshot(out)
    result = run(command(out))
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode()
    assert "no space left on the device; the previous outputs are unchanged" in err, err
    assert "Traceback" not in err
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(OURS | {"notes.txt"})


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_file_size_limit_gives_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(command(out, "-q"))
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    # Without the cache nothing is known to be written already: every output is written.
    result = run(command(out, "--no-cache"), preexec_fn=_limit_file_size)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "file size limit exceeded; the previous outputs are unchanged" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_tarball_over_the_size_limit(tmp_path: Path) -> None:
    """The staged tree fits (every file is small) but the tarball does not."""
    if not Path(ZONEINFO).is_dir():
        pytest.skip("needs zoneinfo")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/s").write_bytes(b"#!/bin/s\n")
    (root / "bin/s").chmod(0o755)
    data = root / "data"
    data.mkdir()
    rnd = random.Random(1)
    for index in range(40):  # 40 incompressible files of 100 kB: a 4 MB tarball
        (data / f"f{index}").write_bytes(rnd.randbytes(100_000))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bundler", "--root", str(root), "/bin/s", "--extra", "/data"]
    result = run([*args, "-o", str(out)], preexec_fn=_limit_file_size)
    if b"neither an ELF" in result.stderr or b"no such" in result.stderr:
        pytest.skip("a script-only pack is not accepted here")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "rootfs.tar.gz: file size limit exceeded" in err, err
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert not (out / "rootfs.tar.gz").exists()


# -- two runs at once, and other people's files ------------------------------------------------


def test_second_run_waits_for_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        errors = tmp_path / "stderr"
        with open(errors, "wb") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bundler", "true", "-o", str(out)], stderr=err_file
            )
        deadline = time.monotonic() + 30
        while b"waiting" not in errors.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"another scratchpack run is writing here; waiting" in errors.read_bytes()
        time.sleep(0.5)
        assert proc.poll() is None, "it went on while the folder was locked"
        assert not (out / "rootfs").exists()
    assert proc.wait(timeout=60) == 0, errors.read_text()
    assert (out / "rootfs.tar.gz").is_file()


def test_concurrent_runs_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(command(out, "-q"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        _stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    check_tarball_complete(out / "rootfs.tar.gz")
    reference = tmp_path / "ref"
    assert run(command(reference, "-q")).returncode == 0
    assert snapshot(out) == snapshot(reference)
    assert {p.name for p in out.iterdir()} == OURS


def test_files_not_ours_are_never_touched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = {
        "notes.txt": b"mine\n",
        "rootfs.tar.gz.bak": b"old backup\n",
        "Dockerfile.mine": b"FROM x\n",
        ".hidden": b"h\n",
    }
    for name, data in mine.items():
        (out / name).write_bytes(data)
    (out / "dir").mkdir()
    (out / "dir/f").write_text("f")
    (out / "link").symlink_to("/etc/passwd")
    for args in (["true", "-q"], ["no-such-program"], ["true", "-q", "--extra", "/no/such"]):
        run([sys.executable, "-m", "bundler", *args, "-o", str(out)])
    for name, data in mine.items():
        assert (out / name).read_bytes() == data
    assert (out / "dir/f").read_text() == "f" and os.readlink(out / "link") == "/etc/passwd"


def test_output_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep")
    result = run([sys.executable, "-m", "bundler", "true", "-o", str(target)])
    assert result.returncode == 2 and b"is a file" in result.stderr, result.stderr
    assert b"Traceback" not in result.stderr
    assert target.read_text() == "keep"


def test_a_signal_while_a_dead_runs_temporaries_are_removed_waits_for_the_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed with SIGKILL leaves temporaries; the next run removes them first. A Ctrl-C
    in the middle of that must not leave half of them (no later interrupted run finishes the
    job): the signal waits until they are gone, then ends the run."""
    from bundler.staging import output

    out = tmp_path / "out"
    out.mkdir()
    stale = [out / f"{TEMP_PREFIX}99999-rootfs", out / f"{TEMP_PREFIX}99999-rootfs.tar.gz"]
    (stale[0] / "usr/lib").mkdir(parents=True)
    (stale[0] / "usr/lib/libc.so.6").write_bytes(b"x")
    stale[1].write_bytes(b"partial")
    real_remove = output._remove
    calls: list[Path] = []

    def remove_then_signal(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives after the first of two removals
        real_remove(path)

    monkeypatch.setattr(output, "_remove", remove_then_signal)
    with pytest.raises(KeyboardInterrupt), output.OutputDir(str(out)).locked():
        pytest.fail("the signal should have ended the run before its work")
    assert len(calls) == 2
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
