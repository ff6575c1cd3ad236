//! Room for deep recursion: `deep_call(func, extra)` calls `func()` with the calling
//! thread's recursion counters raised by `extra` levels (the frame and, on 3.12+, C counters,
//! through `shim/unseen.c`'s `relive_recursion_spare`, which also gives relive's callbacks room).
//!
//! CPython's recursion limits stand in for the stack's size: raising them is sound only in a
//! thread whose stack has room for `extra` more levels of the deepest recursion `func` does.
//! The Python side (`relive.state.deep`) runs `func` in a thread it starts with such a stack.

use std::ffi::c_int;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

extern "C" {
    fn relive_recursion_spare(py: c_int, c: c_int);
}

/// Moves the counters back however `func` ends (a return, an exception, a panic).
struct Room(c_int);

impl Drop for Room {
    fn drop(&mut self) {
        // SAFETY: the GIL is held (the guard lives inside a `#[pyfunction]` that holds it) and
        // this is the thread that added the room; subtracting what was added restores it.
        unsafe { relive_recursion_spare(-self.0, -self.0) }
    }
}

/// Calls `func()` with `extra` more levels of recursion allowed in this thread.
#[pyfunction]
pub fn deep_call<'py>(func: &Bound<'py, PyAny>, extra: c_int) -> PyResult<Bound<'py, PyAny>> {
    if !(0..=100_000_000).contains(&extra) {
        return Err(PyValueError::new_err(format!(
            "extra recursion {extra} is outside 0..=100000000"
        )));
    }
    // SAFETY: the GIL is held (we hold a `Bound`); the counters are this thread's own.
    unsafe { relive_recursion_spare(extra, extra) };
    let _room = Room(extra);
    func.call0()
}
