"""A corpus of real Debian bookworm programs, packed by scratchpack and run FROM scratch.

Each program of ``CORPUS`` is packed in a builder stage (an image FROM the bookworm builder of
tests/test_docker.py: the debootstrapped tree with scratchpack in /opt/scratchpack) with the
flags the documentation gives a user: ``--with``, ``--user``, ``--extra`` of a configuration or data
folder, ``--mkdir``, ``--trace``/``--trace-cmd`` with a run that does the work the image will
do. All packs run in one stage image (one RUN per program, each recording its exit code and
output, so one failing pack fails only its own test); /out is copied out once and each
program's output folder is built as it is (``FROM scratch`` + ``ADD rootfs.tar.gz``). Then a
probe makes the image do real work and checks the result against what the test computes itself
(a digest, a sum, a file read back, the same command run on Debian):

- daemons with configuration trees and plugin modules: redis-server (Lua scripting), nginx
  with Debian's ``load_module`` of the echo module, lighttpd (``include_shell`` helpers run by
  sh and perl, mod_dirlisting), memcached, PostgreSQL 15 (initdb in the image, then the
  server, a PL/pgSQL function);
- interpreters: python3, perl (POSIX, XS modules), node (its externalized builtins);
- programs that run helpers or a shell: git (an alias run by ``sh``, git-core helpers), tar
  with ``-z`` (which executes gzip);
- programs with data folders: file (libmagic's database), openssl (``openssl.cnf`` and the
  hashed CA folder), sqlite3 (a database file made and read back).

Per program the FROM scratch image size is printed beside the size of "the Debian image it came
from": the Installed-Size of the minbase packages (priority required, and apt) plus the
dependency closure of the program's packages, read from the tree's dpkg database. The table of
docs/programs.md ("Real programs, packed") shows the same flags (a test checks it).

About 2 minutes with a warm debootstrap cache (a minute of it the stage's 13 packs); everything
made is removed at the end.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import re
import secrets
import shlex
import sqlite3
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

# The builder image and the kit that cleans up are those of tests/test_docker.py, instantiated
# once for this module; a few helpers of tests/test_docker_runtime.py are reused as they are.
from test_docker import builder, kit, mb, report, wheelhouse  # noqa: F401
from test_docker_runtime import curl_until_served, read_from_container

REPO = Path(__file__).resolve().parent.parent
PROGRAMS_PAGE = REPO / "docs" / "programs.md"
PROGRAMS_SECTION = "# Real programs, packed"

# Unique to this run: what the probes store, send and expect back.
NONCE = secrets.token_hex(8)

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_DATA = "/var/lib/postgresql/data"

# A user's site for nginx: the echo module's directives (unknown to nginx unless Debian's
# modules-enabled/50-mod-http-echo.conf loaded the module).
NGINX_SITE = """\
server {
    listen 8080;
    location = /echo {
        echo "hello $arg_name";
        echo_duplicate 3 "$arg_name";
    }
}
"""
# A user's git configuration: an alias run by /bin/sh that makes a repository, commits a file
# and prints the commit's subject and the file's blob id.
GITCONFIG = """\
[user]
\tname = Corpus
\temail = corpus@example.org
[alias]
\tdemo = "!f() { git init -q \\"$1\\" && cd \\"$1\\" && printf '%s\\\\n' \\"$2\\" > f \\
&& git add f && git commit -q -m \\"$2\\" && git log --format=%s && git rev-parse HEAD:f; }; f"
"""


@dataclass
class Probe:
    """What a probe gets: the engine, the client image, the program's image and output."""

    kit: Any
    builder: str
    tag: str
    name: str
    out: Path
    root: Path
    network: str
    control_tag: str | None = None


@dataclass(frozen=True)
class Program:
    """One corpus entry: its family, the Debian packages it comes from, shell lines run in the
    builder stage before the pack (the user's own configuration), the scratchpack arguments
    (as a shell would read them; ``-o`` is added) and the probe."""

    family: str
    packages: tuple[str, ...]
    args: str
    probe: Callable[[Probe], str]
    setup: tuple[str, ...] = ()
    # The same program packed another way, whose image must fail (a negative control).
    control: str | None = None
    # What the traced runs write (files, or folders they create): never in the image.
    trace_writes: tuple[str, ...] = ()


