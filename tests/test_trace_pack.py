"""Trace mode in a pack: which program each trace runs, as whom, and what it made is left out.

A database image is the model: ``initdb`` is traced (as the database user: it refuses root)
while ``postgres`` is what the image starts, and the data folder initdb made must not be in the
image (``initdb`` there would refuse a folder that "exists but is not empty"). Small roots made
from this machine's dash and libc; chroot needs root.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

from bundler.errors import UsageError
from bundler.loader.rootfs import FsRoot
from bundler.runtime.needs import trace_user

pytestmark = [
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace"),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and switching users need root"),
    pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host"),
]

PASSWD = "root:x:0:0:root:/root:/bin/sh\nsvc:x:4242:4243:svc:/home/svc:/bin/sh\n"
GROUP = "root:x:0:\nsvc:x:4243:\nextra:x:4300:svc,other\n"


def _root(tmp_path: Path) -> Path:
    root = make_root(
        tmp_path / "root",
        programs=["/usr/bin/dash", "/usr/bin/true", "/usr/bin/mkdir"],
        libs=[f"/lib/x86_64-linux-gnu/{lib}" for lib in ("libselinux.so.1", "libpcre2-8.so.0")],
    )
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "srv/existing").mkdir(parents=True)
    (root / "srv/existing/old.txt").write_text("old\n")
    (root / "srv/data.txt").write_text("input\n")
    (root / "home/svc").mkdir(parents=True)
    return root


def _pack(root: Path, out: Path, *args: str) -> tuple[int, str, dict[str, object]]:
    result = run("--root", str(root), *args, "-o", str(out), "--json", "-v")
    manifest = json.loads(result.stdout) if result.returncode == 0 else {}
    return result.returncode, result.stderr, manifest


def _paths(manifest: dict[str, object]) -> set[str]:
    files = manifest["files"]
    assert isinstance(files, list)
    return {entry["path"] for entry in files}


def test_folders_the_traced_run_made_are_left_out(tmp_path: Path) -> None:
    root = _root(tmp_path)
    script = (
        "read x < /srv/data.txt; ls_=$(echo /srv/existing/*); "
        "mkdir -p /srv/made/deeper/still && echo out > /srv/made/deeper/still/f && "
        "mkdir /srv/existing/child && mkdir /srv/asked"
    )
    trace = f"-c '{script}'"
    code, err, manifest = _pack(
        root, tmp_path / "out", "/usr/bin/dash", "--trace", trace, "--mkdir", "/srv/asked"
    )
    assert code == 0, err
    paths = _paths(manifest)
    assert "/srv/data.txt" in paths and "/srv/existing" in paths  # input, and a folder it had
    assert not {p for p in paths if p.startswith("/srv/made")}, "made by the run"
    assert "/srv/existing/child" not in paths
    assert "/srv/asked" in paths, "--mkdir keeps a folder even when the run made it too"
    assert "/srv/made: left out, the traced run made it" in err
    # The root itself is as the run left it: the folders exist there.
    assert (root / "srv/made/deeper/still/f").is_file()


def test_trace_cmd_runs_another_program_than_the_entrypoint(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc/init.conf").write_text("x\n")
    out = tmp_path / "out"
    code, err, manifest = _pack(
        root,
        out,
        "/usr/bin/true",
        "/usr/bin/dash",
        "--entrypoint",
        "true",
        "--trace-cmd",
        "dash -c 'read x < /etc/init.conf'",
    )
    assert code == 0, err
    assert "/etc/init.conf" in _paths(manifest)
    assert 'ENTRYPOINT ["/usr/bin/true"]' in (out / "Dockerfile").read_text()
    assert "tracing /usr/bin/dash -c 'read x < /etc/init.conf'" in err


def test_trace_runs_the_entrypoint_and_trace_cmd_finds_programs_on_path(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc/a.conf").write_text("a\n")
    out = tmp_path / "out"
    code, err, manifest = _pack(
        root,
        out,
        "/usr/bin/true",
        "/usr/bin/dash",
        "--entrypoint",
        "/usr/bin/dash",
        "--trace",
        "-c 'read x < /etc/a.conf'",
        "--trace-cmd",
        "true",
    )
    assert code == 0, err
    assert "/etc/a.conf" in _paths(manifest)
    assert 'ENTRYPOINT ["/usr/bin/dash"]' in (out / "Dockerfile").read_text()


def test_entrypoint_must_be_a_packed_program(tmp_path: Path) -> None:
    root = _root(tmp_path)
    code, err, _ = _pack(root, tmp_path / "out", "/usr/bin/true", "--entrypoint", "dash")
    assert code == 2
    assert "--entrypoint dash: not one of the programs packed (/usr/bin/true)" in err
    assert not (tmp_path / "out").exists()


def test_trace_user_runs_the_trace_as_that_user(tmp_path: Path) -> None:
    root = _root(tmp_path)
    private = root / "srv/root-only.txt"
    private.write_text("root only\n")
    private.chmod(0o600)
    mine = root / "home/svc/mine.txt"
    mine.write_text("svc's\n")
    os.chown(mine, 4242, 4243)
    mine.chmod(0o600)
    trace = "-c 'read x < /home/svc/mine.txt'"
    code, err, manifest = _pack(
        root, tmp_path / "out", "/usr/bin/dash", "--trace-user", "svc", "--trace", trace
    )
    assert code == 0, err
    assert "/home/svc/mine.txt" in _paths(manifest)
    assert "as svc" in err
    # As svc, a root-only file cannot be read: the run fails, as it would in the image.
    denied = run(
        "--root",
        str(root),
        "/usr/bin/dash",
        "--trace-user",
        "svc",
        "--trace",
        "-c 'read x < /srv/root-only.txt'",
        "-o",
        str(tmp_path / "denied"),
    )
    assert denied.returncode == 1, denied.stderr
    assert "Permission denied" in denied.stderr
    assert len([line for line in denied.stderr.splitlines() if line.strip()]) == 1
    # The same trace as root reads it.
    as_root = run(
        "--root",
        str(root),
        "/usr/bin/dash",
        "--trace",
        "-c 'read x < /srv/root-only.txt'",
        "-o",
        str(tmp_path / "as-root"),
        "-q",
    )
    assert as_root.returncode == 0, as_root.stderr


def test_trace_user_is_looked_up_in_the_root(tmp_path: Path) -> None:
    root = FsRoot(str(_root(tmp_path)))
    user = trace_user(root, "svc")
    assert (user.uid, user.gid, user.home) == (4242, 4243, "/home/svc")
    assert user.groups == (4243, 4300)
    assert trace_user(root, "4242").name == "svc"
    assert trace_user(root, "svc:extra").gid == 4300
    numeric = trace_user(root, "5000:5001")
    assert (numeric.uid, numeric.gid, numeric.groups) == (5000, 5001, (5001,))
    with pytest.raises(UsageError, match="--trace-user nobody: no such user in the root"):
        trace_user(root, "nobody")


def test_trace_user_without_a_trace_is_a_usage_error(tmp_path: Path) -> None:
    result = run("true", "--trace-user", "svc", "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "--trace-user needs --trace or --trace-cmd" in result.stderr


def test_files_linked_into_place_by_the_run_are_left_out(tmp_path: Path) -> None:
    """git writes an object to a temporary name and link()s it into place; a later read of the
    final name must not make it an input."""
    root = _root(tmp_path)
    shutil.copy2("/usr/bin/ln", root / "usr/bin/ln")
    script = "echo x > /srv/tmp_obj && ln /srv/tmp_obj /srv/object && read y < /srv/object"
    trace = f"-c '{script}'"
    code, err, manifest = _pack(root, tmp_path / "out", "/usr/bin/dash", "--trace", trace)
    assert code == 0, err
    paths = _paths(manifest)
    assert "/srv/object" not in paths and "/srv/tmp_obj" not in paths
    assert "/srv/data.txt" not in paths  # not read by this run: nothing else was added either
    assert "/srv/object: left out, the traced run wrote it" in err


def test_an_elf_file_only_looked_at_brings_no_closure(tmp_path: Path) -> None:
    """ld.so stat()s $ORIGIN/$PLATFORM folders; /usr/bin/x86_64 is a program on Debian. It is
    packed (existence may matter), but never loaded, so its libraries are not looked for."""
    root = make_root(tmp_path / "root", programs=["/usr/bin/dash"])
    shutil.copy2("/usr/bin/mkdir", root / "usr/bin/x86_64")  # needs libselinux: not in the root
    code, err, manifest = _pack(
        root, tmp_path / "out", "/usr/bin/dash", "--trace", "-c 'test -e /usr/bin/x86_64'"
    )
    assert code == 0, err
    assert "/usr/bin/x86_64" in _paths(manifest)
    assert "libselinux" not in err
