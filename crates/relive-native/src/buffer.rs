//! `relive._native.Buffer`: memory for a large buffer being loaded, filled without the GIL.
//!
//! Loading is bound by how fast fresh memory can be faulted in, not by reading or hashing:
//! on the development VM, touching new 4 KiB pages runs at about 0.3 GB/s, and a `bytearray`
//! is touched twice (zero-filled, then filled). Large buffers therefore get their own anonymous
//! mapping, asked for huge pages (512 times fewer faults), filled once by the store's reader
//! threads, and handed to Python through the buffer protocol, writable, as a `bytearray` is.

use std::cell::UnsafeCell;
use std::os::raw::c_int;

use memmap2::MmapMut;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Below this size a `bytearray` is as fast and cheaper than a mapping of its own.
pub(crate) const MAPPED_FROM: usize = 2 << 20;

/// A loaded buffer: writable bytes that NumPy arrays and PyTorch tensors are built on in place.
#[pyclass(frozen, name = "Buffer", module = "relive._native")]
pub struct LoadedBuffer {
    map: UnsafeCell<MmapMut>,
    len: usize,
}

// SAFETY: the mapping is written by Rust only before the object is handed to Python; afterwards
// its bytes are changed only by Python code through the buffer protocol, which gives the same
// (absent) guarantees as a `bytearray`'s. The mapping itself is never moved or resized.
unsafe impl Sync for LoadedBuffer {}

impl LoadedBuffer {
    /// A new mapping of `len` bytes (untouched: its pages are faulted in by whoever fills it).
    pub(crate) fn new(len: usize) -> std::io::Result<LoadedBuffer> {
        let map = MmapMut::map_anon(len)?;
        #[cfg(target_os = "linux")]
        {
            // Best effort: without transparent huge pages the mapping works as well, slower.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(LoadedBuffer {
            map: UnsafeCell::new(map),
            len,
        })
    }

    /// The bytes to fill, before the object is shared with Python.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.get_mut()
    }
}

#[pymethods]
impl LoadedBuffer {
    fn __len__(&self) -> usize {
        self.len
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no view to fill"));
        }
        let this = slf.get();
        // SAFETY: no Rust reference to the mapping is alive once it is shared with Python; the
        // pointer stays valid while `slf` lives, and PyBuffer_FillInfo keeps a reference to
        // `slf` in the view until the view is released.
        let ptr = unsafe { (&mut *this.map.get()).as_mut_ptr() };
        let len =
            isize::try_from(this.len).map_err(|_| PyBufferError::new_err("buffer too large"))?;
        // SAFETY: `view` is a non-null Py_buffer handed to us by the interpreter.
        let rc = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr.cast(), len, 0, flags) };
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
