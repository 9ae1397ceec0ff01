"""A Docker registry of the tests' own (Debian's ``docker-registry``) on 127.0.0.1.

Started with a configuration and storage folder in the test's tmp path, on a free port, and
stopped afterwards; nothing outside the machine is reached. Docker treats 127.0.0.0/8 as an
insecure registry by default, so ``docker pull 127.0.0.1:PORT/...`` works over plain HTTP.

Optionally, as registries in the field run:

- ``tls=True``: HTTPS with a self-signed certificate for IP 127.0.0.1 (``Registry.ca``);
- ``users={"u": "p"}``: basic auth from an htpasswd file. docker-registry takes bcrypt hashes
  only; they come from ``htpasswd -B`` (apache2-utils) when installed, else from the system's
  libcrypt (libxcrypt, which every Debian has: libc6 depends on it) through ctypes;
- ``token=True`` (with ``users`` and ``tls``): Bearer tokens, as Docker Hub, GHCR and Harbor
  hand out, from a token server of our own on another port of 127.0.0.1. It checks the basic
  credentials and grants every scope asked for in a JWT signed (RS256) with the registry's key,
  its certificate in the ``x5c`` header, which the registry checks against its root bundle.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "docker-registry"
START_TIMEOUT = 30.0
SERVICE = "scratchpack-test-registry"
ISSUER = "scratchpack-test-tokens"


@dataclass(frozen=True)
class Registry:
    host: str  # "127.0.0.1:PORT"
    storage: Path
    log: Path
    ca: Path | None = None  # the self-signed certificate of a TLS registry: its own CA

    def blob_bytes(self) -> tuple[int, int]:
        """(count, bytes) of the blobs the registry stores (layers, configs, manifests)."""
        files = list((self.storage / "docker/registry/v2/blobs").rglob("data"))
        return len(files), sum(f.stat().st_size for f in files)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(
    folder: Path,
    *,
    tls: bool = False,
    users: dict[str, str] | None = None,
    token: bool = False,
) -> Iterator[Registry]:
    """A registry serving on 127.0.0.1 until the block ends; its storage under ``folder``."""
    binary = shutil.which(REGISTRY)
    if binary is None:
        raise FileNotFoundError(f"{REGISTRY} is not installed (make deps installs it)")
    port = free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    cert, key = self_signed(folder) if tls or token else (None, None)
    with contextlib.ExitStack() as stack:
        auth = ""
        if token:
            assert users and cert and key, "a token server needs users and TLS"
            realm = stack.enter_context(token_server(users, cert, key))
            auth = (
                f"auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n"
                f"    issuer: {ISSUER}\n    rootcertbundle: {cert}\n"
            )
        elif users:
            htpasswd = folder / "htpasswd"
            htpasswd.write_text("".join(f"{bcrypt_line(u, p)}\n" for u, p in users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: {SERVICE}\n    path: {htpasswd}\n"
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
            + (f"  tls:\n    certificate: {cert}\n    key: {key}\n" if cert else "")
            + auth
        )
        log = folder / "registry.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        registry = Registry(f"127.0.0.1:{port}", storage, log, cert)
        try:
            _wait_until_up(registry, proc)
            yield registry
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 (in subjectAltName, where TLS clients look), its key."""
    cert, key = folder / "registry.crt", folder / "registry.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def bcrypt_line(user: str, password: str) -> str:
    """``user:$2y$...``: an htpasswd line docker-registry accepts (bcrypt only)."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        done = subprocess.run(
            [htpasswd, "-nbB", user, password], check=True, capture_output=True, text=True
        )
        return done.stdout.strip()
    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = libcrypt.crypt_gensalt(b"$2b$", 5, None, 0)  # cost 5: fast, tests only
    hashed = libcrypt.crypt(password.encode(), salt)
    if not salt or not hashed or not hashed.startswith(b"$2b$"):
        raise RuntimeError("libcrypt made no bcrypt hash (and htpasswd is not installed)")
    return f"{user}:{hashed.decode()}"


# ----- a token server ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(user: str, scopes: list[str], cert: Path, key: Path) -> str:
    """A JWT granting SCOPES (``repository:NAME:ACTIONS``), signed with KEY (openssl)."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
    now = int(time.time())
    access = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        access.append({"type": kind, "name": name, "actions": actions.split(",")})
    claims = {
        "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 600, "nbf": now - 60,
        "iat": now, "jti": uuid.uuid4().hex, "access": access,
    }  # fmt: skip
    signed = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)],
        input=signed.encode(), check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    return f"{signed}.{_b64url(signature)}"


@contextlib.contextmanager
def token_server(users: dict[str, str], cert: Path, key: Path) -> Iterator[str]:
    """An HTTPS token endpoint on 127.0.0.1 until the block ends; its URL (the realm)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            user = _basic_user(self.headers.get("Authorization", ""), users)
            if user is None:
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]})
                return
            token = make_token(user, query.get("scope", []), cert, key)
            self._answer(200, {"token": token, "expires_in": 600})

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _basic_user(header: str, users: dict[str, str]) -> str | None:
    """The user of a right ``Basic`` header; None for a wrong one; "" for anonymous."""
    if not header:
        return ""
    scheme, _, encoded = header.partition(" ")
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return None
    return user if scheme.lower() == "basic" and users.get(user) == password else None


def _wait_until_up(registry: Registry, proc: subprocess.Popen[bytes]) -> None:
    scheme = "https" if registry.ca else "http"
    context = ssl.create_default_context(cafile=registry.ca) if registry.ca else None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{REGISTRY} exited: {registry.log.read_text(errors='replace')}")
        try:
            url = f"{scheme}://{registry.host}/v2/"
            with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials
                return
            time.sleep(0.2)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{REGISTRY} did not answer on {registry.host} in {START_TIMEOUT} s")
