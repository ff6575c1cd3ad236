"""PyTorch's DataLoader iterators: stored as what they are, rebuilt by replaying their start.

``for batch_idx, (data, target) in enumerate(train_loader)`` holds a ``_SingleProcessDataLoaderIter``
(or, with ``num_workers > 0``, a ``_MultiProcessingDataLoaderIter`` and its worker processes) on
the program's stack; PyTorch refuses to pickle one. relive stores it as its loader (the
``DataLoader``, pickled as any value: dataset, sampler, batch size, collate_fn...), the states of
the random generators the iteration draws from, taken when it drew from them, and how many
batches its sampler has given. Resuming makes a new iterator of the loader with those states
set, moves its sampler on by that many batches without fetching or collating them (the workers
of a multi-worker loader start again and fetch from there), and puts the program's generators
back as they were at the snapshot: the resumed program sees the batches, and the random
streams, that the uninterrupted one saw. (torchdata's ``StatefulDataLoader`` saves the same:
the sampler's state and the count of batches yielded.)

The iterator does not keep the generators' states of its start, so relive notes them as the
program goes: once the program has imported torch (``watch``: relive never imports it), three
methods of ``_BaseDataLoaderIter`` call relive's code first, unseen by the program (no frame
of relive's in its tracebacks, no event for its tracers, no random number drawn):

- ``__init__``: the states its base seed (the workers' seeds) is drawn from;
- ``_reset``: a new epoch of a loader with persistent workers (a new sampler iterator);
- ``_next_index``: the states the sampler draws from when the epoch's first batch is asked
  for (a shuffling sampler draws its permutation then, not at ``iter()``), and the count.

Who calls what: ``capture`` calls ``watch`` when a capture starts; the pickler
(``state.pickler``) looks ``reducers()`` up by type and loads each record inside
``rebuilding``, which rebuilds the record's iterators once the whole record (the loader
included) has loaded.
"""

from __future__ import annotations

import random
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from relive import _native
from relive.errors import NotResumable
from relive.state import Reducer

_MODULE = "torch.utils.data.dataloader"


# -- what is noted while the program runs --


class _Started:
    """What an iterator's batches depend on, noted as it goes."""

    def __init__(self, loader: Any, init: dict[str, Any]) -> None:
        # A loader with persistent workers holds its iterator: held weakly then, or the two
        # would keep each other (and the workers) alive for good.
        persistent = bool(getattr(loader, "persistent_workers", False))
        self._loader: Callable[[], Any] = weakref.ref(loader) if persistent else (lambda: loader)
        self.init = init  # before __init__: the base seed's draw
        self.reset: dict[str, Any] | None = None  # before the epoch's _reset (persistent workers)
        self.first: dict[str, Any] | None = None  # before the epoch's first batch of indices
        self.sampler_iter: Any = None  # the epoch's sampler iterator, once a batch was asked for
        self.drawn = 0  # batches of indices asked of it
        self.ref: "weakref.ref[Any] | None" = None  # to the iterator (set by _note)

    def loader(self) -> Any:
        return self._loader()


# By id: a lookup per batch costs a dict's, not a WeakKeyDictionary's (a new weak reference
# each time). An entry goes when its iterator does.
_started: dict[int, _Started] = {}


def _forget(ref: "weakref.ref[Any]") -> None:
    for key, started in list(_started.items()):
        if started.ref is ref:
            del _started[key]


_forget_unseen = _native.unseen(_forget)  # a weak reference's callback: no tracer sees it


def _note(it: Any, started: _Started) -> None:
    started.ref = weakref.ref(it, _forget_unseen)
    _started[id(it)] = started
_replaying: dict[int, "_Plan"] = {}  # id(iterator) -> how to replay its start, while rebuilding it


def _noting(name: str) -> Callable[[Callable[..., None]], Callable[..., Callable[..., Any]]]:
    """The hook before the method ``name``: it replays the start of an iterator being rebuilt,
    or notes (never failing the program: an iterator whose noting failed cannot be stored)."""
    def hook(note: Callable[..., None]) -> Callable[..., Callable[..., Any]]:
        def before(it: Any, *args: Any, **kwargs: Any) -> Callable[..., Any]:
            plan = _replaying.get(id(it))
            if plan is not None:
                plan.at(name, it)
            else:
                try:
                    note(it, *args, **kwargs)
                except Exception as exc:
                    _started.pop(id(it), None)
                    from relive.report import warn_once

                    warn_once("dataloader", f"cannot follow a DataLoader iterator ({exc!r}): "
                                            "points inside its epoch cannot resume")
            return _ORIGINALS[name]
        return before
    return hook


@_noting("__init__")
def _note_init(it: Any, loader: Any) -> None:
    _note(it, _Started(loader, _states(loader)))


@_noting("_reset")
def _note_reset(it: Any, *args: Any, **kwargs: Any) -> None:
    started = _started.get(id(it))
    if started is not None:
        started.reset = _states(started.loader())
        started.first, started.sampler_iter, started.drawn = None, None, 0


