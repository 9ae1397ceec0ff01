"""HTTP to one registry (OCI distribution spec), as Docker talks to it, with the standard library.

- Credentials come from the user's Docker config (``$DOCKER_CONFIG/config.json``, else
  ``~/.docker/config.json``): the ``auths`` map, ``auth`` being base64 ``user:password``; for
  a registry that ``credHelpers`` names (else any, when ``credsStore`` is set), as Docker does,
  ``docker-credential-NAME get`` with the registry's host on stdin, its JSON answer giving
  ``Username`` and ``Secret`` (``<token>`` as the user: an identity token, sent to a Bearer
  realm as an OAuth2 refresh token).
- TLS is verified against what Docker trusts: the system CA bundle plus every ``*.crt`` of
  ``/etc/docker/certs.d/HOST:PORT/``, and a client certificate ``*.cert`` with its ``*.key``
  from there. Plain HTTP only for a registry the caller names insecure (as Docker, that first
  tries HTTPS without verification, then HTTP).
- Auth follows the registry's ``WWW-Authenticate`` challenge on ``GET /v2/``: ``Basic`` sends
  the credentials; ``Bearer`` fetches a token from the realm for the scopes the push needs.
- Every request has a timeout; every failure is one line naming the registry and what failed.
- A request that meets a passing fault (408, 429, 500, 502, 503, 504; a connection reset,
  closed or timed out) is tried again (``RetryPolicy``): exponential backoff with jitter, or
  what ``Retry-After`` asks (seconds or an HTTP date), within a number of tries and a time.
- A large body is sent with ``Expect: 100-continue``: a server (or a fronting proxy) that
  refuses it, a 413 for its size most of all, answers before a byte of it is sent.
- Connections are kept per thread: one Session serves parallel uploads.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http.client
import io
import json
import logging
import os
import random
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import ScratchpackError

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds, per connect and per socket read or write
CHUNK = 1 << 20  # bytes sent per write when a blob streams from its file
EXPECT_ABOVE = 1 << 16  # bodies larger than this wait for 100 Continue (or a refusal)
CONTINUE_WAIT = 1.0  # seconds: a server that ignores Expect gets the body after this
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
HELPER_TIMEOUT = 60.0  # seconds a credential helper may take
TOKEN_USER = "<token>"  # a helper's Username for an identity token
CERTS_D = Path("/etc/docker/certs.d")
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
# The names Docker Hub goes by in config.json's auths; all mean the key above.
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_PARAM = re.compile(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))')


class RegistryError(ScratchpackError):
    """A registry could not be reached, refused us, or refused what we sent."""


class NetworkError(RegistryError):
    """The connection failed. PASSING: it may work when tried again (reset, closed without
    an answer, timed out), unlike a refused connection, a TLS or a name failure."""

    def __init__(self, message: str, passing: bool = False) -> None:
        super().__init__(message)
        self.passing = passing


# ----- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a request is tried again. ATTEMPTS tries in all; a request (a
    blob's upload, a manifest) that keeps failing longer than TOTAL seconds is given up. The
    wait after the n-th failure is ``BASE * 2**(n-1)`` up to CAP, of which a random half
    (RNG) is taken off (equal jitter), unless the answer's Retry-After asks for a wait.
    CLOCK, SLEEP (monotonic) and NOW (wall clock, for a Retry-After date) are the test's to
    give."""

    attempts: int = 6
    total: float = 300.0
    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time

    def backoff(self, failures: int) -> float:
        top = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return top / 2 + float(self.rng.random()) * top / 2

    def tries(self, where: str, what: str) -> Tries:
        return Tries(self, where, what)


