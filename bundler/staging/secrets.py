"""Secrets never leave the builder: every file of the plan is checked before anything is written.

Two kinds of rule. *Path rules* name files that are secrets wherever they come from: the
private-key folders of OpenSSL and Let's Encrypt, ``~/.ssh`` private keys, ``.env`` files,
``.git/`` folders, ``.netrc``/``.pgpass`` and the credential files of the AWS, Docker and
Kubernetes clients, and account files (``shadow``, ``gshadow``, ``passwd``, ``group``) that hold
a real password hash. *Content rules* are regular expressions over text files, after trivy's
built-in rules: whole PEM and OpenSSH private key blocks (a BEGIN line, a base64 body and the
END line: OpenSSL's libraries hold the marker text as constants), AWS access key ids and secret
keys, GitHub, GitLab and Slack tokens, Stripe live keys, Google API keys, and credentials inside
URLs.
Unlike trivy, no folder is skipped (``usr/lib``, ``usr/share`` included).

Cost is bounded: a file whose first block holds a NUL byte or starts as ELF is binary and gets
path rules only; at most ``MAX_BYTES`` of a text file are read; each content rule runs only when
one of its keywords is in the text. A finding names the file, the rule and the line, never the
value.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bundler.errors import SecretsFound
from bundler.staging.digests import DigestMemo, code_key
from bundler.staging.plan import DIR, FILE, HARDLINK, AllowedSecret, Entry, Plan, glob_matches

log = logging.getLogger(__name__)

# Bytes of a file the content rules read; a longer text file is checked in its first 8 MiB only.
MAX_BYTES = 8 << 20
# Bytes probed for a NUL (binary) before a file is read whole.
PROBE_BYTES = 8192


@dataclass(frozen=True)
class Finding:
    """A secret the plan would take: the in-image path, the rule, the line (None: the path
    itself is the finding), and what brought the file."""

    path: str
    rule: str
    line: int | None
    why: str

    def message(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.rule} ({self.why or 'planned'})"


@dataclass(frozen=True)
class Check:
    """The outcome: findings that stop the pack, and those --allow-secret lets through."""

    refused: tuple[Finding, ...]
    allowed: tuple[tuple[Finding, str], ...]  # (finding, the --allow-secret GLOB)
    files: int  # regular files and hard links checked
    text_files: int  # of them, files read as text (content rules)
    text_bytes: int  # bytes the content rules read
    seconds: float  # time the check took


# ----- globs ----------------------------------------------------------------------------------


def first_match(paths: Iterable[str], patterns: Sequence[str]) -> str | None:
    """The first pattern matching any of ``paths``."""
    listed = list(paths)
    return next((p for p in patterns if any(glob_matches(path, p) for path in listed)), None)


# ----- path rules -----------------------------------------------------------------------------

KEY_FOLDERS = ("/etc/ssl/private/", "/etc/pki/tls/private/")
SSH_PUBLIC = {"known_hosts", "known_hosts.old", "authorized_keys", "authorized_keys2", "config"}
SSH_KEY_NAMES = re.compile(r"id_(rsa|dsa|ecdsa|ed25519|ecdsa_sk|ed25519_sk|xmss)")
SSH_HOST_KEY = re.compile(r"ssh_host_[a-z0-9]+_key")
DOTENV_TEMPLATES = {"example", "sample", "template", "dist", "defaults", "schema"}
CREDENTIAL_NAMES = {
    ".netrc": "netrc",
    "_netrc": "netrc",
    ".pgpass": "pgpass",
    ".git-credentials": "git-credentials",
}
CREDENTIAL_FILES = {
    (".aws", "credentials"): "aws-credentials",
    (".docker", "config.json"): "docker-config",
    (".kube", "config"): "kube-config",
}
ACCOUNT_FILES = {"shadow", "gshadow", "shadow-", "gshadow-", "passwd", "group", "passwd-", "group-"}


def path_rule(path: str) -> str | None:
    """The path rule an in-image path breaks, if any."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    name = parts[-1]
    if ".git" in parts[:-1]:
        return "git-folder"
    if any(path.startswith(folder) for folder in KEY_FOLDERS):
        return "private-key-folder"
    for index, part in enumerate(parts[:-2]):
        if part == "letsencrypt" and parts[index + 1] in ("live", "archive"):
            return "letsencrypt-keys"
    if ".ssh" in parts[:-1] and not name.endswith(".pub") and name not in SSH_PUBLIC:
        return "ssh-private-key"
    if SSH_KEY_NAMES.fullmatch(name) or (
        len(parts) >= 2 and parts[-2] == "ssh" and SSH_HOST_KEY.fullmatch(name)
    ):
        return "ssh-private-key"
    if name == ".env" or (
        name.startswith(".env.") and name.rsplit(".", 1)[-1].lower() not in DOTENV_TEMPLATES
    ):
        return "dotenv"
    if name in CREDENTIAL_NAMES:
        return CREDENTIAL_NAMES[name]
    if len(parts) >= 2 and (parts[-2], name) in CREDENTIAL_FILES:
        return CREDENTIAL_FILES[(parts[-2], name)]
    return None


