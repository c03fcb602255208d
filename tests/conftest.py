import os
from pathlib import Path

import pytest

# Tests never reach the network: open_clip / huggingface loads must come from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files and split lists (../shared/data beside the clone; never copied in)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data expected at {SHARED_DATA} (../shared beside the repository)")
    return SHARED_DATA