class Tries:
    """The failures of one request (WHAT, at the registry WHERE), and the waits between."""

    def __init__(self, policy: RetryPolicy, where: str, what: str) -> None:
        self.policy = policy
        self.where = where
        self.what = what
        self.failures = 0
        self.started = policy.clock()
        self.last = ""

    def failed(self, reason: str, retry_after: float | None = None) -> None:
        """Wait before the next try; a RegistryError naming WHAT and REASON when no try, or
        not the time, is left."""
        self.failures += 1
        self.last = reason
        spent = self.policy.clock() - self.started
        if self.failures >= self.policy.attempts:
            raise self.gave_up(spent)
        wait = self.policy.backoff(self.failures) if retry_after is None else retry_after
        if spent + wait > self.policy.total:
            raise self.gave_up(spent, f" (a wait of {wait:.0f} s more would pass --push-timeout)")
        log.info("%s: %s: %s; again in %.1f s", self.where, self.what, reason, wait)
        self.policy.sleep(wait)

    def answer(self, answer: Response) -> None:
        """A passing fault's answer: failed() with its reason and Retry-After."""
        self.failed(error_message(answer), retry_after(answer, self.policy.now()))

    def progressed(self) -> None:
        """The request moved on (a chunk went through): the count starts anew."""
        self.failures = 0
        self.started = self.policy.clock()

    def gave_up(self, spent: float, why: str = "") -> RegistryError:
        tries = f"{self.failures} {'try' if self.failures == 1 else 'tries'}"
        return RegistryError(
            f"{self.where}: {self.what}: gave up after {tries} in {spent:.0f} s{why}; "
            f"last: {self.last}"
        )


def retry_after(answer: Response, now: float) -> float | None:
    """The seconds ``Retry-After`` asks to wait (delta-seconds or an HTTP date); None for
    none or one not understood."""
    value = answer.header("Retry-After").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


# ----- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @property
    def identity_token(self) -> bool:
        """A credential helper's identity token (an OAuth2 refresh token), not a password."""
        return self.username == TOKEN_USER

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
        """The credentials for the registry of auth key KEY; None for none. As Docker: the
        helper ``credHelpers`` names for the registry first, then an ``auths`` entry, then
        the ``credsStore`` helper."""
        host = auth_host(key)
        if host in self.helpers:
            return run_helper(self.helpers[host], key, self.source)
        found = self.auths.get(host)
        if found is not None:
            return found
        if "*" in self.helpers:
            return run_helper(self.helpers["*"], key, self.source)
        return None


def run_helper(name: str, key: str, source: str) -> Credentials | None:
    """``docker-credential-NAME get`` with the registry KEY (as Docker stores it: Docker Hub
    as ``https://index.docker.io/v1/``, others as ``host[:port]``) on stdin; None when it
    holds nothing for it."""
    program = f"docker-credential-{name}"
    where = f"{program} (named in {source})" if source else program
    found = shutil.which(program)
    if found is None:
        raise RegistryError(f"{auth_host(key)}: {where} is not on PATH")
    server = DOCKER_HUB_AUTH_KEY if auth_host(key) == "index.docker.io" else auth_host(key)
    try:
        done = subprocess.run(
            [found, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"{server}: {where} failed: {exc}") from None
    said = (done.stdout or done.stderr).decode(errors="replace").strip()
    if done.returncode != 0:
        if "credentials not found" in said.lower():
            return None  # what every helper says for a registry it holds nothing for
        first = said.splitlines()[0] if said else f"exit status {done.returncode}"
        raise RegistryError(f"{server}: {where} get failed: {first}")
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"{server}: {where} get answered no Username and Secret") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise RegistryError(f"{server}: {where} get answered no Username and Secret")
    return Credentials(user, secret)


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
    """What a request sends: bytes, or SIZE bytes of a file from OFFSET, streamed from disk
    (opened anew on every try; never all in memory). ON_CHUNK hears how many bytes each write
    sent."""

    data: bytes | None = None
    path: Path | None = None
    size: int = 0
    offset: int = 0
    on_chunk: Callable[[int], None] | None = None

    @property
    def length(self) -> int:
        return self.size if self.path is not None else len(self.data or b"")

    def send(self, connection: http.client.HTTPConnection) -> None:
        if self.path is None:
            if self.data:
                connection.send(self.data)
                if self.on_chunk:
                    self.on_chunk(len(self.data))
            return
        left = self.size
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            while left > 0:
                data = handle.read(min(CHUNK, left))
                if not data:
                    raise RegistryError(f"{self.path}: shorter than {self.offset + self.size} B")
                connection.send(data)
                left -= len(data)
                if self.on_chunk:
                    self.on_chunk(len(data))


class _Early(Exception):
    """The server answered before the body was sent (not 100 Continue): its answer."""

    def __init__(self, answer: Response) -> None:
        super().__init__(answer.status)
        self.answer = answer


