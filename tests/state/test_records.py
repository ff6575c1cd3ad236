"""Records of real objects written through relive.state.records into an in-memory store
(tests/fakes.MemoryStore) and read back: no native store, no subprocess."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
from fakes import MemoryStore

from relive.state.pickler import LoadContext
from relive.state.records import RecordWriter, Root, StoredState, read_record


def _write(store: MemoryStore, **globals_: Any) -> StoredState:
    main_dict = {"__name__": "__main__", "__builtins__": builtins, **globals_}
    roots = [Root(f"g:{name}", "globals", name, value) for name, value in globals_.items()]
    return RecordWriter(store, main_dict, {}).write(roots)


def _read(store: MemoryStore, record_id: str) -> dict[str, Any]:
    def load_global(name: str) -> Any:
        raise KeyError(name)

    return read_record(store, record_id, LoadContext({"__name__": "__main__"}, load_global))


def test_variables_that_share_an_object_are_one_record_and_load_back_sharing_it() -> None:
    store = MemoryStore()
    a, b, c = [1], [2], {"shared": True}
    stored = _write(store, o1=[a, c], o2=[b, c], alone="text")
    o1, o2 = stored.variables["g:o1"], stored.variables["g:o2"]
    assert o1["record"] == o2["record"] != stored.variables["g:alone"]["record"]
    assert o1["shared_with"] == ["o2 in globals"]
    values = _read(store, o1["record"])
    assert values["g:o1"] == [[1], {"shared": True}]
    assert values["g:o1"][1] is values["g:o2"][1]
    assert _read(store, stored.variables["g:alone"]["record"]) == {"g:alone": "text"}


def test_a_big_array_goes_out_of_band_and_loads_back_writable() -> None:
    store = MemoryStore()
    array = np.arange(1_000_000, dtype=np.float64)
    stored = _write(store, array=array)
    record_id = stored.variables["g:array"]["record"]
    payload, buffers = store.records[record_id]
    assert [len(b) for b in buffers] == [array.nbytes]  # the data, beside the pickle
    assert len(payload) < 1000
    assert stored.new_bytes == stored.state_bytes == len(payload) + array.nbytes
    loaded = _read(store, record_id)["g:array"]
    assert np.array_equal(loaded, array)
    loaded[0] = -1.0  # new memory, writable, as the native store gives
    assert array[0] == 0.0


def test_a_variable_that_did_not_change_costs_nothing_the_second_time() -> None:
    store = MemoryStore()
    data = {"weights": np.ones(1000), "step": 3}
    first = _write(store, data=data)
    again = _write(store, data=data)
    assert again.records == first.records
    assert (first.new_bytes > 0, again.new_bytes) == (True, 0)
