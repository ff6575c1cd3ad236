"""Types of ``relive._native``, the Rust engine's face in Python (crates/relive-native/src).

Hand-written: keep it in step with the ``#[pyfunction]``s, ``#[pyclass]``es and module
constants that ``lib.rs`` registers (``tests/test_public_api.py`` checks the names match).
"""

import os
import sys
import types
from builtins import open as _builtin_open
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, ParamSpec, TypedDict, TypeVar, final, overload, type_check_only

from typing_extensions import Buffer as _BufferLike

_P = ParamSpec("_P")
_R = TypeVar("_R")

_StrPath = str | os.PathLike[str]
# Called as pack files are read; an exception it raises stops the reports and is raised at the end.
_Progress = Callable[[int, int], object]

__all__ = [
    "__version__",
    "ReliveError",
    "StoreError",
    "StoreNotFound",
    "FormatError",
    "CorruptionError",
    "Store",
    "StagedRecord",
    "workers_cpu_seconds",
    "idle_cpu_seconds",
    "pages_watchable",
    "take_watch_back",
    "tell_written",
    "forget_written",
    "WriteProbe",
    "start_write_probe",
    "Buffer",
    "InitThen",
    "call_in_main_thread",
    "shared_groups",
    "entry_fingerprints",
    "entry_locations",
    "pickle_entries",
    "place_entries",
    "items_at",
    "value_fingerprint",
    "deep_call",
    "NULL",
    "frame_stack",
    "frame_locals_plus",
    "frame_stacktop",
    "frame_stack_addresses",
    "frame_function",
    "frame_called_from_c",
    "frame_generator",
    "unseen",
    "recursion_used",
    "spare_recursion",
    "deliver_after",
    "run_first",
    "open",
    "written_files",
    "WRITTEN_RECENT",
]

__version__: str

# -- errors.rs: relive's exceptions, and the store's errors mapped onto them --

class ReliveError(Exception):
    """Base class of relive's errors."""

class StoreError(ReliveError):
    """A store could not be read or written."""

class StoreNotFound(StoreError):
    """There is no relive store at the path."""

class FormatError(StoreError):
    """The store was written by a newer relive; upgrade relive to read it."""

class CorruptionError(StoreError):
    """Part of the store failed its integrity check or is missing; `relive verify` lists the damage."""

# -- py_store.rs: the store --

@type_check_only
class Problem(TypedDict):
    """One problem (or note) of a verify report."""

    kind: str
    id: str | None
    path: str
    detail: str
    needed_by: list[tuple[str, str]]  # (snapshot, record) pairs that need a damaged blob

@type_check_only
class VerifyReport(TypedDict):
    """What ``Store.verify``, ``Store.check`` and ``Store.repair`` found."""

    packs: int
    blobs: int
    snapshots: int
    bytes: int
    problems: list[Problem]
    notes: list[Problem]

class CopyReport(TypedDict):
    snapshots: int
    objects: int
    bytes: int

