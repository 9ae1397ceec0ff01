"""SBOMs (bundler/packages/sbom.py), Debian licences (bundler/packages/licences.py) and artifacts
attached to an image of an OCI layout (bundler/image/referrers.py).

The documents are made from ``Contents`` built by hand and must pass the reference validators:
spdx-tools' full validation for SPDX 2.3, the CycloneDX 1.6 JSON schema in strict mode. On the
debootstrapped tree, every installed package's copyright file is read and a document of all of
them validated, so every licence name Debian 12 uses meets the SPDX mapping.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_oci import run, sample_image, tool

from bundler.image import oci, referrers
from bundler.image.oci import LayoutError, read_index, read_json_blob, write_oci_layout
from bundler.image.referrers import CYCLONEDX_JSON, SPDX_JSON, SUBJECT, attach_artifact
from bundler.packages.contents import Contents, OsRelease, PackedFile, PackedPackage
from bundler.packages.dpkg import Package, parse_stanzas
from bundler.packages.licences import SPDX_IDS, copyright_licences, spdx_expression, spdx_licence
from bundler.packages.sbom import cyclonedx_document, document_bytes, purl, spdx_document

EPOCH = 1_700_000_000
BOOKWORM = OsRelease("debian", "12", "Debian GNU/Linux 12 (bookworm)", "bookworm", "12.12")
DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"


def package(name: str, version: str, source: str = "", **fields: str) -> Package:
    stanza = [
        ("Package", name),
        ("Status", "install ok installed"),
        ("Architecture", fields.pop("arch", "amd64")),
        ("Maintainer", fields.pop("maintainer", "GNU Libc Maintainers <debian-glibc@lists.d.o>")),
        ("Version", version),
    ]
    if source:
        stanza.append(("Source", source))
    stanza += [(key.replace("_", "-").title(), value) for key, value in fields.items()]
    return Package(name, tuple(stanza))


def packed_file(path: str, owner: str | None) -> PackedFile:
    data = path.encode()
    return PackedFile(
        path,
        len(data),
        hashlib.sha256(data).hexdigest(),
        hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        owner,
    )


def sample_contents(epoch: int = EPOCH) -> Contents:
    libssl = package(
        "libssl3",
        "1:2.3-4",
        "openssl (2.3-4)",
        maintainer="Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>",
        description="Secure Sockets Layer toolkit - shared libraries\n This package ...",
        section="libs",
    )
    libc = package("libc6", "2.36-9+deb12u4", "glibc", section="libs")
    bash = package("bash", "5.2.15-2+b2", "bash (5.2.15-2)", maintainer="Matthias Klose <d@d.o>")
    cxx = package("libstdc++6", "12.2.0-14", "gcc-12")
    packages = (
        PackedPackage(bash, ("GPL-3+", "public-domain"), "/usr/share/doc/bash/copyright"),
        PackedPackage(libc, (), None),
        PackedPackage(libssl, ("Apache-2.0", "Artistic or GPL-1+"), None),
        PackedPackage(cxx, ("GPL-3+ with GCC-Runtime-3.1 exception",), None),
    )
    files = (
        packed_file("/etc/app.conf", None),
        packed_file("/usr/bin/bash", "bash"),
        packed_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc6"),
        packed_file("/usr/lib/x86_64-linux-gnu/libssl.so.3", "libssl3"),
        packed_file("/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30", "libstdc++6"),
        packed_file("/usr/share/doc/bash/copyright", "bash"),
    )
    return Contents("app:1", packages, files, BOOKWORM, epoch)


# ----- purl -------------------------------------------------------------------------------------


def test_purls_are_written_as_syft_and_trivy_write_them() -> None:
    contents = sample_contents()
    found = {p.package.name: purl(p.package, BOOKWORM) for p in contents.packages}
    assert found == {
        "bash": "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
        "libc6": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
        # purl leaves ':' as it is everywhere (PURL-SPECIFICATION: "unambiguous unencoded").
        "libssl3": "pkg:deb/debian/libssl3@1:2.3-4?arch=amd64&distro=debian-12&upstream=openssl",
        "libstdc++6": (
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12&upstream=gcc-12"
        ),
    }


def test_purl_reads_back_and_follows_the_distribution() -> None:
    from packageurl import PackageURL

    libssl = sample_contents().packages[2].package
    parsed = PackageURL.from_string(purl(libssl, BOOKWORM))
    assert (parsed.name, parsed.version) == ("libssl3", "1:2.3-4")
    jammy = OsRelease("ubuntu", "22.04")
    assert purl(libssl, jammy).startswith(
        "pkg:deb/ubuntu/libssl3@1:2.3-4?arch=amd64&distro=ubuntu-22.04"
    )
    assert purl(libssl, None) == "pkg:deb/debian/libssl3@1:2.3-4?arch=amd64&upstream=openssl"
    sid = OsRelease("debian", "", version_codename="trixie")
    assert "distro=debian-trixie" in purl(libssl, sid)


# ----- licences ---------------------------------------------------------------------------------


def test_licences_of_files_paragraphs_only_first_line_each_once() -> None:
    text = (
        DEP5
        + "Upstream-Name: x\n\n"
        + "Files: *\nCopyright: 2020 A\nLicense: GPL-2+\n\n"
        + "Files: lib/*\nCopyright: B\nLicense: LGPL-2.1+  or\n  Expat\n text of it\n\n"
        + "Files: doc/*\nCopyright: C\nLicense: GPL-2+\n\n"
        + "License: GPL-2+\n This program is free software...\n\n"
        + "License: Apache-2.0\n A definition no Files paragraph uses.\n"
    )
    assert copyright_licences(text) == ("GPL-2+", "LGPL-2.1+ or")


def test_format_line_variants_and_files_that_are_not_machine_readable() -> None:
    body = "\nFiles: *\nCopyright: A\nLicense: Expat\n"
    for url in (
        "http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0",
    ):
        assert copyright_licences(f"Format: {url}\n{body}") == ("Expat",)
    assert copyright_licences("This is the Debian prepackaged version of bash.\n" + body) == ()
    assert copyright_licences("") == ()
    assert copyright_licences("Format: https://example.org/other\n" + body) == ()


def test_spdx_names_and_operators() -> None:
    cases = {
        ("GPL-2",): "GPL-2.0-only",
        ("GPL-2+",): "GPL-2.0-or-later",
        ("LGPL-2.1+",): "LGPL-2.1-or-later",
        ("GPL-3+", "LGPL-3+"): "GPL-3.0-or-later AND LGPL-3.0-or-later",
        ("BSD-2-clause", "BSD-3-clause"): "BSD-2-Clause AND BSD-3-Clause",
        ("Expat", "MIT"): "MIT",
        ("Apache-2.0 or Zlib",): "Apache-2.0 OR Zlib",
        ("ISC and MPL-2.0",): "ISC AND MPL-2.0",
        ("Artistic or GPL-1+",): "Artistic-1.0-Perl OR GPL-1.0-or-later",
        ("BSD-3-clause~Google",): "BSD-3-Clause",
        ("GPL-2 with Linux-syscall-note exception",): "GPL-2.0-only WITH Linux-syscall-note",
        ("GPL-3+ with Bison exception",): "GPL-3.0-or-later WITH Bison-exception-2.2",
        # A comma lowers the next operator: (GPL-1+ or Artistic) and BSD-3-clause.
        ("GPL-1+ or Artistic, and BSD-3-clause",): (
            "(GPL-1.0-or-later OR Artistic-1.0-Perl) AND BSD-3-Clause"
        ),
        # Without one, and binds tighter, as in SPDX.
        ("MIT or GPL-2 and ISC",): "MIT OR (GPL-2.0-only AND ISC)",
        ("GPL-3+", "GPL-3+ and ISC"): "GPL-3.0-or-later AND ISC",
    }
    for debian, spdx in cases.items():
        assert spdx_expression(debian) == spdx, debian
    assert spdx_expression(()) is None


def test_names_with_no_spdx_id_become_declared_licence_refs() -> None:
    found = spdx_licence(("public-domain", "GPL-2+ with Autoconf-data exception", "MIT/X11"))
    assert found is not None
    assert found.expression == (
        "LicenseRef-public-domain AND LicenseRef-GPL-2plus-with-Autoconf-data-exception"
        " AND LicenseRef-MIT-X11"
    )
    assert dict(found.refs) == {
        "LicenseRef-public-domain": "public-domain",
        "LicenseRef-GPL-2plus-with-Autoconf-data-exception": "GPL-2+ with Autoconf-data exception",
        "LicenseRef-MIT-X11": "MIT/X11",
    }
    for ref, _ in found.refs:
        assert re.fullmatch(r"LicenseRef-[A-Za-z0-9.-]+", ref)


# ----- SPDX -------------------------------------------------------------------------------------


def spdx_messages(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(document_bytes(document))
    return [m.validation_message for m in validate_full_spdx_document(parse_file(str(path)))]


def test_spdx_document_passes_spdx_tools_validation(tmp_path: Path) -> None:
    assert spdx_messages(tmp_path, spdx_document(sample_contents())) == []


def test_spdx_document_says_what_the_image_holds() -> None:
    document = spdx_document(sample_contents())
    assert document["creationInfo"] == {
        "created": "2023-11-14T22:13:20Z",
        "creators": ["Tool: scratchpack-0.1.0"],
    }
    packages = {p["name"]: p for p in document["packages"]}
    image, os, ssl = packages["app:1"], packages["debian"], packages["libssl3"]
    assert image["primaryPackagePurpose"] == "CONTAINER"
    assert (os["primaryPackagePurpose"], os["versionInfo"]) == ("OPERATING-SYSTEM", "12")
    assert ssl["versionInfo"] == "1:2.3-4"
    assert ssl["supplier"] == (
        "Organization: Debian OpenSSL Team (pkg-openssl-devel@alioth-lists.debian.net)"
    )
    assert packages["bash"]["supplier"] == "Person: Matthias Klose (d@d.o)"
    assert ssl["licenseDeclared"] == "Apache-2.0 AND (Artistic-1.0-Perl OR GPL-1.0-or-later)"
    assert packages["libc6"]["licenseDeclared"] == "NOASSERTION"
    assert ssl["sourceInfo"] == "built from the Debian source package openssl 2.3-4"
    assert ssl["externalRefs"] == [
        {
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl(sample_contents().packages[2].package, BOOKWORM),
        }
    ]
    assert {r["licenseId"] for r in document["hasExtractedLicensingInfos"]} == {
        "LicenseRef-public-domain",
        "LicenseRef-GPL-3plus-with-GCC-Runtime-3.1-exception",
    }
    files = {f["fileName"]: f for f in document["files"]}
    assert set(files) >= {"./etc/app.conf", "./usr/lib/x86_64-linux-gnu/libssl.so.3"}
    assert [c["algorithm"] for c in files["./etc/app.conf"]["checksums"]] == ["SHA1", "SHA256"]
    assert "No package owns" in files["./etc/app.conf"]["comment"]
    relations = {
        (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
        for r in document["relationships"]
    }
    ids = {f["fileName"]: f["SPDXID"] for f in document["files"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", image["SPDXID"]) in relations
    assert (image["SPDXID"], "CONTAINS", os["SPDXID"]) in relations
    assert (image["SPDXID"], "CONTAINS", ssl["SPDXID"]) in relations
    assert (image["SPDXID"], "CONTAINS", ids["./etc/app.conf"]) in relations
    libssl_so = ids["./usr/lib/x86_64-linux-gnu/libssl.so.3"]
    assert (ssl["SPDXID"], "CONTAINS", libssl_so) in relations
    assert (image["SPDXID"], "CONTAINS", libssl_so) not in relations


def test_documents_are_reproducible_and_follow_their_contents() -> None:
    for make in (spdx_document, cyclonedx_document):
        first = document_bytes(make(sample_contents()))
        assert first == document_bytes(make(sample_contents()))
        assert first.endswith(b"}\n")
        later = document_bytes(make(sample_contents(EPOCH + 1)))
        assert later != first
    namespaces = {spdx_document(sample_contents(e))["documentNamespace"] for e in (1, 2)}
    assert len(namespaces) == 2
    serials = {cyclonedx_document(sample_contents(e))["serialNumber"] for e in (1, 2)}
    assert len(serials) == 2


# ----- CycloneDX --------------------------------------------------------------------------------


def cyclonedx_errors(document: dict[str, Any]) -> object:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(document_bytes(document).decode())


def test_cyclonedx_document_passes_the_strict_1_6_schema() -> None:
    assert cyclonedx_errors(cyclonedx_document(sample_contents())) is None


def test_cyclonedx_document_says_what_the_image_holds() -> None:
    document = cyclonedx_document(sample_contents())
    assert re.fullmatch(
        r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        document["serialNumber"],
    )
    assert document["metadata"]["timestamp"] == "2023-11-14T22:13:20Z"
    assert document["metadata"]["component"]["type"] == "container"
    components = {c["name"]: c for c in document["components"]}
    os = components["debian"]
    assert (os["type"], os["version"]) == ("operating-system", "12")
    ssl = components["libssl3"]
    assert ssl["bom-ref"] == ssl["purl"] == purl(sample_contents().packages[2].package, BOOKWORM)
    assert ssl["type"] == "library"
    assert components["bash"]["type"] == "application"
    assert [lic["license"].get("id") or lic["license"]["name"] for lic in ssl["licenses"]] == [
        "Apache-2.0",
        "Artistic-1.0-Perl",
        "GPL-1.0-or-later",
    ]
    bash_licences = [lic["license"] for lic in components["bash"]["licenses"]]
    assert {"name": "public-domain", "acknowledgement": "declared"} in bash_licences
    properties = {p["name"]: p["value"] for p in ssl["properties"]}
    assert properties["scratchpack:package:source"] == "openssl"
    assert properties["scratchpack:package:architecture"] == "amd64"
    # Files are parts of their package (nested), files of no package are the image's own.
    assert [f["name"] for f in ssl["components"]] == ["/usr/lib/x86_64-linux-gnu/libssl.so.3"]
    assert [h["alg"] for h in ssl["components"][0]["hashes"]] == ["SHA-1", "SHA-256"]
    conf = components["/etc/app.conf"]
    assert conf["type"] == "file"
    needs = {d["ref"]: d["dependsOn"] for d in document["dependencies"]}
    assert needs["image:app:1"] == sorted([os["bom-ref"], conf["bom-ref"]])
    assert needs[os["bom-ref"]] == sorted(c["purl"] for c in components.values() if "purl" in c)


def test_documents_without_an_os_or_packages_are_valid(tmp_path: Path) -> None:
    bare = Contents("static", (), (packed_file("/app", None),), None, 0)
    assert spdx_messages(tmp_path, spdx_document(bare)) == []
    assert cyclonedx_errors(cyclonedx_document(bare)) is None
    assert cyclonedx_document(bare)["dependencies"] == [
        {"ref": "image:static", "dependsOn": ["file:/app"]}
    ]


# ----- the real tree ----------------------------------------------------------------------------


@pytest.mark.debootstrap
def test_real_copyright_files(debootstrap_root: Path) -> None:
    doc = debootstrap_root / "usr/share/doc"

    def licences(name: str) -> tuple[str, ...]:
        return copyright_licences((doc / name / "copyright").read_text(errors="replace"))

    assert licences("zlib1g") == ("Zlib",)
    assert spdx_expression(licences("libssl3")) == (
        "Apache-2.0 AND (Artistic-1.0-Perl OR GPL-1.0-or-later)"
    )
    assert spdx_expression(licences("redis-server")) == "BSD-3-Clause AND BSD-2-Clause AND MIT"
    systemd = spdx_expression(licences("libsystemd0"))
    assert systemd is not None
    assert "GPL-2.0-only WITH Linux-syscall-note" in systemd
    assert "LicenseRef-public-domain" in systemd
    assert licences("libc6") == ()  # not machine-readable


@pytest.mark.debootstrap
def test_documents_of_every_package_of_the_tree_validate(
    debootstrap_root: Path, tmp_path: Path
) -> None:
    """Every licence name of Debian 12's copyright files either maps to the SPDX list or is
    declared; every Maintainer makes a supplier both formats accept."""
    status = (debootstrap_root / "var/lib/dpkg/status").read_text()
    packed = []
    for fields in parse_stanzas(status):
        pkg = Package(dict(fields)["Package"], fields)
        path = debootstrap_root / "usr/share/doc" / pkg.name / "copyright"
        text = path.read_text(errors="replace") if path.is_file() else ""
        packed.append(PackedPackage(pkg, copyright_licences(text), None))
    readable = [p for p in packed if p.licences]
    assert len(readable) > 100
    contents = Contents("tree", tuple(sorted(packed, key=lambda p: p.package.name)), (), BOOKWORM)
    assert spdx_messages(tmp_path, spdx_document(contents)) == []
    assert cyclonedx_errors(cyclonedx_document(contents)) is None


# ----- artifacts in an OCI layout ---------------------------------------------------------------

EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
_MEDIA = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
_DESCRIPTOR = {
    "type": "object",
    "required": ["mediaType", "digest", "size"],
    "properties": {
        "mediaType": {"type": "string", "pattern": _MEDIA},
        "digest": {"type": "string", "pattern": r"^sha256:[a-f0-9]{64}$"},
        "size": {"type": "integer", "minimum": 0},
        "artifactType": {"type": "string", "pattern": _MEDIA},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
# image-spec v1.1 schema/image-manifest-schema.json, with what manifest.md asks of artifacts
# (artifactType when the config is the empty descriptor; at least one layer).
ARTIFACT_MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["schemaVersion", "mediaType", "artifactType", "config", "layers", "subject"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": "application/vnd.oci.image.manifest.v1+json"},
        "artifactType": {"type": "string", "pattern": _MEDIA},
        "config": {
            **_DESCRIPTOR,
            "properties": {
                **_DESCRIPTOR["properties"],
                "mediaType": {"const": "application/vnd.oci.empty.v1+json"},
                "digest": {"const": EMPTY_DIGEST},
                "size": {"const": 2},
            },
        },
        "layers": {"type": "array", "minItems": 1, "items": _DESCRIPTOR},
        "subject": _DESCRIPTOR,
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def layout_with_image(tmp_path: Path) -> tuple[Path, str]:
    layout = tmp_path / "layout"
    return layout, write_oci_layout(layout, sample_image(tmp_path), "sample")


def blob_bytes(layout: Path, digest: str) -> bytes:
    data = oci.blob_path(layout, digest).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def test_an_attached_sbom_is_an_oci_1_1_artifact_listed_in_the_index(tmp_path: Path) -> None:
    import jsonschema

    layout, image = layout_with_image(tmp_path)
    data = document_bytes(spdx_document(sample_contents()))
    created = {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"}
    digest = attach_artifact(
        layout, image, SPDX_JSON, SPDX_JSON, data, created, title="sbom.spdx.json"
    )
    entries = {m["digest"]: m for m in read_index(layout)["manifests"]}
    entry = entries[digest]
    assert entry["artifactType"] == SPDX_JSON
    assert entry["annotations"] == {**created, SUBJECT: f"sample@{image}"}
    assert oci.REF_NAME not in entry["annotations"]
    manifest = json.loads(blob_bytes(layout, digest))
    jsonschema.validate(manifest, ARTIFACT_MANIFEST_SCHEMA)
    assert manifest["subject"] == {
        "mediaType": oci.MEDIA_MANIFEST,
        "digest": image,
        "size": len(blob_bytes(layout, image)),
    }
    assert blob_bytes(layout, EMPTY_DIGEST) == b"{}"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == SPDX_JSON
    assert layer["annotations"] == {"org.opencontainers.image.title": "sbom.spdx.json"}
    assert blob_bytes(layout, layer["digest"]) == data
    assert manifest["annotations"] == created
    assert not [p for p in layout.rglob("*") if p.name.startswith(oci.TEMP_PREFIX)]


def test_attaching_again_replaces_ours_and_other_types_stay(tmp_path: Path) -> None:
    layout, image = layout_with_image(tmp_path)
    first = attach_artifact(layout, image, SPDX_JSON, SPDX_JSON, b'{"a": 1}')
    cdx = attach_artifact(layout, image, CYCLONEDX_JSON, CYCLONEDX_JSON, b'{"b": 1}')
    second = attach_artifact(layout, image, SPDX_JSON, SPDX_JSON, b'{"a": 2}')
    assert attach_artifact(layout, image, SPDX_JSON, SPDX_JSON, b'{"a": 2}') == second
    digests = [m["digest"] for m in read_index(layout)["manifests"]]
    assert sorted(digests) == sorted([image, cdx, second])
    assert first not in digests


def test_attaching_to_a_manifest_the_index_lacks_is_refused(tmp_path: Path) -> None:
    layout, _ = layout_with_image(tmp_path)
    with pytest.raises(LayoutError, match="no manifest"):
        attach_artifact(layout, "sha256:" + "0" * 64, SPDX_JSON, SPDX_JSON, b"{}")
    with pytest.raises(LayoutError, match="not an OCI layout"):
        attach_artifact(tmp_path / "none", "sha256:" + "0" * 64, SPDX_JSON, SPDX_JSON, b"{}")


def test_artifacts_go_with_their_image_when_its_name_is_replaced(tmp_path: Path) -> None:
    layout, image = layout_with_image(tmp_path)
    other = write_oci_layout(layout, sample_image(tmp_path), "other")  # the same manifest
    sbom = attach_artifact(layout, image, SPDX_JSON, SPDX_JSON, b"{}")
    # Its signature, say: an artifact whose subject is the artifact.
    signed = attach_artifact(layout, sbom, "application/example", "text/plain", b"sig")
    # The same image again under its name: the subject stays, and so do its artifacts.
    write_oci_layout(layout, sample_image(tmp_path), "sample")
    assert {sbom, signed} <= {m["digest"] for m in read_index(layout)["manifests"]}
    # Another image named "sample": the old manifest is still "other", so they stay.
    changed = sample_image(tmp_path)
    changed = type(changed)(changed.layers[:1], changed.config, changed.platform, changed.epoch)
    write_oci_layout(layout, changed, "sample")
    assert other == image
    assert {sbom, signed} <= {m["digest"] for m in read_index(layout)["manifests"]}
    # "other" replaced too: the old manifest left the index, its artifacts with it.
    now = write_oci_layout(layout, changed, "other")
    assert {m["digest"] for m in read_index(layout)["manifests"]} == {now}
    assert read_json_blob(layout, sbom)["subject"]["digest"] == image  # blobs stay


def test_skopeo_and_umoci_still_read_an_image_with_artifacts(tmp_path: Path) -> None:
    skopeo, umoci = tool("skopeo"), tool("umoci")
    layout, image = layout_with_image(tmp_path)
    attach_artifact(
        layout, image, SPDX_JSON, SPDX_JSON, document_bytes(spdx_document(sample_contents()))
    )
    attach_artifact(
        layout,
        image,
        CYCLONEDX_JSON,
        CYCLONEDX_JSON,
        document_bytes(cyclonedx_document(sample_contents())),
    )
    raw = run(skopeo, "inspect", "--raw", f"oci:{layout}:sample").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == image
    run(skopeo, "copy", f"oci:{layout}:sample", f"dir:{tmp_path / 'copy'}")
    run(umoci, "unpack", "--rootless", "--image", f"{layout}:sample", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle/rootfs/usr/bin/prog").is_file()


def test_referrers_module_reuses_the_layout_lock() -> None:
    assert referrers.layout_writer is oci.layout_writer


def test_every_name_of_the_table_is_an_id_of_both_formats(tmp_path: Path) -> None:
    exceptions = ("Linux-syscall-note", "Bison", "Autoconf", "Libtool", "Texinfo")
    names = (
        *sorted(SPDX_IDS),
        "GFDL-NIV-1.3+",
        "LGPL-2+",
        *(f"GPL-2 with {e} exception" for e in exceptions[:1]),
        *(f"GPL-3+ with {e} exception" for e in exceptions[1:]),
        "GPL-2+ with Autoconf exception",
    )
    pkg = package("everything", "1.0")
    contents = Contents("t", (PackedPackage(pkg, names, None),), (), BOOKWORM)
    assert "LicenseRef" not in spdx_document(contents)["packages"][-1]["licenseDeclared"]
    assert spdx_messages(tmp_path, spdx_document(contents)) == []
    assert cyclonedx_errors(cyclonedx_document(contents)) is None