# ----- helpers ----------------------------------------------------------------------------------
def run_keep(
    docker_kit: Any, image: str, command: list[str], timeout: int = 120, **create: Any
) -> tuple[int, str, Any]:
    """Run IMAGE with COMMAND to its end and leave the container (to read files from it):
    (exit code, output, container). The caller removes it (``remove(force=True)``)."""
    container = docker_kit.client.containers.create(
        image, command=command, labels=docker_kit.labels, **create
    )
    container.start()
    try:
        status = container.wait(timeout=timeout)
    except Exception as exc:  # a timeout of the SDK's request
        container.remove(force=True)
        raise AssertionError(f"{image} {command}: still running after {timeout} s: {exc}") from None
    output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    return int(status.get("StatusCode", -1)), output, container


def file_from(container: Any, path: str) -> bytes:
    _member, data = read_from_container(container, path)
    return data


def client(probe: Probe, script: str, timeout: int = 90, **create: Any) -> str:
    """``sh -c SCRIPT`` in the builder image (which has curl, redis-cli, psql and python3) on
    the corpus network, or as CREATE says; its output, which must end in exit 0."""
    if "network_mode" not in create:
        create["network"] = probe.network
    code, output, container = run_keep(
        probe.kit, probe.builder, ["sh", "-c", script], timeout=timeout, **create
    )
    container.remove(force=True)
    assert code == 0, f"client script failed (exit {code}):\n{script}\n{output}"
    return output


def start_server(probe: Probe, command: list[str] | None) -> Any:
    return probe.kit.start(
        probe.tag, command, name=probe.kit.name(probe.name), network=probe.network
    )


def server_said(probe: Probe, server: Any) -> str:
    server.reload()
    return f"the server is {server.status}, its output:\n{probe.kit.logs(server)}"


def blob_id(content: bytes) -> str:
    """git's object id of a blob with CONTENT (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


# ----- probes: daemons --------------------------------------------------------------------------
def probe_redis(probe: Probe) -> str:
    server = start_server(
        probe,
        ["/etc/redis/redis.conf", "--daemonize", "no", "--bind", "0.0.0.0",
         "--protected-mode", "no"],
    )  # fmt: skip
    probe.kit.wait_for_pong(probe.builder, server.name, probe.network, server)
    count = secrets.randbelow(1000) + 10
    host = shlex.quote(server.name)
    output = client(
        probe,
        f"redis-cli -h {host} SET corpus {NONCE} >/dev/null; redis-cli -h {host} GET corpus; "
        f"redis-cli -h {host} EVAL \"return redis.sha1hex(redis.call('GET', KEYS[1]))\" 1 corpus;"
        f" for i in $(seq 1 {count}); do echo INCRBY counter $i; done"
        f" | redis-cli -h {host} | tail -n 1",
    )
    expected = [NONCE, hashlib.sha1(NONCE.encode()).hexdigest(), str(count * (count + 1) // 2)]
    assert output.split() == expected, f"{output}\n{server_said(probe, server)}"
    return f"GET, Lua sha1hex and {count} INCRBY answered"


def probe_nginx(probe: Probe) -> str:
    server = start_server(probe, ["-g", "daemon off;"])
    echoed = curl_until_served(
        probe.kit, probe.builder, f"http://{server.name}:8080/echo?name={NONCE}",
        probe.network, server,
    )  # fmt: skip
    assert echoed == f"hello {NONCE}\n{NONCE * 3}\n", f"{echoed!r}\n{server_said(probe, server)}"
    page = curl_until_served(
        probe.kit, probe.builder, f"http://{server.name}/", probe.network, server
    )
    debian_page = (probe.root / "var/www/html/index.nginx-debian.html").read_text()
    assert page.strip() == debian_page.strip(), page
    return "echo module answered; Debian's default site served"


def probe_lighttpd(probe: Probe) -> str:
    server = start_server(probe, ["-D", "-f", "/etc/lighttpd/lighttpd.conf"])
    url = f"http://{server.name}/corpus/"
    # -i: the Content-Type comes from the mime.conf that the perl helper of include_shell wrote
    # from /etc/mime.types; the listing from mod_dirlisting.so.
    curl_until_served(probe.kit, probe.builder, url, probe.network, server)
    output = client(
        probe,
        f"curl -fsS -i {shlex.quote(url)}nonce.txt | tr -d '\\r'; echo ==; "
        f"curl -fsS {shlex.quote(url)}",
    )
    headers, _, rest = output.partition("\n\n")
    body, _, listing = rest.partition("==\n")
    assert body == f"{NONCE}\n", f"{output}\n{server_said(probe, server)}"
    assert "content-type: text/plain;charset=utf-8" in headers.lower(), headers
    assert re.search(r'<a href="nonce\.txt">', listing), listing
    return "a file served with its mime type; a folder listed"


def probe_memcached(probe: Probe) -> str:
    server = start_server(probe, ["-l", "0.0.0.0"])
    step = secrets.randbelow(1000) + 1
    script = f"""
