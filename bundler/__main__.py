"""``python -m bundler`` and the ``scratchpack`` console script.

Importing the CLI takes a few tens of milliseconds; a Ctrl-C that lands then must end the run
like any other (one line, exit 130), not with a traceback from the middle of an import.
"""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from bundler.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("scratchpack: interrupted\n")
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
