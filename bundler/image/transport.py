"""HTTP to one registry (OCI distribution spec), as Docker talks to it, with the standard library.

- Credentials come from the user's Docker config (``$DOCKER_CONFIG/config.json``, else
  ``~/.docker/config.json``): the ``auths`` map, ``auth`` being base64 ``user:password``.
  Credential helpers (``credsStore``, ``credHelpers``) are not run; a registry whose
  credentials live only there is told in one line.
- TLS is verified against what Docker trusts: the system CA bundle plus every ``*.crt`` of
  ``/etc/docker/certs.d/HOST:PORT/``, and a client certificate ``*.cert`` with its ``*.key``
  from there. Plain HTTP only for a registry the caller names insecure (as Docker, that first
  tries HTTPS without verification, then HTTP).
- Auth follows the registry's ``WWW-Authenticate`` challenge on ``GET /v2/``: ``Basic`` sends
  the credentials; ``Bearer`` fetches a token from the realm for the scopes the push needs.
- Every request has a timeout; every failure is one line naming the registry and what failed.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from bundler.errors import ScratchpackError

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds, per connect and per socket read or write
CHUNK = 1 << 20  # bytes sent per write when a blob streams from its file
CERTS_D = Path("/etc/docker/certs.d")
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
# The names Docker Hub goes by in config.json's auths; all mean the key above.
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_PARAM = re.compile(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))')


class RegistryError(ScratchpackError):
    """A registry could not be reached, refused us, or refused what we sent."""


# ----- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def auth_host(key: str) -> str:
    """An ``auths`` key or a registry as one spelling: ``https://host:5000/v1/`` -> ``host:5000``;
    every name of Docker Hub -> ``index.docker.io``."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return "index.docker.io" if host in _HUB_NAMES else host


@dataclass(frozen=True)
class CredentialStore:
    """The ``auths`` of a Docker config.json, keyed by ``auth_host``; which registries a
    credential helper holds (``*`` for ``credsStore``); the file they came from."""

    auths: Mapping[str, Credentials] = field(default_factory=dict)
    helpers: Mapping[str, str] = field(default_factory=dict)
    source: str = ""  # empty: given by the caller, from no file

    @classmethod
    def from_docker_config(cls, path: str | os.PathLike[str] | None = None) -> CredentialStore:
        """PATH, else ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``; an empty
        store when the file does not exist."""
        found = Path(path) if path is not None else docker_config_path()
        try:
            config = json.loads(found.read_bytes())
        except FileNotFoundError:
            return cls(source=str(found))  # named in messages: where we looked
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{found}: cannot read the Docker config: {exc}") from None
        if not isinstance(config, dict):
            raise RegistryError(f"{found}: not a Docker config (not a JSON object)")
        return cls(_auths(found, config), _helpers(config), str(found))

    def lookup(self, key: str) -> Credentials | None:
        """The credentials for the registry of auth key KEY; None for none. A registry whose
        credentials only a helper holds is a RegistryError: we do not run helpers."""
        host = auth_host(key)
        found = self.auths.get(host)
        if found is not None:
            return found
        helper = self.helpers.get(host) or self.helpers.get("*")
        if helper:
            raise RegistryError(
                f"{host}: the credentials are kept by docker-credential-{helper} ({self.source}); "
                "scratchpack does not run credential helpers: put an `auths` entry in a "
                "config.json of its own and point DOCKER_CONFIG at its folder"
            )
        return None


def docker_config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _auths(path: Path, config: dict[str, Any]) -> dict[str, Credentials]:
    found: dict[str, Credentials] = {}
    auths = config.get("auths")
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        credentials = _entry_credentials(path, key, entry)
        if credentials is not None:
            found[auth_host(key)] = credentials
    return found


