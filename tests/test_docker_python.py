"""Proof with a real Docker Engine: Python applications FROM scratch, six apps of six wheel
families, each packed with a trace of one workload and with no trace at all.

The wheelhouse is downloaded on this host by pip (containers reach no package index) for
CPython 3.11 manylinux x86-64 and kept in .cache/python-wheelhouse (made once). In one stage
FROM the bookworm builder of tests/test_docker.py, each app gets its own venv
``python3.11 -m venv /opt/APP`` installed with ``pip --no-index`` and its script in /srv/APP,
and one RUN packs all twelve (and one pack twice, for the bytes). Each image is then built from
scratchpack's Dockerfile and probed with ``docker run --read-only`` running a second workload
that takes other paths into the same distributions (numpy.fft, Pillow's WEBP/TIFF plugins,
gunicorn serving over HTTP, libpq refusing a connection, XSLT, X.509,
``importlib.metadata.version``). Each answer is checked against the same workload run in the
builder and against values this test computes itself (hashes, sums, versions from the wheel
file names).

Figures (printed, and in docs/python.md): image size against the anchor (the interpreter's
standard library + the venv + 20 MB, what ``FROM distroless/python3`` + ``COPY venv`` costs),
import time in the read-only image against the builder (the best of seven interpreters each), and
what syft and trivy list. A few minutes on 2 cores with a warm cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_docker import builder, kit, mb, report, wheelhouse  # noqa: F401
from test_scanners import Scanners, scanners  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
APPS_SRC = REPO / "testdata" / "python-apps"
WHEELHOUSE = REPO / ".cache" / "python-wheelhouse-cp311"
INSTALLERS = {"pip", "setuptools", "wheel"}
ANCHOR_BASE = 20_000_000
SIZE_TARGET, TIME_TARGET = 0.75, 1.3
ROUNDS = 3  # of import-time measures, each the best of seven interpreters

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass(frozen=True)
class App:
    requirements: tuple[str, ...]
    imports: str  # what the import-time measure imports
    dist: str  # the distribution whose version the probe reports
    flags: tuple[str, ...] = ()  # more scratchpack options the app needs


APPS = {
    "web": App(("flask", "gunicorn"), "flask, gunicorn.app.wsgiapp", "flask"),
    "numeric": App(("numpy",), "numpy", "numpy"),
    "imaging": App(("pillow",), "PIL.Image", "pillow"),
    "crypto": App(("cryptography",), "cryptography.fernet, cryptography.x509", "cryptography"),
    # libpq asks for the user's name (getpwuid) before it connects: /etc/passwd must be there.
    "postgres": App(
        ("psycopg2-binary",), "psycopg2, psycopg2.extras", "psycopg2-binary", ("--with", "users")
    ),
    "markup": App(("lxml",), "lxml.etree, lxml.html", "lxml"),
}
AGAIN = "numeric"  # packed twice (no trace): the bytes must agree


def pack_command(name: str, traced: bool) -> str:
    """The scratchpack command line of an app, as a user would type it in the builder."""
    words = ["scratchpack", f"/opt/{name}/bin/python", "--extra", f"/srv/{name}"]
    words += APPS[name].flags
    if traced:
        words += ["--trace", f"/srv/{name}/app.py basic"]
    return shlex.join(words)


# ----- fixtures ---------------------------------------------------------------------------------
def _wheelhouse() -> Path:
    """The wheels of every app's requirements for CPython 3.11 manylinux x86-64 (pip on the
    host, once; kept under .cache)."""
    requirements = sorted({r for app in APPS.values() for r in app.requirements})
    stamp = WHEELHOUSE / "requirements.txt"
    if stamp.is_file() and stamp.read_text().split() == requirements:
        return WHEELHOUSE
    partial = WHEELHOUSE.with_name(WHEELHOUSE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux_2_34_x86_64",
        "-d",
        str(partial),
        *requirements,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"no wheelhouse (pip download failed: {done.stderr.strip()[-300:]})")
    (partial / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    partial.rename(WHEELHOUSE)
    return WHEELHOUSE


def _versions_of_wheels(folder: Path) -> dict[str, str]:
    """{normalised name: version} from the wheel file names (PEP 427)."""
    found = {}
    for wheel in folder.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


@pytest.fixture(scope="module")
def stage(
    kit: Any,  # noqa: F811
    builder: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The builder stage: six venvs, twelve packs (and one again), copied out."""
    wheels = _wheelhouse()
    start = time.monotonic()
    context = tmp_path_factory.mktemp("python-stage")
    shutil.copytree(wheels, context / "src" / "wheels")
    shutil.copytree(APPS_SRC, context / "src" / "apps")
    installs = []
    for name, app in APPS.items():
        installs.append(
            f"python3.11 -m venv /opt/{name}"
            f" && /opt/{name}/bin/pip install -q --disable-pip-version-check --no-index"
            f" --find-links /src/wheels {' '.join(app.requirements)}"
            f" && mkdir -p /srv/{name} && cp /src/apps/{name}.py /srv/{name}/app.py"
            f" && /opt/{name}/bin/pip list --format json > /srv/{name}.dists.json"
        )
    packs = ["mkdir /out"]
    for name in APPS:
        for traced in (True, False):
            out = f"/out/{name}-{'trace' if traced else 'plain'}"
            packs.append(f"{pack_command(name, traced)} -o {out} 2> {out}.log")
    packs.append(f"{pack_command(AGAIN, False)} -o /out/{AGAIN}-again -q")
    lines = [
        f"FROM {builder}",
        "COPY src/ /src/",
        "RUN " + " \\\n && ".join(installs),
        "RUN " + " \\\n && ".join(packs),
    ]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = kit.tag("python-stage")
    kit.build(context, tag, timeout=900)
    built = time.monotonic() - start
    got = tmp_path_factory.mktemp("python-got")
    kit.copy_out(tag, ["/out", *(f"/srv/{name}.dists.json" for name in APPS)], got)
    return {"tag": tag, "out": got / "out", "got": got, "built": built, "wheels": wheels}


