"""What a pack hashed before: file digests by the file's identity, tar digests by recipe.

A repack of unchanged files should not read them again (BuildKit, Bazel and git's index keep
digests the same way). Three memos, kept together in one small file of the user's cache:

- **Files**: a host path with its identity (device, inode, size, mtime, ctime) -> its sha256
  and sha1. ctime cannot be set from user space and moves on every write, so the same identity
  means the same bytes. As git does for "racily clean" entries, a file changed in the last
  ``STABLE_NS`` before the run began is hashed but not remembered: a write in the same clock
  tick as our read could otherwise leave its identity as it was.
- **Tars**: a recipe (``bundler.staging.tree.tar_recipe``: every tar header, and the sha256 of
  every file's bytes) -> the tar's sha256 and size, its diff_id. The recipe says everything
  the tar's bytes depend on, so this memo is content-addressed; it is written only when every
  file it read was stable and unchanged from its digest to the end of the tar. The SBOM
  documents are remembered the same way, by the recipe of their contents.
- **Facts** of a file's bytes (what the secrets check found in a text, the licences a
  copyright file states): by their sha256 and a digest of the code that computes them.

Without a cache folder (``--no-cache``) the memo lives for the run only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bundler.staging.plan import Entry, Plan

log = logging.getLogger(__name__)

STABLE_NS = 2_000_000_000  # changed this recently before the run: hashed, not remembered
MAX_FILES = 200_000  # remembered files; the least recently used go first
MAX_TARS = 20_000
FORMAT = 3
READ_SIZE = 1 << 20

Identity = tuple[int, int, int, int, int]
Fact = TypeVar("Fact")


@dataclass(frozen=True)
class Recipe:
    """What a tar's bytes depend on, as one digest (KEY), and the files it reads."""

    key: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class FileDigest:
    """The digests of a file's bytes (hex), and how many there are."""

    sha256: str
    sha1: str
    size: int


def code_key(*module_files: str) -> str:
    """A digest of the code that computes a fact (the source of MODULE_FILES): facts that
    code remembered are not taken once it changes."""
    code = hashlib.sha256()
    for module_file in module_files:
        try:
            code.update(Path(module_file).read_bytes())
        except OSError:
            code.update(module_file.encode())  # no source beside it: its name, at least
    return code.hexdigest()[:16]


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_bytes(data: bytes) -> FileDigest:
    sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    return FileDigest(hashlib.sha256(data).hexdigest(), sha1, len(data))


