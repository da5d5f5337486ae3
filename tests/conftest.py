from pathlib import Path

import pytest

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "triposr_tiny"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return FIXTURE_DIR


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "package: builds and installs the extension zip (slow; skip locally with -m 'not package')"
    )