import socket, sys, time
end = time.time() + 30
while True:
    try:
        s = socket.create_connection(({server.name!r}, 11211), timeout=5)
        break
    except OSError:
        if time.time() > end:
            raise
        time.sleep(0.2)
f = s.makefile('rwb')
def ask(line, data=None):
    f.write(line.encode() + b'\\r\\n' + (data.encode() + b'\\r\\n' if data is not None else b''))
    f.flush()
    return f.readline().decode().strip()
print(ask('set corpus 0 0 {len(NONCE)}', {NONCE!r}))
print(ask('get corpus'), f.readline().decode().strip(), f.readline().decode().strip())
print(ask('set n 0 0 1', '7'))
for _ in range(3):
    print(ask('incr n {step}'))
"""
    output = client(probe, f"python3 -c {shlex.quote(script)}")
    lines = output.splitlines()
    assert lines[:2] == ["STORED", f"VALUE corpus 0 {len(NONCE)} {NONCE} END"], (
        f"{output}\n{server_said(probe, server)}"
    )
    assert lines[2:] == ["STORED", *(str(7 + step * i) for i in (1, 2, 3))], output
    return "set, get and incr answered"


PG_SQL = (
    "CREATE TABLE corpus(v text)",
    f"INSERT INTO corpus VALUES ('{NONCE}')",
    "SELECT md5(v) FROM corpus",
    # PL/pgSQL (plpgsql.so, loaded on first use): the nonce reversed, character by character.
    "CREATE FUNCTION rev(s text) RETURNS text LANGUAGE plpgsql AS $$ DECLARE r text := '';"
    " BEGIN FOR i IN 1..length(s) LOOP r := substr(s, i, 1) || r; END LOOP; RETURN r; END $$",
    "SELECT rev(v) FROM corpus",
    "SELECT sum(x) FROM generate_series(1, 100000) x",
)


def probe_postgres(probe: Probe) -> str:
    """initdb in the image (into a volume), then the server on it; psql in the server's network
    namespace (initdb's pg_hba.conf trusts local connections only)."""
    import docker.errors

    docker_kit = probe.kit
    volume = docker_kit.client.volumes.create(
        name=docker_kit.name("pgdata"), labels=docker_kit.labels
    )
    server = None
    try:
        mounts = {volume.name: {"bind": PG_DATA, "mode": "rw"}}
        code, output, initdb = run_keep(
            docker_kit, probe.tag, ["-D", PG_DATA], entrypoint=[f"{PG_BIN}/initdb"],
            volumes=mounts,
        )  # fmt: skip
        initdb.remove(force=True)
        assert code == 0, f"initdb in the image failed (exit {code}):\n{output}"
        server = docker_kit.client.containers.create(
            probe.tag, ["-D", PG_DATA], volumes=mounts, labels=docker_kit.labels,
            name=docker_kit.name(probe.name),
        )  # fmt: skip
        server.start()
        psql = " ".join(f"-c {shlex.quote(sql)}" for sql in PG_SQL)
        try:
            output = client(
                probe,
                "end=$(( $(date +%s) + 60 )); "
                "until pg_isready -q -h 127.0.0.1; do [ $(date +%s) -ge $end ] && break; "
                "sleep 0.3; done; "
                f"psql -h 127.0.0.1 -U postgres -d postgres -X -qAt -v ON_ERROR_STOP=1 {psql}",
                network_mode=f"container:{server.id}",
            )
        except (AssertionError, docker.errors.APIError) as exc:
            # (The engine refuses to join the namespace of a server that has exited.)
            raise AssertionError(f"{exc}\n{server_said(probe, server)}") from None
        expected = [
            hashlib.md5(NONCE.encode()).hexdigest(),
            NONCE[::-1],
            str(sum(range(1, 100001))),
        ]
        assert output.splitlines() == expected, f"{output}\n{server_said(probe, server)}"
        return "initdb ran in the image; md5, PL/pgSQL and a sum answered"
    finally:
        if server is not None:
            server.remove(force=True)
        volume.remove(force=True)


# ----- probes: interpreters ---------------------------------------------------------------------
PYTHON_SCRIPT = """\
import base64, decimal, hashlib, json, sqlite3, sys, zlib
word = sys.argv[1]
db = sqlite3.connect(':memory:')
db.execute('create table t(n integer)')
db.executemany('insert into t values (?)', [(n,) for n in range(1, 1001)])
print(json.dumps({
    'sha256': hashlib.sha256(word.encode()).hexdigest(),
    'decimal': str(decimal.Decimal(len(word)) / decimal.Decimal(7)),
    'sum': db.execute('select sum(n) from t').fetchone()[0],
    'zlib': base64.b64encode(zlib.compress(word.encode())).decode(),
}))
"""


def probe_python3(probe: Probe) -> str:
    code, output = probe.kit.run(probe.tag, ["-c", PYTHON_SCRIPT, NONCE], timeout=60)
    assert code == 0, output
    facts = json.loads(output.strip().splitlines()[-1])
    assert facts["sha256"] == hashlib.sha256(NONCE.encode()).hexdigest(), facts
    assert facts["decimal"] == str(Decimal(len(NONCE)) / Decimal(7)), facts
    assert facts["sum"] == sum(range(1, 1001)), facts
    assert zlib.decompress(base64.b64decode(facts["zlib"])) == NONCE.encode()
    return "sha256, decimal, sqlite3 and zlib computed"


PERL_SCRIPT = (
    "use POSIX qw(strftime floor); use List::Util qw(sum); use Digest::MD5 qw(md5_hex);"
    ' my ($word, $t, $n) = @ARGV; print md5_hex($word), "\\n",'
    ' strftime("%Y-%m-%d %H:%M:%S", gmtime($t)), "\\n", sum(1..$n), " ", floor($n / 7), "\\n";'
)


def probe_perl(probe: Probe) -> str:
    when = secrets.randbelow(2**31)
    count = secrets.randbelow(10000) + 1
    code, output = probe.kit.run(
        probe.tag, ["-e", PERL_SCRIPT, NONCE, str(when), str(count)], timeout=60
    )
    assert code == 0, output
    expected = [
        hashlib.md5(NONCE.encode()).hexdigest(),
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)),
        f"{count * (count + 1) // 2} {count // 7}",
    ]
    assert output.splitlines() == expected, output
    # The negative control: perl packed as ldd sees it has no POSIX module.
    code, output = probe.kit.run(str(probe.control_tag), ["-e", PERL_SCRIPT, NONCE, "0", "1"])
    assert code != 0 and "POSIX.pm" in output, output
    return "Digest::MD5, POSIX strftime, List::Util computed; without --trace: no POSIX.pm"


