"""Where the tests find real data: ../shared/data beside the checkout, else the few files of tests/fixtures/data.

A clone alone has no ../shared. tests/fixtures/data mirrors its layout with a handful of files of each corpus
(credits in its README.md), so tests that need real recordings or digits still run; a test that needs a whole
corpus (a split's size, every recording) is marked `needs_corpus` and says why when it skips.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data"
FIXTURES = REPO / "tests" / "fixtures" / "data"
HAVE_CORPUS = (CORPUS / "README.md").is_file()
SHARED_DATA = CORPUS if HAVE_CORPUS else FIXTURES

needs_corpus = pytest.mark.skipif(
    not HAVE_CORPUS, reason=f"needs the full corpora in {CORPUS}; tests/fixtures/data holds a few files of each")