def _entry_credentials(path: Path, key: str, entry: object) -> Credentials | None:
    """One ``auths`` entry; None for an empty one (Docker Desktop's, whose secret is in the
    helper)."""
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = (
                base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{path}: auths[{key!r}].auth is not base64") from None
        if not sep:
            raise RegistryError(f"{path}: auths[{key!r}].auth is not base64 of user:password")
        return Credentials(user, password)
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    if entry.get("identitytoken"):
        raise RegistryError(
            f"{path}: auths[{key!r}] holds an identity token, which scratchpack does not use; "
            "log in with a user and password or an access token"
        )
    return None


def _helpers(config: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    if isinstance(config.get("credsStore"), str) and config["credsStore"]:
        found["*"] = config["credsStore"]
    helpers = config.get("credHelpers")
    for key, name in helpers.items() if isinstance(helpers, dict) else ():
        if isinstance(name, str) and name:
            found[auth_host(key)] = name
    return found


# ----- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsSettings:
    """Where Docker's per-registry certificates are: ``CERTS_D/HOST[:PORT]/``."""

    certs_d: Path = CERTS_D

    def context(self, netloc: str) -> ssl.SSLContext:
        """The system's CAs, plus the CAs and client certificate of ``certs_d/NETLOC``."""
        context = ssl.create_default_context()
        folder = self.certs_d / netloc
        if not folder.is_dir():
            return context
        try:
            for ca in sorted(folder.glob("*.crt")):
                context.load_verify_locations(cafile=ca)
            for cert in sorted(folder.glob("*.cert")):
                key = cert.with_suffix(".key")
                if not key.is_file():
                    raise RegistryError(f"{cert}: a client certificate without its {key.name}")
                context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"{folder}: cannot load a certificate: {exc}") from None
        return context


def _unverified_context() -> ssl.SSLContext:
    # An insecure registry, as Docker treats one: TLS when it speaks TLS, its certificate
    # unchecked.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ----- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def json(self) -> dict[str, Any]:
        try:
            found = json.loads(self.body)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class Body:
    """What a request sends: bytes, or a file streamed from disk (opened anew on a retry).
    ON_CHUNK hears how many bytes each read of the file gave."""

    data: bytes | None = None
    path: Path | None = None
    size: int = 0
    on_chunk: Callable[[int], None] | None = None

    @contextmanager
    def stream(self) -> Iterator[bytes | _Readable | None]:
        if self.path is None:
            yield self.data
            return
        with open(self.path, "rb") as handle:
            yield _Counting(handle, self.on_chunk) if self.on_chunk else handle

    @property
    def length(self) -> int:
        return self.size if self.path is not None else len(self.data or b"")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Counting:
    """A file whose reads are counted (http.client reads a body in ``blocksize`` pieces)."""

    def __init__(self, handle: IO[bytes], on_chunk: Callable[[int], None]) -> None:
        self.handle = handle
        self.on_chunk = on_chunk

    def read(self, size: int = -1, /) -> bytes:
        data = self.handle.read(size)
        self.on_chunk(len(data))
        return data


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "basic" or "bearer"
    params: Mapping[str, str]


def parse_challenges(values: list[str]) -> list[_Challenge]:
    """``WWW-Authenticate`` headers -> challenges, each ``Scheme k="v",k=v``."""
    found = []
    for value in values:
        scheme, _, rest = value.strip().partition(" ")
        params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
        found.append(_Challenge(scheme.lower(), params))
    return found


class Session:
    """Requests to one registry (``host[:port]``), authenticated once the first ``GET /v2/``
    told how; SCOPES are the token scopes a Bearer registry is asked for."""

    def __init__(
        self,
        registry: str,
        auth_key: str,
        credentials: CredentialStore,
        tls: TlsSettings,
        insecure: bool = False,
        timeout: float = TIMEOUT,
    ) -> None:
        self.registry = registry
        self.auth_key = auth_key
        self.credentials = credentials
        self.tls = tls
        self.insecure = insecure
        self.timeout = timeout
        self.scheme = "https"
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._authorization: str | None = None
        self._bearer: _Challenge | None = None
        self._scopes: list[str] = []
        self._user: Credentials | None = None

    # ----- connections --------------------------------------------------------------------------

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(f"{self.scheme}://{self.registry}/", path)

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """The open connection to NETLOC (reused: True) or a new one."""
        found = self._connections.get((scheme, netloc))
        if found is not None:
            return found, True
        if scheme == "http":
            made = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=CHUNK)
        else:
            # The registry's trust for every host it sends us to (its token realm too), as
            # Docker does.
            context = _unverified_context() if self.insecure else self.tls.context(self.registry)
            made = http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=context, blocksize=CHUNK
            )
        self._connections[(scheme, netloc)] = made
        return made, False

    def _drop(self, key: tuple[str, str]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body | None = None
    ) -> Response:
        """One request, no auth added; one retry when a kept-alive connection was closed
        by the other end."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "http" and not self.insecure:
            raise RegistryError(
                f"{self.registry}: refusing plain HTTP to {parts.netloc} (not an insecure registry)"
            )
        key = (parts.scheme, parts.netloc)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        for attempt in (1, 2):
            connection, reused = self._connection(*key)
            try:
                return self._exchange(connection, method, target, headers, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(key)
                if not (reused and attempt == 1):
                    raise self.network_error(parts.netloc, exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                raise self.network_error(parts.netloc, exc) from None
        raise AssertionError("unreachable")

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Body | None,
    ) -> Response:
        sent = dict(headers)
        if body is not None:
            sent["Content-Length"] = str(body.length)
        with (body or Body()).stream() as payload:
            connection.request(method, target, body=payload, headers=sent)
            answer = connection.getresponse()
            data = answer.read()
        if answer.will_close:
            connection.close()
        return Response(answer.status, answer.headers, data)

    def network_error(self, netloc: str, exc: BaseException) -> RegistryError:
        where = self.registry if netloc == self.registry else f"{self.registry} (via {netloc})"
        return RegistryError(f"{where}: {_network_reason(exc, self.tls.certs_d / self.registry)}")

    # ----- auth ---------------------------------------------------------------------------------

    def ping(self, scopes: list[str]) -> None:
        """``GET /v2/``: choose HTTPS or (insecure only) HTTP, and log in as it asks, for
        SCOPES when it asks for a token."""
        self._scopes = list(scopes)
        answer = self._ping_any_scheme()
        if answer.status == 401:
            self._login(answer)
            answer = self.send("GET", self.url("/v2/"), self._auth_headers())
            if answer.status == 401:
                raise self._refused_login(answer)
        if answer.status != 200:
            raise RegistryError(
                f"{self.registry}: not a registry (GET /v2/ answered HTTP {answer.status})"
            )
        log.debug("%s: %s, auth %s", self.registry, self.scheme, self._auth_kind())

    def _ping_any_scheme(self) -> Response:
        try:
            return self.send("GET", self.url("/v2/"), {})
        except RegistryError as exc:
            if not self.insecure:
                raise
            log.debug("%s: no HTTPS (%s); trying plain HTTP", self.registry, exc)
        self.scheme = "http"
        return self.send("GET", self.url("/v2/"), {})

    def want_scope(self, scope: str) -> None:
        """Add SCOPE to the token's (a mount needs pull on its source); a new token now."""
        if scope in self._scopes:
            return
        self._scopes.append(scope)
        if self._bearer is not None:
            self._authorization = self._token(self._bearer)

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
    ) -> Response:
        """METHOD on PATH (``/v2/...`` or an absolute URL the registry gave), authenticated.
        A 401 gets one retry: with a new token (for the scope the challenge names, or because
        ours expired during a long push), or after a first login."""
        url = self.url(path)
        answer = self._authenticated(method, url, headers, body)
        if answer.status != 401 or urllib.parse.urlsplit(url).netloc != self.registry:
            return answer
        if self._bearer is not None:
            for challenge in _challenges(answer):
                scope = challenge.params.get("scope", "") if challenge.scheme == "bearer" else ""
                if scope and scope not in self._scopes:
                    self._scopes.append(scope)
            self._authorization = self._token(self._bearer)
        elif self._authorization is None:
            self._login(answer)
        else:
            return answer
        return self._authenticated(method, url, headers, body)

    def _authenticated(
        self, method: str, url: str, headers: Mapping[str, str] | None, body: Body | None
    ) -> Response:
        return self.send(method, url, {**(headers or {}), **self._auth_headers(url)}, body)

    def _auth_headers(self, url: str | None = None) -> dict[str, str]:
        # Our credentials go to the registry only, never to a storage host it redirects to.
        if self._authorization is None:
            return {}
        if url is not None and urllib.parse.urlsplit(url).netloc != self.registry:
            return {}
        return {"Authorization": self._authorization}

    def _auth_kind(self) -> str:
        if self._bearer is not None:
            return "bearer token"
        return "basic" if self._authorization else "none"

    def _login(self, answer: Response) -> None:
        challenges = {c.scheme: c for c in _challenges(answer)}
        self._user = self.credentials.lookup(self.auth_key)
        if "bearer" in challenges:
            self._bearer = challenges["bearer"]
            self._authorization = self._token(self._bearer)
        elif "basic" in challenges:
            if self._user is None:
                raise self._no_credentials()
            self._authorization = self._user.basic()
        else:
            found = ", ".join(answer.headers.get_all("WWW-Authenticate") or []) or "none"
            raise RegistryError(
                f"{self.registry}: asks for an authentication scratchpack does not speak ({found})"
            )

    def _token(self, challenge: _Challenge) -> str:
        """A Bearer token from the challenge's realm for our scopes, with our credentials."""
        realm = challenge.params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise RegistryError(f"{self.registry}: a token realm that is not a URL: {realm!r}")
        query = [("service", challenge.params["service"])] if "service" in challenge.params else []
        query += [("scope", scope) for scope in self._scopes]
        url = urllib.parse.urlunsplit(
            (*parts[:3], "&".join(filter(None, [parts.query, urllib.parse.urlencode(query)])), "")
        )
        headers = {"Authorization": self._user.basic()} if self._user else {}
        if parts.scheme == "http" and self._user and not self.insecure:
            raise RegistryError(f"{self.registry}: refusing to send credentials to {realm} (HTTP)")
        answer = self.send("GET", url, headers)
        if answer.status == 401 and self._user is not None:
            raise self._refused_login(answer)
        token = answer.json().get("token") or answer.json().get("access_token")
        if answer.status != 200 or not isinstance(token, str):
            raise RegistryError(
                f"{self.registry}: no token from {parts.netloc}: {error_message(answer)}"
            )
        return f"Bearer {token}"

    def _refused_login(self, answer: Response) -> RegistryError:
        if self._user is None:
            return self._no_credentials()
        source = self.credentials.source
        origin = f" (credentials from {source})" if source else ""
        return RegistryError(
            f"{self.registry}: login refused for user {self._user.username!r}{origin}: "
            f"{error_message(answer)}"
        )

    def _no_credentials(self) -> RegistryError:
        return RegistryError(f"{self.registry}: asks for credentials, and {self._none_for()}")

    def _none_for(self) -> str:
        host = auth_host(self.auth_key)
        if not self.credentials.source:
            return f"none were given for {host}"
        return f"{self.credentials.source} has none for {host} (docker login writes them)"

    def denied(self, what: str, answer: Response) -> RegistryError:
        """A refusal of WHAT, in one line, with the registry's own reason."""
        hint = ""
        if answer.status in (401, 403) and self._user is None:
            hint = f" ({self._none_for()})"
        return RegistryError(f"{self.registry}: {what} refused: {error_message(answer)}{hint}")


def _challenges(answer: Response) -> list[_Challenge]:
    return parse_challenges(answer.headers.get_all("WWW-Authenticate") or [])


def error_message(answer: Response) -> str:
    """``HTTP 400 DIGEST_INVALID: provided digest did not match``: the registry's first error
    (distribution spec error JSON), else the HTTP status alone."""
    status = f"HTTP {answer.status}"
    errors = answer.json().get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, dict):
        text = answer.body[:200].decode(errors="replace").strip().splitlines()
        return f"{status}: {text[0]}" if text and not text[0].startswith("<") else status
    code, message = first.get("code", ""), str(first.get("message", "")).strip()
    return " ".join(filter(None, [f"{status}", f"{code}:" if code else "", message])).rstrip(":")


def _network_reason(exc: BaseException, certs: Path) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted ({exc.verify_message}); put the registry's CA in "
            f"{certs}/ca.crt"
        )
    if isinstance(exc, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
            return "TLS handshake failed: it answers in plain HTTP (for insecure registries only)"
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "cannot connect: connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer: timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the connection was closed without an answer"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"bad HTTP answer: {type(exc).__name__}: {exc}"