NODE_SCRIPT = """\
const word = process.argv[1];
const crypto = require('crypto'), zlib = require('zlib');
console.log(JSON.stringify({
  sha256: crypto.createHash('sha256').update(word).digest('hex'),
  gzip: zlib.gzipSync(Buffer.from(word)).toString('base64'),
  sum: Array.from({length: 1000}, (_, i) => i + 1).reduce((a, b) => a + b),
}));
"""


def probe_node(probe: Probe) -> str:
    code, output = probe.kit.run(probe.tag, ["-e", NODE_SCRIPT, NONCE], timeout=60)
    assert code == 0, output
    facts = json.loads(output.strip().splitlines()[-1])
    assert facts["sha256"] == hashlib.sha256(NONCE.encode()).hexdigest(), facts
    assert gzip.decompress(base64.b64decode(facts["gzip"])) == NONCE.encode(), facts
    assert facts["sum"] == sum(range(1, 1001)), facts
    return "crypto sha256, zlib gzip and a sum computed"


# ----- probes: helpers and a shell --------------------------------------------------------------
def probe_git(probe: Probe) -> str:
    code, output = probe.kit.run(probe.tag, ["demo", "/tmp/repo", NONCE], timeout=60)
    assert code == 0, output
    assert output.split() == [NONCE, blob_id(f"{NONCE}\n".encode())], output
    return "an alias run by sh made a repository, a commit and its log"


def probe_tar(probe: Probe) -> str:
    members = ["etc/passwd", "etc/group", "usr/bin/tar"]
    code, output, container = run_keep(
        probe.kit, probe.tag, ["-czvf", "/tmp/probe.tgz", "-C", "/", *members]
    )
    try:
        assert code == 0, output
        data = file_from(container, "/tmp/probe.tgz")
    finally:
        container.remove(force=True)
    assert data[:2] == b"\x1f\x8b", "not gzip data: gzip did not run"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
        assert names == members, names
        tar_member = archive.getmember("usr/bin/tar")
        assert tar_member.uname == "root", tar_member.uname  # names from passwd (NSS)
        handle = archive.extractfile(tar_member)
        assert handle is not None
        packed = handle.read()
    assert packed == (probe.root / "usr/bin/tar").read_bytes()
    return "a gzip-compressed archive made (gzip executed) and read back"


