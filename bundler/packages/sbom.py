"""SBOMs of an image: SPDX 2.3 and CycloneDX 1.6 JSON documents made from its ``Contents``.

Both are functions of the ``Contents`` alone: no clock, no random identifier. Times come from
its epoch (``SOURCE_DATE_EPOCH``), the SPDX document namespace and the CycloneDX serial number
from a hash of the document itself, lists are in a fixed order and ``document_bytes`` writes
sorted keys, so the same image gives the same bytes on any machine.

SPDX: the document DESCRIBES the image (a package of purpose CONTAINER); the image CONTAINS
the OS (purpose OPERATING-SYSTEM), each Debian package, each Python distribution whose
``dist-info/METADATA`` is packed (a ``pkg:pypi`` purl) and each file no package owns; each
package CONTAINS its files (a distribution's: those its RECORD lists and its dist-info).
Every file has SHA1 (which SPDX requires) and SHA256.

CycloneDX: the image is ``metadata.component`` (type container). Packages and the OS are
linked as Trivy writes them for images, which is what scanners reading a CycloneDX image SBOM
look for: the image depends on the OS and the OS on each Debian package (``dependencies``).
Files are components of type file nested in their package's ``components``: the spec's own
way to say "is part of" (an assembly), where ``dependencies`` would say a package depends on
its own files; syft and grype read nested components. Files of no package are top-level
components, and the image depends on them.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from packageurl import PackageURL

from bundler import __version__
from bundler.packages.contents import (
    Contents,
    OsRelease,
    PackedFile,
    PackedPackage,
    PythonPackage,
)
from bundler.packages.dpkg import Package
from bundler.packages.licences import SpdxLicence, spdx_licence
from bundler.staging.tree import rfc3339

TOOL = f"scratchpack-{__version__}"
NOASSERTION = "NOASSERTION"
DOCUMENT_ID = "SPDXRef-DOCUMENT"
IMAGE_ID = "SPDXRef-Image"
OS_ID = "SPDXRef-OperatingSystem"
# Where SPDX's own examples put document namespaces; the document's hash makes it unique.
NAMESPACE_BASE = "https://spdx.org/spdxdocs/scratchpack"
PROPERTY = "scratchpack:package"
_SPDX_ID_CHARS = re.compile(r"[^A-Za-z0-9.-]+")
# Maintainer names that are teams and lists, not people.
_ORGANIZATION = re.compile(
    r"\b(team|maintainers|project|developers|group|debian|ubuntu|packagers|community)\b|lists?\.",
    re.IGNORECASE,
)


# ----- purl -------------------------------------------------------------------------------------


def purl(package: Package, os: OsRelease | None) -> str:
    """``pkg:deb/<distro>/NAME@VERSION?arch=ARCH&distro=<id>-<version>[&upstream=SOURCE]``, as
    syft and trivy write it (``upstream`` when the source package has another name)."""
    qualifiers = {"arch": package.architecture} if package.architecture else {}
    distro = _distro(os)
    if distro:
        qualifiers["distro"] = distro
    if package.source != package.name:
        qualifiers["upstream"] = package.source
    namespace = os.id.lower() if os and os.id else "debian"
    found = PackageURL(
        type="deb",
        namespace=namespace,
        name=package.name,
        version=package.version or None,
        qualifiers=qualifiers,
    )
    return str(found.to_string())


def _distro(os: OsRelease | None) -> str:
    if os is None or not os.id:
        return ""
    version = os.version_id or os.version_codename
    return f"{os.id.lower()}-{version}" if version else os.id.lower()


# ----- SPDX 2.3 ---------------------------------------------------------------------------------


def spdx_document(contents: Contents) -> dict[str, Any]:
    licences = {p.package.name: spdx_licence(p.licences) for p in contents.packages}
    packages = [_spdx_image(contents)]
    if contents.os:
        packages.append(_spdx_os(contents.os))
    packages += [_spdx_package(p, contents, licences[p.package.name]) for p in contents.packages]
    packages += [_spdx_python(p, contents) for p in contents.python]
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT_ID,
        "name": contents.name,
        "documentNamespace": "",
        "creationInfo": {"created": rfc3339(contents.epoch), "creators": [f"Tool: {TOOL}"]},
        "packages": packages,
        "files": [_spdx_file(f, contents) for f in contents.files],
        "relationships": _spdx_relationships(contents),
    }
    extracted = _extracted_licences(contents, licences)
    if extracted:
        document["hasExtractedLicensingInfos"] = extracted
    digest = hashlib.sha256(_canonical(document)).hexdigest()
    document["documentNamespace"] = f"{NAMESPACE_BASE}/{_id_part(contents.name)}-{digest}"
    return document


def _spdx_image(contents: Contents) -> dict[str, Any]:
    return {
        "SPDXID": IMAGE_ID,
        "name": contents.name,
        "primaryPackagePurpose": "CONTAINER",
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": True,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
    }


def _spdx_os(os: OsRelease) -> dict[str, Any]:
    found = {
        "SPDXID": OS_ID,
        "name": os.id,
        "versionInfo": os.version_id,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
    }
    if os.pretty_name:
        found["description"] = os.pretty_name
    return found


def _spdx_package(
    packed: PackedPackage, contents: Contents, licence: SpdxLicence | None
) -> dict[str, Any]:
    package = packed.package
    found: dict[str, Any] = {
        "SPDXID": package_spdx_id(package.name),
        "name": package.name,
        "versionInfo": package.version,
        "primaryPackagePurpose": _purpose(package),
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": True,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": licence.expression if licence else NOASSERTION,
        "copyrightText": NOASSERTION,
        "sourceInfo": f"built from the Debian source package {_source_text(package)}",
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(package, contents.os),
            }
        ],
    }
    supplier = _supplier(package.get("Maintainer"))
    if supplier:
        found["supplier"] = supplier
    summary = _synopsis(package)
    if summary:
        found["summary"] = summary
    files = contents.files_of(package.name)
    if files:
        found["packageVerificationCode"] = {"packageVerificationCodeValue": _verification(files)}
    return found


def _spdx_python(package: PythonPackage, contents: Contents) -> dict[str, Any]:
    found: dict[str, Any] = {
        "SPDXID": python_spdx_id(package),
        "name": package.name,
        "versionInfo": package.version,
        "primaryPackagePurpose": "LIBRARY",
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": True,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "sourceInfo": f"the Python distribution installed at {package.dist_info}",
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": python_purl(package),
            }
        ],
    }
    if package.summary:
        found["summary"] = package.summary
    files = contents.files_of_distribution(package.dist_info)
    if files:
        found["packageVerificationCode"] = {"packageVerificationCodeValue": _verification(files)}
    return found


def python_purl(package: PythonPackage) -> str:
    """``pkg:pypi/NAME@VERSION`` with the PEP 503 name, as syft and trivy write it."""
    return str(PackageURL(type="pypi", name=package.key, version=package.version))


def python_spdx_id(package: PythonPackage) -> str:
    return f"SPDXRef-PyPI-{_id_part(package.key)}-{_id_part(package.version)}"


def _spdx_file(packed: PackedFile, contents: Contents) -> dict[str, Any]:
    found: dict[str, Any] = {
        "SPDXID": file_spdx_id(packed.path),
        "fileName": "." + shown_path(packed.path),
        "checksums": [
            {"algorithm": "SHA1", "checksumValue": packed.sha1},
            {"algorithm": "SHA256", "checksumValue": packed.sha256},
        ],
        "licenseConcluded": NOASSERTION,
        "copyrightText": NOASSERTION,
    }
    if packed.package is None and packed.distribution is None:
        found["comment"] = "No package owns this file: the image holds it on its own."
    notes = [note for path, note in contents.secrets if path == packed.path]
    if notes:
        # A reviewer's note on the file: it is a secret, in the image on purpose.
        found["annotations"] = [
            {
                "annotationType": "REVIEW",
                "annotator": f"Tool: {TOOL}",
                "annotationDate": rfc3339(contents.epoch),
                "comment": f"secret {note}",
            }
            for note in notes
        ]
    return found


def _spdx_relationships(contents: Contents) -> list[dict[str, str]]:
    pairs = [(DOCUMENT_ID, "DESCRIBES", IMAGE_ID)]
    if contents.os:
        pairs.append((IMAGE_ID, "CONTAINS", OS_ID))
    for packed in contents.packages:
        pairs.append((IMAGE_ID, "CONTAINS", package_spdx_id(packed.package.name)))
    python_ids = {p.dist_info: python_spdx_id(p) for p in contents.python}
    for package in contents.python:
        pairs.append((IMAGE_ID, "CONTAINS", python_ids[package.dist_info]))
    for packed_file in contents.files:
        owner = packed_file.package
        parent = IMAGE_ID if owner is None else package_spdx_id(owner)
        if owner is None and packed_file.distribution in python_ids:
            parent = python_ids[packed_file.distribution]
        pairs.append((parent, "CONTAINS", file_spdx_id(packed_file.path)))
    return [
        {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}
        for a, kind, b in sorted(set(pairs))
    ]


def _extracted_licences(
    contents: Contents, licences: dict[str, SpdxLicence | None]
) -> list[dict[str, str]]:
    """One entry per LicenseRef-: its Debian name, and where its text is (the copyright
    files that define it)."""
    names: dict[str, str] = {}
    where: dict[str, list[str]] = {}
    for packed in contents.packages:
        licence = licences[packed.package.name]
        for ref, name in licence.refs if licence else ():
            names.setdefault(ref, name)
            where.setdefault(ref, []).append(
                packed.copyright or f"/usr/share/doc/{packed.package.name}/copyright"
            )
    return [
        {
            "licenseId": ref,
            "name": names[ref],
            "extractedText": (
                f'The licence Debian copyright files call "{names[ref]}"; its text is in '
                + ", ".join(sorted(set(where[ref])))
            ),
            "comment": "A Debian licence short name with no SPDX licence identifier.",
        }
        for ref in sorted(names)
    ]


def package_spdx_id(name: str) -> str:
    return f"SPDXRef-Package-deb-{_id_part(name)}"


def shown_path(path: str) -> str:
    """A file name as an SBOM can hold it: JSON is UTF-8, and a name that is not (a Latin-1
    file of the root, kept byte for byte in the image) shows its odd bytes as U+FFFD; its
    digests still say which file it is."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def file_spdx_id(path: str) -> str:
    # The path's hash keeps apart paths that differ only in characters SPDX ids cannot hold.
    short = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"SPDXRef-File-{_SPDX_ID_CHARS.sub('-', shown_path(path)).strip('-')}-{short}"


