"""Every pyc in the image is valid for the source beside it: checked-hash pycs (PEP 552).

Unit tests build pycs with this interpreter's py_compile; the end-to-end tests pack Debian's
python3 of bookworm (3.11, SipHash-1-3) and bullseye (3.9, SipHash-2-4) and run the packed
rootfs read-only under chroot with ``python3 -v``, which says for each module whether its pyc
matched or its source was compiled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import py_compile
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import release_root
from fakeroot import run

from bundler.loader.rootfs import FsRoot
from bundler.staging.plan import FILE, SYMLINK, Entry, Plan
from bundler.staging.pycache import (
    CHECKED_HASH,
    hash_pycs,
    magic_of,
    siphash,
    source_hash,
    source_of,
)

RUNNING_MAGIC = struct.unpack("<H", importlib.util.MAGIC_NUMBER[:2])[0]


def test_siphash13_is_the_running_interpreters_source_hash() -> None:
    key = int.from_bytes(importlib.util.MAGIC_NUMBER, "little")
    for length in (0, 1, 7, 8, 9, 15, 16, 17, 255, 4096):
        data = os.urandom(length)
        assert siphash(key, 0, data, 1, 3).to_bytes(8, "little") == importlib.util.source_hash(data)
    assert source_hash(RUNNING_MAGIC, b"x = 1\n") == importlib.util.source_hash(b"x = 1\n")


def test_siphash24_gives_the_reference_vectors() -> None:
    """The SipHash paper's test vectors (key 00..0f, messages 00..n-1)."""
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert siphash(k0, k1, b"", 2, 4) == 0x726FDB47DD0E0E31
    assert siphash(k0, k1, bytes(range(15)), 2, 4) == 0xA129CA6149BE45E5


def test_source_of_names_the_module_beside_the_cache() -> None:
    assert source_of("/a/__pycache__/m.cpython-311.pyc") == "/a/m.py"
    assert source_of("/a/__pycache__/m.cpython-311.opt-2.pyc") == "/a/m.py"
    assert source_of("/a/m.pyc") is None  # a legacy sourceless pyc: no source to check
    assert source_of("/a/__pycache__/x.txt") is None


def _pyc(folder: Path, name: str, text: str) -> tuple[Path, Path]:
    source = folder / f"{name}.py"
    source.write_text(text)
    pyc = Path(
        py_compile.compile(
            str(source),
            cfile=str(folder / "__pycache__" / f"{name}.cpython-311.pyc"),
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            doraise=True,
        )
    )
    return source, pyc


def _entry(path: str, host: Path) -> Entry:
    st = host.stat()
    return Entry(
        path, FILE, 0o644, "extra", source=str(host), size=st.st_size, mtime=int(st.st_mtime)
    )


def test_timestamp_pycs_become_checked_hash_pycs_of_their_source(tmp_path: Path) -> None:
    (tmp_path / "__pycache__").mkdir()
    good_src, good_pyc = _pyc(tmp_path, "good", "VALUE = 42\n")
    old_src, old_pyc = _pyc(tmp_path, "old", "VALUE = 1\n")
    os.utime(old_src, (1_000_000, 1_000_000))  # edited after compiling: the pyc is stale
    _real, linked_pyc = _pyc(tmp_path, "real", "VALUE = 3\n")
    _lone_src, lone_pyc = _pyc(tmp_path, "lone", "VALUE = 4\n")
    plan = Plan()
    for name, host in (("good", good_src), ("old", old_src), ("target", _real)):
        plan.entries[f"/app/{name}.py"] = _entry(f"/app/{name}.py", host)
    plan.entries["/app/linked.py"] = Entry(
        "/app/linked.py", SYMLINK, 0o777, "link", target="target.py"
    )
    for name, host in (
        ("good", good_pyc),
        ("old", old_pyc),
        ("linked", linked_pyc),
        ("lone", lone_pyc),
    ):
        path = f"/app/__pycache__/{name}.cpython-311.pyc"
        plan.entries[path] = _entry(path, host)

    report = hash_pycs(plan)

    assert (report.rewritten, report.stale, report.orphans) == (
        2,
        ("/app/__pycache__/old.cpython-311.pyc",),
        1,
    )
    good = plan.entries["/app/__pycache__/good.cpython-311.pyc"]
    assert good.data is not None and good.size == len(good.data)
    original = good_pyc.read_bytes()
    assert good.data[:4] == original[:4] == importlib.util.MAGIC_NUMBER
    assert struct.unpack("<I", good.data[4:8])[0] == CHECKED_HASH
    assert good.data[8:16] == importlib.util.source_hash(good_src.read_bytes())
    assert good.data[16:] == original[16:]  # the code object is the root's, untouched
    linked = plan.entries["/app/__pycache__/linked.cpython-311.pyc"].data
    assert linked is not None and linked[8:16] == importlib.util.source_hash(b"VALUE = 3\n")
    assert plan.entries["/app/__pycache__/old.cpython-311.pyc"].data is None
    assert "/app/__pycache__/lone.cpython-311.pyc" not in plan.entries  # no source: left out
    assert hash_pycs(plan).rewritten == 0  # a second pass leaves them as they are