# ----- probes: data folders ---------------------------------------------------------------------
FILE_SUBJECTS = ("/usr/bin/file", "/usr/lib/file/magic.mgc", "/usr/lib/x86_64-linux-gnu/libc.so.6")


def probe_file(probe: Probe) -> str:
    code, output = probe.kit.run(probe.tag, list(FILE_SUBJECTS), timeout=60)
    assert code == 0, output
    debian = client(probe, shlex.join(["file", *FILE_SUBJECTS]))
    assert output == debian, f"FROM scratch:\n{output}\nDebian:\n{debian}"
    assert "ELF 64-bit" in debian and "magic binary file" in debian, debian
    return "the same descriptions as on Debian"


def probe_openssl(probe: Probe) -> str:
    # A root certificate verifies only when -CApath finds it by its subject hash (the hashed
    # links of /etc/ssl/certs, behind the /usr/lib/ssl/certs link).
    roots = sorted(p.name for p in (probe.root / "etc/ssl/certs").glob("*.pem") if p.is_symlink())
    cert = f"/usr/lib/ssl/certs/{roots[len(roots) // 2]}"
    # (-no_check_time: a root of the tree may have expired since, which is not the point.)
    code, output = probe.kit.run(
        probe.tag, ["verify", "-no_check_time", "-CApath", "/usr/lib/ssl/certs", cert]
    )
    assert (code, output.strip()) == (0, f"{cert}: OK"), output
    # req reads the [req] section of openssl.cnf; the certificate on stdout (its progress on
    # stderr would interleave with it in the container's log).
    command = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    command += ["-noenc", "-subj", f"/CN={NONCE}", "-keyout", "/dev/null", "-days", "1"]
    code, output, container = run_keep(probe.kit, probe.tag, command)
    try:
        pem = container.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0 and pem.startswith("-----BEGIN CERTIFICATE-----"), output
    subject = client(
        probe,
        f"printf '%s' {shlex.quote(pem)} | openssl x509 -noout -subject -nameopt RFC2253",
    )
    assert subject.strip() == f"subject=CN={NONCE}", subject
    return f"{roots[len(roots) // 2]} verified by -CApath; a certificate made"


def probe_sqlite3(probe: Probe) -> str:
    count = secrets.randbelow(5000) + 100
    sql = (
        f"CREATE TABLE t(n INTEGER, w TEXT); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        f"SELECT x + 1 FROM c WHERE x < {count}) INSERT INTO t SELECT x, '{NONCE}' FROM c; "
        "SELECT count(*), sum(n) FROM t;"
    )
    code, output, container = run_keep(probe.kit, probe.tag, ["/tmp/probe.db", sql])
    try:
        assert code == 0, output
        data = file_from(container, "/tmp/probe.db")
    finally:
        container.remove(force=True)
    assert output.strip() == f"{count}|{count * (count + 1) // 2}", output
    path = probe.out.with_name(f"{probe.name}-probe.db")
    path.write_bytes(data)
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT count(*), min(w), max(w) FROM t").fetchone()
    assert rows == (count, NONCE, NONCE), rows
    return f"a database of {count} rows made, queried and read back"