def _id_part(name: str) -> str:
    """NAME in the characters of an SPDX id; with a short hash when some had to change, so
    ``libstdc++6`` and ``libstdc--6`` stay two ids."""
    cleaned = _SPDX_ID_CHARS.sub("-", name).strip("-")
    if cleaned == name:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{cleaned}-{digest[:8]}"


def _purpose(package: Package) -> str:
    return "LIBRARY" if _is_library(package) else "APPLICATION"


def _is_library(package: Package) -> bool:
    section = package.get("Section").rpartition("/")[2]
    return section in ("libs", "oldlibs") or package.name.startswith("lib")


def _source_text(package: Package) -> str:
    """``openssl 3.0.11-1`` from ``Source: openssl (3.0.11-1)``; the package's own version
    when the field names none (then both share it)."""
    match = re.search(r"\(([^)]+)\)", package.get("Source"))
    version = match.group(1).strip() if match else package.version
    return f"{package.source} {version}".strip()


def _synopsis(package: Package) -> str:
    """The first line of a package's Description: Debian's one-line synopsis."""
    return package.get("Description").partition("\n")[0].strip()


def _supplier(maintainer: str) -> str | None:
    """``Organization: Debian OpenSSL Team (pkg-openssl-devel@...)`` or ``Person: ...``."""
    name, email = _name_and_email(maintainer)
    if not name and not email:
        return None
    kind = "Organization" if _ORGANIZATION.search(f"{name} {email}") else "Person"
    return f"{kind}: {name or email}" + (f" ({email})" if email else "")


