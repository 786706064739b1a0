from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.browser import ensure_chromium
from tests.report.helpers import make_run


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "RUNS" / "demo")


@pytest.fixture(scope="session")
def chromium() -> str:
    path, why = ensure_chromium()
    if path is None:
        pytest.skip(why)
    return path