# ----- the corpus -------------------------------------------------------------------------------
CORPUS: dict[str, Program] = {
    "redis-server": Program(
        family="daemon",
        packages=("redis-server",),
        args="redis-server --with base --user redis --extra /etc/redis/redis.conf"
        " --mkdir /var/lib/redis --mkdir /var/log/redis --mkdir /run/redis",
        probe=probe_redis,
    ),
    "nginx": Program(
        family="daemon",
        packages=("nginx", "libnginx-mod-http-echo"),
        setup=(f"printf '%s' {shlex.quote(NGINX_SITE)} > /etc/nginx/conf.d/echo.conf",),
        args="nginx --with base --user www-data --extra /etc/nginx --extra /var/www/html"
        " --mkdir /var/log/nginx --mkdir /var/lib/nginx --mkdir /run:755:www-data --trace -t",
        probe=probe_nginx,
        # nginx -t makes its temporary folders (client bodies, proxy, ...) in /var/lib/nginx.
        trace_writes=("/var/lib/nginx/body", "/var/lib/nginx/proxy"),
    ),
    "lighttpd": Program(
        family="daemon",
        packages=("lighttpd",),
        setup=(
            "mkdir -p /var/www/html/corpus",
            f"echo {NONCE} > /var/www/html/corpus/nonce.txt",
            "ln -s ../conf-available/10-dir-listing.conf /etc/lighttpd/conf-enabled/",
        ),
        args="lighttpd --with base --user www-data --extra /etc/lighttpd --extra /var/www/html"
        " --mkdir /var/log/lighttpd --mkdir /var/cache/lighttpd/uploads"
        " --mkdir /run:755:www-data --trace '-tt -f /etc/lighttpd/lighttpd.conf'",
        probe=probe_lighttpd,
    ),
    "memcached": Program(
        family="daemon",
        packages=("memcached",),
        args="memcached --user memcache",
        probe=probe_memcached,
    ),
    "postgres": Program(
        family="daemon",
        packages=("postgresql-15",),
        args=f"{PG_BIN}/postgres {PG_BIN}/initdb --entrypoint {PG_BIN}/postgres --with base"
        " --user postgres --trace-user postgres"
        f" --trace-cmd '{PG_BIN}/initdb -D /tmp/pgdata' --mkdir {PG_DATA}:700"
        " --mkdir /var/run/postgresql",
        probe=probe_postgres,
        trace_writes=("/tmp/pgdata",),
    ),
    "python3": Program(
        family="interpreter",
        packages=("python3",),
        args="python3 --with base"
        " --trace \"-c 'import base64, decimal, hashlib, json, sqlite3, zlib'\"",
        probe=probe_python3,
    ),
    "perl": Program(
        family="interpreter",
        packages=("perl",),
        args="perl --trace '-MPOSIX -MList::Util -MDigest::MD5 -e 1'",
        probe=probe_perl,
        control="perl",
    ),
    "node": Program(
        family="interpreter",
        packages=("nodejs",),
        args="""node --trace '-e "zlib.gzipSync(crypto.randomUUID())"'""",
        probe=probe_node,
    ),
    "git": Program(
        family="helpers",
        packages=("git",),
        setup=(f"printf '%s' {shlex.quote(GITCONFIG)} > /etc/gitconfig",),
        args="git --with base --trace 'demo /tmp/traced traced'",
        probe=probe_git,
        trace_writes=("/tmp/traced",),
    ),
    "tar": Program(
        family="helpers",
        packages=("tar", "gzip"),
        args="tar --with base --trace '-czf /tmp/traced.tgz -C / etc/passwd'",
        probe=probe_tar,
        trace_writes=("/tmp/traced.tgz",),
    ),
    "file": Program(
        family="data",
        packages=("file",),
        args="file --extra /usr/share/misc/magic.mgc",
        probe=probe_file,
    ),
    "openssl": Program(
        family="data",
        packages=("openssl", "ca-certificates"),
        args="openssl --extra /usr/lib/ssl/openssl.cnf --extra /usr/lib/ssl/certs",
        probe=probe_openssl,
    ),
    "sqlite3": Program(
        family="data",
        packages=("sqlite3",),
        args="sqlite3 --with tmp",
        probe=probe_sqlite3,
    ),
}
FAMILIES = {
    "daemon": "daemon: configuration tree, plugin modules",
    "interpreter": "interpreter",
    "helpers": "runs helpers or a shell",
    "data": "data folder",
}


# ----- the Debian image a program came from -----------------------------------------------------
@dataclass(frozen=True)
class DpkgPackage:
    name: str
    priority: str
    installed_kib: int
    depends: tuple[tuple[str, ...], ...]  # each group: its alternatives, in order
    provides: tuple[str, ...]


def _dep_names(text: str) -> list[tuple[str, ...]]:
    groups = []
    for group in text.split(","):
        names = []
        for alt in group.split("|"):
            word = alt.strip().split(" ")[0].split("(")[0]
            if word:
                names.append(word.split(":")[0])
        if names:
            groups.append(tuple(names))
    return groups


def dpkg_installed(root: Path) -> dict[str, DpkgPackage]:
    """The installed packages of ROOT's dpkg database (var/lib/dpkg/status)."""
    text = (root / "var/lib/dpkg/status").read_text(errors="replace")
    packages: dict[str, DpkgPackage] = {}
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" not in fields or not fields.get("Status", "").endswith(" installed"):
            continue
        depends = _dep_names(fields.get("Pre-Depends", "")) + _dep_names(fields.get("Depends", ""))
        packages[fields["Package"]] = DpkgPackage(
            name=fields["Package"],
            priority=fields.get("Priority", ""),
            installed_kib=int(fields.get("Installed-Size", "0") or 0),
            depends=tuple(depends),
            provides=tuple(g[0] for g in _dep_names(fields.get("Provides", ""))),
        )
    return packages


