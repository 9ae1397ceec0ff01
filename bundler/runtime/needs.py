"""What ldd cannot see: files a program needs only once it runs.

getaddrinfo needs nsswitch.conf and the NSS modules it names, TLS needs a CA bundle, localtime
needs zoneinfo, getpwnam needs passwd and group, iconv needs glibc's gconv modules, many
programs need a writable /tmp. ``--with GROUP`` adds each of these from the root, and writes
what the root lacks (a minimal nsswitch.conf, distroless-style passwd/group). ``--user`` and
``--mkdir`` give a service its account and folders. Everything here only *describes* additions;
the Planner places them, so the plan stays the one place that touches paths.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bundler.errors import UsageError
from bundler.loader.ldconfig import DEFAULT_GLIBC
from bundler.loader.rootfs import FsRoot

log = logging.getLogger(__name__)

GROUPS = ("nss", "certs", "tzdata", "users", "tmp", "gconv", "base")
BASE = ("nss", "certs", "tzdata", "users", "tmp")

MINIMAL_NSSWITCH = b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
MINIMAL_HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
NSS_FILES = ("/etc/hosts", "/etc/services", "/etc/protocols", "/etc/host.conf", "/etc/networks")
# glibc 2.34 and later have these two built into libc.so.6; older ones dlopen them too.
BUILTIN_NSS = ("files", "dns")
# Where distributions keep the CA bundle; the first present wins.
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine (LibreSSL), Arch
)
ZONEINFO = "/usr/share/zoneinfo"
# As distroless images have them: root, nobody, and nonroot (65532) for services.
DISTROLESS_USERS = (
    "root:x:0:0:root:/root:/sbin/nologin",
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
)
DISTROLESS_GROUPS = ("root:x:0:", "nobody:x:65534:", "tty:x:5:", "staff:x:50:", "nonroot:x:65532:")


@dataclass(frozen=True)
class NewDir:
    path: str
    mode: int
    uid: int = 0
    gid: int = 0


@dataclass
class Additions:
    """What the runtime groups, --user and --mkdir add to a plan."""

    paths: list[str] = field(default_factory=list)  # root paths, added like --extra
    generated: dict[str, bytes] = field(default_factory=dict)  # path -> content
    directories: list[NewDir] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # path -> symlink text
    env: dict[str, str] = field(default_factory=dict)
    libraries: list[str] = field(default_factory=list)  # sonames the C library dlopen()s
    user: str | None = None  # USER of the Dockerfile


@dataclass(frozen=True)
class Account:
    passwd: tuple[str, ...]
    group: tuple[str, ...]


@dataclass(frozen=True)
class UserIds:
    """A user of the root as a process takes it: ids, supplementary groups, home."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"


def trace_user(root: FsRoot, spec: str) -> UserIds:
    """--trace-user NAME, UID or NAME:GROUP (UID:GID), looked up in the root's passwd and
    group as login(1) would: primary group from passwd, supplementary ones from group."""
    name, _, group = spec.partition(":")
    passwd = _lines(root, "/etc/passwd")
    groups = _lines(root, "/etc/group")
    fields = _passwd_fields(passwd, name)
    if fields is None and not name.isdigit():
        raise UsageError(f"--trace-user {spec}: no such user in the root's /etc/passwd")
    uid = int(fields[2]) if fields else int(name)
    gid = int(fields[3]) if fields else uid
    if group:
        gid = _lookup(group, groups, 2, 2, "group")[0]
    user_name = fields[0] if fields else name
    member_of = [gid]
    for line in _member_groups(groups, user_name):
        group_id = line.split(":")[2:3]
        if group_id and group_id[0].isdigit():
            member_of.append(int(group_id[0]))
    home = fields[5] if fields and fields[5].startswith("/") else "/"
    return UserIds(user_name, uid, gid, tuple(dict.fromkeys(member_of)), home)


def _lines(root: FsRoot, path: str) -> list[str]:
    if not root.is_file(path):
        return []
    return root.read_bytes(path).decode("utf-8", "replace").splitlines()


def expand_groups(names: Iterable[str]) -> list[str]:
    wanted: list[str] = []
    for name in names:
        for group in BASE if name == "base" else (name,):
            if group not in wanted:
                wanted.append(group)
    return wanted