def _anchor(kit: Any, stage_tag: str, name: str) -> int:  # noqa: F811
    """Bytes of the standard library folder and of the venv, in the builder, plus the base."""
    script = (
        "import os,sys\n"
        "def size(top):\n"
        "    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(top)"
        " for f in fs if not os.path.islink(os.path.join(d, f)))\n"
        f"print(size('/usr/lib/python3.11') + size('/opt/{name}'))\n"
    )
    code, output = kit.run(stage_tag, ["python3", "-c", script])
    assert code == 0, output
    return int(output.strip().splitlines()[-1]) + ANCHOR_BASE


def run_read_only(
    kit: Any,  # noqa: F811
    image: str,
    argv: list[str],
    timeout: int = 120,
) -> tuple[int, str]:
    """``docker run --read-only IMAGE ARGV`` (to the end): (exit code, stdout)."""
    container = kit.client.containers.create(
        image, command=argv, read_only=True, labels=kit.labels, network_mode="none"
    )
    kit._containers.append(container.id)
    try:
        container.start()
        status = container.wait(timeout=timeout)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        code = int(status.get("StatusCode", -1))
        return code, out if code == 0 else out + err
    finally:
        kit._remove_container(container.id)


def run_builder(kit: Any, image: str, argv: list[str]) -> str:  # noqa: F811
    container = kit.client.containers.create(
        image, command=argv, labels=kit.labels, network_mode="none"
    )
    kit._containers.append(container.id)
    try:
        container.start()
        status = container.wait(timeout=120)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        assert int(status.get("StatusCode", -1)) == 0, f"{argv}: {out}{err}"
        return out
    finally:
        kit._remove_container(container.id)


def import_seconds(runner: Any, image: str, python: str, imports: str) -> float:
    """The best of seven fresh interpreters' time to import IMPORTS, all started by one
    interpreter in one container (so container start-up is not measured)."""
    script = (
        f"import time; t = time.perf_counter(); import {imports}; print(time.perf_counter() - t)"
    )
    driver = (
        "import subprocess, sys\n"
        f"runs = [subprocess.run([sys.executable, '-c', {script!r}], capture_output=True, "
        "text=True, check=True).stdout for _ in range(7)]\n"
        "print(min(float(r) for r in runs))\n"
    )
    return float(runner(image, [python, "-c", driver]).split()[-1])


