import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "corpora" / "fixtures"
# Real data lives beside the checkout (CI has it); ALBERT_SRL_SHARED points elsewhere.
SHARED = Path(os.environ.get("ALBERT_SRL_SHARED", REPO.parent / "shared"))
EWT_DIR = SHARED / "corpora" / "ewt-propbank"

needs_ewt = pytest.mark.skipif(
    not (EWT_DIR / "propbank").exists(),
    reason=f"the real EWT PropBank corpus is not at {EWT_DIR} (set ALBERT_SRL_SHARED to the shared/ folder)",
)


@pytest.fixture
def mini_ewt(tmp_path) -> Path:
    """A writable copy of the three-document EWT fixture, for tests that corrupt it."""
    target = tmp_path / "ewt-mini"
    shutil.copytree(FIXTURES / "ewt-mini", target)
    return target
