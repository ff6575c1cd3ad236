//! Frame internals: the value stack, the raw locals and C-boundary detection.
//!
//! Python code can see a frame's locals and position but not its value stack (a `for` loop's
//! iterator, a `with` block's `__exit__`, a half-built call) nor whether C code called it. The
//! reads go through `shim/frame.c`, compiled against the running interpreter's own
//! `internal/pycore_frame.h` (see `build.rs`), so the layouts always match the interpreter.
//!
//! A slot that holds no object (C `NULL`: an unbound local, the `NULL` pushed before a call)
//! reads as `relive._native.NULL`, an object distinct from every value of the program.

use std::ffi::c_int;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

extern "C" {
    fn relive_is_frame(obj: *mut pyo3::ffi::PyObject) -> c_int;
    fn relive_frame_is_live(frame: *mut pyo3::ffi::PyObject) -> c_int;
    fn relive_frame_nlocalsplus(frame: *mut pyo3::ffi::PyObject) -> c_int;
    fn relive_frame_stacksize(frame: *mut pyo3::ffi::PyObject) -> c_int;
    fn relive_frame_slot(frame: *mut pyo3::ffi::PyObject, index: c_int)
        -> *mut pyo3::ffi::PyObject;
    fn relive_frame_function(frame: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject;
    fn relive_frame_stacktop(frame: *mut pyo3::ffi::PyObject) -> c_int;
    fn relive_frame_called_from_c(frame: *mut pyo3::ffi::PyObject) -> c_int;
    fn relive_frame_generator(frame: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject;
}

/// The empty slot: what a frame slot holding C `NULL` reads as.
#[pyclass(frozen, name = "NullSlot", module = "relive._native")]
pub struct NullSlot;

#[pymethods]
impl NullSlot {
    fn __repr__(&self) -> &'static str {
        "<NULL>"
    }

    /// Pickled by name, so it loads back as the one `relive._native.NULL`.
    fn __reduce__(&self) -> &'static str {
        "NULL"
    }
}

static NULL: PyOnceLock<Py<NullSlot>> = PyOnceLock::new();

/// The `relive._native.NULL` singleton.
pub fn null(py: Python<'_>) -> PyResult<&Py<NullSlot>> {
    NULL.get_or_try_init(py, || Py::new(py, NullSlot))
}

/// A frame object of a frame that still runs (or waits in a call, or is a suspended
/// generator's): its interpreter frame, locals and stack are in place.
struct LiveFrame<'a, 'py>(&'a Bound<'py, PyAny>);

impl<'a, 'py> LiveFrame<'a, 'py> {
    fn new(frame: &'a Bound<'py, PyAny>) -> PyResult<Self> {
        // SAFETY: `relive_is_frame` only reads the object's type; `frame` is a live reference
        // and the GIL is held (we hold a `Bound`).
        if unsafe { relive_is_frame(frame.as_ptr()) } == 0 {
            return Err(PyTypeError::new_err("expected a frame object"));
        }
        // SAFETY: `frame` is a frame object (checked above); reading its `f_frame->owner` is
        // valid for any frame object, completed or not.
        if unsafe { relive_frame_is_live(frame.as_ptr()) } == 0 {
            return Err(PyValueError::new_err(
                "the frame has completed: it has no value stack any more",
            ));
        }
        Ok(LiveFrame(frame))
    }

    fn nlocalsplus(&self) -> c_int {
        // SAFETY: a live frame object (checked in `new`) points to an interpreter frame whose
        // code object it holds a strong reference to.
        unsafe { relive_frame_nlocalsplus(self.0.as_ptr()) }
    }

    fn stacksize(&self) -> c_int {
        // SAFETY: as in `nlocalsplus`.
        unsafe { relive_frame_stacksize(self.0.as_ptr()) }
    }

    /// The objects in slots `[start, end)` of localsplus; `end` must not pass
    /// `nlocalsplus + stacksize`, the size CPython allocated for the frame.
    fn slots(&self, start: c_int, end: c_int) -> PyResult<Bound<'py, PyTuple>> {
        let py = self.0.py();
        debug_assert!(0 <= start && start <= end && end <= self.nlocalsplus() + self.stacksize());
        let null = null(py)?.clone_ref(py).into_any();
        let mut items: Vec<Py<PyAny>> = Vec::with_capacity((end - start) as usize);
        for index in start..end {
            // SAFETY: the frame is live and `index` lies inside its localsplus array (callers
            // bound it by the code's own sizes). The pointer is either NULL or a strong
            // reference held by the frame, and the GIL is held, so nothing can free it
            // before `from_borrowed_ptr` takes our own reference.
            let item = unsafe {
                let ptr = relive_frame_slot(self.0.as_ptr(), index);
                if ptr.is_null() {
                    null.clone_ref(py)
                } else {
                    Bound::from_borrowed_ptr(py, ptr).unbind()
                }
            };
            items.push(item);
        }
        PyTuple::new(py, items)
    }
}