def debian_image_kib(installed: dict[str, DpkgPackage], wanted: tuple[str, ...]) -> int:
    """KiB of a Debian image with WANTED installed: the Installed-Size of the minbase packages
    and of WANTED, with their Depends + Pre-Depends closure (of each group of alternatives the
    first one installed, by name or through Provides).

    minbase is what ``debootstrap --variant=minbase`` installs: the packages of priority
    required, and apt, with their closure (for bookworm 117,592 KiB: about the official
    debian:bookworm image). The tree's packages of priority important (systemd, iproute2, ...)
    are not part of it: they are there because a package of DEBOOTSTRAP_INCLUDE depends on
    them, and count only for a program whose closure has them."""
    missing = [name for name in wanted if name not in installed]
    assert not missing, f"not installed in the tree: {missing}"
    providers: dict[str, list[str]] = {}
    for pkg in installed.values():
        for virtual in pkg.provides:
            providers.setdefault(virtual, []).append(pkg.name)
    minbase = [p.name for p in installed.values() if p.priority == "required"] + ["apt"]
    chosen: set[str] = set()
    todo = [*minbase, *wanted]
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        chosen.add(name)
        for group in installed[name].depends:
            for alt in group:
                real = alt if alt in installed else next(iter(providers.get(alt, [])), None)
                if real is not None:
                    todo.append(real)
                    break
    return sum(installed[name].installed_kib for name in chosen)


# ----- fixtures ---------------------------------------------------------------------------------
# As README's builder stage runs it: the venv's script by its path, with Debian's PATH (the
# builder image puts /opt/scratchpack/bin first, where `python3` is the venv's link).
SCRATCHPACK = "/opt/scratchpack/bin/scratchpack"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def pack_script(name: str, spec: Program) -> str:
    """The builder-stage script of one program: its setup, then the pack; the exit code, the
    output and the manifest land in /out (a failing pack fails only this program's test). The
    output folder keeps what `docker build` needs (rootfs/ is the tarball's content)."""
    lines = ["#!/bin/sh", f"# {name}", f"export PATH={DEBIAN_PATH}"]
    setup = "; ".join(("set -e", *spec.setup))
    pack = f"{SCRATCHPACK} {spec.args} -o /out/{name} --json > /out/{name}.json"
    lines.append(f"( {setup} ) > /out/{name}.log 2>&1 && {pack} 2>> /out/{name}.log")
    lines.append(f"echo $? > /out/{name}.rc")
    if spec.control is not None:
        control = f"{SCRATCHPACK} {spec.control} -o /out/{name}-control"
        lines.append(f"{control} > /out/{name}-control.log 2>&1; echo $? > /out/{name}-control.rc")
    lines.append(f"rm -rf /out/{name}/rootfs /out/{name}-control/rootfs")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def corpus(
    kit: Any,  # noqa: F811
    builder: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Every program packed in one builder-stage image, its /out copied out once, and each
    output folder built FROM scratch: name -> {rc, log, manifest, tag, size, error}."""
    start = time.monotonic()
    context = tmp_path_factory.mktemp("corpus-stage")
    (context / "packs").mkdir()
    lines = [f"FROM {builder}", "COPY packs/ /packs/", "RUN mkdir /out"]
    for name, spec in CORPUS.items():
        (context / "packs" / f"{name}.sh").write_text(pack_script(name, spec))
        lines.append(f"RUN sh /packs/{name}.sh")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    stage_tag = kit.tag("corpus-stage")
    kit.build(context, stage_tag, timeout=1800)
    got = tmp_path_factory.mktemp("corpus-got")
    kit.copy_out(stage_tag, ["/out"], got)
    kit.client.images.remove(stage_tag, force=True)
    out = got / "out"
    stage_seconds = time.monotonic() - start
    start = time.monotonic()
    results: dict[str, Any] = {"stage seconds": stage_seconds, "out": out, "programs": {}}
    for name, spec in CORPUS.items():
        result: dict[str, Any] = {
            "rc": int((out / f"{name}.rc").read_text()),
            "log": (out / f"{name}.log").read_text(errors="replace"),
        }
        results["programs"][name] = result
        if result["rc"] != 0:
            continue
        result["manifest"] = json.loads((out / f"{name}.json").read_text())
        builds = {"": name}
        if spec.control is not None:
            builds[" control"] = f"{name}-control"
            result["control log"] = (out / f"{name}-control.log").read_text(errors="replace")
        for key, folder in builds.items():
            tag = kit.tag(f"corpus-{folder}")
            try:
                image = kit.build(out / folder, tag)
            except AssertionError as exc:
                result["error"] = str(exc)
                break
            result[f"tag{key}"] = tag
            result[f"size{key}"] = int(image.attrs["Size"])
    results["build seconds"] = time.monotonic() - start
    return results


@pytest.fixture(scope="module")
def network(kit: Any) -> Iterator[str]:  # noqa: F811
    """The network of the servers and their clients. At the end, what the probes made outside
    the kit's records (containers kept to read files from, PostgreSQL's volume) is removed if a
    probe could not: everything carrying this run's label."""
    import docker.errors
    from dockerkit import LABEL

    yield str(kit.network(kit.name("corpus")))
    label = {"label": f"{LABEL}={kit.run_id}"}
    for container in kit.client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    for volume in kit.client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