@final
class Store:
    """A relive store: packs of content-addressed chunks and records, snapshot manifests, run
    documents. Thread-safe."""

    @staticmethod
    def open(path: _StrPath, create: bool = False) -> Store: ...
    @property
    def path(self) -> str: ...
    @property
    def chunk_size(self) -> int: ...
    def put_record(self, payload: _BufferLike, buffers: Sequence[_BufferLike]) -> tuple[str, int, int]:
        """Returns ``(id, new_bytes, raw_bytes)``; buffers must be C-contiguous."""
    def has_record(self, id: str) -> bool:
        """Whether the store holds the record ``id``."""
    def put_record_from(self, payload: _BufferLike,
                        buffers: Sequence[_BufferLike | tuple[str, int]]) -> tuple[str, int, int]:
        """As ``put_record``; a ``(record_id, index)`` item is that buffer of a stored record,
        referred to by its chunks, not read."""
    def record_buffer_lens(self, id: str) -> list[int]:
        """The lengths of a stored record's buffers."""
    def record_buffer(self, id: str, index: int) -> Buffer:
        """One buffer of a stored record, read and checked."""
    def begin_copies(self) -> int:
        """Starts one snapshot's copies: the ``copies`` to give ``stage_record``, which then asks
        the kernel which pages of large buffers were written since the last copies. Lets go of
        the memory kept for copies that the last copies did not reuse."""
    def stage_record(self, payload: _BufferLike, buffers: Sequence[_BufferLike],
                     at_most: int | None = None, copies: int = 0,
                     watch_pages: bool = True) -> StagedRecord | None:
        """Copies the payload and the chunks not stored yet, for ``put_staged`` (--mode thread);
        None, with nothing copied, where that would copy more than ``at_most`` bytes. With
        ``copies``, buffers found rewritten at the last copies are copied without fingerprints,
        and with ``watch_pages`` too, the kernel tells which pages of quiet buffers changed."""
    def stage_record_from(self, payload: _BufferLike,
                          buffers: Sequence[_BufferLike | tuple[str, int]],
                          at_most: int | None = None, copies: int = 0,
                          watch_pages: bool = True) -> StagedRecord | None:
        """``stage_record`` where a buffer may be ``(record_id, index)``: referred to, not copied."""
    def put_staged(self, staged: StagedRecord) -> tuple[str, int, int]:
        """Writes a staged record without the GIL: ``(id, new_bytes, raw_bytes)``, as put_record."""
    def get_record(self, id: str) -> tuple[bytes, list[bytearray | Buffer]]:
        """``(payload, buffers)``: each buffer new writable memory, every byte verified."""
    def refresh(self) -> None: ...
    def raw_bytes_written(self) -> int:
        """The bytes of the blobs this handle has written so far, before compression."""
    def proven_chunks(self) -> bytes:
        """The chunks this handle hashed (fingerprint, id), for the process it was forked from."""
    def add_proven_chunks(self, data: bytes) -> bool:
        """Takes in a forked child's proven_chunks(): its copies need not copy those chunks."""
    def lend_watch_to_child(self) -> int:
        """Before a snapshot's child is forked: what the watch knows unchanged, for the child
        (which opens its own handle on this store). Returns the bytes lent."""
    def unread_bytes(self) -> int:
        """In a forked child: the bytes kept by the ids the program lent it, unread."""
    def flush(self) -> None: ...
    def commit(self, manifest: bytes) -> str:
        """Commits a snapshot's manifest (JSON naming its records); returns the snapshot's id."""
    def snapshot_ids(self) -> list[str]: ...
    def read_snapshot(self, id: str) -> bytes: ...
    def put_run(self, run_id: str, doc: bytes) -> None: ...
    def runs(self) -> list[tuple[str, bytes]]: ...
    def verify(self, progress: _Progress | None = None) -> VerifyReport: ...
    def copy_to(self, dst: Store, snapshots: Sequence[str], runs: Sequence[str],
                progress: _Progress | None = None) -> CopyReport:
        """Copies snapshots (with what they need) and run documents into ``dst``: only blobs
        it lacks travel."""
    def prune(self, forget: Sequence[str], grace_s: float, dry_run: bool = False) -> dict[str, int]:
        """Forgets snapshots and reclaims the packs no remaining snapshot uses (two phases)."""
    def create_like(self, path: _StrPath) -> Store:
        """The store at ``path``, created with this one's chunk size when there is none."""
    @staticmethod
    def check(path: _StrPath, progress: _Progress | None = None) -> VerifyReport: ...
    @staticmethod
    def repair(path: _StrPath, progress: _Progress | None = None) -> tuple[list[str], VerifyReport]: ...

# -- buffer.rs: a large loaded buffer, writable, as a bytearray is --

@final
class StagedRecord:
    """A record copied out of the program, waiting for ``Store.put_staged``."""
    @property
    def copied_bytes(self) -> int: ...
    @property
    def raw_bytes(self) -> int: ...
    @property
    def unread_bytes(self) -> int:
        """Bytes of its buffers known unchanged without being read (no page written since)."""

def workers_cpu_seconds() -> float: ...
def take_watch_back() -> None:
    """After the fork, in the program: forgets what was lent."""
def tell_written(addr: int, len: int, block: int, versions: list[int]) -> None:
    """The buffer at addr..addr + len (relive's own: a CUDA tensor's host mirror) is cut in
    blocks of ``block`` bytes, the k-th last written at ``versions[k]``, a number no other
    write had: a copied snapshot keeps the chunks whose blocks kept their versions unread.
    ``forget_written`` must come before the memory is freed."""
def forget_written(addr: int, len: int) -> None:
    """The buffer told at addr..addr + len is freed."""
def pages_watchable() -> bool:
    """Whether this process can watch its pages for writes (Linux 6.7+, userfaultfd allowed),
    as copied snapshots do for large quiet buffers."""
class WriteProbe:
    """How much of its memory the program writes while it runs: from ``start_write_probe``
    until ``close``."""
    def written(self) -> int:
        """The bytes of the memory watched written since the start, each page once (0 once closed)."""
    def close(self) -> None:
        """Stops watching: the memory loses its protection."""
def start_write_probe() -> WriteProbe | None:
    """Starts watching all the process's private anonymous memory for writes; None where this
    system cannot (before Linux 6.7, userfaultfd refused)."""