/// The frame's value-stack slots `[0, depth)`, bottom first; empty slots read as `NULL`.
///
/// `depth` is the caller's word, computed statically (`relive.interp.stack`): CPython's own
/// record of the depth is stale in frames waiting in a call. Slots above a call's operands in
/// such a frame may hold freed objects: never ask for them. The depth is bounded by the
/// code's stack size, so the read never leaves the frame.
#[pyfunction]
pub fn frame_stack<'py>(frame: &Bound<'py, PyAny>, depth: c_int) -> PyResult<Bound<'py, PyTuple>> {
    let live = LiveFrame::new(frame)?;
    if depth < 0 || depth > live.stacksize() {
        return Err(PyValueError::new_err(format!(
            "stack depth {depth} is outside the frame's stack (size {})",
            live.stacksize()
        )));
    }
    let base = live.nlocalsplus();
    live.slots(base, base + depth)
}

/// The addresses of the objects in the frame's value-stack slots `[start, end)` (0 for an
/// empty slot), never dereferenced: for identity checks of slots that may hold freed objects
/// (a call's operands once the call has returned, while CPython releases them one by one and
/// a finalizer or weakref callback runs Python code in between).
#[pyfunction]
pub fn frame_stack_addresses(
    frame: &Bound<'_, PyAny>,
    start: c_int,
    end: c_int,
) -> PyResult<Vec<usize>> {
    let live = LiveFrame::new(frame)?;
    if start < 0 || start > end || end > live.stacksize() {
        return Err(PyValueError::new_err(format!(
            "stack slots [{start}, {end}) are outside the frame's stack (size {})",
            live.stacksize()
        )));
    }
    let base = live.nlocalsplus();
    // SAFETY: a live frame; `base + index` lies inside its localsplus array (bounded above by
    // the code's stack size). Only the pointer values are read, never what they point to.
    Ok((start..end)
        .map(|index| unsafe { relive_frame_slot(live.0.as_ptr(), base + index) } as usize)
        .collect())
}

/// The function the frame runs (None for a frame that runs no function object, such as
/// 3.12's C-stack shims, which Python code never sees).
#[pyfunction]
pub fn frame_function<'py>(frame: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let live = LiveFrame::new(frame)?;
    let py = frame.py();
    // SAFETY: a live frame holds a strong reference to its function for its whole life, and
    // the GIL is held: `from_borrowed_ptr_or_opt` takes our own reference before it could go.
    Ok(unsafe { Bound::from_borrowed_ptr_or_opt(py, relive_frame_function(live.0.as_ptr())) })
}

/// The generator (or coroutine) that runs the frame, or None for a frame of a plain call.
/// A running generator's frame is not reachable from the generator's callers otherwise.
#[pyfunction]
pub fn frame_generator<'py>(frame: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let live = LiveFrame::new(frame)?;
    let py = frame.py();
    // SAFETY: a live frame owned by a generator is embedded in that generator, which cannot be
    // freed while the frame is live and the GIL is held; we take our own reference at once.
    Ok(unsafe { Bound::from_borrowed_ptr_or_opt(py, relive_frame_generator(live.0.as_ptr())) })
}

/// The frame's locals, cells and free variables, in CPython's own order (`co_varnames`, then
/// the cell variables that are not arguments, then `co_freevars`); cells as cell objects.
#[pyfunction]
pub fn frame_locals_plus<'py>(frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let live = LiveFrame::new(frame)?;
    live.slots(0, live.nlocalsplus())
}

/// The stack depth CPython recorded for the frame (`stacktop` less the locals). Valid only at
/// a line event of that frame and in a suspended generator; for tests of the static depth.
#[pyfunction]
pub fn frame_stacktop(frame: &Bound<'_, PyAny>) -> PyResult<c_int> {
    let live = LiveFrame::new(frame)?;
    // SAFETY: a live frame object (checked in `LiveFrame::new`); the read is of a plain int.
    Ok(unsafe { relive_frame_stacktop(live.0.as_ptr()) })
}

/// Whether C code called this frame: the interpreter was entered afresh for it (3.11:
/// `is_entry`), or a shim frame sits before it (3.12+: one owned by the C stack, or 3.13's
/// `__init__` cleanup shim).
#[pyfunction]
pub fn frame_called_from_c(frame: &Bound<'_, PyAny>) -> PyResult<bool> {
    let live = LiveFrame::new(frame)?;
    // SAFETY: a live frame object; its `previous` link, when not NULL, points to a frame
    // further down the thread's frame stack, which outlives this one.
    Ok(unsafe { relive_frame_called_from_c(live.0.as_ptr()) } != 0)
}
