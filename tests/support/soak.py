"""bench/soak.py, loaded as a module (`soak`) for the tests of its bounds, and its path."""

from __future__ import annotations

import importlib.util
import sys

from support.paths import REPO

SOAK = REPO / "bench" / "soak.py"


def load_soak():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


soak = load_soak()
