"""Packing end to end through the CLI, without an engine: the staged tree is loader-complete,
the tarball is reproducible, and nothing is written when the closure is incomplete."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

pytestmark = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")


def listing(*args: str) -> dict[str, object]:
    result = run("--list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def curl_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    out = tmp_path_factory.mktemp("pack") / "out"
    result = run(
        "curl",
        "-o",
        str(out),
        "--cmd",
        "--version",
        "--env",
        "A=b c",
        "--expose",
        "80",
        "--label",
        "org.example=x",
        "--workdir",
        "/",
        "--user",
        "65532",
    )
    assert result.returncode == 0, result.stderr
    return out


def test_outputs_exist(curl_pack: Path) -> None:
    assert (curl_pack / "rootfs").is_dir()
    assert (curl_pack / "rootfs.tar.gz").is_file()
    dockerfile = (curl_pack / "Dockerfile").read_text().splitlines()
    assert dockerfile[1:3] == ["FROM scratch", "ADD rootfs.tar.gz /"]
    assert f'ENTRYPOINT ["{shutil.which("curl")}"]' in dockerfile
    assert 'CMD ["--version"]' in dockerfile
    assert 'ENV A="b c"' in dockerfile
    assert "EXPOSE 80" in dockerfile and "USER 65532" in dockerfile and "WORKDIR /" in dockerfile
    assert 'LABEL "org.example"="x"' in dockerfile


def test_staged_tree_is_loader_complete(curl_pack: Path) -> None:
    """Resolving again inside the staged tree finds every library, at the same paths."""
    curl = shutil.which("curl")
    assert curl
    host = listing(curl)["binaries"][0]  # type: ignore[index]
    staged = listing("--root", str(curl_pack / "rootfs"), curl)
    assert staged["missing"] == []
    binary = staged["binaries"][0]  # type: ignore[index]
    assert binary["interpreter"] == host["interpreter"]
    assert [lib["path"] for lib in binary["libraries"]] == [
        lib["path"] for lib in host["libraries"]
    ]


def test_links_stay_links(curl_pack: Path) -> None:
    rootfs = curl_pack / "rootfs"
    if Path("/lib").is_symlink():
        assert (rootfs / "lib").is_symlink() and os.readlink(rootfs / "lib") == os.readlink("/lib")
    sonames = [p for p in (rootfs / "usr/lib/x86_64-linux-gnu").iterdir() if p.is_symlink()]
    assert sonames, "soname links (libfoo.so.1 -> libfoo.so.1.2.3) are kept as links"
    for link in sonames:
        assert link.resolve().is_file()


def test_tarball_is_reproducible(curl_pack: Path, tmp_path: Path) -> None:
    again = tmp_path / "elsewhere" / "out"
    assert run("curl", "-q", "-o", str(again)).returncode == 0
    assert (again / "rootfs.tar.gz").read_bytes() == (curl_pack / "rootfs.tar.gz").read_bytes()
    data = (curl_pack / "rootfs.tar.gz").read_bytes()
    assert data[3] & 0x08 == 0, "no file name in the gzip header"
    assert data[4:8] == b"\0\0\0\0", "gzip time 0"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
        assert all(m.mtime == 0 for m in members)
        assert all(not m.pax_headers for m in members)


def test_source_date_epoch_clamps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        run("true", "-q", "-o", str(out), env={"SOURCE_DATE_EPOCH": "1700000000"}).returncode == 0
    )
    with tarfile.open(out / "rootfs.tar.gz") as tar:
        times = {m.mtime for m in tar.getmembers()}
    assert max(times) <= 1700000000
    assert run("true", "-q", "-o", str(out), env={"SOURCE_DATE_EPOCH": "soon"}).returncode == 2


def test_json_manifest_hashes(tmp_path: Path) -> None:
    result = run("true", "-q", "--json", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    files = [f for f in doc["files"] if f["type"] == "file"]
    assert {f["kind"] for f in files} >= {"program", "interpreter", "library"}
    for item in files:
        # Files made by scratchpack (package metadata) are checked against what was written.
        made = tmp_path / "out/rootfs" / item["path"].lstrip("/")
        source = made if item["source"] == "generated" else Path(item["source"])
        assert item["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert doc["totals"]["bytes"] == sum(f["size"] for f in files)


def test_missing_library_writes_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    (root / "usr/lib/x86_64-linux-gnu/libc.so.6").unlink()
    out = tmp_path / "out"
    result = run("--root", str(root), "/bin/true", "-o", str(out))
    assert result.returncode == 1
    assert "libc.so.6: not found, needed by /bin/true" in result.stderr
    assert "nothing was written" in result.stderr
    assert not (out / "rootfs").exists() and not (out / "rootfs.tar.gz").exists()
    allowed = run("--root", str(root), "/bin/true", "-o", str(out), "--allow-missing")
    assert allowed.returncode == 0
    assert "libc.so.6: not found" in allowed.stderr


def test_other_files_in_the_output_folder_are_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "Dockerfile").write_text("old")
    assert run("true", "-q", "-o", str(out)).returncode == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "Dockerfile").read_text().startswith("# Generated by scratchpack")
    assert not [p for p in out.iterdir() if p.name.startswith(".scratchpack-tmp")]


def test_extras_files_dirs_globs_and_special_files(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", libs=["/lib/x86_64-linux-gnu/libz.so.1"])
    conf = root / "etc/app"
    conf.mkdir()
    (conf / "a.conf").write_text("a")
    (conf / "b.conf").write_text("b")
    (conf / "sub").mkdir()
    (conf / "sub/c").write_text("c")
    (conf / "link").symlink_to("a.conf")
    os.mkfifo(conf / "fifo")
    (root / "etc/one").write_text("1")
    os.link(root / "etc/one", root / "etc/two")
    suid = root / "usr/bin/suid"
    shutil.copy2("/usr/bin/true", suid)
    suid.chmod(0o4755)
    out = tmp_path / "out"
    result = run(
        "--root",
        str(root),
        "/bin/true",
        "-o",
        str(out),
        "--extra",
        "/etc/app",
        "--extra",
        "/etc/[ot]*",
        "--extra",
        "/usr/bin/suid",
    )
    assert result.returncode == 0, result.stderr
    staged = out / "rootfs"
    assert (staged / "etc/app/sub/c").read_text() == "c"
    assert os.readlink(staged / "etc/app/link") == "a.conf"
    assert not (staged / "etc/app/fifo").exists()
    assert "fifo: skipped, a FIFO is not packed" in result.stderr
    assert os.stat(staged / "etc/one").st_ino == os.stat(staged / "etc/two").st_ino
    assert stat.S_IMODE(os.stat(staged / "usr/bin/suid").st_mode) == 0o755
    assert "setuid/setgid bits dropped" in result.stderr
    with tarfile.open(out / "rootfs.tar.gz") as tar:
        two = (
            tar.getmember("etc/two")
            if tar.getmember("etc/one").isfile()
            else tar.getmember("etc/one")
        )
        assert two.islnk()
    kept = run(
        "--root",
        str(root),
        "/bin/true",
        "-q",
        "-o",
        str(out),
        "--extra",
        "/usr/bin/suid",
        "--keep-setuid",
    )
    assert kept.returncode == 0
    assert stat.S_IMODE(os.stat(out / "rootfs/usr/bin/suid").st_mode) == 0o4755


def test_extra_elf_brings_its_closure(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", libs=["/lib/x86_64-linux-gnu/libz.so.1"])
    plugin = root / "usr/lib/x86_64-linux-gnu/plugin.so"
    shutil.copy2(os.path.realpath("/lib/x86_64-linux-gnu/libz.so.1"), plugin)
    out = tmp_path / "out"
    result = run(
        "--root",
        str(root),
        "/bin/true",
        "-q",
        "-o",
        str(out),
        "--extra",
        "/usr/lib/x86_64-linux-gnu/plugin.so",
    )
    assert result.returncode == 0, result.stderr
    assert (out / "rootfs/usr/lib/x86_64-linux-gnu/plugin.so").is_file()


def test_extra_that_matches_nothing(tmp_path: Path) -> None:
    result = run("true", "-o", str(tmp_path / "out"), "--extra", "/no/such/file*")
    assert result.returncode == 2
    assert "/no/such/file*: --extra matches nothing" in result.stderr


def test_root_links_to_host_files_never_reach_the_output(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("HOST SECRET CONTENT")
    root = make_root(tmp_path / "root")
    (root / "etc/leak").symlink_to(str(secret))
    (root / "etc").joinpath(secret.name).write_text("root copy")
    (root / "etc/dots").symlink_to("../../../../../../.." + str(secret))
    out = tmp_path / "out"
    result = run(
        "--root",
        str(root),
        "/bin/true",
        "-q",
        "-o",
        str(out),
        "--extra",
        "/etc/leak",
        "--extra",
        "/etc/dots",
        "--allow-missing",
    )
    blob = b"".join(
        p.read_bytes() for p in (out / "rootfs").rglob("*") if p.is_file() and not p.is_symlink()
    )
    blob += gzip.decompress((out / "rootfs.tar.gz").read_bytes()) if out.exists() else b""
    assert b"HOST SECRET CONTENT" not in blob
    assert result.returncode in (0, 2)


def test_missing_library_in_a_conf_directory_gets_a_hint(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    libc = root / "usr/lib/x86_64-linux-gnu/libc.so.6"
    (root / "opt/lib").mkdir(parents=True)
    libc.rename(root / "opt/lib/libc.so.6")
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d").mkdir()
    (root / "etc/ld.so.conf.d/opt.conf").write_text("/opt/lib\n")
    result = run("--root", str(root), "/bin/true", "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "hint: /opt/lib (in ld.so.conf) has libc.so.6, but ld.so.cache does not list it" in (
        result.stderr
    )


def test_hwcaps_cache_entry_is_installed_under_its_soname(tmp_path: Path) -> None:
    """ld.so.cache points into glibc-hwcaps/ at the versioned file; the image has no cache, so
    the needed name must exist there, and the baseline library must be there for other CPUs."""
    if shutil.which("gcc") is None or shutil.which("ldconfig") is None:
        pytest.skip("needs gcc and ldconfig")
    zlib = Path(os.path.realpath("/lib/x86_64-linux-gnu/libz.so.1"))
    root = make_root(tmp_path / "root")
    multiarch = root / "usr/lib/x86_64-linux-gnu"
    shutil.copy2(zlib, multiarch / zlib.name)
    (multiarch / "libz.so.1").symlink_to(zlib.name)
    v2 = multiarch / "glibc-hwcaps/x86-64-v2"
    v2.mkdir(parents=True)
    shutil.copy2(zlib, v2 / zlib.name)
    source = tmp_path / "z.c"
    source.write_text("#include <zlib.h>\nint main(void){return zlibVersion()[0] == 0;}\n")
    program = root / "usr/bin/zprog"
    subprocess.run(["gcc", str(source), "-o", str(program), "-lz"], check=True)
    (root / "etc/ld.so.conf").write_text("")
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    out = tmp_path / "out"
    packed = run("--root", str(root), "--hwcaps", "x86-64-v2", "/usr/bin/zprog", "-o", str(out))
    assert packed.returncode == 0, packed.stderr
    staged = out / "rootfs"
    alias = staged / "usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v2/libz.so.1"
    assert alias.is_symlink() and os.readlink(alias) == zlib.name
    assert (staged / "usr/lib/x86_64-linux-gnu/libz.so.1").resolve().is_file()
    assert not (staged / "etc/ld.so.cache").exists()
    for level, expected in (("x86-64-v2", "/glibc-hwcaps/x86-64-v2/"), ("none", "")):
        doc = listing("--root", str(staged), "--hwcaps", level, "/usr/bin/zprog")
        (zlib_entry,) = [
            lib for lib in doc["binaries"][0]["libraries"] if lib["soname"] == "libz.so.1"
        ]  # type: ignore[index]
        assert (
            (expected in zlib_entry["path"])
            if expected
            else "glibc-hwcaps" not in zlib_entry["path"]
        )


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """Long work shows a bar on stderr when stderr is a terminal, and -q silences it."""
    import pty

    if not Path("/usr/share/zoneinfo").is_dir():
        pytest.skip("needs /usr/share/zoneinfo (hundreds of files)")
    for quiet, expected in ((False, True), (True, False)):
        leader, follower = pty.openpty()
        args = ["true", "-o", str(tmp_path / "out"), "--extra", "/usr/share/zoneinfo"]
        proc = subprocess.run(
            [sys.executable, "-m", "bundler", *args, *(["-q"] if quiet else [])],
            stdout=subprocess.DEVNULL,
            stderr=follower,
            timeout=300,
        )
        os.close(follower)
        seen = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 65536):
                seen += chunk
        os.close(leader)
        assert proc.returncode == 0
        assert (b"packing" in seen) is expected, seen[-300:]
