"""The output folder: ours are rootfs/, rootfs.tar.gz, Dockerfile, Dockerfile.distroless and
the SBOMs (sbom.spdx.json, sbom.cdx.json).

Each is written beside its final name and renamed into place, so a run killed at any moment
leaves the previous output or none, never half of one. A lock file makes a second run into the
same folder wait for the first. Anything else in the folder is never touched.

A repack that would write what is already there writes nothing: a file whose bytes and mode
are the same stays as it is, and an output made from a recipe (the tree, the tarball, the
SBOMs) stays when it was made from the same recipe and nothing in it changed since (the
records, ``OutputRecords``, are in the user's cache: any write, chmod or chown of the output
moves a ctime, which user space cannot set back).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import stat
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
MAX_RECORDS = 1000  # outputs whose recipe is remembered (``OutputRecords``)
TEMP_PREFIX = ".scratchpack-tmp-"


class OutputError(ScratchpackError):
    """The output folder cannot be written (full disk, file size limit, permissions)."""


class OutputDir:
    """An output folder held under its lock for one run."""

    def __init__(self, path: str, records: OutputRecords | None = None) -> None:
        self.path = Path(path)
        self.records = records

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


class OutputRecords:
    """What each output was made from, kept in the user's cache (``outputs.json``) by its
    absolute path: its recipe (all its bytes depend on) and ``lstat_digest`` of it, taken once
    it was in place. An output whose recipe and lstat are both as recorded is what this run
    would write. Only a record: written without a sync; a lost one costs a rewrite."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read: dict[str, list[str | None]] | None = None  # as this run last read them

    def _load(self) -> dict[str, list[str | None]]:
        try:
            found = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            found = {}
        self._read = found if isinstance(found, dict) else {}
        return self._read

    def made_from(self, output: Path, recipe: str) -> bool:
        """Whether OUTPUT was made from RECIPE and nothing in it changed since."""
        records = self._read if self._read is not None else self._load()
        known = records.get(str(output.absolute()))
        if not isinstance(known, list) or len(known) != 2 or known[0] != recipe:
            return False
        return known[1] == lstat_digest(output)

    def record(self, made: dict[Path, str | None]) -> None:
        """Outputs just put in place, with their recipes (None: not known)."""
        records = self._load()
        for output, recipe in made.items():
            key = str(output.absolute())
            records.pop(key, None)
            if recipe is not None:
                records[key] = [recipe, lstat_digest(output)]
        kept = dict(list(records.items())[-MAX_RECORDS:])  # the most recent outputs
        self._read = kept
        temp = self.path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{self.path.name}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(kept))
            os.replace(temp, self.path)
        except OSError as exc:
            log.info("%s: cannot record the outputs written: %s", self.path, exc.strerror)
            temp.unlink(missing_ok=True)


def lstat_digest(top: Path) -> str | None:
    """One digest of the lstat of TOP and, for a folder, all it holds (None: unreadable)."""
    lines: list[str] = []
    pending = [(str(top), "")]
    try:
        while pending:
            host, relative = pending.pop()
            st = os.lstat(host)
            fields = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            lines.append(f"{relative}\0{st.st_ino} {fields}")
            if stat.S_ISDIR(st.st_mode):
                names = sorted(os.listdir(host), reverse=True)
                pending += [(f"{host}/{n}", f"{relative}/{n}") for n in names]
    except OSError:
        return None
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


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
    new one, whole, before and after a crash (one that holds them already stays as it is).
    OSError is the caller's to report."""
    if _holds(final, data):
        return
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
        self.recipes: dict[Path, str | None] = {}  # output written -> its recipe, if known

    def write_file(
        self,
        name: str,
        writer: Callable[[BinaryIO], object],
        mode: int = 0o644,
        recipe: str | None = None,
    ) -> Path:
        """File NAME, written by WRITER; left as it is when it was made from RECIPE (all its
        bytes depend on) and has not changed since."""
        temp, final = self.out.temp_path(name), self.out.path / name
        if self._made_from(final, recipe):
            return final
        self.leftovers.append(temp)
        try:
            with open(temp, "wb") as handle:
                writer(handle)
                sync_file(handle)
            os.chmod(temp, mode)
        except OSError as exc:
            raise _output_error(final, exc) from None
        self.staged.append((temp, final))
        self.recipes[final] = recipe
        return final

    def _made_from(self, final: Path, recipe: str | None) -> bool:
        records = self.out.records
        return recipe is not None and records is not None and records.made_from(final, recipe)

    def write_text(self, name: str, text: str, mode: int = 0o644) -> Path:
        data = text.encode()
        final = self.out.path / name
        if _holds(final, data, mode):
            return final  # as this run would write it: left alone
        return self.write_file(name, lambda handle: handle.write(data), mode)

    def write_tree(
        self, name: str, builder: Callable[[Path], None], recipe: str | None = None
    ) -> Path:
        """Tree NAME, made by BUILDER in a new folder; left as it is when it was made from
        RECIPE (everything its bytes and metadata depend on) and has not changed since."""
        temp, final = self.out.temp_path(name), self.out.path / name
        if self._made_from(final, recipe):
            return final
        self.leftovers.append(temp)
        try:
            builder(temp)
        except OSError as exc:
            raise _output_error(final, exc) from None
        self.staged.append((temp, final))
        self.recipes[final] = recipe
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
        if self.recipes and self.out.records is not None:
            self.out.records.record(self.recipes)

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


def _holds(path: Path, data: bytes, mode: int | None = None) -> bool:
    """Whether PATH is a regular file (not a link) of DATA's bytes (and permission MODE)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return False
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            return False
        if st.st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def _exchange(first: Path, second: Path) -> None:
    """renameat2(RENAME_EXCHANGE); where the kernel or filesystem lacks it, two renames."""
    import ctypes  # here only: a few ms of every start otherwise

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
            import shutil  # here only: most runs remove no folder (shutil costs ms to import)

            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: could not remove: %s", path, exc.strerror)
