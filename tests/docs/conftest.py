"""The documentation site, built once for the tests of tests/docs (needs the docs extra)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS_EXTRA = "the site needs the docs extra (pip install -e '.[docs]')"


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` into a temporary folder; fails with mkdocs' own complaint."""
    pytest.importorskip("mkdocs", reason=DOCS_EXTRA)
    pytest.importorskip("mkdocstrings", reason=DOCS_EXTRA)
    site = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return site