@_noting("_next_index")
def _note_next_index(it: Any) -> None:
    started = _started.get(id(it))
    if started is not None:
        sampler_iter = getattr(it, "_sampler_iter", None)
        if started.sampler_iter is not sampler_iter:  # the epoch's first batch
            started.first = _states(started.loader())
            started.sampler_iter, started.drawn = sampler_iter, 0
        started.drawn += 1


# -- the random generators an iteration draws from --


def _generators(loader: Any) -> list[Any]:
    """The ``torch.Generator`` objects of the loader and its samplers (a shuffling loader made
    with ``generator=g`` draws from ``g``, else from torch's global generator)."""
    torch = sys.modules["torch"]
    found: dict[int, Any] = {}
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            found.setdefault(id(generator), generator)
    return list(found.values())


def _states(loader: Any) -> dict[str, Any]:
    """The states of every generator a sampler may draw from: torch's, ``random``'s, NumPy's
    global ones and the loader's own."""
    torch = sys.modules["torch"]
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate(),
                              "generators": [(g, g.get_state()) for g in _generators(loader)]}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    return states


def _set_states(states: dict[str, Any]) -> None:
    torch = sys.modules["torch"]
    torch.set_rng_state(states["torch"])
    random.setstate(states["random"])
    numpy = sys.modules.get("numpy")
    if "numpy" in states and numpy is not None:
        numpy.random.set_state(states["numpy"])
    for generator, state in states["generators"]:
        generator.set_state(state)


# -- the hooks --


class _Hooked:
    """A method of ``_BaseDataLoaderIter`` that calls ``before(self, *args)`` first, unseen,
    then the method itself (the callable ``before`` returns) as the program's own code.

    Looked up on an instance (or through ``super()``), it gives a bound method of a relive
    ``_native.unseen`` callable: C, so no frame of relive's shows in a traceback. Looked up
    on the class, it gives the method itself (``inspect.signature`` sees the original).
    """

    def __init__(self, original: Callable[..., Any], before: Callable[..., Any]) -> None:
        self.original = original
        self.call = _native.unseen(before, chain=True)

    def _bind(self, obj: Any, owner: Any = None) -> Any:
        return self.original if obj is None else types.MethodType(self.call, obj)

    # The descriptor protocol calls ``__get__`` from the class with (self, obj, owner): an
    # unseen callable there binds nothing itself, and no tracer sees the lookup.
    __get__ = _native.unseen(_bind)


_ORIGINALS: dict[str, Callable[..., Any]] = {}
_HOOKS = {"__init__": _note_init, "_reset": _note_reset, "_next_index": _note_next_index}
_watching = False


def _module() -> Any:
    """torch's dataloader module, once imported in full (None before)."""
    module = sys.modules.get(_MODULE)
    if module is None or not hasattr(module, "_MultiProcessingDataLoaderIter"):
        return None
    return module


def install() -> bool:
    """Hooks ``_BaseDataLoaderIter``'s methods, once torch's dataloader module is imported;
    whether they are hooked."""
    if _ORIGINALS:
        return True
    module = _module()
    if module is None:
        return False
    base = getattr(module, "_BaseDataLoaderIter", None)
    if base is None or not all(callable(vars(base).get(name)) for name in _HOOKS):
        return False  # another PyTorch than relive knows: its iterators are not stored
    for name, before in _HOOKS.items():
        original = vars(base)[name]
        _ORIGINALS[name] = original
        setattr(base, name, _Hooked(original, before))
    return True


def watch() -> None:
    """Hook the DataLoader iterators now if torch is imported, else when it is: at the first
    import after torch's dataloader module has loaded (an audit hook: unseen, and it cannot
    be removed, so it does nothing once done)."""
    global _watching
    if install() or _watching:
        return
    _watching = True

    def on_event(event: str, args: tuple[Any, ...]) -> None:
        if event == "import" and not _ORIGINALS:
            try:
                install()
            except Exception:  # never into the program's import
                pass

    sys.addaudithook(_native.unseen(on_event))


# -- storing one --


def reducers() -> dict[type, Reducer]:
    """The reducers of the DataLoader iterators, by exact type; empty before torch is imported."""
    module = _module()
    if module is None:
        return {}
    return {module._SingleProcessDataLoaderIter: reduce_iterator,
            module._MultiProcessingDataLoaderIter: reduce_iterator}