class DigestMemo:
    """The memo of one pack, loaded from PATH (None: kept in memory only)."""

    def __init__(self, path: Path | None = None, began_ns: int | None = None) -> None:
        self.path = path
        self.began_ns = time.time_ns() if began_ns is None else began_ns
        # host path -> [dev, ino, size, mtime_ns, ctime_ns, sha256, sha1]; dict order is
        # recency (a hit moves an entry to the end), so trimming drops the oldest. (A run
        # that learnt nothing does not write the memo back: its hits are not recorded.)
        self.files: dict[str, list[object]] = {}
        self.tars: dict[str, list[object]] = {}  # recipe -> [digest, size] of what it makes
        # Facts of a file's bytes (what the secrets check found in a text, the licences of a
        # copyright file): by what computes them and the bytes' sha256 (``fact_of``).
        self.facts: dict[str, object] = {}
        self.unstable: set[str] = set()  # hashed this run, too recent to remember
        self.seen: dict[str, Identity] = {}  # host path -> identity its digest was taken at
        self.changed = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            with open(path, "rb") as handle:
                stored = json.loads(handle.read())
            if stored.get("format") == FORMAT:
                self.files = dict(stored["files"])
                self.tars = dict(stored["tars"])
                self.facts = dict(stored["facts"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.info("%s: not a digest memo (%s); starting a new one", path, exc)

    def file(self, host_path: str) -> FileDigest:
        """The digests of the regular file at HOST_PATH: remembered, or read once."""
        before = identity(os.stat(host_path))
        known = self.files.get(host_path)
        if isinstance(known, list) and len(known) == 7 and tuple(known[:5]) == before:
            self.files.pop(host_path, None)  # most recently used (other threads read too)
            self.files[host_path] = known
            self.seen[host_path] = before
            return FileDigest(str(known[5]), str(known[6]), before[2])
        digest = _read_digest(host_path)
        after = identity(os.stat(host_path))
        if after != before:  # written while read: use it, remember nothing
            self.unstable.add(host_path)
            self.seen[host_path] = (0, 0, -1, 0, 0)
            return digest
        self.files.pop(host_path, None)
        self.files[host_path] = [*before, digest.sha256, digest.sha1]
        self.seen[host_path] = before
        if max(before[3], before[4]) >= self.began_ns - STABLE_NS:
            self.unstable.add(host_path)
        else:
            self.changed = True
        return digest

    def entry(self, plan: Plan, entry: Entry) -> FileDigest:
        """The digests of a planned file's content (a hard link's: its target's)."""
        return self.content(plan.content_of(entry))

    def content(self, entry: Entry) -> FileDigest:
        """The digests of the bytes ENTRY holds: made by scratchpack, or read from its source
        (none: empty)."""
        if entry.data is not None or entry.source is None:
            return hash_bytes(entry.data or b"")
        return self.file(entry.source)

    def made(self, recipe: str) -> tuple[str, int] | None:
        """(digest, size) of what RECIPE makes (a tar, a document), when a pack made it."""
        known = self.tars.get(recipe)
        if not isinstance(known, list) or len(known) != 2 or not isinstance(known[1], int):
            return None
        self.tars.pop(recipe, None)  # most recently used (other threads read too)
        self.tars[recipe] = known
        return str(known[0]), known[1]

    def remember(self, recipe: str, digest: str, size: int) -> None:
        """RECIPE made DIGEST (of SIZE bytes), RECIPE being all its bytes depend on."""
        if self.tars.get(recipe) != [digest, size]:
            self.tars.pop(recipe, None)
            self.tars[recipe] = [digest, size]
            self.changed = True

    def remember_tar(self, recipe: Recipe, diff_id: str, size: int) -> None:
        """RECIPE made a tar of DIFF_ID: kept when every file it read is stable and still as
        it was when its digest was taken."""
        if all(self._still_as_digested(source) for source in recipe.sources):
            self.remember(recipe.key, diff_id, size)

    def _still_as_digested(self, source: str) -> bool:
        """Whether SOURCE is stable and as it was when its digest was taken: what was read
        of it since is what the digest says."""
        if source in self.unstable or source not in self.seen:
            return False
        try:
            return identity(os.stat(source)) == self.seen[source]
        except OSError:
            return False

    def forget(self, recipe: str) -> None:
        if self.tars.pop(recipe, None) is not None:
            self.changed = True

    def fact_of(
        self,
        source: str,
        code: str,
        compute: Callable[[], Fact],
        decode: Callable[[Any], Fact],
        *also: object,
    ) -> Fact:
        """A fact of the bytes of the file SOURCE (what the secrets check found in a text, the
        licences of a copyright file): remembered by their sha256, CODE (``code_key`` of what
        computes it) and ALSO, else COMPUTE's. DECODE turns what the memo holds (as JSON has
        it: lists for tuples) back into the fact; what it refuses (TypeError, ValueError) is
        computed anew. A fact is kept when the file was stable and did not change while it
        was read."""
        try:
            key = " ".join(map(str, (code, self.file(source).sha256, *also)))
        except OSError:
            return compute()
        if key in self.facts:
            with contextlib.suppress(TypeError, ValueError):  # a damaged memo: computed anew
                return decode(self.facts[key])
        value = compute()
        if self._still_as_digested(source):
            self.facts.pop(key, None)
            self.facts[key] = value
            self.changed = True
        return value

    def save(self) -> None:
        """Write the memo back (atomically; a memo that cannot be written is only a miss the
        next time)."""
        if self.path is None or not self.changed:
            return
        stable = {p: v for p, v in self.files.items() if p not in self.unstable}
        stored = {
            "format": FORMAT,
            "files": dict(list(stable.items())[-MAX_FILES:]),
            "tars": dict(list(self.tars.items())[-MAX_TARS:]),
            "facts": dict(list(self.facts.items())[-MAX_FILES:]),
        }
        temp = self.path.with_name(f".tmp-{os.getpid()}-{self.path.name}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(json.dumps(stored, separators=(",", ":")).encode())
            os.replace(temp, self.path)
        except OSError as exc:
            log.warning("%s: cannot write the digest memo: %s", self.path, exc.strerror or exc)
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)


def _read_digest(host_path: str) -> FileDigest:
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
    size = 0
    with open(host_path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_SIZE), b""):
            sha256.update(block)
            sha1.update(block)
            size += len(block)
    return FileDigest(sha256.hexdigest(), sha1.hexdigest(), size)
