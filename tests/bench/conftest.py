"""Tests of the bench scripts: bench/ is a folder of scripts, not a package, so put it on the import path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
