"""The output folder: ours are rootfs/, rootfs.tar.gz, Dockerfile, Dockerfile.distroless and
the SBOMs (sbom.spdx.json, sbom.cdx.json).

Each is written beside its final name and renamed into place, so a run killed at any moment
leaves the previous output or none, never half of one. A lock file makes a second run into the
same folder wait for the first. Anything else in the folder is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from bundler.errors import ScratchpackError

# The signals that stop a run: Ctrl-C, SIGTERM, and SIGALRM, which carries an interruption
# raised again (``bundler.__main__``). Held while outputs are committed, and always blocked in
# worker threads, so that the main thread alone takes them, where it can hold them.
STOPPING_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGALRM})

log = logging.getLogger(__name__)

LOCK_NAME = ".scratchpack.lock"
TEMP_PREFIX = ".scratchpack-tmp-"


class OutputError(ScratchpackError):
    """The output folder cannot be written (full disk, file size limit, permissions)."""


class OutputDir:
    """An output folder held under its lock for one run."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[OutputDir]:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"{self.path}: cannot create the output folder: {exc.strerror}"
            ) from None
        if not self.path.is_dir():
            raise OutputError(f"{self.path}: is not a folder")
        with taking_turns(open_lock(self.path / LOCK_NAME), self.path):
            self._remove_stale_temps()
            yield self

    def _remove_stale_temps(self) -> None:
        # Left by a run that was killed (SIGKILL leaves no chance to clean up); we hold the lock,
        # so no live run owns them. Signals wait until they are gone: a Ctrl-C in the middle
        # would leave half of a dead run's tree, which no later interrupted run would finish.
        stale = list(self.path.glob(TEMP_PREFIX + "*"))
        if not stale:
            return
        with _signals_held():
            for item in stale:
                _remove(item)

    def temp_path(self, name: str) -> Path:
        return self.path / f"{TEMP_PREFIX}{os.getpid()}-{name}"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Outputs are made beside their final names; only when every one is complete are they
        renamed into place, one quick rename each, so a failure or a kill while writing leaves
        the previous outputs as they were."""
        txn = Transaction(self)
        try:
            yield txn
            with _signals_held():
                txn.commit()
        finally:
            with _signals_held():
                txn.discard()

    def remove(self, name: str) -> None:
        """Drop an output of ours that this run does not produce (a stale Dockerfile.distroless)."""
        _remove(self.path / name)


def open_lock(path: Path) -> int:
    """The lock file of a folder scratchpack writes into, opened (created if absent)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def taking_turns(lock_fd: int, folder: Path) -> Iterator[None]:
    """Hold the lock ``lock_fd`` (closed at the end) for the block: runs writing into one
    folder take turns, and one that must wait says so."""
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: another scratchpack run is writing here; waiting", folder)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)


def sync_file(handle: BinaryIO) -> None:
    """What was written to ``handle`` is on disk, not only in the page cache: a rename that
    follows can never name a file whose bytes a crash lost."""
    handle.flush()
    os.fsync(handle.fileno())


def sync_folder(folder: Path) -> None:
    """The renames into ``folder`` survive a crash only once the folder itself is synced."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(final: Path, data: bytes, temp: Path) -> None:
    """``final`` gets ``data`` in one rename from ``temp``: a reader sees the old file or the
    new one, whole, before and after a crash. OSError is the caller's to report."""
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            sync_file(handle)
        os.replace(temp, final)
        sync_folder(final.parent)
    finally:
        temp.unlink(missing_ok=True)


class Transaction:
    """Temporary outputs waiting to be renamed into place together."""

    def __init__(self, out: OutputDir) -> None:
        self.out = out
        self.staged: list[tuple[Path, Path]] = []  # (temporary, final)
        self.leftovers: list[Path] = []

    def write_file(
        self, name: str, writer: Callable[[BinaryIO], object], mode: int = 0o644
    ) -> Path:
        temp, final = self.out.temp_path(name), self.out.path / name
        self.leftovers.append(temp)
        try:
            with open(temp, "wb") as handle:
                writer(handle)
                sync_file(handle)
            os.chmod(temp, mode)
        except OSError as exc:
            raise _output_error(final, exc) from None
        self.staged.append((temp, final))
        return final

    def write_text(self, name: str, text: str) -> Path:
        return self.write_file(name, lambda handle: handle.write(text.encode()))

    def write_tree(self, name: str, builder: Callable[[Path], None]) -> Path:
        temp, final = self.out.temp_path(name), self.out.path / name
        self.leftovers.append(temp)
        try:
            builder(temp)
        except OSError as exc:
            raise _output_error(final, exc) from None
        self.staged.append((temp, final))
        return final

    def commit(self) -> None:
        for temp, final in self.staged:
            if temp.is_dir() and final.is_dir() and not final.is_symlink():
                # Swap the two folders in one step (no moment without rootfs/), then drop the
                # old one, now at the temporary name.
                _exchange(temp, final)
            else:
                os.replace(temp, final)
        self.staged.clear()

    def discard(self) -> None:
        for leftover in self.leftovers:
            _remove(leftover)
        self.leftovers.clear()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while outputs are renamed into place or temporaries removed: a
    signal there would leave outputs of two runs side by side, or temporaries behind. They are
    delivered right after (SIGKILL cannot wait; the next run removes what it leaves)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exchange(first: Path, second: Path) -> None:
    """renameat2(RENAME_EXCHANGE); where the kernel or filesystem lacks it, two renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2 is not None:
        result = renameat2(
            at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange
        )
        if result == 0:
            return
    aside = first.with_name(first.name + ".old")
    os.rename(second, aside)
    os.rename(first, second)
    os.rename(aside, first)


def _output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno == errno.EFBIG:
        reason = "file size limit exceeded"
    else:
        reason = exc.strerror or str(exc)
    return OutputError(f"{path}: {reason}; the previous outputs are unchanged")


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: could not remove: %s", path, exc.strerror)
