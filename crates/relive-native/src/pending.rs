//! Running a Python callable in the main thread, at its next chance.
//!
//! A timer thread cannot arm line events for the main thread on Python 3.11 (`sys.settrace`
//! applies to the calling thread only). CPython's pending calls are the mechanism its own
//! signal handling uses: the main thread runs them between bytecodes, as soon as it is back
//! in the interpreter loop.

use std::ffi::{c_int, c_void};

use pyo3::prelude::*;

/// Runs in the main thread, between two bytecodes, with the interpreter attached.
extern "C" fn run_pending(arg: *mut c_void) -> c_int {
    // SAFETY: CPython calls pending calls with the thread attached to the interpreter (the
    // GIL held), and `arg` is the strong reference `call_in_main_thread` handed over with
    // `into_ptr`; `from_owned_ptr` takes that reference back exactly once.
    let outcome = std::panic::catch_unwind(|| unsafe {
        let py = Python::assume_attached();
        let callable = Bound::from_owned_ptr(py, arg.cast());
        if let Err(err) = callable.call0() {
            // Never into the program: report it as Python reports errors in finalizers.
            err.write_unraisable(py, Some(&callable));
        }
    });
    // Returning -1 would raise an exception in the program's frame: always report success.
    let _ = outcome;
    0
}

/// Call `callable()` in the main thread as soon as it runs Python code again.
///
/// Returns False when CPython's queue of pending calls is full (the call is then dropped).
#[pyfunction]
pub fn call_in_main_thread(callable: Bound<'_, PyAny>) -> bool {
    let ptr = callable.into_ptr();
    // SAFETY: `Py_AddPendingCall` may be called from any thread, attached or not; `ptr` is a
    // strong reference whose ownership passes to `run_pending` when the call is queued.
    let queued = unsafe { pyo3::ffi::Py_AddPendingCall(Some(run_pending), ptr.cast()) } == 0;
    if !queued {
        // SAFETY: not queued, so the reference is still ours to release; we are attached
        // (this function was called from Python).
        unsafe { pyo3::ffi::Py_DECREF(ptr) };
    }
    queued
}