def idle_cpu_seconds() -> float:
    """CPU seconds this process has spent compressing chunks at idle priority (on cores nothing
    else wanted; a forked child starts from its parent's count)."""

class InitThen:
    """Called with any arguments: calls ``init()`` (which must return None) and returns ``obj``,
    as ``type.__call__`` does around ``__init__``; where a resumed caller called a class."""

    init: Any
    obj: Any
    def __init__(self, init: Any, obj: Any) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

class Buffer:
    """A loaded buffer: writable bytes that NumPy arrays and PyTorch tensors are built on in place."""

    def __len__(self) -> int: ...
    if sys.version_info >= (3, 12):  # the buffer protocol, as Python code sees it from 3.12
        def __buffer__(self, flags: int, /) -> memoryview: ...
        def __release_buffer__(self, buffer: memoryview, /) -> None: ...

# -- frame.rs: frame internals --

@final
@type_check_only
class NullSlot:
    """The type of ``NULL`` (not a name of the module at run time)."""

NULL: Final[NullSlot]
"""What a frame slot holding C ``NULL`` reads as: distinct from every value of the program."""

def frame_stack(frame: types.FrameType, depth: int) -> tuple[Any, ...]: ...
def frame_stack_addresses(frame: types.FrameType, start: int, end: int) -> list[int]: ...
def frame_function(frame: types.FrameType) -> types.FunctionType | None: ...
def frame_locals_plus(frame: types.FrameType) -> tuple[Any, ...]: ...
def frame_stacktop(frame: types.FrameType) -> int: ...
def frame_called_from_c(frame: types.FrameType) -> bool: ...
def frame_generator(frame: types.FrameType) -> Any: ...

# -- graph.rs: which variables reach a common object --

def shared_groups(
    values: Sequence[object],
    classify: Callable[[type], int],
    inspect: Callable[[Any], tuple[bool, Iterable[object] | None, Iterable[int]]],
    stop: tuple[object, ...],
    private_entries: Sequence[tuple[dict[Any, Any], bytes]] = ...,
    private_values: Sequence[object] = ...,
) -> list[int]: ...

# -- entries.rs: a large dict's entries, fingerprinted (relive.state.dict_entries) --

def entry_fingerprints(d: dict[Any, Any], class_token: Callable[[type], str | None]) -> tuple[bytes, bytes]:
    """Each entry's 16-byte fingerprint, and whether each is private (1) or not (0)."""

def entry_locations(fingerprints: bytes, private: bytes, last_fingerprints: bytes,
                    last_locations: bytes | bytearray) -> tuple[bytearray, list[int]]:
    """Each entry's location (reused from the last snapshot where unchanged), and the
    positions of the entries to pickle now."""

def place_entries(locations: bytearray, positions: list[int], segment: int, ends: list[int],
                  segments: int) -> list[int]:
    """Fills in the locations of the entries just pickled into ``segment``; returns the live
    bytes of each segment."""

def items_at(d: dict[Any, Any], positions: list[int]) -> list[tuple[Any, Any]]:
    """The items of ``d`` at ``positions`` (ascending)."""

def pickle_entries(d: dict[Any, Any], positions: Sequence[int],
                   classes: Sequence[tuple[type, int]]) -> tuple[bytes, list[int]] | None:
    """The pickles of the private entries at ``positions`` as ``(key, value)`` tuples, one
    after the other, and where each ends; None where one must go to the C pickler."""

def value_fingerprint(value: object, class_token: Callable[[type], str | None]) -> bytes | None:
    """The fingerprint of ``value`` whole, or None where it is not private."""

# -- pending.rs, recursion.rs, unseen.rs: relive's code in the program's thread --

def call_in_main_thread(callable: Callable[[], object]) -> bool: ...
def deep_call(func: Callable[[], _R], extra: int) -> _R: ...
@overload
def unseen(func: Callable[_P, _R], chain: Literal[False] = False) -> Callable[_P, _R]: ...
@overload
def unseen(func: Callable[_P, Callable[_P, _R] | None], chain: Literal[True]) -> Callable[_P, _R | None]: ...
def recursion_used() -> tuple[int, int]: ...
def spare_recursion(frames: int, c: int) -> None: ...
def deliver_after(signum: int) -> None: ...
def run_first(code: types.CodeType, globals: dict[str, Any]) -> Any: ...

# -- written.rs: the files the program writes --

open = _builtin_open
"""``io.open``, noting the files opened for writing."""

def written_files() -> tuple[list[IO[Any]], list[Path]]: ...

WRITTEN_RECENT: Final[int]
