"""The one exception tree. Messages are for users: one line, naming the file at fault.

Only the CLI turns these into exit codes (``exit_code``); the core raises and logs, never exits.
"""

from __future__ import annotations


class ScratchpackError(Exception):
    """Base of every error scratchpack reports to a user."""

    exit_code = 2


class UsageError(ScratchpackError):
    """The command line or an input named on it is wrong."""


class ProgramNotFound(UsageError):
    """A program named on the command line is neither a file nor a name on PATH."""


class BadElf(ScratchpackError):
    """A file that should be ELF cannot be read as one (truncated, forged offsets, ...)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BadLoaderConfig(ScratchpackError):
    """ld.so.conf or ld.so.cache of the root cannot be read."""


class IncompleteClosure(ScratchpackError):
    """The loader would not find every library (the pack refuses it)."""

    exit_code = 1


class SecretsFound(ScratchpackError):
    """The plan would take a secret into the image (the pack refuses it)."""

    exit_code = 1


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the program is, so that temporary files are removed on
    the way out. A BaseException, like KeyboardInterrupt, so no ``except Exception`` eats it;
    not a KeyboardInterrupt, which the interpreter would answer by ending the process by SIGINT
    once it reached the top."""