class Runtime:
    """Computes the Additions for one root."""

    def __init__(
        self,
        root: FsRoot,
        glibc_version: tuple[int, int] = DEFAULT_GLIBC,
        ephemeral: frozenset[str] = frozenset(),
    ) -> None:
        self.root = root
        self.glibc_version = glibc_version
        self.ephemeral = ephemeral  # runtime-mounted files: as good as absent
        self.add = Additions()

    def groups(self, names: Sequence[str], tz: str | None = None) -> None:
        for group in expand_groups(names):
            getattr(self, f"_{group}")() if group != "tzdata" else self._tzdata(tz)

    # -- the groups ------------------------------------------------------------------------

    def _nss(self) -> None:
        conf = "/etc/nsswitch.conf"
        if self.root.is_file(conf):
            self.add.paths.append(conf)
            text = self.root.read_bytes(conf).decode("utf-8", "replace")
        else:
            log.info("%s: absent from the root; writing a minimal one (files dns)", conf)
            self.add.generated[conf] = MINIMAL_NSSWITCH
            text = MINIMAL_NSSWITCH.decode()
        for service in nss_services(text):
            if service in BUILTIN_NSS and self.glibc_version >= (2, 34):
                continue
            self.add.libraries.append(f"libnss_{service}.so.2")
        for path in NSS_FILES:  # those the root has; a runtime-mounted one describes the builder
            if self.root.lstat(path) is not None and path not in self.ephemeral:
                self.add.paths.append(path)
        if not self._present("/etc/hosts"):
            self.add.generated["/etc/hosts"] = MINIMAL_HOSTS
        for path in ("/etc/services", "/etc/protocols"):
            if not self._present(path):
                log.warning(
                    "%s: absent from the root (Debian's netbase has it): getaddrinfo with a "
                    'service name such as "http" will fail in the image',
                    path,
                )

    def _present(self, path: str) -> bool:
        return self.root.is_file(path) and path not in self.ephemeral

    def _certs(self) -> None:
        bundle = next((p for p in CA_BUNDLES if self.root.is_file(p)), None)
        if bundle is None:
            raise UsageError(
                "--with certs: the root has no CA bundle (install ca-certificates in it first)"
            )
        self.add.paths.append(bundle)
        self.add.env["SSL_CERT_FILE"] = bundle

    def _tzdata(self, tz: str | None) -> None:
        if tz is None:
            if not self.root.is_dir(ZONEINFO):
                raise UsageError(f"--with tzdata: the root has no {ZONEINFO} (install tzdata)")
            self.add.paths.append(ZONEINFO)
            return
        zone = posixpath.normpath(posixpath.join(ZONEINFO, tz))
        if not zone.startswith(ZONEINFO + "/") or not self.root.is_file(zone):
            raise UsageError(f"--tz {tz}: no such zone in the root's {ZONEINFO}")
        self.add.paths.append(zone)
        self.add.links["/etc/localtime"] = zone

    def _users(self) -> None:
        self._merge_account(Account(DISTROLESS_USERS, DISTROLESS_GROUPS))
        self.add.directories.append(NewDir("/home/nonroot", 0o700, 65532, 65532))

    def _tmp(self) -> None:
        self.add.directories.append(NewDir("/tmp", 0o1777))

    def _gconv(self) -> None:
        found = [d for d in self._gconv_dirs() if self.root.is_dir(d)]
        if not found:
            raise UsageError("--with gconv: the root's glibc has no gconv folder")
        self.add.paths.append(found[0])

    def _gconv_dirs(self) -> list[str]:
        candidates = []
        for libdir in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
            candidates.append(f"{libdir}/gconv")
        names = sorted(self.root.listdir("/usr/lib"))
        multiarch = [f"/usr/lib/{name}/gconv" for name in names if "-linux-" in name]
        return multiarch + candidates

    # -- accounts and folders ----------------------------------------------------------------

    def user(self, spec: str) -> None:
        """--user NAME or UID[:GID]: the account's entries go into the image's passwd/group."""
        self.add.user = spec
        name = spec.split(":", 1)[0]
        if name.isdigit():
            return  # a numeric id needs no account, as with docker run --user
        passwd = self._root_lines("/etc/passwd")
        fields = _passwd_fields(passwd, name)
        if fields is None:
            raise UsageError(f"--user {name}: no such user in the root's /etc/passwd")
        entry, gid = ":".join(fields), fields[3]
        groups = self._root_lines("/etc/group")
        group = [line for line in groups if line.split(":")[2:3] == [gid]][:1]
        # Its other groups too: a key readable only by ssl-cert must stay readable by postgres
        # (the process gets its groups from the image's /etc/group, not from the root's).
        group += [line for line in _member_groups(groups, name) if line not in group]
        root_user = [line for line in passwd if line.startswith("root:")][:1]
        root_group = [line for line in groups if line.startswith("root:")][:1]
        # The password field becomes "x": a hash left in a root's passwd (or group) must not
        # reach an image anyone can pull; the image has no shadow file, so no one logs in.
        users = tuple(_no_password(line) for line in (*root_user, entry))
        self._merge_account(
            Account(users, tuple(_no_password(line) for line in (*root_group, *group)))
        )

    def mkdir(self, spec: str) -> None:
        """--mkdir PATH[:MODE[:OWNER]], owner by name or id, default the --user."""
        path, _, rest = spec.partition(":")
        mode_text, _, owner = rest.partition(":")
        if not path.startswith("/"):
            raise UsageError(f"--mkdir {spec}: the path must be absolute")
        try:
            mode = int(mode_text, 8) if mode_text else 0o755
        except ValueError:
            raise UsageError(f"--mkdir {spec}: mode {mode_text!r} is not octal") from None
        uid, gid = self.owner_ids(owner or (self.add.user or "0"))
        self.add.directories.append(NewDir(path, mode, uid, gid))

    def owner_ids(self, owner: str) -> tuple[int, int]:
        user, _, group = owner.partition(":")
        passwd = self._account_lines("passwd")
        uid, gid = _lookup(user, passwd, 2, 3, "user")
        if group:
            gid = _lookup(group, self._account_lines("group"), 2, 2, "group")[0]
        return uid, gid

    def _account_lines(self, kind: str) -> list[str]:
        """The image's entries first (they win), then the root's."""
        generated = self.add.generated.get(f"/etc/{kind}", b"").decode().splitlines()
        return generated + self._root_lines(f"/etc/{kind}")

    def _root_lines(self, path: str) -> list[str]:
        return _lines(self.root, path)

    def _merge_account(self, account: Account) -> None:
        for kind, lines in (("passwd", account.passwd), ("group", account.group)):
            path = f"/etc/{kind}"
            current = self.add.generated.get(path, b"").decode().splitlines()
            names = {line.split(":", 1)[0] for line in current}
            merged = current + [line for line in lines if line.split(":", 1)[0] not in names]
            self.add.generated[path] = ("\n".join(merged) + "\n").encode()


