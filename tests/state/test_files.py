"""The program's open files in a pickled state: reopened where they stood when resuming
(the capture flushed them first), described and left alone when loaded to inspect."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
from pathlib import Path
from typing import Any

import pytest

from relive.state import pickler


def round_trip(value: Any, resuming: bool = True) -> Any:
    for f in value if isinstance(value, list) else [value]:
        if isinstance(f, io.IOBase) and not f.closed and f.writable():
            f.flush()  # what the capture does, in the program's process, before a snapshot
    namespace: dict[str, Any] = {"__name__": "__main__"}
    out = io.BytesIO()
    buffers: list[Any] = []
    pickler.StatePickler(out, main_dict=namespace, own=set(), main_names={}, storages={},
                         buffers=buffers).dump(value)
    context = pickler.LoadContext(namespace, namespace.__getitem__, resuming=resuming)
    return pickler.loads(out.getvalue(), [bytes(b.raw()) for b in buffers], context)


def test_a_file_open_for_writing_reopens_where_it_stood(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with open(path, "w") as fh:
        fh.write("one\n")
        again, exit_ = round_trip([fh, fh.__exit__])
    assert path.read_text() == "one\n"  # reopening cut what came after
    again.write("two\n")
    exit_(None, None, None)
    assert again.closed and path.read_text() == "one\ntwo\n"


def test_binary_append_raw_and_closed_files(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"ab")
    appending = open(path, "ab")
    appending.write(b"cd")
    raw = open(tmp_path / "raw.bin", "wb", buffering=0)
    raw.write(b"xy")
    closed = open(path, "rb")
    closed.close()
    a, r, c = round_trip([appending, raw, closed])
    appending.close()
    raw.close()
    a.write(b"ef")
    a.close()
    assert path.read_bytes() == b"abcdef"
    assert type(r) is io.FileIO and r.tell() == 2
    r.close()
    assert c.closed


def test_loaded_to_inspect_a_file_is_described_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with open(path, "w") as fh:
        fh.write("one\n")
        seen = round_trip(fh, resuming=False)
        fh.write("two\n")
    assert type(seen).__name__ == "FileAtSnapshot" and seen.position == 4
    assert path.read_text() == "one\ntwo\n"


def test_standard_streams_stay_the_processes_own() -> None:
    assert round_trip(sys.stdout) is sys.stdout


def test_compressed_files_read_reopen_where_they_stood(tmp_path: Path) -> None:
    """gzip, bz2 and lzma files, binary and text, are reopened and decompressed up to where
    the program had read (a text file past what its decoder read ahead)."""
    lines = "".join(f"line {i} é\n" for i in range(5000))
    opened = []
    for module in (gzip, bz2, lzma):
        path = tmp_path / f"data.{module.__name__}"
        with module.open(path, "wt", encoding="utf-8") as out:
            out.write(lines)
        text, binary = module.open(path, "rt", encoding="utf-8"), module.open(path, "rb")
        for _ in range(1000):
            text.readline(), binary.readline()
        opened += [text, binary]
    again = round_trip(opened)
    for before, after in zip(opened, again):
        assert type(after) is type(before) and after is not before
        assert after.readline() == before.readline()
        assert after.read() == before.read()
        before.close(), after.close()


def test_a_compressed_file_being_written_or_read_by_a_for_loop_says_why_it_cannot(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "out.gz", "wt") as out:
        out.write("x\n")
        with pytest.raises(TypeError, match="gzip file .*out.gz' is being written"):
            round_trip(out)
    with gzip.open(tmp_path / "out.gz", "rt") as looped:
        for _ in looped:
            with pytest.raises(TypeError, match="read by a for loop"):
                round_trip(looped)


def test_a_compressed_file_loaded_to_inspect_is_described(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "d.gz", "wb") as out:
        out.write(b"0123456789")
    with gzip.open(tmp_path / "d.gz", "rt") as text, gzip.open(tmp_path / "d.gz", "rb") as binary:
        text.read(3), binary.read(4)
        seen_text, seen_binary = round_trip([text, binary], resuming=False)
    assert type(seen_binary).__name__ == "FileAtSnapshot" and seen_binary.position == 4
    assert seen_text.mode == "rt" and seen_text.name.endswith("d.gz")
