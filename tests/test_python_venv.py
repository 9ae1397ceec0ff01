"""A venv packs with no trace: its interpreter's link chain, pyvenv.cfg, the standard library
less what never runs in a container, and every distribution whole but the installers.

The root is made here: a python3.11 (a copy of true: nothing runs it), a standard library
folder with the parts that are left out, and a venv whose site-packages holds distributions
with RECORDs (one of them with a test suite, C headers and an "extension module" that is an
ELF file, whose closure must come), pip and setuptools with its start-up .pth, and a Debian
style dist-packages module owned by a dpkg package. The Docker proof with real wheels is
tests/test_docker_python.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")

SITE = "opt/app/lib/python3.11/site-packages"


def _write(path: Path, text: str = "x = 1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _dist(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    """A dist-info with METADATA, INSTALLER, licences and a RECORD of ``files`` (written)."""
    info = site / f"{name}-{version}.dist-info"
    _write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
    _write(info / "INSTALLER", "pip\n")
    _write(info / "licenses" / "LICENSE", "MIT\n")
    for rel, text in files.items():
        _write((site / rel).resolve() if rel.startswith("..") else site / rel, text)
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/INSTALLER", f"{info.name}/RECORD"]
    rows.append(f"{info.name}/licenses/LICENSE")
    _write(info / "RECORD", "".join(f"{row},,\n" for row in rows))


def _root(tmp_path: Path) -> Path:
    root = make_root(tmp_path / "root")
    shutil.copy2("/usr/bin/true", root / "usr/bin/python3.11")
    (root / "usr/bin/python3").symlink_to("python3.11")
    stdlib = root / "usr/lib/python3.11"
    _write(stdlib / "os.py")
    _write(stdlib / "encodings/__init__.py")
    _write(stdlib / "json/__init__.py")
    _write(stdlib / "test/test_os.py", "# " + "t" * 5000)
    _write(stdlib / "idlelib/idle.py")
    _write(stdlib / "ensurepip/__init__.py")
    _write(stdlib / "tkinter/__init__.py")  # no _tkinter module: no Tk
    _write(stdlib / "lib2to3/main.py")
    (stdlib / "lib-dynload").mkdir()
    shutil.copy2("/usr/bin/true", stdlib / "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so")
    _write(
        root / "opt/app/pyvenv.cfg",
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n",
    )
    (root / "opt/app/bin").mkdir(parents=True)
    (root / "opt/app/bin/python3").symlink_to("/usr/bin/python3")
    (root / "opt/app/bin/python").symlink_to("python3")
    (root / "opt/app/lib64").symlink_to("lib")
    site = root / SITE
    _dist(
        site,
        "numpyish",
        "1.2",
        {
            "numpyish/__init__.py": "from . import fft\n",
            "numpyish/fft.py": "",
            "numpyish/tests/test_fft.py": "# " + "t" * 20000,
            "numpyish/core/include/numpyish.h": "/* header */\n",
            "../../../bin/numpyish-config": "#!/opt/app/bin/python\n",
        },
    )
    shutil.copy2("/usr/bin/true", site / "numpyish/_core.cpython-311-x86_64-linux-gnu.so")
    record = site / "numpyish-1.2.dist-info/RECORD"
    record.write_text(record.read_text() + "numpyish/_core.cpython-311-x86_64-linux-gnu.so,,\n")
    _dist(site, "flaskish", "3.0", {"flaskish/__init__.py": "import numpyish\n"})
    _dist(site, "pip", "23.0", {"pip/__init__.py": "", "../../../bin/pip": "#!python\n"})
    _dist(
        site,
        "setuptools",
        "66.0",
        {
            "setuptools/__init__.py": "",
            "_distutils_hack/__init__.py": "",
            "distutils-precedence.pth": "import _distutils_hack\n",
        },
    )
    _write(root / "srv/app/app.py", "import flaskish\n")
    return root


def _pack(root: Path, out: Path, *args: str) -> tuple[set[str], str]:
    result = run("--root", str(root), *args, "-o", str(out), "--json", "-v")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    return {f["path"] for f in manifest["files"]}, result.stderr


def test_a_venv_packs_whole_without_a_trace(tmp_path: Path) -> None:
    root = _root(tmp_path)
    paths, log = _pack(root, tmp_path / "out", "/opt/app/bin/python", "--extra", "/srv/app")
    site = "/" + SITE
    # The link chain and the venv's configuration, as spelt.
    assert {
        "/opt/app/bin/python",
        "/opt/app/bin/python3",
        "/usr/bin/python3",
        "/usr/bin/python3.11",
        "/opt/app/pyvenv.cfg",
        "/opt/app/lib64",
    } <= paths
    # The standard library less what never runs in a container.
    assert {
        "/usr/lib/python3.11/os.py",
        "/usr/lib/python3.11/json/__init__.py",
        "/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
    } <= paths
    for left in (
        "test/test_os.py",
        "idlelib/idle.py",
        "ensurepip/__init__.py",
        "tkinter/__init__.py",
        "lib2to3/main.py",
    ):
        assert f"/usr/lib/python3.11/{left}" not in paths, left
    # Every distribution whole (RECORD, dist-info, scripts, extension modules)...
    for name in ("numpyish-1.2", "flaskish-3.0"):
        for item in ("METADATA", "RECORD", "INSTALLER", "licenses/LICENSE"):
            assert f"{site}/{name}.dist-info/{item}" in paths
    assert {
        f"{site}/numpyish/fft.py",
        "/opt/app/bin/numpyish-config",
        f"{site}/numpyish/_core.cpython-311-x86_64-linux-gnu.so",
    } <= paths
    # ... less its tests and headers, and no installer (nor setuptools' start-up hook).
    assert f"{site}/numpyish/tests/test_fft.py" not in paths
    assert f"{site}/numpyish/core/include/numpyish.h" not in paths
    assert not any(
        p.startswith((f"{site}/pip", f"{site}/setuptools", f"{site}/_distutils")) for p in paths
    )
    assert f"{site}/distutils-precedence.pth" not in paths and "/opt/app/bin/pip" not in paths
    assert "Python: left out installers (pip, setuptools, wheel)" in log
    assert "Python: left out test suites of distributions, 0.0 MB in 1 files" in log


def test_an_imported_installer_stays(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _write(root / "srv/app/app.py", "import pkg_resources\n")
    paths, _log = _pack(root, tmp_path / "out", "/opt/app/bin/python", "--extra", "/srv/app")
    assert f"/{SITE}/setuptools/__init__.py" in paths
    assert f"/{SITE}/pip/__init__.py" not in paths


def test_a_program_found_on_path_in_a_venv_is_named(tmp_path: Path) -> None:
    """This machine's own python3.11 in a venv first on PATH (as after ``activate``): the
    pack names the venv's interpreter and its chain, and the image's python starts
    read-only with its standard library and no compiling."""
    base = Path("/usr/bin/python3.11")
    if not base.exists() or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs /usr/bin/python3.11, root and unshare")
    venv = tmp_path / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    out = tmp_path / "out"
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin"}
    result = run("python", "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr
    chain = f"{venv}/bin/python -> {venv}/bin/python3.11"
    assert f"python on PATH is the interpreter of the venv {venv} ({chain}" in result.stderr
    rootfs = out / "rootfs"
    script = (
        f'mount --bind "{rootfs}" "{rootfs}" && mount -o remount,bind,ro "{rootfs}" && '
        f'exec chroot "{rootfs}" {venv}/bin/python -v -c "import json, sys; print(sys.prefix)"'
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(venv)
    assert "bytecode is stale" not in done.stderr


def test_one_touched_file_brings_its_whole_distribution(tmp_path: Path) -> None:
    """Not a venv: the system interpreter with one module named by --extra; its distribution
    comes whole (the other module, its dist-info), the other distributions do not."""
    root = _root(tmp_path)
    paths, log = _pack(
        root, tmp_path / "out", "/usr/bin/python3", "--extra", f"/{SITE}/numpyish/__init__.py"
    )
    assert f"/{SITE}/numpyish/fft.py" in paths
    assert f"/{SITE}/numpyish-1.2.dist-info/METADATA" in paths
    assert f"/{SITE}/flaskish/__init__.py" not in paths
    assert "Python: 1 distributions packed whole: numpyish 1.2" in log


def test_sboms_and_sizes_name_the_distributions(tmp_path: Path) -> None:
    root = _root(tmp_path)
    out = tmp_path / "out"
    result = run("--root", str(root), "/opt/app/bin/python", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    by_package = {p["package"]: p for p in manifest.get("packages", [])}
    assert "pypi:numpyish" in by_package and "pypi:flaskish" in by_package
    cdx = json.loads((out / "sbom.cdx.json").read_text())
    purls = {c.get("purl") for c in cdx["components"]}
    assert {"pkg:pypi/numpyish@1.2", "pkg:pypi/flaskish@3.0"} <= purls
    numpyish = next(c for c in cdx["components"] if c.get("purl") == "pkg:pypi/numpyish@1.2")
    names = {f["name"] for f in numpyish["components"]}
    assert f"/{SITE}/numpyish/fft.py" in names
    spdx = json.loads((out / "sbom.spdx.json").read_text())
    refs = {r["referenceLocator"] for p in spdx["packages"] for r in p.get("externalRefs", [])}
    assert {"pkg:pypi/numpyish@1.2", "pkg:pypi/flaskish@3.0"} <= refs
    assert os.path.isdir(out / "rootfs")


def test_debian_modules_go_by_their_dpkg_package(tmp_path: Path) -> None:
    """A dist-packages module of a Debian package: one packed file brings the package's other
    files there and the pycs py3compile made for them (which no .list names)."""
    root = _root(tmp_path)
    dist = root / "usr/lib/python3/dist-packages"
    for name in ("__init__", "reader"):
        _write(dist / f"yaml/{name}.py")
        _write(dist / f"yaml/__pycache__/{name}.cpython-311.pyc", "not a real pyc")
    _write(dist / "other/__init__.py")  # another package's: stays out
    dpkg = root / "var/lib/dpkg"
    _write(
        dpkg / "status",
        "Package: python3-yaml\nStatus: install ok installed\n"
        "Architecture: amd64\nVersion: 6.0-3\n\n",
    )
    listed = [
        "/usr/lib/python3/dist-packages/yaml",
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
        "/usr/lib/python3/dist-packages/yaml/reader.py",
    ]
    _write(dpkg / "info/python3-yaml.list", "\n".join(listed) + "\n")
    paths, _log = _pack(
        root,
        tmp_path / "out",
        "/usr/bin/python3",
        "--extra",
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
    )
    site = "/usr/lib/python3/dist-packages"
    assert {f"{site}/yaml/reader.py", f"{site}/yaml/__pycache__/reader.cpython-311.pyc"} <= paths
    assert f"{site}/other/__init__.py" not in paths
