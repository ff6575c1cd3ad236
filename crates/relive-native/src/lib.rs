//! `relive._native`: the Rust engine's face in Python.
//!
//! Each concept lives in its own file and registers its items here.

use pyo3::prelude::*;

mod buffer;
mod entries;
mod entry_pickles;
mod errors;
mod frame;
mod graph;
mod pending;
mod py_store;
mod recursion;
mod trampoline;
mod unseen;
mod written;

// `gil_used = true`: `Store.put_record` relies on the GIL to keep the program's threads from
// mutating buffers while they are read. On free-threaded builds this keeps the GIL enabled.
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    py_store::register(m)?;
    m.add_class::<buffer::LoadedBuffer>()?;
    m.add_class::<py_store::StagedRecord>()?;
    m.add_function(wrap_pyfunction!(py_store::workers_cpu_seconds, m)?)?;
    m.add_function(wrap_pyfunction!(py_store::idle_cpu_seconds, m)?)?;
    m.add_function(wrap_pyfunction!(py_store::pages_watchable, m)?)?;
    m.add_function(wrap_pyfunction!(py_store::take_watch_back, m)?)?;
    m.add_function(wrap_pyfunction!(py_store::tell_written, m)?)?;
    m.add_function(wrap_pyfunction!(py_store::forget_written, m)?)?;
    m.add_class::<py_store::PyWriteProbe>()?;
    m.add_function(wrap_pyfunction!(py_store::start_write_probe, m)?)?;
    m.add_class::<trampoline::InitThen>()?;
    m.add_function(wrap_pyfunction!(pending::call_in_main_thread, m)?)?;
    m.add_function(wrap_pyfunction!(graph::shared_groups, m)?)?;
    m.add_function(wrap_pyfunction!(entries::entry_fingerprints, m)?)?;
    m.add_function(wrap_pyfunction!(entries::entry_locations, m)?)?;
    m.add_function(wrap_pyfunction!(entries::place_entries, m)?)?;
    m.add_function(wrap_pyfunction!(entries::items_at, m)?)?;
    m.add_function(wrap_pyfunction!(entry_pickles::pickle_entries, m)?)?;
    m.add_function(wrap_pyfunction!(entries::value_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(recursion::deep_call, m)?)?;
    m.add("NULL", frame::null(m.py())?)?;
    m.add_function(wrap_pyfunction!(frame::frame_stack, m)?)?;
    m.add_function(wrap_pyfunction!(frame::frame_locals_plus, m)?)?;
    m.add_function(wrap_pyfunction!(frame::frame_stacktop, m)?)?;
    m.add_function(wrap_pyfunction!(frame::frame_stack_addresses, m)?)?;
    m.add_function(wrap_pyfunction!(frame::frame_function, m)?)?;
    m.add_function(wrap_pyfunction!(frame::frame_called_from_c, m)?)?;
    m.add_function(wrap_pyfunction!(frame::frame_generator, m)?)?;
    m.add_function(wrap_pyfunction!(unseen::unseen, m)?)?;
    m.add_function(wrap_pyfunction!(unseen::recursion_used, m)?)?;
    m.add_function(wrap_pyfunction!(unseen::spare_recursion, m)?)?;
    m.add_function(wrap_pyfunction!(unseen::deliver_after, m)?)?;
    m.add_function(wrap_pyfunction!(unseen::run_first, m)?)?;
    m.add_function(wrap_pyfunction!(written::open, m)?)?;
    m.add_function(wrap_pyfunction!(written::written_files, m)?)?;
    m.add("WRITTEN_RECENT", written::RECENT)?;
    Ok(())
}