def _no_password(line: str) -> str:
    """A passwd or group line with ``x`` as its password field."""
    fields = line.split(":")
    if len(fields) > 2 and fields[1] != "x":
        fields[1] = "x"
    return ":".join(fields)


def _passwd_fields(passwd: list[str], name: str) -> list[str] | None:
    """The fields of the passwd line of user NAME (or of uid NAME, when a number), or None;
    lines too short or with ids that are not numbers are passed over, as getpwnam does."""
    for line in passwd:
        fields = line.split(":")
        if len(fields) < 6 or not (fields[2].isdigit() and fields[3].isdigit()):
            continue
        if fields[0] == name or (name.isdigit() and fields[2] == name):
            return fields
    return None


def _member_groups(groups: list[str], user: str) -> list[str]:
    """The group lines that name USER among their members: its supplementary groups."""
    return [line for line in groups if user in _members(line)]


def _members(group_line: str) -> list[str]:
    """The member names of an /etc/group line (its fourth field)."""
    fields = group_line.split(":")
    return fields[3].split(",") if len(fields) > 3 else []


def nss_services(nsswitch: str) -> list[str]:
    """Service names of nsswitch.conf, in order, without [NOTFOUND=return]-style actions."""
    services: list[str] = []
    for line in nsswitch.splitlines():
        line = line.split("#", 1)[0]
        if ":" not in line:
            continue
        _database, _, rest = line.partition(":")
        for word in re.sub(r"\[[^\]]*\]", " ", rest).split():
            if word not in services:
                services.append(word)
    return services


def _lookup(
    name: str, lines: list[str], id_field: int, gid_field: int, what: str
) -> tuple[int, int]:
    if name.isdigit():
        return int(name), int(name)
    for line in lines:
        fields = line.split(":")
        if fields[0] == name and len(fields) > max(id_field, gid_field):
            return int(fields[id_field]), int(fields[gid_field])
    where = "/etc/group" if what == "group" else "/etc/passwd"
    raise UsageError(f"{name}: no such {what} in the image's or the root's {where}")
