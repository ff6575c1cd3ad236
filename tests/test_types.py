"""relive type-checks clean under ``mypy --strict`` (its config is pyproject's [tool.mypy]),
its native module included through ``_native.pyi``: a change that breaks a type fails here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="checked once, under the default Python (the config fixes the version checked)")
def test_the_package_is_clean_under_mypy_strict(tmp_path):
    api = pytest.importorskip("mypy.api")
    stdout, stderr, status = api.run([
        "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
        str(ROOT / "python" / "relive")])
    assert status == 0, stdout + stderr
    assert "Success: no issues found" in stdout
