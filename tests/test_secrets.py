"""Secrets never leave the builder: a pack that would take one stops before writing anything.

A small root made from this machine's dash and libc holds planted secrets of every kind the
check knows, next to harmless look-alikes (a public certificate, a README that talks about
private keys and quotes the marker line, real libssl/libcrypto, a .env.example with AWS's
documentation key, a man page with ``user:password@`` in a URL). Every route into the image is
taken: an --extra file, a folder, a glob, a chain of links, --with certs, --trace and
--trace-cmd. The refusal must name each planted secret (file, rule, line, what brought it) and
nothing else, and leave no output behind. With --exclude and --allow-secret the pack goes
through, and trivy's secret scanner (offline) finds in rootfs/, rootfs.tar.gz, every OCI layer
and the docker-archive exactly the allowed files.

Tokens are assembled at run time from pieces, so this file holds none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fakeroot import host_has_glibc_x86_64, make_root, run
from test_sbom import cyclonedx_errors, spdx_messages

from bundler.staging.plan import FILE, Entry, Plan, glob_matches
from bundler.staging.secrets import (
    check_plan,
    is_binary,
    password_hash_lines,
    path_rule,
    read_text,
    scan_text,
    scan_value,
)

HOST_LIBS = ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libcrypto.so.3")
needs_glibc = pytest.mark.skipif(not host_has_glibc_x86_64(), reason="needs an x86-64 glibc host")
needs_tools = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("ssh-keygen")),
    reason="needs openssl and ssh-keygen to make keys",
)
needs_libssl = pytest.mark.skipif(
    not all(Path(p).exists() for p in HOST_LIBS), reason="needs the host's libssl.so.3"
)

ALNUM = "Zq8vLr2mTw4kXy7pNc3bHd6fGj9sRt5u"  # 32 letters and digits, no word in them


def token(prefix: str, length: int) -> str:
    """A token of the given shape, made here so that no source file holds one."""
    body = (ALNUM * 8)[:length]
    return prefix + body


AWS_ID = "AK" + "IA" + "Q3EGRTYUIOPLKJHG"
AWS_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzzzzKEYabcde"
GITHUB = token("gh" + "p_", 36)
GITHUB_OAUTH = token("gh" + "o_", 36)
GITHUB_APP = token("gh" + "s_", 36)
GITHUB_FINE = "github" + "_pat_" + token("", 22) + "_" + token("", 59)
GITLAB = token("gl" + "pat-", 20)
SLACK = token("xo" + "xb-", 24)
STRIPE = token("sk" + "_live_", 24)
GOOGLE = token("AI" + "za", 35)
DB_URL = "postgres://app:" + "Vq7rLm2x" + "@db.internal:5432/app"
HASH = "$6$" + "saltsalt$" + ALNUM * 2 + "abcdefghij"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=120)


def _key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-subj",
        "/CN=site.internal",
        "-days",
        "30",
    )
    return key, cert


# ----- the rules, one by one ------------------------------------------------------------------


def test_content_rules_match_tokens_and_whole_key_blocks(tmp_path: Path) -> None:
    lines = [
        f"AWS_ACCESS_KEY_ID={AWS_ID}",
        f'aws_secret_access_key = "{AWS_SECRET}"',
        f"token: {GITHUB}",
        f"oauth {GITHUB_OAUTH}",
        f"app {GITHUB_APP}",
        f"fine {GITHUB_FINE}",
        f"gitlab {GITLAB}",
        f"slack {SLACK}",
        f"stripe {STRIPE}",
        f"google {GOOGLE}",
        f"DATABASE_URL={DB_URL}",
    ]
    found = scan_text(("\n".join(lines) + "\n").encode())
    assert found == [
        ("aws-access-key-id", 1),
        ("aws-secret-access-key", 2),
        ("github-token", 3),
        ("github-token", 4),
        ("github-token", 5),
        ("github-fine-grained-token", 6),
        ("gitlab-token", 7),
        ("slack-token", 8),
        ("stripe-live-key", 9),
        ("google-api-key", 10),
        ("url-credentials", 11),
    ]
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")],
        check=True,
        timeout=60,
    )
    openssh = (tmp_path / "id").read_bytes()
    assert scan_text(b"# deploy key\n\n" + openssh) == [("private-key", 3)]
    # A key inside JSON, its newlines escaped (a service-account file).
    escaped = openssh.decode().replace("\n", "\\n")
    assert scan_text(f'{{"private_key": "{escaped}"}}'.encode()) == [("private-key", 1)]


def test_look_alikes_are_no_findings(tmp_path: Path) -> None:
    marker = b"-----BEGIN PRIVATE KEY-----"
    readme = (
        b"Keep the private key safe.\nIt starts with " + marker + b"\n-----END PRIVATE KEY-----\n"
    )
    assert scan_text(readme) == []
    assert scan_text(marker + b"\0\0%s PRIVATE KEY\0-----END PRIVATE KEY-----\0") == []
    docs = b"ftp://user:password@host/ https://a:b@xn--g6w251d/ http://joe:pw@proxy.example.com"
    assert scan_text(docs + b" url = f'{scheme}://{user}:{password}@{host}'\n") == []
    # AWS's own documentation key.
    assert scan_text(b"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n") == []
    if shutil.which("openssl"):
        _key, cert = _key_pair(tmp_path, "site")
        assert scan_text(cert.read_bytes()) == []


@needs_libssl
def test_real_libraries_are_skipped_as_binary_and_hold_no_key_block() -> None:
    for library in HOST_LIBS:
        assert read_text(library) is None
        data = Path(library).read_bytes()
        assert is_binary(data[:8192])
        # Even read as text, the marker constants are no key block.
        assert scan_text(data + b"-----BEGIN PRIVATE KEY-----\0") == []


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/etc/ssl/private/server.key", "private-key-folder"),
        ("/etc/pki/tls/private/a.pem", "private-key-folder"),
        ("/etc/letsencrypt/live/site/privkey.pem", "letsencrypt-keys"),
        ("/etc/letsencrypt/archive/site/cert1.pem", "letsencrypt-keys"),
        ("/root/.ssh/id_ed25519", "ssh-private-key"),
        ("/home/u/.ssh/deploy", "ssh-private-key"),
        ("/srv/id_rsa", "ssh-private-key"),
        ("/etc/ssh/ssh_host_ed25519_key", "ssh-private-key"),
        ("/srv/app/.env", "dotenv"),
        ("/srv/app/.env.production", "dotenv"),
        ("/srv/app/.git/config", "git-folder"),
        ("/root/.netrc", "netrc"),
        ("/root/.pgpass", "pgpass"),
        ("/root/.aws/credentials", "aws-credentials"),
        ("/root/.docker/config.json", "docker-config"),
        ("/root/.kube/config", "kube-config"),
        ("/root/.ssh/id_ed25519.pub", None),
        ("/root/.ssh/known_hosts", None),
        ("/root/.ssh/authorized_keys", None),
        ("/etc/ssh/ssh_host_ed25519_key.pub", None),
        ("/srv/app/.env.example", None),
        ("/etc/ssl/certs/ca-certificates.crt", None),
        ("/usr/share/doc/git/README", None),
        ("/srv/app/.gitignore", None),
    ],
)
def test_path_rules(path: str, rule: str | None) -> None:
    assert path_rule(path) == rule


def test_password_hashes_are_found_by_line() -> None:
    shadow = f"root:{HASH}:19000:0:99999:7:::\ndaemon:*:19000::::::\nlocked:!{HASH}:1::::::\n"
    shadow += "nopw::19000::::::\nsvc:!:19000::::::\nold:ab01CDefGH23.:1::::::\n"
    assert password_hash_lines(shadow.encode()) == [1, 3, 6]
    assert password_hash_lines(b"root:x:0:0:root:/root:/bin/sh\n") == []


def test_globs() -> None:
    assert glob_matches("/srv/app/.git/config", ".git")
    assert glob_matches("/srv/app/conf/x.pem", "*.pem")
    assert glob_matches("/srv/app/conf/x.pem", "/srv/app/conf")
    assert glob_matches("/srv/app/logs/a/b.log", "/srv/app/*.log")
    assert not glob_matches("/srv/app/.gitignore", ".git")
    assert not glob_matches("/srv/application/x", "/srv/app")


def test_values_of_the_image_config() -> None:
    assert scan_value(GITHUB) == ["github-token"]
    assert scan_value("/usr/local/bin:/usr/bin") == []


# ----- a root with secrets, and every route into the image -----------------------------------

# (in-image path, rule) of every secret planted by _root; routes are checked by the why.
PLANTED = {
    ("/srv/app/.env", "dotenv"),
    ("/srv/app/.env", "aws-access-key-id"),
    ("/srv/app/.env", "aws-secret-access-key"),
    ("/srv/app/.git/config", "git-folder"),
    ("/srv/app/.git/config", "url-credentials"),
    ("/srv/app/.git/config", "github-token"),
    ("/srv/app/conf/deploy_key", "private-key"),
    ("/srv/app/conf/settings.ini", "github-token"),
    ("/srv/app/conf/settings.ini", "github-fine-grained-token"),
    ("/srv/app/conf/settings.ini", "gitlab-token"),
    ("/srv/app/conf/settings.ini", "slack-token"),
    ("/srv/app/conf/settings.ini", "stripe-live-key"),
    ("/srv/app/conf/settings.ini", "google-api-key"),
    ("/srv/app/conf/settings.ini", "url-credentials"),
    ("/srv/app/home/.ssh/id_rsa", "ssh-private-key"),
    ("/srv/app/home/.ssh/id_rsa", "private-key"),
    ("/srv/app/home/.netrc", "netrc"),
    ("/srv/app/home/.pgpass", "pgpass"),
    ("/srv/app/home/.aws/credentials", "aws-credentials"),
    ("/srv/app/home/.aws/credentials", "aws-access-key-id"),
    ("/srv/app/home/.docker/config.json", "docker-config"),
    ("/srv/app/home/.kube/config", "kube-config"),
}
LINKED = {  # reached through /opt/tls -> /usr/lib/ssl, whose private -> /etc/ssl/private
    ("/etc/ssl/private/server.key", "private-key-folder"),
    ("/etc/ssl/private/server.key", "private-key"),
}
GLOBBED = {
    ("/etc/letsencrypt/live/site/privkey.pem", "letsencrypt-keys"),
    ("/etc/letsencrypt/live/site/privkey.pem", "private-key"),
    ("/etc/letsencrypt/live/site/cert.pem", "letsencrypt-keys"),
}
NAMED = {("/etc/shadow", "password-hash")}  # --extra /etc/shadow: a file named
CA_BUNDLE = {("/etc/ssl/certs/ca-certificates.crt", "private-key")}  # --with certs


def _root(tmp_path: Path) -> Path:
    root = make_root(
        tmp_path / "root",
        programs=["/usr/bin/dash", "/usr/bin/true", "/usr/bin/cat"],
        libs=[f"/lib/x86_64-linux-gnu/{Path(p).name}" for p in HOST_LIBS],
    )
    app = root / "srv/app"
    for folder in ("conf", ".git", "home/.ssh", "home/.aws", "home/.docker", "home/.kube"):
        (app / folder).mkdir(parents=True)
    (app / ".env").write_text(f"AWS_ACCESS_KEY_ID={AWS_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n")
    (app / ".env.example").write_text("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n")
    (app / ".git/config").write_text(f'[remote "o"]\n\turl = https://ci:{GITHUB}@github.com/o/r\n')
    (app / ".gitignore").write_text(".env\n")
    settings = [
        "[tokens]",
        f"github = {GITHUB}",
        f"github_fine = {GITHUB_FINE}",
        f"gitlab = {GITLAB}",
        f"slack = {SLACK}",
        f"stripe = {STRIPE}",
        f"maps = {GOOGLE}",
        f"database = {DB_URL}",
    ]
    (app / "conf/settings.ini").write_text("\n".join(settings) + "\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(app / "conf/deploy_key")],
        check=True,
        timeout=60,
    )
    (app / "conf/deploy_key.pub").unlink()
    keys = tmp_path / "keys"
    keys.mkdir()
    key, cert = _key_pair(keys, "site")
    shutil.copy(cert, app / "conf/public-cert.pem")  # a look-alike: a public certificate
    (app / "README").write_text(
        "Put the private key next to the certificate.\n-----BEGIN PRIVATE KEY-----\n...\n"
    )
    shutil.copy(key, app / "home/.ssh/id_rsa")
    (app / "home/.ssh/id_rsa.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host\n")
    (app / "home/.ssh/known_hosts").write_text("github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n")
    (app / "home/.netrc").write_text("machine h login u password p\n")
    (app / "home/.pgpass").write_text("db:5432:app:app:pw\n")
    (app / "home/.aws/credentials").write_text(f"[default]\naws_access_key_id = {AWS_ID}\n")
    (app / "home/.docker/config.json").write_text('{"auths": {}}\n')
    (app / "home/.kube/config").write_text("apiVersion: v1\n")
    # /etc/ssl/private, reached from /opt/tls -> /usr/lib/ssl, private -> /etc/ssl/private
    (root / "etc/ssl/private").mkdir(parents=True)
    shutil.copy(key, root / "etc/ssl/private/server.key")
    (root / "usr/lib/ssl").mkdir(parents=True)
    (root / "usr/lib/ssl/private").symlink_to("../../../etc/ssl/private")
    (root / "usr/lib/ssl/openssl.cnf").write_text("# nothing secret\n")
    (root / "opt").mkdir()
    (root / "opt/tls").symlink_to("/usr/lib/ssl")
    live = root / "etc/letsencrypt/live/site"
    live.mkdir(parents=True)
    shutil.copy(key, live / "privkey.pem")
    shutil.copy(cert, live / "cert.pem")
    (root / "etc/shadow").write_text(f"root:{HASH}:19000:0:99999:7:::\ndaemon:*:19000::::::\n")
    (root / "etc/gshadow").write_text("root:*::\n")
    (root / "etc/passwd").write_text(
        f"root:{HASH}:0:0:root:/root:/bin/sh\nsvc:x:4242:4242::/srv:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nsvc:x:4242:\n")
    # A CA bundle that, wrongly, holds a private key: --with certs brings it.
    (root / "etc/ssl/certs").mkdir()
    (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(cert.read_bytes() + key.read_bytes())
    docs = root / "usr/share/doc/app"
    docs.mkdir(parents=True)
    (docs / "README").write_text("Use ftp://user:password@host/ to log in.\n")
    return root


FINDING = re.compile(r"^scratchpack: secret: (/\S+?)(?::(\d+))?: ([a-z-]+) \((.*)\)$")


def _findings(stderr: str) -> dict[tuple[str, str], tuple[int | None, str]]:
    found: dict[tuple[str, str], tuple[int | None, str]] = {}
    for line in stderr.splitlines():
        match = FINDING.match(line)
        if match:
            path, number, rule, why = match.groups()
            found[(path, rule)] = (int(number) if number else None, why)
    return found


@needs_glibc
@needs_tools
@needs_libssl
def test_a_pack_with_secrets_names_each_and_writes_nothing(tmp_path: Path) -> None:
    root = _root(tmp_path)
    out = tmp_path / "out"
    args = [
        *("--root", str(root), "/usr/bin/true"),
        *("--extra", "/srv/app"),  # a folder
        *("--extra", "/etc/shadow"),  # a file
        *("--extra", "/etc/letsencrypt/*/site/*.pem"),  # a glob
        *("--extra", "/opt/tls"),  # a chain of links
        *("--extra", "/usr/lib/x86_64-linux-gnu/libssl.so.3"),  # a look-alike: real libssl
        *("--extra", "/usr/share/doc/app"),
        *("--with", "certs", "--user", "svc"),
        *("-o", str(out), "--oci", str(tmp_path / "oci"), "--json"),
    ]
    done = run(*args)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert not out.exists() and not (tmp_path / "oci").exists(), "nothing is written"
    found = _findings(done.stderr)
    assert set(found) == PLANTED | LINKED | GLOBBED | NAMED | CA_BUNDLE
    assert "wJalr" not in done.stderr and GITHUB not in done.stderr, "never the value"
    # How each got there: the argument as written, the links followed, the --with group.
    assert found[("/srv/app/conf/settings.ini", "gitlab-token")] == (4, "--extra /srv/app")
    assert found[("/srv/app/.env", "aws-secret-access-key")] == (2, "--extra /srv/app")
    assert found[("/srv/app/.env", "dotenv")] == (None, "--extra /srv/app")
    assert found[("/etc/shadow", "password-hash")] == (1, "--extra /etc/shadow")
    glob_why = "--extra /etc/letsencrypt/*/site/*.pem"
    assert found[("/etc/letsencrypt/live/site/privkey.pem", "private-key")] == (1, glob_why)
    link_why = found[("/etc/ssl/private/server.key", "private-key")][1]
    assert link_why == (
        "--extra /opt/tls, link /opt/tls -> /usr/lib/ssl, "
        "link /usr/lib/ssl/private -> /etc/ssl/private"
    )
    bundle = found[("/etc/ssl/certs/ca-certificates.crt", "private-key")]
    assert bundle[1] == "--with certs" and bundle[0] is not None and bundle[0] > 1
    assert re.search(r"scratchpack: 2\d secrets in 1\d files would go into the image", done.stderr)


@needs_glibc
@needs_tools
def test_the_user_account_is_written_without_its_hash(tmp_path: Path) -> None:
    root = _root(tmp_path)
    out = tmp_path / "out"
    done = run(
        *("--root", str(root), "/usr/bin/true", "--user", "svc", "-o", str(out), "--json"),
        *("--allow-secret", "/etc/shad*"),
    )
    assert done.returncode == 0, done.stderr
    assert "--allow-secret /etc/shad*: no finding matches it" in done.stderr
    passwd = (out / "rootfs/etc/passwd").read_text()
    assert passwd.splitlines()[0] == "root:x:0:0:root:/root:/bin/sh"
    assert password_hash_lines(passwd.encode()) == []
    manifest = json.loads(done.stdout)
    whys = {f["path"]: f["why"] for f in manifest["files"]}
    assert whys["/etc/passwd"] == "--user svc: written by scratchpack"
    assert manifest["secrets_allowed"] == []


@needs_glibc
def test_every_entry_says_why_it_is_there(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", programs=["/usr/bin/dash"])
    (root / "etc/app.conf").write_text("x\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "usr/share/zoneinfo").mkdir(parents=True)
    (root / "usr/share/zoneinfo/UTC").write_bytes(b"TZif2\0\0")
    out = tmp_path / "out"
    done = run(
        *("--root", str(root), "/usr/bin/dash", "--extra", "/etc/app.conf"),
        *("--with", "tzdata", "--with", "tmp", "--mkdir", "/data", "-o", str(out), "--json"),
        *("--env", f"TOKEN={GITHUB}", "--label", "ok=plain", "--label", f"db={DB_URL}"),
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    assert all(f["why"] for f in files), [f["path"] for f in files if not f["why"]]
    whys = {f["path"]: f["why"] for f in files}
    assert whys["/usr/bin/dash"] == "PROGRAM on the command line"
    assert whys["/usr/lib/x86_64-linux-gnu/libc.so.6"] == "DT_NEEDED /usr/bin/dash -> libc.so.6"
    assert whys["/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"].startswith("PT_INTERP of ")
    assert whys["/etc/app.conf"] == "--extra /etc/app.conf"
    assert whys["/usr/share/zoneinfo/UTC"] == "--with tzdata"
    assert whys["/tmp"] == "--with tmp"
    assert whys["/data"] == "--mkdir /data"
    warnings = [line for line in done.stderr.splitlines() if "image config is public" in line]
    assert len(warnings) == 2, warnings
    assert "--env TOKEN: the value matches github-token" in warnings[0]
    assert "--label db: the value matches url-credentials" in warnings[1]
    assert GITHUB not in done.stderr and "Vq7rLm2x" not in done.stderr


# ----- traces ---------------------------------------------------------------------------------

needs_trace = [
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace"),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root"),
]


@needs_glibc
@needs_tools
@needs_libssl
@needs_trace[0]
@needs_trace[1]
def test_credentials_a_traced_program_read_are_refused(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "root/.aws").mkdir(parents=True)
    (root / "root/.docker").mkdir(parents=True)
    (root / "root/.aws/credentials").write_text(f"[default]\naws_access_key_id={AWS_ID}\n")
    (root / "root/.docker/config.json").write_text('{"auths": {"r": {"auth": "dTpw"}}}\n')
    (root / "srv/data.txt").write_text("plain input\n")
    out = tmp_path / "out"
    done = run(
        *("--root", str(root), "/usr/bin/dash", "/usr/bin/cat", "--entrypoint", "dash"),
        *("--trace", "-c 'read x < /root/.aws/credentials; read y < /srv/data.txt'"),
        *("--trace-cmd", "cat /root/.docker/config.json"),
        *("-o", str(out), "-v"),
    )
    assert done.returncode == 1, done.stderr
    assert not out.exists()
    found = _findings(done.stderr)
    assert set(found) == {
        ("/root/.aws/credentials", "aws-credentials"),
        ("/root/.aws/credentials", "aws-access-key-id"),
        ("/root/.docker/config.json", "docker-config"),
    }
    aws_why = found[("/root/.aws/credentials", "aws-access-key-id")][1]
    assert aws_why.startswith(
        "--trace \"-c 'read x < /root/.aws/credentials; read y < /srv/data.txt'\" "
        "(runs /usr/bin/dash): open"
    ), aws_why
    docker_why = found[("/root/.docker/config.json", "docker-config")][1]
    assert docker_why.startswith("--trace-cmd 'cat /root/.docker/config.json': open")
    # --exclude leaves them out of the traced files; the input the run read stays.
    done = run(
        *("--root", str(root), "/usr/bin/dash", "/usr/bin/cat", "--entrypoint", "dash"),
        *("--trace", "-c 'read x < /root/.aws/credentials; read y < /srv/data.txt'"),
        *("--trace-cmd", "cat /root/.docker/config.json"),
        *("--exclude", ".aws", "--exclude", "/root/.docker", "-o", str(out), "--json"),
    )
    assert done.returncode == 0, done.stderr
    paths = {f["path"] for f in json.loads(done.stdout)["files"]}
    assert "/srv/data.txt" in paths
    assert not {p for p in paths if p.startswith(("/root/.aws", "/root/.docker/"))}


# ----- --exclude, --allow-secret, and trivy's view of every output ---------------------------


def _trivy() -> str | None:
    binary = Path(sys.executable).with_name("trivy")
    return str(binary) if os.access(binary, os.X_OK) else shutil.which("trivy")


def _trivy_secrets(trivy: str, mode: str, target: Path, cache: Path) -> set[str]:
    """The files trivy's secret scanner flags, as in-image paths without the leading /."""
    argv = [
        *(trivy, mode, "--scanners", "secret", "--format", "json", "--quiet"),
        *("--cache-dir", str(cache), "--skip-db-update", "--offline-scan"),
        *("--skip-java-db-update", "--skip-check-update", "--skip-version-check"),
        "--disable-telemetry",
        *(("--input", str(target)) if mode == "image" else (str(target),)),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return {
        r["Target"].lstrip("/")
        for r in report.get("Results", [])
        if r.get("Class") == "secret" and r.get("Secrets")
    }


def _oci_layers(layout: Path, into: Path) -> list[Path]:
    """Each layer of the image in an OCI layout, unpacked into a folder of its own."""
    index = json.loads((layout / "index.json").read_text())
    image = next(
        m
        for m in index["manifests"]
        if "org.opencontainers.image.ref.name" in m.get("annotations", {})
    )
    manifest = json.loads((layout / "blobs" / image["digest"].replace(":", "/")).read_text())
    folders = []
    for number, layer in enumerate(manifest["layers"]):
        folder = into / f"layer{number}"
        folder.mkdir(parents=True)
        with tarfile.open(layout / "blobs" / layer["digest"].replace(":", "/")) as tar:
            tar.extractall(folder, filter="tar")
        folders.append(folder)
    return folders


@needs_glibc
@needs_tools
@needs_libssl
def test_excluded_and_allowed_secrets_are_what_trivy_finds(tmp_path: Path) -> None:
    trivy = _trivy()
    if trivy is None:
        pytest.skip("no trivy: pip install -e '.[dev]' installs it")
    root = _root(tmp_path)
    out = tmp_path / "out"
    done = run(
        *("--root", str(root), "/usr/bin/true"),
        *("--extra", "/srv/app", "--extra", "/opt/tls"),
        *("--exclude", ".git", "--exclude", "/srv/app/home", "--exclude", "conf"),
        *("--allow-secret", "/srv/app/.env", "--allow-secret", "/etc/ssl/private/*.key"),
        *("-o", str(out), "--oci", str(out / "oci"), "--docker-archive", str(out / "image.tar")),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    allowed = {(s["path"], s["rule"], s["glob"]) for s in manifest["secrets_allowed"]}
    assert allowed == {
        ("/srv/app/.env", "dotenv", "/srv/app/.env"),
        ("/srv/app/.env", "aws-access-key-id", "/srv/app/.env"),
        ("/srv/app/.env", "aws-secret-access-key", "/srv/app/.env"),
        ("/etc/ssl/private/server.key", "private-key-folder", "/etc/ssl/private/*.key"),
        ("/etc/ssl/private/server.key", "private-key", "/etc/ssl/private/*.key"),
    }
    assert all(f["why"] for f in manifest["files"]), "every entry says why it is there"
    paths = {f["path"] for f in manifest["files"]}
    assert "/srv/app/README" in paths and "/srv/app/.gitignore" in paths
    assert not {p for p in paths if "/.git/" in p or "/conf/" in p or p.startswith("/srv/app/home")}
    # Recorded in both SBOMs.
    spdx = json.loads((out / "sbom.spdx.json").read_text())
    noted = {
        f["fileName"]: [a["comment"] for a in f["annotations"]]
        for f in spdx["files"]
        if "annotations" in f
    }
    assert set(noted) == {"./srv/app/.env", "./etc/ssl/private/server.key"}
    assert all("--allow-secret" in c for comments in noted.values() for c in comments)
    cdx = json.loads((out / "sbom.cdx.json").read_text())
    props = [
        p["value"]
        for p in cdx["metadata"]["properties"]
        if p["name"] == "scratchpack:allowed-secret"
    ]
    assert len(props) == 5
    (tmp_path / "spdx").mkdir()
    assert spdx_messages(tmp_path / "spdx", spdx) == []
    assert cyclonedx_errors(cdx) is None
    # trivy's secret scanner, offline, finds exactly the allowed files in every output.
    expected = {"srv/app/.env", "etc/ssl/private/server.key"}
    cache = tmp_path / "trivy-cache"
    assert _trivy_secrets(trivy, "fs", out / "rootfs", cache) == expected
    unpacked = tmp_path / "tarball"
    with tarfile.open(out / "rootfs.tar.gz") as tar:
        tar.extractall(unpacked, filter="tar")
    assert _trivy_secrets(trivy, "fs", unpacked, cache) == expected
    layers = _oci_layers(out / "oci", tmp_path / "layers")
    in_layers: set[str] = set()
    for layer in layers:
        in_layers |= _trivy_secrets(trivy, "fs", layer, cache)
    assert in_layers == expected
    assert _trivy_secrets(trivy, "image", out / "image.tar", cache) == expected
    # Control: without --exclude, trivy sees what the check refused (the scanner is live).
    control = tmp_path / "control"
    (control / "srv").mkdir(parents=True)
    shutil.copytree(root / "srv/app/conf", control / "srv/conf")
    assert "srv/conf/settings.ini" in _trivy_secrets(trivy, "fs", control, cache)


@needs_glibc
@needs_tools
@needs_libssl
def test_exclude_matches_a_link_as_spelt_and_what_it_names(tmp_path: Path) -> None:
    root = _root(tmp_path)
    for glob in ("/usr/lib/ssl/private", "/etc/ssl/private", "private"):
        out = tmp_path / f"out-{glob.replace('/', '_')}"
        done = run(
            *("--root", str(root), "/usr/bin/true", "--extra", "/opt/tls", "--exclude", glob),
            *("-o", str(out), "--json", "-v"),
        )
        assert done.returncode == 0, done.stderr
        paths = {f["path"] for f in json.loads(done.stdout)["files"]}
        assert "/usr/lib/ssl/openssl.cnf" in paths
        assert not {p for p in paths if p.startswith(("/etc/ssl", "/usr/lib/ssl/private"))}
        assert f"left out (--exclude {glob})" in done.stderr


def test_files_scratchpack_writes_are_checked_too() -> None:
    plan = Plan()
    passwd = f"root:{HASH}:0:0:root:/root:/bin/sh\n".encode()
    plan.entries["/etc/passwd"] = Entry(
        "/etc/passwd", FILE, 0o644, "extra", size=len(passwd), data=passwd, why="--user root"
    )
    plan.entries["/etc/app.json"] = Entry(
        "/etc/app.json", FILE, 0o644, "extra", data=f'{{"t": "{SLACK}"}}'.encode(), why="w"
    )
    check = check_plan(plan)
    assert [(f.path, f.rule, f.line, f.why) for f in check.refused] == [
        ("/etc/app.json", "slack-token", 1, "w"),
        ("/etc/passwd", "password-hash", 1, "--user root"),
    ]
    allowed = check_plan(plan, ("/etc/app.json",))
    assert [(f.path, glob) for f, glob in allowed.allowed] == [("/etc/app.json", "/etc/app.json")]
