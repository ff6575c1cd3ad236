"""Unchanged variables write nothing; a changed slice of a big array writes only its chunks."""

from __future__ import annotations

import pytest

import relive


def test_unchanged_state_writes_almost_nothing(work):
    work.write("prog.py", """
        import relive
        table = {i: str(i) * 10 for i in range(20000)}
        counter = 0
        relive.checkpoint()
        counter += 1
        relive.checkpoint()
        relive.checkpoint()
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    first, second, third = [s for s in work.log() if s["trigger"] == "explicit"]
    assert first["new_bytes"] > 50_000
    assert second["new_bytes"] < 2_000  # only `counter` changed
    assert third["new_bytes"] == 0
    assert first["state_bytes"] == third["state_bytes"]


def test_200mb_array_with_1mb_slice_changed(work):
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np, relive
        rng = np.random.default_rng(0)
        big = rng.random(25_000_000)            # 200 MB of float64 noise
        relive.checkpoint()
        big[5_000_000:5_131_072] = 0.5          # 1 MiB changed
        relive.checkpoint()
    """)
    work.relive("run", "--every", "0", "prog.py", check=True, timeout=300)
    first, second = [s for s in work.log() if s["trigger"] == "explicit"]
    assert first["state_bytes"] >= 200_000_000
    assert first["new_bytes"] >= 190_000_000  # noise does not compress: stored raw
    assert second["new_bytes"] < 4_000_000, second["new_bytes"]
    big = relive.load(second["id"], store=str(work.store))["big"]
    assert big.shape == (25_000_000,)
    assert (big[5_000_000:5_131_072] == 0.5).all()
    old = relive.load(first["id"], store=str(work.store))["big"]
    assert (old[5_000_000:5_131_072] != 0.5).all()
    assert (old[:5_000_000] == big[:5_000_000]).all()
