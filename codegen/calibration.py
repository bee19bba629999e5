"""The auto backend's rule: from how many elements numexpr beats numpy, per dtype and kind.

`bench/calibrate.py` measures it on the machine at hand and writes `calibration.json` beside
this file; code generation bakes the numbers into each module, so a generated module needs no
file at run time. A kernel is "heavy" when it has a transcendental function (exp, tanh, ...),
"light" when it is only arithmetic. `None` means numexpr never won at the sizes measured.
"""
from __future__ import annotations

import json
import pathlib

PATH = pathlib.Path(__file__).with_name("calibration.json")

#: Used when no calibration file exists: numexpr only for large float64 transcendental chains.
FALLBACK = {
    "float32": {"light": None, "heavy": None},
    "float64": {"light": None, "heavy": 1 << 20},
    "measured_on": "fallback (not measured)",
}


def load() -> dict:
    if PATH.exists():
        return json.loads(PATH.read_text())
    return FALLBACK


def thresholds(calibration: dict) -> dict[tuple[str, bool], int | None]:
    """{(dtype char, heavy): smallest size at which numexpr wins, or None}."""
    return {({"float32": "f", "float64": "d"}[dt], kind == "heavy"): calibration[dt][kind]
            for dt in ("float32", "float64") for kind in ("light", "heavy")}
