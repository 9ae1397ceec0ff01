"""numpy. basic: arange and a sum; more: FFT, linear algebra, random numbers, metadata."""

import json
import sys
from importlib.metadata import version

import numpy as np


def basic() -> dict[str, object]:
    return {"sum": int(np.arange(10).sum())}


def more() -> dict[str, object]:
    import numpy.fft
    import numpy.linalg

    spectrum = numpy.fft.fft(np.ones(8))
    solved = numpy.linalg.solve(np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([9.0, 8.0]))
    draws = np.random.default_rng(7).integers(0, 1000, size=3)
    return {
        "fft0": float(spectrum[0].real),
        "fft1": abs(complex(spectrum[1])),
        "solve": [round(float(x), 6) for x in solved],
        "random": [int(x) for x in draws],
        "version": version("numpy"),
    }


if __name__ == "__main__":
    print(json.dumps({"basic": basic, "more": more}[sys.argv[1]](), sort_keys=True))
