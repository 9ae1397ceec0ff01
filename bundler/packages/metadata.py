"""Package metadata inside a scratch image, as distroless ships it, so scanners see packages.

A FROM scratch image has no ``/var/lib/dpkg/status``; syft's and trivy's Debian catalogers
also read ``/var/lib/dpkg/status.d/<pkg>`` (one control stanza per package, distroless's
layout) with ``<pkg>.md5sums`` beside it (which files are the package's), and take the
distribution from ``/etc/os-release`` (syft) or ``/etc/debian_version`` (trivy). So for every
package that owns a packed file the image gets its stanza (``Conffiles`` that are not packed
dropped), the md5sums of its packed files only, and its ``/usr/share/doc/<pkg>/copyright``:
the licence texts GPL and LGPL require to travel with the binaries, where scanners read
licences. base-files brings ``os-release`` and ``debian_version``. Nothing here is a
``status`` file or an ``info/`` folder, which would tell apt a package is fully installed.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

from bundler.errors import ScratchpackError
from bundler.packages.dpkg import DPKG, INFO, Database, Package
from bundler.staging.plan import DIR, FILE, HARDLINK, SYMLINK, Entry, Plan

log = logging.getLogger(__name__)

STATUS_D = f"{DPKG}/status.d"
OS_FILES = ("/etc/os-release", "/usr/lib/os-release", "/etc/debian_version")
BASE_FILES = "base-files"


@dataclass
class Metadata:
    """The files made for the image, and which package owns each packed path."""

    generated: dict[str, bytes] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # packed path -> package


def packed_owners(plan: Plan, database: Database) -> dict[str, str]:
    """Packed file (and link) -> the package that owns it. Folders, and links that name a
    folder (``/lib -> usr/lib``), belong to every package that puts files below them."""
    owners: dict[str, str] = {}
    for entry in plan.entries.values():
        if entry.type == DIR or entry.data is not None:
            continue
        if entry.type == SYMLINK and database.root.is_dir(entry.path):
            continue
        package = database.owner(entry.path)
        if package is not None:
            owners[entry.path] = package
    return owners


def metadata_sources(plan: Plan, database: Database) -> list[str]:
    """Root paths the image needs for its packages: each owner's copyright file, and
    base-files' os-release and debian_version. Packed before the metadata is made, so that
    their packages' md5sums list them too."""
    paths = [p for p in OS_FILES if database.root.lstat(p) is not None]
    if BASE_FILES not in database.packages:
        paths = []
    for name in sorted(set(packed_owners(plan, database).values()) | {BASE_FILES}):
        copyright_file = f"/usr/share/doc/{name}/copyright"
        if name in database.packages and database.root.is_file(copyright_file):
            paths.append(copyright_file)
    return paths


def package_metadata(plan: Plan, database: Database) -> Metadata:
    """status.d entries and md5sums for every package owning a packed file."""
    metadata = Metadata(owners=packed_owners(plan, database))
    packages = sorted(set(metadata.owners.values()))
    for name in packages:
        package = database.packages[name]
        files = {p for p, owner in metadata.owners.items() if owner == name}
        metadata.generated[f"{STATUS_D}/{name}"] = _stanza(package, database, files)
        metadata.generated[f"{STATUS_D}/{name}.md5sums"] = _md5sums(plan, database, name, files)
    log.info("package metadata: %d packages (status.d, md5sums, copyright)", len(packages))
    return metadata


def _stanza(package: Package, database: Database, packed: set[str]) -> bytes:
    """The package's control stanza as the root's status file has it; of ``Conffiles``, only
    those packed (a scanner would otherwise report configuration the image does not have)."""
    lines: list[str] = []
    for key, value in package.fields:
        if key.lower() == "conffiles":
            kept = [
                line
                for line in value.splitlines()
                if line.split() and database.key(line.split()[0]) in packed
            ]
            if kept:
                lines.append("Conffiles:" + "".join("\n " + line.strip() for line in kept))
            continue
        lines.append(f"{key}: {value}" if value else f"{key}:")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _md5sums(plan: Plan, database: Database, package: str, packed: set[str]) -> bytes:
    """Lines of the root's ``info/<pkg>.md5sums`` whose file is packed; files it does not
    list get their md5 computed (as ``dpkg --verify`` would have it)."""
    listed: dict[str, str] = {}
    for line in _root_md5sums(database, package):
        _digest, _, name = line.partition("  ")
        if name:
            listed.setdefault(database.key("/" + name), line)
    out: list[str] = []
    for path in sorted(packed):
        entry = plan.entries.get(path)
        if entry is None or entry.type not in (FILE, HARDLINK):
            continue
        out.append(listed.get(path) or f"{_md5(plan, entry)}  {path.lstrip('/')}")
    return "".join(line + "\n" for line in out).encode("utf-8", "surrogateescape")


def _root_md5sums(database: Database, package: str) -> list[str]:
    arch = database.packages[package].architecture
    for name in (f"{package}:{arch}.md5sums", f"{package}.md5sums"):
        path = posixpath.join(INFO, name)
        if database.root.is_file(path):
            try:
                data = database.root.read_bytes(path)
            except (OSError, ScratchpackError) as exc:
                log.warning("%s: unreadable (%s); md5sums computed", path, exc)
                return []
            return data.decode("utf-8", "surrogateescape").splitlines()
    return []


def _md5(plan: Plan, entry: Entry) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    plan.hash_content(entry, digest)
    return digest.hexdigest()


def sizes_by_package(plan: Plan, owners: dict[str, str]) -> list[tuple[str | None, int, int]]:
    """(package or None, bytes, files) of the plan's regular files, largest first."""
    totals: dict[str | None, list[int]] = {}
    for entry in plan.entries.values():
        if entry.type != FILE:
            continue
        total = totals.setdefault(owners.get(entry.path), [0, 0])
        total[0] += entry.size
        total[1] += 1
    return sorted(
        ((name, size, count) for name, (size, count) in totals.items()),
        key=lambda item: (-item[1], item[0] or ""),
    )


def metadata_paths(names: Iterable[str]) -> list[str]:
    """The status.d paths of packages (for COPY lines onto a distroless base)."""
    return [p for name in names for p in (f"{STATUS_D}/{name}", f"{STATUS_D}/{name}.md5sums")]
