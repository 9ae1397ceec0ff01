"""``python -m bundler`` and the ``scratchpack`` console script.

Importing the CLI takes a few tens of milliseconds; a Ctrl-C or a SIGTERM that lands then must
end the run like any other (one line, exit 130), not with a traceback from the middle of an
import, nor by the signal's default action. So the handlers go in before the first heavy
import, and once the run has its exit code, late signals are ignored: nothing is left to undo.
Only the interpreter's own start, before this module runs, is outside our reach: a signal
there ends the process before it has touched anything.

Once the run has its exit code, ``console`` leaves without the interpreter's teardown (freeing
every object and module one by one, a tenth of an unchanged repack): the output streams and
the log are flushed first, and by then every file is closed and every thread has ended.

A handler's exception can land where Python cannot raise it: in a weakref callback of the
import machinery, in a ``__del__``. Python then prints "Exception ignored" and goes on as if no
signal had come. Such an exception is raised again a moment later instead, where it can be.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any, NoReturn

from bundler.errors import Interrupted

STOPPING = (signal.SIGINT, signal.SIGTERM)
AGAIN = signal.SIGALRM  # carries an interruption that landed where it could not be raised
EXIT_INTERRUPTED = 130


def _interrupt(_signum: int, _frame: object) -> None:
    raise Interrupted


def _raise_again_later(unraisable: Any) -> None:
    if not isinstance(unraisable.exc_value, (Interrupted, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)
        return
    signal.signal(AGAIN, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.002)


def _interruption(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an interruption, or another exception it became: a signal in the
    middle of a class statement reaches us as the RuntimeError of ``__set_name__``."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def run() -> int:
    sys.unraisablehook = _raise_again_later
    try:
        for number in STOPPING:
            signal.signal(number, _interrupt)
        # The import makes tens of thousands of objects that live as long as the process: the
        # collector need not walk them, during the import nor after it.
        gc.disable()
        from bundler.cli import main

        gc.freeze()
        gc.enable()

        return main()  # installs its own handlers at once; a signal before that lands below
    except BaseException as exc:
        if not _interruption(exc):
            raise
        sys.stderr.write("scratchpack: interrupted\n")
        return EXIT_INTERRUPTED
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for number in (*STOPPING, AGAIN):
            signal.signal(number, signal.SIG_IGN)


def console() -> NoReturn:
    """The ``scratchpack`` command: ``run``, then out at once with its exit code."""
    code = run()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader that left early (| head) is not an error of ours, as in the CLI.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
