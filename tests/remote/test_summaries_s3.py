"""The summaries cache of a store on S3 lives on this machine (``$XDG_CACHE_HOME/relive/
summaries/``): `relive log` lists the same with it and without it, and reads only the
manifests it has not read yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, Workdir
from relive import summaries

PROGRAM = """\
    import relive
    for step in range(3):
        relive.checkpoint()
"""


def _relive(work: Workdir, cache_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "relive", *args], cwd=work.path, capture_output=True, text=True,
                          env={**ENV, "XDG_CACHE_HOME": str(cache_home)}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_an_s3_store_s_summaries_are_cached_here(work: Workdir, s3_store: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache_home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))  # for summaries.cache_path here
    (cache_home / "relive").mkdir(parents=True)  # writers stage packs in relive/staging, and make only that
    work.write("prog.py", PROGRAM)
    for _ in range(2):
        _relive(work, cache_home, "run", "--store", s3_store, "--every", "0", "prog.py")
    cold = _relive(work, cache_home, "log", "--all", "--json", "--store", s3_store).stdout
    path = Path(summaries.cache_path(s3_store))
    assert path.parent == cache_home / "relive" / "summaries" and path.exists()
    assert _relive(work, cache_home, "log", "--all", "--json", "--store", s3_store).stdout == cold
    rows = json.loads(cold)
    assert len(rows) == 8 and set(summaries.read(str(path)) or {}) == {row["id"] for row in rows}

    _relive(work, cache_home, "prune", "--keep-last", "1", "--grace", "0", "--store", s3_store)
    kept = json.loads(_relive(work, cache_home, "log", "--all", "--json", "--store", s3_store).stdout)
    assert len(kept) == 2 and set(summaries.read(str(path)) or {}) == {row["id"] for row in kept}
    verified = _relive(work, cache_home, "verify", "--store", s3_store).stdout
    assert "0 problems" in verified and "note" not in verified, verified
    assert not (work.path / ".relive").exists()