def reduce_iterator(it: Any, storages: dict[int, Any]) -> Any:
    started = _started.get(id(it))
    if started is None:
        raise NotResumable("this DataLoader iterator was made before relive saw torch imported: "
                          "its start was not noted (the next epoch's iterator will be)")
    loader = started.loader()
    if loader is None:
        raise NotResumable("the DataLoader this iterator was made from is gone")
    module = _module()
    if it._dataset_kind != module._DatasetKind.Map:
        raise NotResumable("a DataLoader over an IterableDataset cannot be resumed within an epoch: "
                          "the dataset's own iterator holds its position")
    multi = isinstance(it, module._MultiProcessingDataLoaderIter)
    if multi and not getattr(it, "_in_order", True):
        raise NotResumable("a DataLoader with in_order=False yields its batches in the order its "
                          "workers finish them: which ones it yielded is not known")
    if _running(module.__file__):
        raise NotResumable("the DataLoader is fetching a batch (a point inside DataLoader.__next__ "
                          "cannot resume)")
    # The batches its sampler has given: with workers, those yielded (the ones prefetched since
    # are asked again); without, every one asked for.
    count = it._num_yielded if multi else (started.drawn if started.sampler_iter is it._sampler_iter else 0)
    state = {"type": type(it), "loader": loader, "batches": count, "yielded": it._num_yielded,
             "init": started.init, "reset": started.reset,
             "first": started.first if started.sampler_iter is it._sampler_iter else None}
    return (IteratorAtSnapshot, (), state, None, None, set_iterator_state)


def _running(filename: str) -> bool:
    """Whether a frame of the DataLoader's own code is on a stack: it is in the middle of
    ``__next__`` (or of ``iter()``), between states a rebuilt one could not stand in for."""
    for frame in sys._current_frames().values():
        f: types.FrameType | None = frame
        while f is not None:
            if f.f_code.co_filename == filename:
                return True
            f = f.f_back
    return False


# -- loading one --


class IteratorAtSnapshot:
    """A DataLoader iterator as a loaded snapshot shows it: its loader and how far it had got.
    Resuming turns it into the iterator itself (its class becomes the iterator's)."""

    loader: Any
    batches_yielded: int

    def __repr__(self) -> str:
        return f"<DataLoader iterator at batch {self.batches_yielded} (not restarted: loaded to inspect)>"

    def __iter__(self) -> "IteratorAtSnapshot":
        return self

    def __next__(self) -> Any:
        raise TypeError("a DataLoader iterator loaded to inspect does not run: resume the snapshot to run it")


class _Rebuilding(threading.local):
    pending: list[tuple[Any, dict[str, Any]]] | None = None


_rebuilding = _Rebuilding()


def set_iterator_state(obj: IteratorAtSnapshot, state: dict[str, Any]) -> None:
    """Called by pickle with what ``reduce_iterator`` stored; the iterator is rebuilt once the
    record it is in has loaded (its loader may not have yet)."""
    obj.loader = state["loader"]
    obj.batches_yielded = state["yielded"]
    if _rebuilding.pending is not None:
        _rebuilding.pending.append((obj, state))


@contextmanager
def rebuilding(resuming: bool) -> Iterator[None]:
    """Around the loading of one record: when resuming, the DataLoader iterators it holds are
    rebuilt at its end (left as ``IteratorAtSnapshot`` when loading to inspect)."""
    previous = _rebuilding.pending
    pending: list[tuple[Any, dict[str, Any]]] | None = [] if resuming else None
    _rebuilding.pending = pending
    try:
        yield
    finally:
        _rebuilding.pending = previous
    for obj, state in pending or ():
        _rebuild(obj, state)


class _Plan:
    """How to replay one iterator's start: the states to set, and how many batches to skip."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.reset: dict[str, Any] | None = state["reset"]
        self.first: dict[str, Any] | None = state["first"]
        self.batches: int = state["batches"]
        self.done = False

    def at(self, name: str, it: Any) -> None:
        """Before the method ``name`` of the iterator being rebuilt."""
        if name == "_reset" and self.reset is not None:
            _set_states(self.reset)
        elif name == "_next_index":
            self.fast_forward(it)

    def fast_forward(self, it: Any) -> None:
        """At the epoch's first batch: the sampler draws from the states it drew from then,
        and moves on past the batches given before the snapshot (indices only: nothing is
        fetched). Workers take the following batches in the same turn as before."""
        if self.done:
            return
        self.done = True
        if self.first is None:  # no batch had been asked for: the program asks at its own time
            return
        _set_states(self.first)
        for _ in range(self.batches):
            try:
                next(it._sampler_iter)
            except StopIteration:
                break
        cycle = getattr(it, "_worker_queue_idx_cycle", None)
        if cycle is not None:
            for _ in range(self.batches % max(it._num_workers, 1)):
                next(cycle)


def _rebuild(obj: Any, state: dict[str, Any]) -> None:
    """``obj`` becomes the iterator again: made from its loader as at its start, moved on."""
    install()
    loader = state["loader"]
    now = _states(loader)  # the loaded program's own: set back once the start is replayed
    plan = _Plan(state)
    _replaying[id(obj)] = plan
    try:
        _set_states(state["init"])
        obj.__class__ = state["type"]
        del obj.loader, obj.batches_yielded
        obj.__init__(loader)  # with workers, asks for its first batches: fast_forward runs then
        plan.fast_forward(obj)
        obj._num_yielded = state["yielded"]
    finally:
        del _replaying[id(obj)]
        _set_states(now)
    started = _Started(loader, state["init"])
    started.reset, started.first = state["reset"], state["first"]
    if state["first"] is not None:
        started.sampler_iter, started.drawn = obj._sampler_iter, state["batches"]
    _note(obj, started)
