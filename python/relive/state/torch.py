"""Everything relive knows about PyTorch: how tensors are stored and loaded, their random
generators, CUDA, and autograd graphs.

relive never imports torch itself: each function here asks ``sys.modules`` whether the
program has, and a program without torch pays nothing. Only loading (``rebuild_*``, called
by pickle with the names stored in records) and setting a resumed program's generators
import it, and both happen only for what a program that used torch stored.

Who calls what: the pickler (``state.pickler``) looks ``reducers()`` up by type, as pickle
looks up ``copyreg``'s dispatch table; the record writer (``state.records``) asks
``is_tensor_type``, ``storage_keys`` and ``ATOMIC_TYPE_NAMES`` to find what tensors share;
a capture asks ``rng_states`` (``capture.process``), ``cuda_initialized``
(``capture.background``: no fork then) and ``pending_graph_names`` (``capture.autograd``);
a resume asks ``set_rng_states`` (``restore.process``).
"""

from __future__ import annotations

import importlib
import itertools
import pickle
import sys
from collections.abc import Iterable
from typing import Any

from relive.state import Reducer, gpu_copies

# torch's types whose objects are immutable or singletons: two variables reaching the
# same one need not be stored together (matched by module and name).
ATOMIC_TYPE_NAMES = {
    ("torch", "dtype"), ("torch", "device"), ("torch", "layout"), ("torch", "memory_format"),
    ("torch", "Size"),
}


def _imported() -> Any:
    """torch, once the program has imported it (None before; relive never imports it)."""
    return sys.modules.get("torch")


def _torch_to_load() -> Any:
    """torch, for loading what a program that used it stored. (Typed ``Any``: relive does
    not depend on torch.)"""
    return importlib.import_module("torch")


# -- pickling --


def reducers() -> dict[type, Reducer]:
    """The reducers of torch's types, by exact type; empty until the program imports torch."""
    torch = _imported()
    tensor = getattr(torch, "Tensor", None)
    parameter = getattr(getattr(torch, "nn", None), "Parameter", None)
    if tensor is None or parameter is None:  # not imported, or halfway through its import
        return {}
    found: dict[type, Reducer] = {tensor: reduce_tensor, parameter: reduce_parameter}
    profiler = sys.modules.get("torch.autograd.profiler")
    record = getattr(profiler, "record_function", None)
    if isinstance(record, type):
        found[record] = reduce_record_function
    return found


def reduce_tensor(tensor: Any, storages: dict[int, Any]) -> Any:
    torch = _imported()
    if tensor.layout is not torch.strided or tensor.is_quantized or tensor.is_nested:
        return None
    if tensor.device.type == "meta":
        return None
    storage = tensor.untyped_storage()
    key = storage.data_ptr() if storage.nbytes() else id(storage)
    ref = storages.get(key)
    if ref is None:
        ref = storages[key] = StorageRef(storage)
    grad = tensor.grad if tensor.is_leaf else None
    # A tensor computed inside an autograd graph loads without the graph, and without
    # requires_grad: as a leaf that requires grad, a backward() through it would leave
    # the model's parameters without gradients, silently; this way it raises.
    return (rebuild_tensor, (ref, tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()),
                             tensor.storage_offset(), tensor.requires_grad and tensor.is_leaf, grad))


def reduce_parameter(parameter: Any, storages: dict[int, Any]) -> Any:
    if parameter.__dict__:  # attributes of its own: pickled as pickle would
        return None
    # Its gradient too: a snapshot between backward() and step() resumes to the same step.
    return (rebuild_parameter, (parameter.detach(), parameter.requires_grad, parameter.grad))


def reduce_record_function(block: Any, storages: dict[int, Any]) -> Any:
    """A profiler range (``with record_function(name):``, which ``optimizer.step()`` runs in):
    its name. Its handle lives in the profiler of the process that opened it, so the range
    loads closed, its ``__exit__`` a no-op: a resumed process's profiler never saw it open."""
    return (rebuild_record_function, (block.name, block.args))