def _is_account_file(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    return len(parts) >= 2 and parts[-2] == "etc" and parts[-1] in ACCOUNT_FILES


_DES_HASH = re.compile(rb"[./0-9A-Za-z]{13}")


def password_hash_lines(data: bytes) -> list[int]:
    """Lines of a passwd/group/shadow/gshadow file whose password field holds a real hash
    (``$id$...`` or a DES hash; a locked ``!$6$...`` one too): never ``x``, ``*``, ``!``, empty."""
    lines = []
    for number, line in enumerate(data.splitlines(), 1):
        fields = line.split(b":")
        if len(fields) < 2:
            continue
        field = fields[1].lstrip(b"!")
        if (field.startswith(b"$") and len(field) > 3) or _DES_HASH.fullmatch(field):
            lines.append(number)
    return lines


# ----- content rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentRule:
    id: str
    keywords: tuple[bytes, ...]  # the rule runs only when one is in the text
    pattern: bytes
    placeholder_pattern: bytes | None = None  # a match that is documentation, not a secret

    # Compiled when first used: a repack whose texts were all scanned before uses none.
    @functools.cached_property
    def regex(self) -> re.Pattern[bytes]:
        return re.compile(self.pattern)

    @functools.cached_property
    def placeholder(self) -> re.Pattern[bytes] | None:
        return re.compile(self.placeholder_pattern) if self.placeholder_pattern else None


_END = rb"(?![A-Za-z0-9])"
_START = rb"(?<![A-Za-z0-9])"
# A URL's password that is documentation: a word for "password", a template, an ellipsis.
_PLACEHOLDER_PASSWORD = re.compile(
    rb"(?i)(pass(word|wd)?|pwd?|secret|x+|\*+|\.\.\.|user|foo|bar|changeme|"
    rb".*[$%{}<>\[\]()*].*)"
)

CONTENT_RULES = (
    ContentRule(
        "private-key",
        (b"PRIVATE KEY",),
        (
            rb"-----\s*BEGIN[ A-Z0-9_-]*PRIVATE KEY( BLOCK)?\s*-----[ \t]*(?:\\r)?(?:\\n|\r?\n)"
            rb"(?:[A-Za-z-]+:[^\r\n]*(?:\\n|\r?\n))*"  # Proc-Type/DEK-Info headers
            rb"\s*[A-Za-z0-9+/=\\][A-Za-z0-9+/=\\\s]{31,}?"
            rb"-----\s*END[ A-Z0-9_-]*PRIVATE KEY( BLOCK)?\s*-----"
        ),
    ),
    ContentRule(
        "aws-access-key-id",
        (b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA", b"A3T"),
        (_START + rb"(?:A3T[A-Z0-9]|AKIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ASIA)[A-Z0-9]{16}" + _END),
        (rb"(?i).*example.*"),
    ),
    ContentRule(
        "aws-secret-access-key",
        (b"aws", b"AWS", b"Aws"),
        (
            rb"(?i)aws_?(?:sec(?:ret)?)?_?(?:access)?_?key[\"']?\s*(?::|=>|=)?\s*[\"']?"
            rb"([A-Za-z0-9/+=]{40})[\"']?" + _END
        ),
        (rb"(?i).*example.*"),
    ),
    ContentRule(
        "github-token",
        (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
        (_START + rb"(?:(?:ghp|gho|ghu|ghs)_[0-9A-Za-z]{36}|ghr_[0-9A-Za-z]{76})" + _END),
    ),
    ContentRule(
        "github-fine-grained-token",
        (b"github_pat_",),
        (rb"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
    ),
    ContentRule("gitlab-token", (b"glpat-",), (_START + rb"glpat-[0-9A-Za-z_-]{20}")),
    ContentRule(
        "slack-token",
        (b"xoxb-", b"xoxa-", b"xoxp-", b"xoxr-", b"xoxs-"),
        (_START + rb"xox[baprs]-[0-9A-Za-z]{10,48}"),
    ),
    ContentRule("stripe-live-key", (b"sk_live_",), (_START + rb"sk_live_[0-9A-Za-z]{10,99}")),
    ContentRule("google-api-key", (b"AIza",), (_START + rb"AIza[0-9A-Za-z_-]{35}" + _END)),
    ContentRule(
        "url-credentials",
        (b"://",),
        (
            rb"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,20}://"
            rb"([^\s:/?#@'\"<>\\`]{1,64}):([^\s:/?#@'\"<>\\`]{1,128})@([A-Za-z0-9][A-Za-z0-9.-]*)"
        ),
    ),
)

# What a remembered scan depends on besides the bytes: this module's code (its rules and how
# they are applied).
RULES_KEY = code_key(__file__)


def _is_placeholder(rule: ContentRule, match: re.Match[bytes]) -> bool:
    if rule.id == "url-credentials":
        password, host = match.group(2), match.group(3)
        if len(password) < 4 or _PLACEHOLDER_PASSWORD.fullmatch(password):
            return True  # https://a:b@host, ftp://user:password@host: documentation
        return b"example" in host.lower()
    return rule.placeholder is not None and bool(rule.placeholder.fullmatch(match.group(0)))


def scan_text(data: bytes) -> list[tuple[str, int]]:
    """(rule, line) of every secret in a text, in order; the value is never returned."""
    found: list[tuple[int, str]] = []
    for rule in CONTENT_RULES:
        if not any(keyword in data for keyword in rule.keywords):
            continue
        for match in rule.regex.finditer(data):
            if not _is_placeholder(rule, match):
                found.append((match.start(), rule.id))
    found.sort()
    return [(rule, data.count(b"\n", 0, start) + 1) for start, rule in found]


def is_binary(head: bytes) -> bool:
    return head.startswith(b"\x7fELF") or b"\0" in head


def read_text(source: str) -> bytes | None:
    """A file's first MAX_BYTES when it is text, None when binary (or unreadable)."""
    try:
        with open(source, "rb") as handle:
            head = handle.read(PROBE_BYTES)
            if is_binary(head):
                return None
            return head + handle.read(MAX_BYTES - len(head))
    except OSError:
        return None


def scan_value(value: str) -> list[str]:
    """The content rules a single value (an --env or --label value) matches."""
    return list(dict.fromkeys(rule for rule, _line in scan_text(value.encode("utf-8", "replace"))))


# ----- the plan -------------------------------------------------------------------------------


def _findings(
    entry: Entry,
    seen: dict[str, list[tuple[str, int]]],
    read: dict[str, int],
    memo: DigestMemo | None = None,
) -> Iterator[Finding]:
    """``seen``: the content findings of each source read so far; ``read``: the text bytes
    read from each; ``memo``: what earlier packs found in the same bytes."""
    rule = path_rule(entry.path)
    if rule is not None:
        yield Finding(entry.path, rule, None, entry.why)
    if entry.type != FILE:
        return
    if entry.data is not None:
        data: bytes | None = entry.data[:MAX_BYTES]
        if data is not None and is_binary(data[:PROBE_BYTES]):
            data = None
    elif entry.source is not None:
        if entry.source not in seen:
            seen[entry.source] = _source_findings(entry, read, memo)
        for rule_id, line in seen[entry.source]:
            yield Finding(entry.path, rule_id, line, entry.why)
        return
    else:
        data = None
    if data is None:
        return
    read[entry.path] = len(data)
    for rule_id, line in scan_text(data):
        yield Finding(entry.path, rule_id, line, entry.why)
    if _is_account_file(entry.path):
        for line in password_hash_lines(data):
            yield Finding(entry.path, "password-hash", line, entry.why)


def _source_findings(
    entry: Entry, read: dict[str, int], memo: DigestMemo | None
) -> list[tuple[str, int]]:
    """The content findings of ENTRY's source, from MEMO when these rules met its bytes
    before (their sha256, from the memo too, by the file's identity)."""
    source = entry.source
    assert source is not None
    account = _is_account_file(entry.path)

    def scan() -> list[tuple[str, int]]:
        text = read_text(source)
        if text is None:
            return []
        read[source] = len(text)
        found = scan_text(text)
        if account:
            found += [("password-hash", n) for n in password_hash_lines(text)]
        return found

    def decode(known: Any) -> list[tuple[str, int]]:
        if not isinstance(known, (list, tuple)):
            raise TypeError("not a list of findings")
        return [(str(rule), int(line)) for rule, line in known]

    if memo is None:
        return scan()
    return memo.fact_of(source, RULES_KEY, scan, decode, int(account))


def check_plan(plan: Plan, allow: Sequence[str] = (), memo: DigestMemo | None = None) -> Check:
    """Every file, hard link and link of the plan against every rule; ``allow`` holds the
    --allow-secret globs, matched against the in-image paths the findings name."""
    started = time.monotonic()
    refused: list[Finding] = []
    allowed: list[tuple[Finding, str]] = []
    seen: dict[str, list[tuple[str, int]]] = {}
    read: dict[str, int] = {}
    for entry in plan.sorted_entries():
        if entry.type == DIR:
            continue
        for finding in _findings(entry, seen, read, memo):
            glob = first_match([entry.path], allow)
            if glob is None:
                refused.append(finding)
            else:
                allowed.append((finding, glob))
    files = sum(1 for e in plan.entries.values() if e.type in (FILE, HARDLINK))
    seconds = time.monotonic() - started
    return Check(tuple(refused), tuple(allowed), files, len(read), sum(read.values()), seconds)


def refuse_secrets(plan: Plan, allow: Sequence[str] = (), memo: DigestMemo | None = None) -> Check:
    """Check the plan; every finding is logged, and any not allowed stops the pack before
    anything is written. Allowed ones are recorded in the plan (for --json and the SBOMs).
    MEMO: the pack's digests, and what the same rules found in the same bytes before."""
    check = check_plan(plan, allow, memo)
    log.info(
        "secrets check: %d files, %d of them text (%.1f MB read), in %.2f s",
        check.files,
        check.text_files,
        check.text_bytes / 1e6,
        check.seconds,
    )
    for finding, glob in check.allowed:
        log.warning("%s: packed on purpose (--allow-secret %s)", finding.message(), glob)
    plan.allowed_secrets = [AllowedSecret(f.path, f.rule, f.line, g) for f, g in check.allowed]
    used = {glob for _finding, glob in check.allowed}
    for glob in dict.fromkeys(allow):
        if glob not in used:
            log.warning(
                "--allow-secret %s: no finding matches it (the check names the files)", glob
            )
    if not check.refused:
        return check
    for finding in check.refused:
        log.error("secret: %s", finding.message())
    files = len({f.path for f in check.refused})
    raise SecretsFound(
        f"{len(check.refused)} secret{'' if len(check.refused) == 1 else 's'} in {files} "
        f"file{'' if files == 1 else 's'} would go into the image, which anyone who pulls it "
        "reads; nothing was written (--exclude GLOB leaves a file out, --allow-secret GLOB packs "
        "it on purpose)"
    )
