from pathlib import Path

import pytest

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "triposr_tiny"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return FIXTURE_DIR
