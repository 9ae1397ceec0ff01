"""Licences of a Debian package, from its machine-readable copyright file, as SPDX expressions.

A copyright file is machine-readable (DEP-5, copyright-format 1.0) when its first paragraph
has a ``Format:`` field naming the format's URL. Its ``Files`` paragraphs each say under which
licence those files are; a standalone ``License`` paragraph only defines a name that others use,
so it is not a use. The first line of a ``License`` field is a Debian licence expression:
short names joined by ``or`` and ``and``, where ``and`` binds tighter unless a comma comes
before the operator (``GPL-1+ or Artistic, and BSD-3-clause`` is ``(GPL-1+ or Artistic) and
BSD-3-clause``), and ``NAME with X exception`` names an exception.

Debian short names are not SPDX identifiers (``Expat`` is ``MIT``, ``GPL-2+`` is
``GPL-2.0-or-later``, and ``public-domain`` has none). The table below covers the names found
in the copyright files of a Debian 12 tree; a name with no SPDX identifier becomes
``LicenseRef-<name>``, which an SPDX document must then declare (``hasExtractedLicensingInfos``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundler.packages.dpkg import parse_stanzas

_FORMAT = re.compile(
    r"^https?://www\.debian\.org/doc/packaging-manuals/copyright-format/1\.0/?$", re.IGNORECASE
)
# Versioned GNU licences: the number (with ".0" when it has no dot) and "-only"/"-or-later".
_GNU = re.compile(r"^(A?GPL|LGPL|GFDL(?:-NIV)?)-?(\d+(?:\.\d+)?)(\+?)$", re.IGNORECASE)
_REF_CHARS = re.compile(r"[^A-Za-z0-9.]+")

# Debian short name (compared case-insensitively) -> SPDX licence identifier.
SPDX_IDS = {
    "apache-2": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "artistic": "Artistic-1.0-Perl",  # Debian's "Artistic" is Perl's (common-licenses/Artistic)
    "artistic-1": "Artistic-1.0",
    "artistic-2": "Artistic-2.0",
    "artistic-2.0": "Artistic-2.0",
    "beerware": "Beerware",
    "boost": "BSL-1.0",
    "bsl-1": "BSL-1.0",
    "bsl-1.0": "BSL-1.0",
    "bsd-2": "BSD-2-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3": "BSD-3-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd3": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "bsd-4-clause-uc": "BSD-4-Clause-UC",
    "cc-by-3.0": "CC-BY-3.0",
    "cc-by-4.0": "CC-BY-4.0",
    "cc0": "CC0-1.0",
    "cc0-1.0": "CC0-1.0",
    "curl": "curl",
    "expat": "MIT",
    "fsfap": "FSFAP",
    "fsful": "FSFUL",
    "fsfullr": "FSFULLR",
    "isc": "ISC",
    "latex2e": "Latex2e",
    "mit": "MIT",
    "mit-cmu": "MIT-CMU",
    "mpl-1.1": "MPL-1.1",
    "mpl-2": "MPL-2.0",
    "mpl-2.0": "MPL-2.0",
    "ms-pl": "MS-PL",
    "oldap-2.8": "OLDAP-2.8",
    "openldap-2.8": "OLDAP-2.8",
    "openssl": "OpenSSL",
    "postgresql": "PostgreSQL",
    "python": "Python-2.0",
    "rsa-md": "RSA-MD",
    "sleepycat": "Sleepycat",
    "tcl": "TCL",
    "x11": "X11",
    "zlib": "Zlib",
}
# "NAME with X exception": X (case-insensitive) -> its SPDX exception; Autoconf's has a version
# per GPL version.
SPDX_EXCEPTIONS = {
    "linux-syscall-note": "Linux-syscall-note",
    "bison": "Bison-exception-2.2",
    "bison-2.2": "Bison-exception-2.2",
    "libtool": "Libtool-exception",
    "texinfo": "Texinfo-exception",
    "autoconf:GPL-2.0": "Autoconf-exception-2.0",
    "autoconf:GPL-3.0": "Autoconf-exception-3.0",
}


def copyright_licences(text: str) -> tuple[str, ...]:
    """The licence expressions of the Files paragraphs of a machine-readable copyright file
    (first line of each ``License`` field, blank space collapsed), each once, in order; ``()``
    when the file is not machine-readable."""
    paragraphs = list(parse_stanzas(text))
    if not paragraphs or not _FORMAT.match(_field(paragraphs[0], "Format")):
        return ()
    found: dict[str, None] = {}
    for paragraph in paragraphs[1:]:
        if _field(paragraph, "Files"):
            expression = " ".join(_field(paragraph, "License").partition("\n")[0].split())
            if expression:
                found.setdefault(expression)
    return tuple(found)


def _field(paragraph: tuple[tuple[str, str], ...], key: str) -> str:
    return next((v.strip() for k, v in paragraph if k.lower() == key.lower()), "")


# ----- SPDX -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpdxLicence:
    """Debian licence expressions, as one SPDX expression."""

    expression: str
    # (LicenseRef-..., the Debian name it stands for): names with no SPDX identifier.
    refs: tuple[tuple[str, str], ...]
    # Every licence of the expression, each once: SPDX identifiers, LicenseRef-s, and
    # "ID WITH EXCEPTION" terms.
    terms: tuple[str, ...]


def spdx_expression(debian_expressions: tuple[str, ...] | list[str]) -> str | None:
    """The SPDX expression of Debian licence expressions (ANDed: a package's files are under
    all of them); None when there are none."""
    found = spdx_licence(debian_expressions)
    return found.expression if found else None


def spdx_licence(debian_expressions: tuple[str, ...] | list[str]) -> SpdxLicence | None:
    """As ``spdx_expression``, with the LicenseRef-s it made and the terms it holds."""
    converter = _Converter()
    parts = [converter.expression(e) for e in debian_expressions if e.split()]
    # A part of ANDs only is its terms: "GPL-3+" and "GPL-3+ and ISC" make GPL-3.0-or-later
    # AND ISC, not GPL-3.0-or-later AND (GPL-3.0-or-later AND ISC).
    flat = [t for p in parts for t in (p.split(" AND ") if " OR " not in p else [p])]
    unique = list(dict.fromkeys(flat))
    if not unique:
        return None
    expression = unique[0] if len(unique) == 1 else " AND ".join(_grouped(p) for p in unique)
    return SpdxLicence(expression, tuple(converter.refs.items()), tuple(converter.terms))


def licence_ref(debian_name: str) -> str:
    """``LicenseRef-`` and the name in what SPDX allows in an identifier: '+' spelt ``plus``
    (``GPL-2`` and ``GPL-2+`` stay apart), then every run of other characters than letters,
    digits and '.' made one '-'."""
    name = _REF_CHARS.sub("-", debian_name.replace("+", "plus")).strip("-")
    return "LicenseRef-" + (name or "unnamed")


def _grouped(expression: str) -> str:
    compound = " AND " in expression or " OR " in expression
    return f"({expression})" if compound else expression


class _Converter:
    """Debian expressions to SPDX ones, gathering the LicenseRef-s and terms on the way."""

    def __init__(self) -> None:
        self.refs: dict[str, str] = {}
        self.terms: dict[str, None] = {}

    def expression(self, debian: str) -> str:
        # Commas lower the next operator's precedence: "A or B, and C" is (A or B) and C.
        clauses = [c.strip() for c in debian.split(",") if c.strip()]
        result = self._clause(clauses[0])
        for clause in clauses[1:]:
            operator, _, rest = clause.partition(" ")
            joined = operator.lower()
            if joined in ("and", "or") and rest.strip():
                result = f"{_grouped(result)} {joined.upper()} {_grouped(self._clause(rest))}"
            else:  # a comma with no operator after it: a list, which means all of them
                result = f"{_grouped(result)} AND {_grouped(self._clause(clause))}"
        return result

    def _clause(self, clause: str) -> str:
        # "and/or": either or both, which is a choice.
        words = clause.replace(" and/or ", " or ").split()
        alternatives = _split_words(words, "or")
        spdx = []
        for alternative in alternatives:
            conjuncts = [self._term(" ".join(w)) for w in _split_words(alternative, "and")]
            spdx.append(" AND ".join(conjuncts) if len(conjuncts) > 1 else conjuncts[0])
        if len(spdx) == 1:
            return spdx[0]
        return " OR ".join(_grouped(s) for s in spdx)

    def _term(self, term: str) -> str:
        name, exception = _exception_of(term)
        spdx = _spdx_id(name)
        if spdx and exception:
            spdx_exception = _spdx_exception(exception, spdx)
            found = f"{spdx} WITH {spdx_exception}" if spdx_exception else None
        else:
            found = spdx if not exception else None
        if found is None:
            found = licence_ref(term)
            self.refs.setdefault(found, term)
        self.terms.setdefault(found)
        return found


def _split_words(words: list[str], operator: str) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for word in words:
        if word.lower() == operator and groups[-1]:
            groups.append([])
        else:
            groups[-1].append(word)
    return [g for g in groups if g] or [words]


def _exception_of(term: str) -> tuple[str, str | None]:
    """``GPL-3+ with Bison exception`` -> (``GPL-3+``, ``Bison``)."""
    match = re.fullmatch(r"(\S+)\s+with\s+(.+?)(?:\s+exception)?", term, re.IGNORECASE)
    return (match.group(1), match.group(2)) if match else (term, None)


def _spdx_exception(exception: str, licence: str) -> str | None:
    key = exception.lower()
    return SPDX_EXCEPTIONS.get(key) or SPDX_EXCEPTIONS.get(f"{key}:{licence[:7]}")


def _spdx_id(name: str) -> str | None:
    # "BSD-3-clause~Google": Debian's mark for a licence whose text names its own holders,
    # which SPDX's matching guidelines let vary: the licence is BSD-3-Clause.
    name = name.partition("~")[0]
    found = SPDX_IDS.get(name.lower())
    if found:
        return found
    match = _GNU.match(name)
    if not match:
        return None
    family, version, later = match.groups()
    family = family.upper()
    if "." not in version:
        version += ".0"
    if family == "GFDL-NIV":
        return f"GFDL-{version}-no-invariants-{'or-later' if later else 'only'}"
    if family == "LGPL" and version not in ("2.0", "2.1", "3.0"):
        return None
    if family in ("GPL", "AGPL") and version not in ("1.0", "2.0", "3.0"):
        return None
    return f"{family}-{version}-{'or-later' if later else 'only'}"