def _name_and_email(maintainer: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([^<]*?)\s*(?:<([^>]*)>)?\s*", maintainer.partition("\n")[0])
    if not match:
        return maintainer.strip(), ""
    # SPDX's actor syntax ends the name at "(": the name keeps none of its own.
    name = match.group(1).replace("(", "[").replace(")", "]")
    return name, (match.group(2) or "").strip()


def _verification(files: Iterable[PackedFile]) -> str:
    """SPDX's package verification code: SHA1 of the sorted SHA1s of the package's files."""
    joined = "".join(sorted(f.sha1 for f in files))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()


# ----- CycloneDX 1.6 ----------------------------------------------------------------------------


def cyclonedx_document(contents: Contents) -> dict[str, Any]:
    image_ref = f"image:{contents.name}"
    components: list[dict[str, Any]] = []
    os_ref = None
    if contents.os:
        os_ref = _os_ref(contents.os)
        components.append(_cdx_os(contents.os, os_ref))
    package_refs = []
    for packed in contents.packages:
        component = _cdx_package(packed, contents)
        package_refs.append(component["bom-ref"])
        components.append(component)
    python_refs = []
    for package in contents.python:
        component = _cdx_python(package, contents)
        python_refs.append(component["bom-ref"])
        components.append(component)
    unowned = [_cdx_file(f) for f in contents.files_of(None) if f.distribution is None]
    components += unowned
    image_needs = ([os_ref] if os_ref else package_refs) + python_refs
    dependencies = [
        {"ref": image_ref, "dependsOn": sorted([*image_needs, *(f["bom-ref"] for f in unowned)])}
    ]
    if os_ref:
        dependencies.append({"ref": os_ref, "dependsOn": sorted(package_refs)})
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(contents.epoch),
            "tools": {
                "components": [
                    {"type": "application", "name": "scratchpack", "version": __version__}
                ]
            },
            "component": {"type": "container", "bom-ref": image_ref, "name": contents.name},
            **_cdx_secrets(contents),
        },
        "components": components,
        "dependencies": sorted(dependencies, key=lambda d: str(d["ref"])),
    }
    serial = uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(_canonical(document)).hexdigest())
    document["serialNumber"] = serial.urn
    return document


