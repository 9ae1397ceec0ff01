"""What an image holds, as scanners and licence audits see it: packages, files, the OS.

Made from the plan and the root's dpkg database once every file is decided; the SBOM writers
read it, never the root.
"""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.loader.rootfs import FsRoot
from bundler.packages.dpkg import Database, Package, parse_stanzas
from bundler.staging.digests import DigestMemo, code_key
from bundler.staging.plan import FILE, HARDLINK, Entry, Plan

# What a copyright file's remembered licences depend on besides its bytes: the code that reads
# them (``bundler.packages.licences``, and the deb822 parser it uses).
LICENCES_CODE = code_key(
    str(Path(__file__).with_name("licences.py")), parse_stanzas.__code__.co_filename
)


@dataclass(frozen=True)
class PackedFile:
    """One regular file of the image (links and folders are not listed)."""

    path: str  # in-image, absolute
    size: int
    sha256: str
    sha1: str
    package: str | None  # the owning package, None for files of no package
    distribution: str | None = None  # the Python distribution's dist-info folder, if any


@dataclass(frozen=True)
class OsRelease:
    """The image's operating system, from the root's os-release (ID, VERSION_ID, ...)."""

    id: str  # "debian"
    version_id: str  # "12"
    pretty_name: str = ""
    version_codename: str = ""
    debian_version: str = ""  # /etc/debian_version: "12.12"


@dataclass(frozen=True)
class PackedPackage:
    """A package some of whose files are in the image."""

    package: Package  # its control stanza from the root's status file
    licences: tuple[str, ...]  # licence short names of its copyright file (DEP-5), if any
    copyright: str | None  # in-image path of its copyright file, when packed


@dataclass(frozen=True)
class PythonPackage:
    """A Python distribution whose METADATA is in the image."""

    name: str
    version: str
    dist_info: str  # in-image path of its NAME-VERSION.dist-info folder
    licence: str = ""  # License-Expression, when it declares one
    summary: str = ""

    @property
    def key(self) -> str:
        """The PEP 503 normalised name the pypi purl uses."""
        return re.sub(r"[-_.]+", "-", self.name).lower()


@dataclass(frozen=True)
class Contents:
    name: str  # the image's name (--tag, or the entrypoint's file name)
    packages: tuple[PackedPackage, ...]  # sorted by name
    files: tuple[PackedFile, ...]  # sorted by path
    os: OsRelease | None  # None when the root has no os-release
    epoch: int = 0  # SOURCE_DATE_EPOCH: the documents' creation time
    # Secrets packed on purpose (--allow-secret): (in-image path, what and why), by path.
    secrets: tuple[tuple[str, str], ...] = ()
    python: tuple[PythonPackage, ...] = ()  # sorted by dist-info path

    def files_of_distribution(self, dist_info: str) -> tuple[PackedFile, ...]:
        return tuple(f for f in self.files if f.distribution == dist_info)

    def files_of(self, package: str | None) -> tuple[PackedFile, ...]:
        return tuple(f for f in self.files if f.package == package)


def os_release(root: FsRoot) -> OsRelease | None:
    """The root's os-release (``/etc/os-release``, else ``/usr/lib/os-release``)."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if root.is_file(path):
            text = root.read_bytes(path).decode("utf-8", "replace")
            break
    else:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    debian_version = ""
    if root.is_file("/etc/debian_version"):
        debian_version = root.read_bytes("/etc/debian_version").decode("utf-8", "replace").strip()
    return OsRelease(
        id=fields.get("ID", ""),
        version_id=fields.get("VERSION_ID", ""),
        pretty_name=fields.get("PRETTY_NAME", ""),
        version_codename=fields.get("VERSION_CODENAME", ""),
        debian_version=debian_version,
    )


def build_contents(
    plan: Plan,
    database: Database | None,
    owners: dict[str, str],
    name: str,
    epoch: int,
    digests: DigestMemo | None = None,
) -> Contents:
    """Every regular file of the plan with its digests (from DIGESTS when a pack hashed it
    before) and owner, and the owners' packages."""
    python, files_by_dist = python_packages(plan)
    digests = digests or DigestMemo()
    files = tuple(
        _packed_file(plan, entry, owners, files_by_dist, digests)
        for entry in plan.sorted_entries()
        if _is_file(entry)
    )
    packages: list[PackedPackage] = []
    for package_name in sorted(set(owners.values())):
        if database is None or package_name not in database.packages:
            continue
        copyright_path = f"/usr/share/doc/{package_name}/copyright"
        packed = copyright_path if _planned_file(plan, database, copyright_path) else None
        licences: tuple[str, ...] = ()
        if packed is not None:
            licences = _licences(plan, database, copyright_path, digests)
        packages.append(PackedPackage(database.packages[package_name], licences, packed))
    root = database.root if database is not None else None
    secrets = tuple((s.path, s.note()) for s in plan.allowed_secrets)
    os = os_release(root) if root else None
    return Contents(name, tuple(packages), files, os, epoch, secrets, python)