@pytest.fixture(scope="module")
def dpkg(debootstrap_root: Path) -> dict[str, DpkgPackage]:
    return dpkg_installed(debootstrap_root)


# ----- tests ------------------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORPUS))
def test_program_packed_runs_from_scratch(
    kit: Any,  # noqa: F811
    builder: str,  # noqa: F811
    corpus: dict[str, Any],
    network: str,
    debootstrap_root: Path,
    dpkg: dict[str, DpkgPackage],
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = CORPUS[name]
    result = corpus["programs"][name]
    assert result["rc"] == 0, f"scratchpack {spec.args} failed ({result['rc']}):\n{result['log']}"
    assert "error" not in result, result.get("error")
    assert "Traceback" not in result["log"], result["log"]
    # Debian's programs, not the builder's scratchpack installation (a venv with a python3).
    paths = [entry["path"] for entry in result["manifest"]["files"]]
    assert not [p for p in paths if p.startswith("/opt/")], "the builder's /opt is in the image"
    done = spec.probe(
        Probe(
            kit=kit,
            builder=builder,
            tag=result["tag"],
            name=name,
            out=corpus["out"] / name,
            root=debootstrap_root,
            network=network,
            control_tag=result.get("tag control"),
        )
    )
    size = result["size"]
    debian = debian_image_kib(dpkg, spec.packages) * 1024
    entries = result["manifest"]["totals"]["entries"]
    report(
        capsys,
        f"{name} ({FAMILIES[spec.family]}): FROM scratch {mb(size)}, Debian {mb(debian)} "
        f"({debian / size:.1f}x); {entries} entries; {done}",
    )
    assert size < debian, (size, debian)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, spec in CORPUS.items() if spec.trace_writes])
def test_what_the_trace_wrote_stays_out(corpus: dict[str, Any], name: str) -> None:
    """docs/runtime.md: files a traced run wrote are left out, and so are the folders it
    created (git writes its objects under temporary names and link()s them into place)."""
    result = corpus["programs"][name]
    assert result["rc"] == 0, result["log"]
    written = CORPUS[name].trace_writes
    packed = [
        entry["path"]
        for entry in result["manifest"]["files"]
        if any(entry["path"] == w or entry["path"].startswith(w + "/") for w in written)
    ]
    assert packed == [], packed


@pytest.mark.docker
@pytest.mark.slow
def test_interpreter_packed_without_trace_is_warned(corpus: dict[str, Any]) -> None:
    """perl packed as ldd sees it (no --trace): scratchpack says in one line what to add."""
    log = corpus["programs"]["perl"].get("control log", "")
    warnings = [line for line in log.splitlines() if "--trace" in line]
    assert len(warnings) == 1, log


@pytest.mark.docker
@pytest.mark.slow
def test_corpus_timing(corpus: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    report(
        capsys,
        f"corpus: {len(CORPUS)} programs packed in one builder stage in "
        f"{corpus['stage seconds']:.0f} s; FROM scratch images built in "
        f"{corpus['build seconds']:.0f} s",
    )


def programs_rows() -> dict[str, list[str]]:
    text = PROGRAMS_PAGE.read_text()
    assert PROGRAMS_SECTION in text, f"docs/programs.md has no {PROGRAMS_SECTION!r} section"
    section = text.split(PROGRAMS_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else []
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


@pytest.mark.parametrize("name", list(CORPUS))
def test_programs_table_shows_the_corpus_flags(name: str) -> None:
    rows = programs_rows()
    assert name in rows, f"docs/programs.md's table has no row for {name}"
    flags = rows[name][2]
    assert flags == f"`scratchpack {CORPUS[name].args}`", (flags, CORPUS[name].args)