def _cdx_secrets(contents: Contents) -> dict[str, Any]:
    """The secrets packed on purpose, as properties of the document (a file of a package is
    no component of its own here)."""
    if not contents.secrets:
        return {}
    return {
        "properties": [
            {"name": "scratchpack:allowed-secret", "value": f"{path}: {note}"}
            for path, note in contents.secrets
        ]
    }


def _os_ref(os: OsRelease) -> str:
    return f"os:{os.id}@{os.version_id}" if os.version_id else f"os:{os.id}"


def _cdx_os(os: OsRelease, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = {"type": "operating-system", "bom-ref": ref, "name": os.id}
    if os.version_id:
        found["version"] = os.version_id
    if os.pretty_name:
        found["description"] = os.pretty_name
    return found


def _cdx_package(packed: PackedPackage, contents: Contents) -> dict[str, Any]:
    package = packed.package
    locator = purl(package, contents.os)
    properties = [
        (f"{PROPERTY}:source", package.source),
        (f"{PROPERTY}:source-version", _source_text(package).partition(" ")[2]),
        (f"{PROPERTY}:architecture", package.architecture),
    ]
    found: dict[str, Any] = {
        "type": "library" if _is_library(package) else "application",
        "bom-ref": locator,
        "name": package.name,
        "version": package.version,
        "purl": locator,
        "properties": [{"name": k, "value": v} for k, v in properties if v],
    }
    licence = spdx_licence(packed.licences)
    if licence:
        found["licenses"] = [_cdx_licence(term, licence) for term in licence.terms]
    supplier = _cdx_supplier(package.get("Maintainer"))
    if supplier:
        found["supplier"] = supplier
    summary = _synopsis(package)
    if summary:
        found["description"] = summary
    files = [_cdx_file(f) for f in contents.files_of(package.name)]
    if files:
        found["components"] = files
    return found


def _cdx_python(package: PythonPackage, contents: Contents) -> dict[str, Any]:
    locator = python_purl(package)
    found: dict[str, Any] = {
        "type": "library",
        "bom-ref": locator,
        "name": package.name,
        "version": package.version,
        "purl": locator,
        "properties": [{"name": "scratchpack:python:dist-info", "value": package.dist_info}],
    }
    if package.licence:
        found["licenses"] = [{"expression": package.licence}]
    if package.summary:
        found["description"] = package.summary
    files = [_cdx_file(f) for f in contents.files_of_distribution(package.dist_info)]
    if files:
        found["components"] = files
    return found


def _cdx_licence(term: str, licence: SpdxLicence) -> dict[str, Any]:
    """An SPDX identifier as ``id``; a LicenseRef- by its Debian name, an ``X WITH Y`` term as
    written: ``name`` (CycloneDX's ``id`` takes identifiers of the SPDX list only)."""
    refs = dict(licence.refs)
    if term in refs:
        body = {"name": refs[term]}
    elif " " in term:
        body = {"name": term}
    else:
        body = {"id": term}
    return {"license": {**body, "acknowledgement": "declared"}}


def _cdx_supplier(maintainer: str) -> dict[str, Any] | None:
    name, email = _name_and_email(maintainer)
    if not name and not email:
        return None
    found: dict[str, Any] = {"name": name or email}
    if email:
        found["contact"] = [{"email": email}]
    return found


def _cdx_file(packed: PackedFile) -> dict[str, Any]:
    return {
        "type": "file",
        "bom-ref": f"file:{shown_path(packed.path)}",
        "name": shown_path(packed.path),
        "hashes": [
            {"alg": "SHA-1", "content": packed.sha1},
            {"alg": "SHA-256", "content": packed.sha256},
        ],
    }


# ----- bytes ------------------------------------------------------------------------------------


def document_bytes(document: dict[str, Any]) -> bytes:
    """Sorted keys, two-space indent, a newline at the end: the same document, the same
    bytes (and a readable file)."""
    text = json.dumps(_utf8(document), sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()


def _canonical(document: dict[str, Any]) -> bytes:
    """The document in few bytes, made fast (the C encoder takes no indent): what its own
    name and serial number are derived from."""
    compact = json.dumps(_utf8(document), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return compact.encode()


def _utf8(value: Any) -> Any:
    """Every string of a document as UTF-8 can hold it (``shown_path``): a program or a
    package file of the root may be named in another encoding."""
    if isinstance(value, str):
        return shown_path(value)
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8(item) for item in value]
    return value
