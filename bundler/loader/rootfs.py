"""A filesystem root seen the way ``chroot ROOT`` sees it.

Every path the rest of scratchpack handles is an *image path*: absolute, as the program inside
the image would see it. This module is the only place that turns image paths into host paths,
and it resolves symbolic links itself, clamping ``..`` and absolute link targets at the top of
the root, so nothing outside ``--root`` is ever read.

With the root ``/`` the kernel already resolves paths this way, so the host's own calls are used.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from functools import lru_cache

from bundler.errors import UsageError

# Linux gives up on a path after 40 symbolic links (MAXSYMLINKS); so do we.
MAX_SYMLINKS = 40
_GLOB_MAGIC = re.compile(r"[*?\[]")  # a glob component that is not a plain name


class SymlinkLoop(UsageError):
    """A path inside the root runs through too many symbolic links."""


# No file read whole (ld.so.cache, the loader, ld.so.conf, nsswitch.conf, passwd, dpkg lists) is
# anywhere near this; a larger one is forged (a sparse file of terabytes costs nothing to make).
MAX_READ_BYTES = 64 << 20


class FileTooLarge(UsageError, OSError):
    """A file read whole is implausibly large. An OSError too, so callers that pass over an
    unreadable file (ld.so.cache, the loader) do so; the others report it as bad input."""

    def __init__(self, path: str, size: int) -> None:
        self.message = f"{path}: {size} bytes, too large to be read (a forged or sparse file?)"
        OSError.__init__(self, errno.EFBIG, self.message)

    def __str__(self) -> str:
        return self.message


class FsRoot:
    """An unpacked image or sysroot at host directory ``top``; ``/`` is the running system."""

    def __init__(self, top: str = "/") -> None:
        real_top = os.path.realpath(top)
        if not os.path.isdir(real_top):
            raise UsageError(f"{top}: --root is not a directory")
        self.top = real_top
        self.is_host = real_top == "/"
        # Bound per instance so two roots never share answers.
        self.realpath = lru_cache(maxsize=65536)(self._realpath)  # type: ignore[method-assign]
        self._lstat = lru_cache(maxsize=65536)(self._lstat_uncached)

    def __repr__(self) -> str:
        return f"FsRoot({self.top!r})"

    def host_path(self, image_path: str) -> str:
        """Where an already-resolved image path lies on the host (no link is followed here)."""
        if self.is_host:
            return image_path
        return self.top + image_path if image_path != "/" else self.top

    def lies_in(self, resolved: str, host_folders: Iterable[str]) -> bool:
        """Whether an already-resolved image path is, on the host, one of ``host_folders`` or
        below one (what scratchpack must never pack: its own output folder, say)."""
        host = self.host_path(resolved)
        tops = (folder.rstrip("/") for folder in host_folders)
        return any(host == top or host.startswith(top + "/") for top in tops)

    def readlink(self, image_path: str) -> str:
        """The text of the link at ``image_path``, its folders' links followed as chroot would
        (OSError when it is not a link, SymlinkLoop for a loop above it)."""
        parent = self.realpath(posixpath.dirname(image_path))
        return os.readlink(self.host_path(posixpath.join(parent, posixpath.basename(image_path))))

    def glob(self, pattern: str) -> list[str]:
        """glob(3) with flags 0 over the root, for an absolute pattern: existing paths only
        (links not followed at the end), sorted bytewise (C collation); a leading '.' is
        matched only literally, and ``[^...]`` negates as ``[!...]`` does."""
        found = ["/"]
        components = [c for c in pattern.split("/") if c]
        for index, component in enumerate(components):
            last = index == len(components) - 1
            found = [p for base in found for p in self._glob_step(base, component, last)]
            if not found:
                return []
        return sorted(found, key=os.fsencode)

    def _glob_step(self, base: str, component: str, last: bool) -> list[str]:
        join = base.rstrip("/") + "/"
        if not _GLOB_MAGIC.search(component):
            candidates = [join + component]
        else:
            translated = component.replace("[^", "[!")  # glibc also takes ^ for negation
            candidates = [
                join + name
                for name in self.listdir(base)
                if fnmatch.fnmatchcase(name, translated)
                and (not name.startswith(".") or component.startswith("."))
            ]
        if last:
            return [c for c in candidates if self.lstat(c) is not None]
        return [c for c in candidates if self.is_dir(c)]

    def realpath(self, image_path: str) -> str:  # replaced per instance by a cached bound method
        raise NotImplementedError

    def _realpath(self, image_path: str) -> str:
        """The image path with every symbolic link followed, as chroot would.

        Components that do not exist are kept as they are (like ``realpath -m``), so callers
        can ask whether the result exists. Raises SymlinkLoop after MAX_SYMLINKS links.
        """
        # No normpath here: "a/link/.." must climb from the link's target, as the kernel does.
        path = "/" + image_path.lstrip("/")
        if self.is_host:
            return _host_realpath(path)
        return self._walk(path)

    def _walk(self, path: str) -> str:
        pending = [c for c in path.split("/") if c]
        pending.reverse()
        done = ""
        hops = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                done = posixpath.dirname(done) if done else ""
                done = "" if done == "/" else done
                continue
            candidate = done + "/" + part
            st = self._lstat(candidate)
            if st is None or not stat.S_ISLNK(st.st_mode):
                done = candidate
                if st is None:
                    # Nothing below a missing component exists: keep the rest as spelt.
                    rest = [p for p in reversed(pending) if p not in (".", "")]
                    return posixpath.normpath(done + ("/" + "/".join(rest) if rest else ""))
                continue
            hops += 1
            if hops > MAX_SYMLINKS:
                raise SymlinkLoop(f"{path}: too many levels of symbolic links")
            target = os.readlink(self.host_path(candidate))
            if target.startswith("/"):
                done = ""
            pending.extend(reversed([c for c in target.split("/") if c]))
        return done or "/"

    def _lstat_uncached(self, image_path: str) -> os.stat_result | None:
        try:
            return os.lstat(self.host_path(image_path))
        except OSError:
            return None

    def lstat(self, image_path: str) -> os.stat_result | None:
        """lstat of the path itself (its parents resolved), or None when it does not exist."""
        parent, name = posixpath.split(posixpath.normpath("/" + image_path))
        return self._lstat(posixpath.join(self.realpath(parent), name))

    def stat(self, image_path: str) -> os.stat_result | None:
        """stat following links inside the root, or None when the path does not exist."""
        try:
            resolved = self.realpath(image_path)
        except SymlinkLoop:
            return None
        return self._lstat(resolved)

    def is_file(self, image_path: str) -> bool:
        st = self.stat(image_path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, image_path: str) -> bool:
        st = self.stat(image_path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def real_host_path(self, image_path: str) -> str:
        """The host path of the file an image path finally names."""
        return self.host_path(self.realpath(image_path))

    def read_bytes(self, image_path: str) -> bytes:
        """The content of a regular file. Anything else raises OSError without being opened:
        a FIFO with no writer would block open() forever, and opening a device can act."""
        host, st = self._final(image_path)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", host)
        if st.st_size > MAX_READ_BYTES:
            raise FileTooLarge(image_path, st.st_size)
        with open(host, "rb") as handle:  # a directory raises IsADirectoryError here
            # Bounded too: the file may have grown since the stat.
            return handle.read(MAX_READ_BYTES)

    def _final(self, image_path: str) -> tuple[str, os.stat_result]:
        """The host path of the file IMAGE_PATH names, and its stat. Its folder is walked once
        for all the files read in it (the dpkg lists, hundreds): only a name that is itself
        a link takes a walk of its own."""
        folder, _, name = ("/" + image_path.lstrip("/")).rpartition("/")
        if name not in ("", ".", ".."):
            resolved = self.realpath(folder or "/")
            host = self.host_path(resolved.rstrip("/") + "/" + name)
            try:
                st = os.lstat(host)
            except OSError:
                st = None
            if st is not None and not stat.S_ISLNK(st.st_mode):
                return host, st
        host = self.real_host_path(image_path)
        return host, os.stat(host)

    def listdir(self, image_path: str) -> list[str]:
        """Names in a directory of the root; [] when it is absent or unreadable."""
        try:
            return os.listdir(self.real_host_path(image_path))
        except OSError:
            return []

    def image_path_of_host(self, host_path: str) -> str | None:
        """The image path of a host path under the root's top, or None if it lies outside."""
        absolute = os.path.abspath(host_path)
        if self.is_host:
            return absolute
        if absolute == self.top:
            return "/"
        if absolute.startswith(self.top + "/"):
            return absolute[len(self.top) :]
        return None


def _host_realpath(path: str) -> str:
    try:
        return os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkLoop(f"{path}: too many levels of symbolic links") from None
        return os.path.realpath(path)