def _licences(
    plan: Plan, database: Database, copyright_path: str, digests: DigestMemo
) -> tuple[str, ...]:
    """The licences a packed copyright file states: remembered by its bytes, or read."""

    def read() -> tuple[str, ...]:
        from bundler.packages.licences import copyright_licences  # only for what is not known

        text = database.root.read_bytes(copyright_path).decode("utf-8", "replace")
        return copyright_licences(text)

    def decode(known: Any) -> tuple[str, ...]:
        if not isinstance(known, (list, tuple)) or not all(isinstance(i, str) for i in known):
            raise TypeError("not a list of licences")
        return tuple(known)

    entry = plan.entries.get(database.root.realpath(copyright_path))
    source = plan.content_of(entry).source if entry is not None else None
    if source is None:
        return read()
    return digests.fact_of(source, LICENCES_CODE, read, decode)


def python_packages(plan: Plan) -> tuple[tuple[PythonPackage, ...], dict[str, str]]:
    """The Python distributions whose ``*.dist-info/METADATA`` is planned, and which of them
    each planned file belongs to (by its RECORD; dpkg's owners take precedence elsewhere)."""
    found: list[PythonPackage] = []
    owner: dict[str, str] = {}
    for path in sorted(plan.entries):
        match = _METADATA.search(path)
        if match is None or plan.entries[path].type not in (FILE, HARDLINK):
            continue
        folder = posixpath.dirname(path)
        fields = _headers(_content(plan, plan.entries[path]))
        name, version = fields.get("name", ""), fields.get("version", "")
        if not name or not version:
            continue
        found.append(
            PythonPackage(
                name,
                version,
                folder,
                fields.get("license-expression", ""),
                fields.get("summary", ""),
            )
        )
        for inside in plan.entries:
            if inside.startswith(folder + "/"):
                owner.setdefault(inside, folder)
        record = plan.entries.get(posixpath.join(folder, "RECORD"))
        if record is None or record.type not in (FILE, HARDLINK):
            continue
        site = posixpath.dirname(folder)
        text = _content(plan, record).decode("utf-8", "replace")
        import csv  # only where Python distributions are packed

        for row in csv.reader(io.StringIO(text)):
            if row and row[0]:
                listed = posixpath.normpath(posixpath.join(site, row[0]))
                if listed in plan.entries:
                    owner.setdefault(listed, folder)
    return tuple(found), owner


_METADATA = re.compile(r"/[^/]+\.dist-info/METADATA$")


def _content(plan: Plan, entry: Entry) -> bytes:
    entry = plan.content_of(entry)
    if entry.data is not None:
        return entry.data
    if entry.source is None:
        return b""
    with open(entry.source, "rb") as handle:
        return handle.read()


def _headers(data: bytes) -> dict[str, str]:
    """The first value of each header field of a METADATA file, by lower-cased name."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _is_file(entry: Entry) -> bool:
    return entry.type in (FILE, HARDLINK)


def _planned_file(plan: Plan, database: Database, path: str) -> bool:
    return database.root.is_file(path) and database.root.realpath(path) in plan.entries


def _packed_file(
    plan: Plan,
    entry: Entry,
    owners: dict[str, str],
    distributions: dict[str, str],
    digests: DigestMemo,
) -> PackedFile:
    digest = digests.entry(plan, entry)
    package = owners.get(entry.path)
    return PackedFile(
        entry.path,
        plan.content_of(entry).size,
        digest.sha256,
        digest.sha1,
        package,
        None if package is not None else distributions.get(entry.path),
    )
