"""Python looks codecs up by name at run time, which no trace can foresee.

``str.encode("idna")`` (which ``socket.getaddrinfo`` calls for every host name) imports
``encodings.idna`` only when first used, and that module imports ``stringprep`` in turn. A
traced run that never made such a call cannot have seen them. So once a traced Python opened
its ``encodings`` package, the whole package goes in, with the standard-library modules its
codecs import (found statically, by parsing them with ``ast``).
"""

from __future__ import annotations

import ast
import logging
import posixpath
from collections.abc import Iterable, Iterator

from bundler.loader.rootfs import FsRoot

log = logging.getLogger(__name__)

MAX_MODULES = 200  # the stdlib has about that many top-level modules; a bound, not a goal


def codec_modules(root: FsRoot, traced: Iterable[str]) -> list[str]:
    """The encodings package and the stdlib modules its codecs import, for a traced Python."""
    package = next(
        (posixpath.dirname(p) for p in traced if p.endswith("/encodings/__init__.py")), None
    )
    if package is None:
        return []
    stdlib = posixpath.dirname(package)
    found = [package]
    pending = sorted(_imports(root, package))
    seen = set(pending)
    while pending and len(found) < MAX_MODULES:
        module = _locate(root, stdlib, pending.pop(0))
        if module is None or module in found:
            continue
        found.append(module)
        for name in sorted(_imports(root, module) - seen):  # bz2_codec -> bz2 -> _bz2
            seen.add(name)
            pending.append(name)
    log.info("Python codecs are imported by name at run time: adding %s", ", ".join(found))
    return found


def _imports(root: FsRoot, module: str) -> set[str]:
    """Top-level names a module (a .py file, or every .py file of a package) imports."""
    if module.endswith(".py"):
        sources = [module]
    elif root.is_dir(module):
        sources = [posixpath.join(module, e) for e in root.listdir(module) if e.endswith(".py")]
    else:
        return set()  # an extension module: its imports are its own business
    names: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(root.read_bytes(source))
        except (SyntaxError, ValueError, OSError):
            continue  # another Python's syntax, or unreadable: the trace is all we have then
        for node in _module_level(tree.body):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    names.discard("encodings")
    return names


def _locate(root: FsRoot, stdlib: str, name: str) -> str | None:
    """A top-level stdlib module as a file, a package folder, or an extension in lib-dynload."""
    for candidate in (posixpath.join(stdlib, f"{name}.py"), posixpath.join(stdlib, name)):
        if root.lstat(candidate) is not None:
            return candidate
    dynload = posixpath.join(stdlib, "lib-dynload")
    for entry in sorted(root.listdir(dynload)):
        if entry.startswith(f"{name}.") and entry.endswith(".so"):
            return posixpath.join(dynload, entry)
    return None  # built into the interpreter


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run when a module is imported: not those inside functions and classes, which
    run only when called (an import there is the caller's, lazily, and often never)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            yield from _module_level(node.body)
            yield from _module_level(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)
            yield from _module_level(getattr(node, "finalbody", []))