class _Replay(io.RawIOBase):
    """The bytes already read from a socket, then the socket."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self.head = head
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.sock.recv_into(buffer)


class _ReplaySocket:
    """What http.client.HTTPResponse reads a response from: HEAD, then SOCK."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self.head = head
        self.sock = sock

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_Replay(self.head, self.sock))


def _await_continue(connection: http.client.HTTPConnection, method: str) -> None:
    """After the headers of a request with ``Expect: 100-continue``: back when the body may
    go (100 Continue, or no word within CONTINUE_WAIT); _Early with a final answer."""
    sock = connection.sock
    assert sock is not None
    pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
    if not pending and not select.select([sock], [], [], CONTINUE_WAIT)[0]:
        return
    head = b""
    while not head.endswith(b"\n") and len(head) < 1024:
        got = sock.recv(1)
        if not got:
            raise http.client.RemoteDisconnected("closed after the request's headers")
        head += got
    if head.split(b" ", 2)[1:2] == [b"100"]:
        line = b""
        while line not in (b"\r\n", b"\n"):  # the interim answer's headers, if any
            line = b""
            while not line.endswith(b"\n"):
                got = sock.recv(1)
                if not got:
                    raise http.client.RemoteDisconnected("closed after 100 Continue")
                line += got
        return
    answer = http.client.HTTPResponse(_ReplaySocket(head, sock), method=method)  # type: ignore[arg-type]
    answer.begin()
    data = answer.read()
    raise _Early(Response(answer.status, answer.headers, data))


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
        retry: RetryPolicy | None = None,
    ) -> None:
        self.registry = registry
        self.auth_key = auth_key
        self.credentials = credentials
        self.tls = tls
        self.insecure = insecure
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.scheme = "https"
        self._local = threading.local()  # each thread's connections
        self._every: list[http.client.HTTPConnection] = []
        self._lock = threading.RLock()  # the connections list; the token
        self._authorization: str | None = None
        self._bearer: _Challenge | None = None
        self._scopes: list[str] = []
        self._user: Credentials | None = None

    # ----- connections --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for connection in self._every:
                connection.close()
            self._every.clear()
        self._local = threading.local()

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(f"{self.scheme}://{self.registry}/", path)

    def _connections(self) -> dict[tuple[str, str], http.client.HTTPConnection]:
        found: dict[tuple[str, str], http.client.HTTPConnection] | None
        found = getattr(self._local, "connections", None)
        if found is None:
            found = self._local.connections = {}
        return found

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's open connection to NETLOC (reused: True) or a new one."""
        found = self._connections().get((scheme, netloc))
        if found is not None and found.sock is not None:
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
        self._connections()[(scheme, netloc)] = made
        with self._lock:
            self._every.append(made)
        return made, False

    def _drop(self, key: tuple[str, str]) -> None:
        connection = self._connections().pop(key, None)
        if connection is not None:
            connection.close()
            with self._lock:
                if connection in self._every:
                    self._every.remove(connection)

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body | None = None
    ) -> Response:
        """One request, no auth added; one retry when a kept-alive connection was closed
        by the other end, for a request with no body (one with a body may have been cut on
        its way: its caller knows how to go on). A failed connection is a NetworkError."""
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
                if not (reused and attempt == 1 and not (body and body.length)):
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
        connection.putrequest(method, target, skip_accept_encoding=True)
        sent = dict(headers)
        if body is not None:
            sent["Content-Length"] = str(body.length)
        expect = body is not None and body.length > EXPECT_ABOVE
        if expect:
            sent["Expect"] = "100-continue"
        for name, value in sent.items():
            connection.putheader(name, value)
        connection.endheaders()
        if body is not None:
            if expect:
                try:
                    _await_continue(connection, method)
                except _Early as early:
                    connection.close()  # the body it refused was not sent: start clean
                    return early.answer
            body.send(connection)
        answer = connection.getresponse()
        data = answer.read()
        if answer.will_close:
            connection.close()
        return Response(answer.status, answer.headers, data)

    def network_error(self, netloc: str, exc: BaseException) -> NetworkError:
        where = self.registry if netloc == self.registry else f"{self.registry} (via {netloc})"
        reason = _network_reason(exc, self.tls.certs_d / self.registry)
        return NetworkError(f"{where}: {reason}", _passing(exc))

    def call(
        self,
        method: str,
        path: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        tries: Tries | None = None,
    ) -> Response:
        """request(), tried again after a passing fault (RETRY_STATUSES, a connection reset,
        closed or timed out) as the RetryPolicy says; the first other answer. WHAT names the
        request in the line that gives up."""
        tries = tries or self.retry.tries(self.registry, what)
        return self._until_not_passing(lambda: self.request(method, path, headers, body), tries)

    def _until_not_passing(self, attempt: Callable[[], Response], tries: Tries) -> Response:
        """ATTEMPT again after each passing fault, while TRIES allows; the first other answer."""
        while True:
            try:
                answer = attempt()
            except NetworkError as exc:
                if not exc.passing:
                    raise
                tries.failed(str(exc).removeprefix(f"{self.registry}: "))
                continue
            if answer.status not in RETRY_STATUSES:
                return answer
            tries.answer(answer)

    # ----- auth ---------------------------------------------------------------------------------

    def ping(self, scopes: list[str]) -> None:
        """``GET /v2/``: choose HTTPS or (insecure only) HTTP, and log in as it asks, for
        SCOPES when it asks for a token."""
        self._scopes = list(scopes)
        answer = self._ping_any_scheme()
        if answer.status == 401:
            self._login(answer)
            answer = self._retried("GET", self.url("/v2/"), self._auth_headers(), "GET /v2/")
            if answer.status == 401:
                raise self._refused_login(answer)
        if answer.status != 200:
            raise RegistryError(
                f"{self.registry}: not a registry (GET /v2/ answered HTTP {answer.status})"
            )
        log.debug("%s: %s, auth %s", self.registry, self.scheme, self._auth_kind())

    def _ping_any_scheme(self) -> Response:
        if not self.insecure:
            return self._retried("GET", self.url("/v2/"), {}, "GET /v2/")
        try:
            answer = self.send("GET", self.url("/v2/"), {})
            if answer.status not in RETRY_STATUSES:
                return answer
        except RegistryError as exc:
            log.debug("%s: no HTTPS (%s); trying plain HTTP", self.registry, exc)
        self.scheme = "http"
        return self._retried("GET", self.url("/v2/"), {}, "GET /v2/")

    def _retried(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        what: str,
        body: Body | None = None,
    ) -> Response:
        """send() tried again after passing faults, as call() does (no auth added)."""
        tries = self.retry.tries(self.registry, what)
        return self._until_not_passing(lambda: self.send(method, url, headers, body), tries)

    def want_scope(self, scope: str) -> None:
        """Add SCOPE to the token's (a mount needs pull on its source); a new token now."""
        with self._lock:
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
        used = self._authorization
        answer = self._authenticated(method, url, headers, body)
        if answer.status != 401 or urllib.parse.urlsplit(url).netloc != self.registry:
            return answer
        with self._lock:
            if self._authorization != used:
                pass  # another thread renewed it meanwhile
            elif self._bearer is not None:
                for challenge in _challenges(answer):
                    bearer = challenge.scheme == "bearer"
                    scope = challenge.params.get("scope", "") if bearer else ""
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
            if self._user.identity_token:
                raise RegistryError(
                    f"{self.registry}: asks for a password, and the credential helper gave an "
                    "identity token (for token registries only)"
                )
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
        if parts.scheme == "http" and self._user and not self.insecure:
            raise RegistryError(f"{self.registry}: refusing to send credentials to {realm} (HTTP)")
        if self._user is not None and self._user.identity_token:
            # OAuth2, as Docker does with an identity token: the refresh token in a form POST.
            form = [
                *query,
                ("grant_type", "refresh_token"),
                ("client_id", "scratchpack"),
                ("refresh_token", self._user.password),
            ]
            data = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            answer = self._retried("POST", realm, headers, "token", Body(data=data))
        else:
            headers = {"Authorization": self._user.basic()} if self._user else {}
            answer = self._retried("GET", url, headers, "token")
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


def _passing(exc: BaseException) -> bool:
    """A fault that may pass: the connection reset, closed, cut or timed out."""
    if isinstance(exc, ConnectionRefusedError | ssl.SSLError):
        return False
    return isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | http.client.RemoteDisconnected
        | http.client.IncompleteRead
        | http.client.BadStatusLine,
    )


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
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return f"the connection was cut: {exc.strerror or exc}"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection was closed in the middle of the answer"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"bad HTTP answer: {type(exc).__name__}: {exc}"
