"""``python -m bundler`` and the ``scratchpack`` console script.

Importing the CLI takes a few tens of milliseconds; a Ctrl-C that lands then must end the run
like any other (one line, exit 130), not with a traceback from the middle of an import; one
that lands once the run is over is ignored.
"""

from __future__ import annotations

import signal
import sys


def run() -> int:
    try:
        from bundler.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("scratchpack: interrupted\n")
        return 130
    code = main()
    # The run is over and its outputs are in place: a Ctrl-C or SIGTERM while the interpreter
    # frees a big pack's memory (a noticeable moment) must not turn its exit code into a kill.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(run())
