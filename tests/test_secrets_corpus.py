"""False positives of the secrets check: real programs pack with no finding.

The 13 programs of the Docker corpus (tests/test_docker_corpus.py), each with the flags a user
gives it there (``--with``, ``--user``, ``--extra`` of configuration trees, traces), are packed
from the debootstrapped bookworm tree; and this machine's own python3 with ``--with base`` and a
traced import of a dozen standard modules. Not one may be refused or report a finding. The
traces run in the tree (chroot), so the tree is mounted as the lower layer of an overlay: what
the runs write (nginx's temporary folders, initdb's data folder) lands in a temporary upper
layer and the shared cached tree stays as it was. The check's own cost is printed (``-rA``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeroot import run
from test_docker import report
from test_docker_corpus import CORPUS

pytestmark = [pytest.mark.debootstrap, pytest.mark.slow]

CHECKED = re.compile(
    r"secrets check: (\d+) files, (\d+) of them text \(([\d.]+) MB read\), in ([\d.]+) s"
)
PYTHON_TRACE = (
    "-c 'import base64, decimal, hashlib, json, sqlite3, zlib, email, ssl, urllib.request'"
)


def _no_finding(done: subprocess.CompletedProcess[str], what: str) -> str:
    assert done.returncode == 0, f"{what}:\n{done.stderr}"
    assert "secret:" not in done.stderr and "packed on purpose" not in done.stderr, done.stderr
    match = CHECKED.search(done.stderr)
    assert match is not None, done.stderr
    files, text, mb, seconds = match.groups()
    return f"{files} files, {text} read as text ({mb} MB), check {seconds} s"


@pytest.fixture(scope="module")
def overlay(debootstrap_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bookworm tree under a throw-away upper layer, with the corpus's setup done."""
    top = tmp_path_factory.mktemp("overlay")
    upper, work, merged = top / "upper", top / "work", top / "merged"
    for folder in (upper, work, merged):
        folder.mkdir()
    options = f"lowerdir={debootstrap_root},upperdir={upper},workdir={work}"
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount an overlay here (root needed): {mounted.stderr.strip()}")
    try:
        for spec in CORPUS.values():
            for command in spec.setup:
                subprocess.run(["chroot", str(merged), "sh", "-c", command], check=True, timeout=60)
        yield merged
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False, timeout=60)


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_programs_pack_with_no_finding(
    name: str, overlay: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("strace") is None and ("--trace" in CORPUS[name].args):
        pytest.skip("needs strace for the corpus's trace")
    args = shlex.split(CORPUS[name].args)
    done = run("--root", str(overlay), *args, "-o", str(tmp_path / "out"), "-v")
    report(capsys, f"secrets, {name}: {_no_finding(done, name)}")


def test_host_python3_with_base_packs_with_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    python3 = shutil.which("python3")
    if python3 is None or shutil.which("strace") is None:
        pytest.skip("needs python3 and strace on this machine")
    done = run(
        *(python3, "--with", "base", "--trace", PYTHON_TRACE),
        *("-o", str(tmp_path / "out"), "-v"),
    )
    report(capsys, f"secrets, host python3 --with base: {_no_finding(done, 'python3')}")