class StorageRef:
    """One PyTorch storage, pickled once however many tensors view it."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple[Any, ...]:
        torch = _imported()
        storage = self.storage
        device = str(storage.device)
        if storage.device.type == "cuda":
            raw = gpu_copies.MIRRORS.host_bytes(storage)
        else:
            if storage.device.type != "cpu":
                storage = storage.cpu()
            raw = memoryview(torch.empty(0, dtype=torch.uint8).set_(storage).numpy())
        return (rebuild_storage, (pickle.PickleBuffer(raw), device))


# -- functions called by pickle while loading (their names are part of the format; stores
# written before this module existed name them in ``relive.state.pickler``) --


def rebuild_storage(data: Any, device: str) -> Any:
    """A PyTorch untyped storage over ``data`` (a writable buffer: no copy on the CPU)."""
    torch = _torch_to_load()
    storage = torch.frombuffer(data, dtype=torch.uint8).untyped_storage() if len(data) else torch.UntypedStorage(0)
    if device != "cpu":
        try:
            storage = storage.to(device=torch.device(device))
        except (RuntimeError, AssertionError):  # no such device here: keep it on the CPU
            from relive.report import warn_once

            warn_once("device", f"tensors stored from {device} are loaded on the CPU: there is no {device} here")
    return storage


def rebuild_tensor(storage: Any, dtype: Any, shape: tuple[int, ...], stride: tuple[int, ...],
                   offset: int, requires_grad: bool, grad: Any = None) -> Any:
    torch = _torch_to_load()
    tensor = torch.empty(0, dtype=dtype, device=storage.device)
    tensor.set_(storage, offset, shape, stride)
    tensor.requires_grad_(requires_grad)
    if grad is not None:
        tensor.grad = grad
    return tensor


def rebuild_record_function(name: str, args: str | None) -> Any:
    block = _torch_to_load().autograd.profiler.record_function(name, args)
    block.run_callbacks_on_exit = False  # nothing to close: see reduce_record_function
    return block


def rebuild_parameter(data: Any, requires_grad: bool, grad: Any) -> Any:
    torch = _torch_to_load()
    parameter = torch.nn.Parameter(data, requires_grad)
    if grad is not None:
        parameter.grad = grad
    return parameter


# -- what tensors share (for the record writer's graph walk) --


def is_tensor_type(t: type) -> bool:
    torch = _imported()
    return torch is not None and issubclass(t, torch.Tensor)


def storage_keys(tensor: Any) -> tuple[int, ...]:
    """The storage ``tensor`` views, as the graph walk's key (none for an empty one)."""
    storage = tensor.untyped_storage()
    return (storage.data_ptr(),) if storage.nbytes() else ()


# -- the process: random generators, CUDA --


def rng_states() -> dict[str, Any]:
    """torch's global generators' states (CUDA's only once the program initialized it)."""
    torch = _imported()
    if torch is None:
        return {}
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        states["torch.cuda"] = cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Sets what ``rng_states`` read (CUDA's only where CUDA is available)."""
    if "torch" not in states:
        return
    torch = _torch_to_load()
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


def modes() -> dict[str, Any]:
    """torch's process-wide settings that change what the program computes, as the program
    set them (in this thread): a resumed program must run with them too. Inside `with
    torch.no_grad():` (the VAE example's sampling), resumed with grad mode on, tensors came
    back requiring grad and `.numpy()` raised."""
    torch = _imported()
    if torch is None:
        return {}
    return {
        "grad_enabled": torch.is_grad_enabled(),
        "default_dtype": str(torch.get_default_dtype()).rpartition(".")[2],
        "num_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
    }


def set_modes(modes: dict[str, Any]) -> None:
    """Sets what ``modes`` read."""
    if not modes:
        return
    torch = _torch_to_load()
    torch.set_grad_enabled(modes["grad_enabled"])
    torch.set_default_dtype(getattr(torch, modes["default_dtype"]))
    if torch.get_num_threads() != modes["num_threads"]:
        torch.set_num_threads(modes["num_threads"])
    torch.use_deterministic_algorithms(modes["deterministic"], warn_only=modes["deterministic_warn_only"])


def cuda_initialized() -> bool:
    """Whether the program has initialized CUDA (a forked child cannot use it)."""
    torch = _imported()
    return torch is not None and bool(torch.cuda.is_initialized())


# -- autograd graphs --
#
# A graph is "pending" until a backward() frees it: PyTorch then releases the tensors its
# nodes saved (reading one raises). Walking from a tensor's ``grad_fn`` to the first node
# that saved a tensor tells the two apart in a few nodes. A graph whose nodes saved no tensor
# (``w + 1``) cannot be told: it is taken as done (it loads without requires_grad, so a later
# backward() through it raises rather than going wrong).

_NODES_LIMIT = 1000  # nodes visited per graph before giving up (as "done")
_ITEMS_LIMIT = 100  # items looked at per container


def in_use() -> bool:
    """Whether the program has imported torch (nothing here can concern it before)."""
    return "torch" in sys.modules


def pending_graph_names(scopes: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """``"name (in scope)"`` for each variable holding a tensor of a pending graph (a tensor,
    or one level into a list, tuple or dict: ``outputs.loss`` of a dict-like model output)."""
    torch = _imported()
    if getattr(torch, "Tensor", None) is None:  # not imported, or halfway through its import
        return []
    found: list[str] = []
    for scope, values in scopes:
        for name, value in values.items():
            try:
                pending = any(_pending(torch, t) for t in _tensors(torch, value))
            except Exception:  # a tensor subclass that will not say: as for a graph that cannot be told
                pending = False
            if pending:
                found.append(f"`{name}` (in {scope})")
    return found


def _tensors(torch: Any, value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        items: Iterable[Any] = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return []
    return [v for v in itertools.islice(items, _ITEMS_LIMIT) if isinstance(v, torch.Tensor)]


def _pending(torch: Any, tensor: Any) -> bool:
    if tensor.grad_fn is None:
        return False
    seen: set[int] = set()
    todo = [tensor.grad_fn]
    while todo and len(seen) < _NODES_LIMIT:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            try:
                saved = getattr(node, name)
            except RuntimeError:  # freed by a backward() already
                return False
            if isinstance(saved, torch.Tensor):
                return True
        todo.extend(n for n, _ in node.next_functions)
    return False