def test_the_interpreter_accepts_the_rewritten_pyc_without_compiling(tmp_path: Path) -> None:
    """This interpreter imports the rewritten pyc with check_hash_based_pycs=always."""
    app = tmp_path / "app"
    (app / "__pycache__").mkdir(parents=True)
    source, pyc = _pyc(app, "probe", "VALUE = 6 * 7\n")
    plan = Plan()
    plan.entries["/app/probe.py"] = _entry("/app/probe.py", source)
    path = "/app/__pycache__/probe.cpython-311.pyc"
    plan.entries[path] = _entry(path, pyc)
    assert hash_pycs(plan).rewritten == 1
    data = plan.entries[path].data
    assert data is not None
    pyc.write_bytes(data)
    os.utime(source, (0, 0))  # as the tarball clamps it: a timestamp pyc would be stale now
    result = subprocess.run(
        [
            sys.executable,
            "--check-hash-based-pycs",
            "always",
            "-B",
            "-v",
            "-c",
            "import probe; print(probe.VALUE)",
        ],
        cwd=app,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(app)},
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "42"
    assert f"{pyc} matches {source}" in result.stderr


# -- packs of Debian's python3, run read-only -------------------------------------------------


def _need_chroot() -> None:
    if os.geteuid() != 0 or not (shutil.which("chroot") and shutil.which("unshare")):
        pytest.skip("a read-only chroot needs root, chroot and unshare")


def _run_read_only(rootfs: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` in ``rootfs`` mounted read-only (a private mount namespace), as the image runs
    under ``docker run --read-only``."""
    script = (
        f'mount --bind "{rootfs}" "{rootfs}" && mount -o remount,bind,ro "{rootfs}" && '
        f'exec chroot "{rootfs}" "$@"'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )


def _check_every_pyc(rootfs: Path) -> int:
    """Each __pycache__ pyc of the tree is a checked-hash pyc of the source beside it."""
    count = 0
    tree = FsRoot(str(rootfs))
    for pyc in rootfs.rglob("__pycache__/*.pyc"):
        source = source_of("/" + str(pyc.relative_to(rootfs)))
        assert source is not None
        data = pyc.read_bytes()[:16]
        magic = magic_of(data)
        assert magic is not None, pyc
        assert struct.unpack("<I", data[4:8])[0] == CHECKED_HASH, pyc
        text = Path(tree.real_host_path(source)).read_bytes()  # its links followed inside
        assert data[8:16] == source_hash(magic, text), pyc
        count += 1
    return count


def _pack(root: Path, out: Path, trace: str) -> None:
    result = run("/usr/bin/python3", "--root", str(root), "--trace", trace, "-o", str(out))
    assert result.returncode == 0, result.stderr


WORK = (
    "import json, email.message, decimal; print(json.dumps([decimal.Decimal(7) * 6], default=str))"
)


@pytest.mark.debootstrap
@pytest.mark.slow
def test_bookworm_python_starts_read_only_without_compiling(
    debootstrap_root: Path, tmp_path: Path
) -> None:
    _need_chroot()
    _pack(debootstrap_root, tmp_path / "a", f"-c '{WORK}'")
    rootfs = tmp_path / "a" / "rootfs"
    assert _check_every_pyc(rootfs) > 50
    result = _run_read_only(rootfs, "/usr/bin/python3", "-v", "-c", WORK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '["42"]'
    compiled = [
        line
        for line in result.stderr.splitlines()
        if "bytecode is stale" in line or line.startswith("# code object from /")
    ]
    assert compiled == []  # each module came from its pyc ("code object from '...pyc'")
    assert " matches /usr/lib/python3.11/json/__init__.py" in result.stderr
    _pack(debootstrap_root, tmp_path / "b", f"-c '{WORK}'")
    digests = [
        hashlib.sha256((tmp_path / o / "rootfs.tar.gz").read_bytes()).hexdigest()
        for o in ("a", "b")
    ]
    assert digests[0] == digests[1]


@pytest.mark.debootstrap
@pytest.mark.slow
def test_bullseye_python39_gets_its_own_interpreters_hashes(tmp_path: Path) -> None:
    """Python 3.9 keys SipHash-2-4 with its own magic number; this interpreter (3.11) uses
    SipHash-1-3: the pycs must carry what 3.9 computes, or every import compiles again."""
    _need_chroot()
    root = release_root("bullseye")
    _pack(root, tmp_path / "out", "-c 'import json'")
    rootfs = tmp_path / "out" / "rootfs"
    assert _check_every_pyc(rootfs) > 20
    assert any(p.name.endswith(".cpython-39.pyc") for p in rootfs.rglob("*.pyc"))
    result = _run_read_only(
        rootfs,
        "/usr/bin/python3",
        "--check-hash-based-pycs",
        "always",
        "-v",
        "-c",
        "import json; print(json.dumps({'a': 1}))",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"a": 1}'
    assert "/json/__pycache__/__init__.cpython-39.pyc matches" in result.stderr
    assert "bytecode is stale" not in result.stderr
    assert "# code object from /" not in result.stderr
