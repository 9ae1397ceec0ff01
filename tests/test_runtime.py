"""What ldd cannot see: .note.dlopen, libgcc_s, NSS, certs, tzdata, accounts, folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run

from bundler.errors import UsageError
from bundler.loader.elf import read_elf
from bundler.loader.rootfs import FsRoot
from bundler.runtime.needs import Runtime, nss_services

NOTE_SOURCE = r"""
#include <stdint.h>
#define JSON "[{\"feature\":\"zlib\",\"description\":\"compression\"," \
  "\"priority\":\"%s\",\"soname\":[\"libnotthere.so.9\",\"libz.so.1\"]}]"
__attribute__((used, section(".note.dlopen"))) _Alignas(4) static const struct {
  struct { uint32_t n_namesz, n_descsz, n_type; } nhdr;
  char name[sizeof("FDO")];
  _Alignas(4) char json[sizeof(JSON)];
} note = { { sizeof("FDO"), sizeof(JSON), 0x407c0c0a }, "FDO", JSON };
int main(void) { return 0; }
"""


def _note_program(tmp_path: Path, priority: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    source = tmp_path / f"note-{priority}.c"
    source.write_text(NOTE_SOURCE.replace("%s", priority))
    program = tmp_path / f"note-{priority}"
    subprocess.run(["gcc", str(source), "-o", str(program)], check=True)
    return program


def test_dlopen_note_is_read(tmp_path: Path) -> None:
    program = _note_program(tmp_path, "recommended")
    (dep,) = read_elf(str(program)).dlopen
    assert (dep.feature, dep.priority, dep.sonames) == (
        "zlib",
        "recommended",
        ("libnotthere.so.9", "libz.so.1"),
    )


@pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
@pytest.mark.parametrize(
    ("priority", "level", "expected"),
    [
        ("recommended", "recommended", True),
        ("required", "required", True),
        ("suggested", "recommended", False),
        ("suggested", "suggested", True),
        ("recommended", "none", False),
    ],
)
def test_dlopen_levels(tmp_path: Path, priority: str, level: str, expected: bool) -> None:
    program = _note_program(tmp_path, priority)
    result = run("--list", "--json", "--dlopen", level, str(program))
    assert result.returncode == 0, result.stderr
    libraries = json.loads(result.stdout)["binaries"][0]["libraries"]
    dlopened = [lib for lib in libraries if lib.get("via", "").startswith("dlopen")]
    # The first soname of the entry is absent, so the second one satisfies it.
    assert bool(dlopened) is expected
    if expected:
        assert dlopened[0]["soname"] == "libz.so.1"


@pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
def test_libgcc_s_follows_libc() -> None:
    doc = json.loads(run("--list", "--json", "/bin/true").stdout)
    names = [lib["soname"] for lib in doc["binaries"][0]["libraries"]]
    assert "libgcc_s.so.1" in names
    doc = json.loads(run("--list", "--json", "--no-libgcc-s", "/bin/true").stdout)
    assert "libgcc_s.so.1" not in [lib["soname"] for lib in doc["binaries"][0]["libraries"]]


def test_nss_services() -> None:
    text = "passwd: files systemd\nhosts: files mdns4_minimal [NOTFOUND=return] dns\n# x: y\n"
    assert nss_services(text) == ["files", "systemd", "mdns4_minimal", "dns"]


def _root(tmp_path: Path, name: str = "r") -> FsRoot:
    top = tmp_path / name
    (top / "etc/ssl/certs").mkdir(parents=True)
    (top / "etc/ssl/certs/ca-certificates.crt").write_text("CERTS")
    (top / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nredis:x:101:104::/var/lib/redis:/usr/sbin/nologin\n"
    )
    (top / "etc/group").write_text("root:x:0:\nredis:x:104:\nadm:x:4:\n")
    (top / "usr/share/zoneinfo/Europe").mkdir(parents=True)
    (top / "usr/share/zoneinfo/Europe/Paris").write_bytes(b"TZif")
    return FsRoot(str(top))


def test_user_copies_the_account_and_mkdir_uses_it(tmp_path: Path) -> None:
    runtime = Runtime(_root(tmp_path))
    runtime.user("redis")
    runtime.mkdir("/var/lib/redis")
    runtime.mkdir("/run/redis:2775:root:adm")
    added = runtime.add
    assert added.generated["/etc/passwd"].decode().splitlines() == [
        "root:x:0:0:root:/root:/bin/bash",
        "redis:x:101:104::/var/lib/redis:/usr/sbin/nologin",
    ]
    assert added.generated["/etc/group"].decode().splitlines() == ["root:x:0:", "redis:x:104:"]
    assert [(d.path, d.mode, d.uid, d.gid) for d in added.directories] == [
        ("/var/lib/redis", 0o755, 101, 104),
        ("/run/redis", 0o2775, 0, 4),
    ]
    with pytest.raises(UsageError, match="no such user"):
        runtime.user("nosuchuser")


def test_users_group_as_distroless_plus_the_user(tmp_path: Path) -> None:
    runtime = Runtime(_root(tmp_path))
    runtime.groups(["users"])
    runtime.user("redis")
    names = [
        line.split(":")[0] for line in runtime.add.generated["/etc/passwd"].decode().splitlines()
    ]
    assert names == ["root", "nobody", "nonroot", "redis"]


def test_certs_tz_tmp_and_missing_nsswitch(tmp_path: Path) -> None:
    runtime = Runtime(_root(tmp_path))
    runtime.groups(["certs", "tmp", "nss", "tzdata"], tz="Europe/Paris")
    added = runtime.add
    assert added.env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert added.links["/etc/localtime"] == "/usr/share/zoneinfo/Europe/Paris"
    assert ("/tmp", 0o1777) in [(d.path, d.mode) for d in added.directories]
    assert added.generated["/etc/nsswitch.conf"].startswith(b"passwd: files")
    assert added.libraries == []  # files and dns are inside glibc 2.34+'s libc
    with pytest.raises(UsageError, match="no such zone"):
        Runtime(_root(tmp_path, "second")).groups(["tzdata"], tz="../../etc/passwd")


@pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
def test_pack_with_base_and_user(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", libs=["/lib/x86_64-linux-gnu/libgcc_s.so.1"])
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nsvc:x:1000:1000::/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nsvc:x:1000:\n")
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ca-certificates.crt").write_text("CERTS")
    (root / "usr/share/zoneinfo").mkdir(parents=True)
    (root / "usr/share/zoneinfo/UTC").write_bytes(b"TZif")
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")
    (root / "run").mkdir()
    out = tmp_path / "out"
    result = run(
        "--root",
        str(root),
        "/bin/true",
        "-o",
        str(out),
        "--with",
        "base",
        "--user",
        "svc",
        "--mkdir",
        "/var/run/svc",
    )
    assert result.returncode == 0, result.stderr
    staged = out / "rootfs"
    assert "svc:x:1000:1000" in (staged / "etc/passwd").read_text()
    assert (staged / "etc/nsswitch.conf").is_file()
    assert (staged / "usr/lib/x86_64-linux-gnu/libgcc_s.so.1").is_file()
    assert os.readlink(staged / "var/run") == "/run"
    assert (staged / "run/svc").is_dir() and (staged / "run/svc").stat().st_uid == (
        1000 if os.geteuid() == 0 else os.geteuid()
    )
    assert oct((staged / "tmp").stat().st_mode & 0o7777) == "0o1777"
    dockerfile = (out / "Dockerfile").read_text()
    assert (
        "USER svc" in dockerfile
        and 'ENV SSL_CERT_FILE="/etc/ssl/certs/ca-certificates.crt"' in dockerfile
    )


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_pack_with_trace_brings_the_stdlib(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("/usr/bin/python3", "-q", "-o", str(out), "--trace", "-c 'import json, decimal'")
    assert result.returncode == 0, result.stderr
    staged = out / "rootfs"
    assert list(staged.glob("usr/lib/python3*/json/__init__.py"))
    assert list(staged.glob("usr/lib/python3*/lib-dynload/_decimal*.so"))
    failing = run("/usr/bin/python3", "-q", "-o", str(out), "--trace", "-c 'raise SystemExit(3)'")
    assert failing.returncode == 1 and "exited with code 3" in failing.stderr
    allowed = run(
        "/usr/bin/python3",
        "-q",
        "-o",
        str(out),
        "--trace",
        "-c 'raise SystemExit(3)'",
        "--trace-ok-exit",
        "0,3",
    )
    assert allowed.returncode == 0, allowed.stderr


def test_dlopen_note_single_object_form() -> None:
    from bundler.loader.elf import _parse_dlopen

    (dep,) = _parse_dlopen("/x", b'{"feature":"f","priority":"suggested","soname":["libq.so.2"]}\0')
    assert (dep.feature, dep.priority, dep.sonames) == ("f", "suggested", ("libq.so.2",))


@pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
def test_absent_nss_modules_of_debians_stock_nsswitch_are_no_warning(tmp_path: Path) -> None:
    """Debian's nsswitch.conf names db and nis, whose modules few roots have; glibc skips a
    missing service, so every user would see a warning about nothing: it belongs to -v."""
    root = make_root(tmp_path / "root")
    (root / "etc/nsswitch.conf").write_text(
        "passwd: files\ngroup: files\nhosts: files dns\n"
        "protocols: db files\nservices: db files\nnetgroup: nis\n"
    )
    quiet = run("--root", str(root), "/bin/true", "--with", "nss", "-o", str(tmp_path / "a"))
    assert quiet.returncode == 0, quiet.stderr
    assert "libnss_db" not in quiet.stderr and "libnss_nis" not in quiet.stderr
    verbose = run(
        "--root", str(root), "/bin/true", "--with", "nss", "-v", "-o", str(tmp_path / "b")
    )
    assert verbose.returncode == 0, verbose.stderr
    for module in ("libnss_db.so.2", "libnss_nis.so.2"):
        assert f"{module}: named in nsswitch.conf but not in the root" in verbose.stderr


def test_user_brings_its_supplementary_groups(tmp_path: Path) -> None:
    """postgres reads a key that only ssl-cert may read: in the image, the process takes its
    groups from the image's /etc/group, so the user's memberships must be there too."""
    root = _root(tmp_path)
    group = Path(root.top) / "etc/group"
    group.write_text(group.read_text() + "ssl-cert:x:110:postgres,redis\nother:x:111:postgres\n")
    runtime = Runtime(root)
    runtime.user("redis")
    assert runtime.add.generated["/etc/group"].decode().splitlines() == [
        "root:x:0:",
        "redis:x:104:",
        "ssl-cert:x:110:postgres,redis",
    ]