@pytest.fixture(scope="module")
def images(
    kit: Any,  # noqa: F811
    stage: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """Each pack's Dockerfile built as it is (a context of the Dockerfile and the tarball)."""
    found = {}
    for name in APPS:
        for variant in ("trace", "plain"):
            out = stage["out"] / f"{name}-{variant}"
            context = tmp_path_factory.mktemp(f"ctx-{name}-{variant}")
            for item in ("Dockerfile", "rootfs.tar.gz"):
                os.link(out / item, context / item)
            tag = kit.tag(f"py-{name}-{variant}")
            image = kit.build(context, tag)
            found[f"{name}-{variant}"] = {"tag": tag, "size": int(image.attrs["Size"]), "out": out}
    return found


# ----- expectations the test computes itself ------------------------------------------------------
def expected_more(name: str, versions: dict[str, str]) -> dict[str, Any]:
    """Values of the second workload computed here, not by the image."""
    if name == "web":
        return {
            "body": {"total": 42, "page": "19+23=42"},
            "server": "gunicorn",
            "client": "hello",
            "versions": {d: versions[d] for d in ("flask", "gunicorn", "werkzeug", "jinja2")},
        }
    if name == "numeric":
        return {"fft0": 8.0, "fft1": 0.0, "solve": [2.0, 3.0], "version": versions["numpy"]}
    if name == "imaging":
        shape = {"size": [32, 16]}
        return {
            **{f: {"format": f, **shape} for f in ("WEBP", "TIFF", "JPEG")},
            "blur": 255,
            "version": versions["pillow"],
        }
    if name == "crypto":
        return {
            "fernet": "secret",
            "signature_bytes": 256,
            "serial": 42,
            "cn": "CN=scratch.example",
            "blake2b": hashlib.blake2b(b"scratchpack", digest_size=64).hexdigest(),
            "version": versions["cryptography"],
        }
    if name == "postgres":
        return {
            "dsn": {"dbname": "app", "host": "127.0.0.1", "port": "1", "user": "scratch"},
            "quoted": "'O''Reilly'",
            "json": '{"a": 1}',
            "connect": "refused",
            "libpq": True,
            "version": versions["psycopg2-binary"],
        }
    assert name == "markup"
    squares = [n * n for n in range(1, 6)]
    return {
        "xpath": squares[3:],
        "xslt": f"<sum>{sum(squares)}</sum>",
        "html": "Hello scratch",
        "objectify": 42,
        "version": versions["lxml"],
    }


def packed_distributions(rootfs: Path) -> dict[str, str]:
    """{normalised name: version} of every dist-info METADATA in a packed tree, read here."""
    found = {}
    for metadata in rootfs.glob("opt/*/lib/python3.11/site-packages/*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1)
            for line in metadata.read_text().split("\n\n")[0].splitlines()
            if ": " in line and not line[:1].isspace()
        )
        found[re.sub(r"[-_.]+", "-", fields["Name"]).lower()] = fields["Version"]
    return found


# ----- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(APPS))
def test_each_image_runs_another_workload_read_only(
    kit: Any,  # noqa: F811
    stage: dict[str, Any],
    images: dict[str, dict[str, Any]],
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    versions = _versions_of_wheels(stage["wheels"])
    python = f"/opt/{name}/bin/python"
    argv = [python, f"/srv/{name}/app.py", "more"]
    in_builder = json.loads(run_builder(kit, stage["tag"], argv))
    expected = expected_more(name, versions)
    assert {k: in_builder[k] for k in expected} == expected
    anchor = _anchor(kit, stage["tag"], name)
    for variant in ("trace", "plain"):
        tag = images[f"{name}-{variant}"]["tag"]
        code, output = run_read_only(kit, tag, [f"/srv/{name}/app.py", "more"])
        assert code == 0, f"{name}-{variant}: {output}"
        assert json.loads(output) == in_builder, f"{name}-{variant}"

    def in_builder_run(tag: str, a: list[str]) -> str:
        return run_builder(kit, tag, a)

    def in_image_run(tag: str, a: list[str]) -> str:
        code, out = run_read_only(kit, tag, a[1:])  # the entrypoint is the python
        assert code == 0, out
        return out

    # Rounds that alternate builder and images, so a neighbour's load falls on both sides.
    imports = APPS[name].imports
    builder_time = float("inf")
    times = {"trace": float("inf"), "plain": float("inf")}
    for _round in range(ROUNDS):
        builder_time = min(
            builder_time, import_seconds(in_builder_run, stage["tag"], python, imports)
        )
        for variant in times:
            tag = images[f"{name}-{variant}"]["tag"]
            times[variant] = min(times[variant], import_seconds(in_image_run, tag, python, imports))
    for variant, image_time in times.items():
        size = images[f"{name}-{variant}"]["size"]
        ratio = size / anchor
        report(
            capsys,
            f"{name}-{variant}: {mb(size)} = {ratio:.2f}x the anchor {mb(anchor)}; "
            f"imports {image_time * 1000:.0f} ms read-only vs {builder_time * 1000:.0f} ms in "
            f"the builder ({image_time / builder_time:.2f}x)",
        )
        assert ratio <= SIZE_TARGET, f"{name}-{variant}: {ratio:.2f}x the anchor"
        assert image_time <= TIME_TARGET * builder_time + 0.003, f"{name}-{variant} imports"


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_distribution_of_the_venv_but_the_installers(
    stage: dict[str, Any], name: str
) -> None:
    """No trace: every distribution pip lists in the venv, less pip/setuptools/wheel, with its
    METADATA, RECORD and licences; traced: the app's own requirement at least. No test
    suites, no installer in either."""
    listed = json.loads((stage["got"] / f"{name}.dists.json").read_text())
    venv = {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in listed}
    wanted = {k: v for k, v in venv.items() if k not in INSTALLERS}
    plain = stage["out"] / f"{name}-plain" / "rootfs"
    assert packed_distributions(plain) == wanted
    traced = packed_distributions(stage["out"] / f"{name}-trace" / "rootfs")
    assert APPS[name].dist in traced and traced.items() <= wanted.items()
    site = plain / f"opt/{name}/lib/python3.11/site-packages"
    for info in site.glob("*.dist-info"):
        assert (info / "RECORD").is_file() and (info / "METADATA").is_file()
    assert not list(site.glob("*/tests/*.py")) and not list(site.glob("*/*/tests/*.py"))
    assert not (site / "pip").exists() and not (site / "setuptools").exists()
    assert (plain / "usr/lib/python3.11/os.py").is_file()
    assert not (plain / "usr/lib/python3.11/ensurepip").exists()


@pytest.mark.parametrize("name", sorted(APPS))
def test_scanners_and_sboms_list_every_packed_distribution(
    stage: dict[str, Any],
    scanners: Scanners,  # noqa: F811
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variant in ("trace", "plain"):
        out = stage["out"] / f"{name}-{variant}"
        packed = packed_distributions(out / "rootfs")
        work = tmp_path / variant
        work.mkdir()
        syft = scanners.syft_scan(out / "rootfs", work)
        seen_syft = {
            a["name"].lower(): a["version"] for a in syft["artifacts"] if a["type"] == "python"
        }
        trivy = scanners.trivy_scan(out / "rootfs", work)
        seen_trivy = {
            re.sub(r"[-_.]+", "-", c["name"]).lower(): c.get("version")
            for c in trivy.get("components", [])
            if c.get("purl", "").startswith("pkg:pypi/")
        }
        cdx = json.loads((out / "sbom.cdx.json").read_text())
        ours = {c["purl"] for c in cdx["components"] if c.get("purl", "").startswith("pkg:pypi/")}
        spdx = json.loads((out / "sbom.spdx.json").read_text())
        spdx_purls = {
            ref["referenceLocator"]
            for p in spdx["packages"]
            for ref in p.get("externalRefs", [])
            if ref["referenceLocator"].startswith("pkg:pypi/")
        }
        purls = {f"pkg:pypi/{k}@{v}" for k, v in packed.items()}
        report(
            capsys,
            f"{name}-{variant}: {len(packed)} distributions packed; syft lists "
            f"{len(packed.items() & seen_syft.items())}, trivy "
            f"{len(packed.items() & seen_trivy.items())}, our SBOMs {len(purls & ours)}",
        )
        assert seen_syft.items() >= packed.items()
        assert seen_trivy.items() >= packed.items()
        assert ours == purls and spdx_purls == purls
        debian = [c for c in cdx["components"] if c.get("purl", "").startswith("pkg:deb/")]
        assert debian, "the Debian packages stay beside the Python ones"


def test_two_packs_give_identical_bytes(stage: dict[str, Any]) -> None:
    first = stage["out"] / f"{AGAIN}-plain"
    second = stage["out"] / f"{AGAIN}-again"
    for item in ("rootfs.tar.gz", "sbom.spdx.json", "sbom.cdx.json"):
        assert (first / item).read_bytes() == (second / item).read_bytes(), item


def test_no_pyc_is_stale_in_the_image(stage: dict[str, Any]) -> None:
    """Every __pycache__ pyc of every image is a checked-hash pyc of the source beside it."""
    sys.path.insert(0, str(REPO))
    from bundler.staging.pycache import CHECKED_HASH, magic_of, source_hash

    for out in sorted(stage["out"].glob("*-*/rootfs")):
        count = 0
        for pyc in out.rglob("__pycache__/*.pyc"):
            header = pyc.read_bytes()[:16]
            magic = magic_of(header)
            assert magic is not None
            assert int.from_bytes(header[4:8], "little") == CHECKED_HASH, pyc
            source = pyc.parent.parent / (pyc.name.split(".")[0] + ".py")
            real = source.resolve() if not source.is_symlink() else None
            if real is not None and real.is_file():
                assert header[8:16] == source_hash(magic, real.read_bytes()), pyc
            count += 1
        assert count > 500, out
