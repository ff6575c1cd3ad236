//! relive's code in the program's own thread, unseen by it: no trace or profile events, no
//! share of its recursion budget. The work is done in `shim/unseen.c` (it needs the thread
//! state's fields, which the interpreter's headers give); this file is its Python face.

use std::ffi::c_int;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyCode, PyDict};

extern "C" {
    fn relive_recursion_used(py: *mut c_int, c: *mut c_int);
    fn relive_recursion_spare(py: c_int, c: c_int);
    fn relive_unseen_new(func: *mut pyo3::ffi::PyObject, chain: c_int) -> *mut pyo3::ffi::PyObject;
    fn relive_deliver_after(signum: c_int) -> c_int;
    fn relive_run_first(
        code: *mut pyo3::ffi::PyObject,
        globals: *mut pyo3::ffi::PyObject,
    ) -> *mut pyo3::ffi::PyObject;
}

/// A callable running `func` unseen by the program's tracers, with recursion room of its own.
///
/// With `chain`, a non-None result is then called with the same arguments, seen as the
/// program's own code (a signal relay returns the program's handler).
#[pyfunction]
#[pyo3(signature = (func, chain = false))]
pub fn unseen<'py>(func: &Bound<'py, PyAny>, chain: bool) -> PyResult<Bound<'py, PyAny>> {
    let py = func.py();
    // SAFETY: attached (called from Python); `func` is a live object; the shim returns a new
    // reference or NULL with an exception set, which `from_owned_ptr_or_err` turns into one.
    unsafe {
        Bound::from_owned_ptr_or_err(py, relive_unseen_new(func.as_ptr(), c_int::from(chain)))
    }
}

/// This thread's recursion budget spent so far, as `(frames, C recursions)`; 3.11 counts both
/// in the first.
#[pyfunction]
pub fn recursion_used(_py: Python<'_>) -> (c_int, c_int) {
    let (mut frames, mut c) = (0, 0);
    // SAFETY: attached (the `Python` token), so the thread state exists; both are valid outs.
    unsafe { relive_recursion_used(&mut frames, &mut c) };
    (frames, c)
}

/// Make `frames` frames (and `c` C recursions) of this thread's budget free: the frames relive
/// runs below the program. Negative numbers take the room back.
#[pyfunction]
pub fn spare_recursion(_py: Python<'_>, frames: c_int, c: c_int) {
    // SAFETY: attached (the `Python` token): the shim changes this thread's own counters.
    unsafe { relive_recursion_spare(frames, c) };
}

/// Deliver `signum` to this thread (the main thread) once relive's callbacks running in it
/// have returned, at once when none is: its Python-level handler then runs at the program's
/// next bytecode, from the program's frame.
#[pyfunction]
pub fn deliver_after(_py: Python<'_>, signum: c_int) -> PyResult<()> {
    // SAFETY: attached (the `Python` token): the shim's deferred set is only touched with the
    // GIL held; pthread_sigmask and pthread_kill act on this thread.
    match unsafe { relive_deliver_after(signum) } {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno).into()),
    }
}

/// `exec(code, globals)` with the module's frame first on the thread's stack, as `python`
/// runs a script: the program's stack walks end at its own first frame, not in relive's.
#[pyfunction]
pub fn run_first<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    if !code.is_instance_of::<PyCode>() {
        return Err(PyTypeError::new_err("run_first() needs a code object"));
    }
    // SAFETY: attached (called from Python); `code` is a code object and `globals` a dict,
    // both checked; the shim returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(code.py(), relive_run_first(code.as_ptr(), globals.as_ptr()))
    }
}
