//! A large dict's private entries, pickled natively (see `relive.state.dict_entries`).
//!
//! An entry `entries.rs` found private holds only None, bools, ints of 64 bits, floats, str,
//! bytes, tuples, lists, dicts and instances of plain classes, and no mutable object in it is
//! referred to from anywhere else. For those the C pickler's work is simple, but it takes a
//! reference to every object it meets: in a forked snapshot's child each reference count
//! written copies the page the object is on (11 µs an entry of a few small objects, most of
//! it page copies). Here each entry's pickle is written from the objects read in place, as
//! the fingerprints are: nothing of the program's is written.
//!
//! The pickle is what `pickle.Unpickler` loads back to an equal `(key, value)` tuple, as
//! the C pickler's would: the same opcodes (protocol 2+), an instance by `NEWOBJ` and
//! `BUILD` with its attributes (pickle's default reduction of a plain class), its class by a
//! persistent id (its index in the record's table of classes, as `EntryPickler` writes it).
//! Without a memo: nothing mutable is met twice in a private entry, and an immutable value
//! met twice (a string) loads as two equal ones.

use std::collections::HashMap;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::entries::{each_item_at, Attributes, NO_ATTRIBUTES};

/// Deeper than this, the entry is left to the C pickler (the fingerprints stop at 64).
const MAX_DEPTH: u32 = 64;
/// Items per APPENDS / SETITEMS, as pickle batches them.
const BATCH: usize = 1000;

struct Writer {
    out: Vec<u8>,
    /// Each plain class's index in the record's table of classes, by type address.
    classes: HashMap<usize, u32>,
}

impl Writer {
    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.out.push(b'K'); // BININT1
            self.out.push(v as u8);
        } else if (0..65536).contains(&v) {
            self.out.push(b'M'); // BININT2
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.out.push(b'J'); // BININT
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1: two's complement, little-endian, as few bytes as keep the sign.
            let bytes = v.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let (last, below) = (bytes[n - 1], bytes[n - 2]);
                if (last == 0 && below & 0x80 == 0) || (last == 0xff && below & 0x80 != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.out.push(0x8a);
            self.out.push(n as u8);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    fn sized(&mut self, short: u8, long: u8, huge: u8, data: &[u8]) {
        let len = data.len();
        if len < 256 {
            self.out.push(short);
            self.out.push(len as u8);
        } else if let Ok(len) = u32::try_from(len) {
            self.out.push(long);
            self.out.extend_from_slice(&len.to_le_bytes());
        } else {
            self.out.push(huge);
            self.out.extend_from_slice(&(len as u64).to_le_bytes());
        }
        self.out.extend_from_slice(data);
    }

    /// Appends `obj`'s pickle; false where it holds what is left to the C pickler.
    ///
    /// # Safety
    /// `obj` is a live object, the GIL is held, and no Python code runs meanwhile.
    unsafe fn value(&mut self, obj: *mut ffi::PyObject, depth: u32) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        let ty = ffi::Py_TYPE(obj);
        if obj == ffi::Py_None() {
            self.out.push(b'N');
        } else if obj == ffi::Py_True() {
            self.out.push(0x88);
        } else if obj == ffi::Py_False() {
            self.out.push(0x89);
        } else if ty == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            let mut overflow = 0;
            let v = ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow);
            if overflow != 0 {
                return false;
            }
            self.int(v);
        } else if ty == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            self.out.push(b'G'); // BINFLOAT: big-endian
            self.out
                .extend_from_slice(&ffi::PyFloat_AsDouble(obj).to_be_bytes());
        } else if ty == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            let mut len: ffi::Py_ssize_t = 0;
            let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut len);
            if data.is_null() {
                ffi::PyErr_Clear(); // lone surrogates: left to pickle
                return false;
            }
            let text = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
            self.sized(0x8c, b'X', 0x8d, text); // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
        } else if ty == std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
            let data = std::slice::from_raw_parts(
                ffi::PyBytes_AsString(obj).cast::<u8>(),
                ffi::PyBytes_Size(obj) as usize,
            );
            self.sized(b'C', b'B', 0x8e, data); // SHORT_BINBYTES, BINBYTES, BINBYTES8
        } else if ty == std::ptr::addr_of_mut!(ffi::PyTuple_Type) {
            let len = ffi::PyTuple_Size(obj);
            if len > 3 {
                self.out.push(b'('); // MARK
            }
            for i in 0..len {
                if !self.value(ffi::PyTuple_GetItem(obj, i), depth + 1) {
                    return false;
                }
            }
            // EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3, TUPLE
            self.out.push(
                [b')', 0x85, 0x86, 0x87]
                    .get(len as usize)
                    .copied()
                    .unwrap_or(b't'),
            );
        } else if ty == std::ptr::addr_of_mut!(ffi::PyList_Type) {
            self.out.push(b']'); // EMPTY_LIST
            let len = ffi::PyList_Size(obj) as usize;
            for start in (0..len).step_by(BATCH) {
                self.out.push(b'(');
                for i in start..len.min(start + BATCH) {
                    if !self.value(ffi::PyList_GetItem(obj, i as ffi::Py_ssize_t), depth + 1) {
                        return false;
                    }
                }
                self.out.push(b'e'); // APPENDS
            }
        } else if ty == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            return self.dict(obj, depth);
        } else {
            return self.instance(obj, ty, depth);
        }
        true
    }

    /// EMPTY_DICT, then the items in batches of MARK ... SETITEMS.
    ///
    /// # Safety
    /// As for `value`; `dict` is an exact dict.
    unsafe fn dict(&mut self, dict: *mut ffi::PyObject, depth: u32) -> bool {
        self.out.push(b'}');
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut in_batch = 0;
        while ffi::PyDict_Next(dict, &mut pos, &mut key, &mut value) != 0 {
            if in_batch == 0 {
                self.out.push(b'(');
            }
            if !self.value(key, depth + 1) || !self.value(value, depth + 1) {
                return false;
            }
            in_batch += 1;
            if in_batch == BATCH {
                self.out.push(b'u'); // SETITEMS
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            self.out.push(b'u');
        }
        true
    }

    /// An instance of a plain class as pickle's default reduction stores it: its class (a
    /// persistent id), `()`, NEWOBJ, then its attributes as a dict and BUILD (none where it
    /// has no attribute, as `object.__getstate__` gives None then).
    ///
    /// # Safety
    /// As for `value`.
    unsafe fn instance(
        &mut self,
        obj: *mut ffi::PyObject,
        ty: *mut ffi::PyTypeObject,
        depth: u32,
    ) -> bool {
        let Some(&class) = self.classes.get(&(ty as usize)) else {
            return false; // not one of the record's plain classes
        };
        let (mut keys, mut values) = (NO_ATTRIBUTES, NO_ATTRIBUTES);
        let attributes = Attributes::read(obj, &mut keys, &mut values);
        if matches!(attributes, Attributes::Unknown) {
            return false;
        }
        self.int(i64::from(class));
        self.out.extend_from_slice(b"Q)\x81"); // BINPERSID, EMPTY_TUPLE, NEWOBJ
        match attributes {
            Attributes::Inline(n) if n > 0 => {
                self.out.extend_from_slice(b"}(");
                for (&key, &value) in keys[..n].iter().zip(&values[..n]) {
                    if !self.value(key, depth + 1) || !self.value(value, depth + 1) {
                        return false;
                    }
                }
                self.out.extend_from_slice(b"ub"); // SETITEMS, BUILD
            }
            Attributes::Dict(dict) if !dict.is_null() => {
                if ffi::PyDict_CheckExact(dict) == 0 {
                    return false;
                }
                if ffi::PyDict_Size(dict) > 0 {
                    if !self.dict(dict, depth) {
                        return false;
                    }
                    self.out.push(b'b');
                }
            }
            _ => {} // no attribute: no BUILD, as `object.__getstate__` gives None
        }
        true
    }
}

/// The pickles of the `(key, value)` items of `d` at `positions` (ascending), one after the
/// other, and where each ends; None where one holds what is left to the C pickler (a value
/// that changed since it was fingerprinted, a class not in `classes`). `classes` pairs each
/// plain class of the record with its index in the record's table of classes.
#[pyfunction]
pub fn pickle_entries<'py>(
    py: Python<'py>,
    d: &Bound<'py, PyDict>,
    positions: Vec<usize>,
    classes: Vec<(Bound<'py, PyAny>, u32)>,
) -> PyResult<Option<(Bound<'py, PyBytes>, Vec<usize>)>> {
    let mut writer = Writer {
        out: Vec::with_capacity(positions.len() * 64),
        classes: classes
            .iter()
            .map(|(class, index)| (class.as_ptr() as usize, *index))
            .collect(),
    };
    let mut ends = Vec::with_capacity(positions.len());
    let mut whole = true;
    // SAFETY: attached to the interpreter (`py`); no Python code runs while the borrowed
    // references are read (the C API calls made here call none), and nothing is written.
    unsafe {
        each_item_at(d.as_ptr(), &positions, |key, value| {
            whole = writer.value(key, 0) && writer.value(value, 0);
            writer.out.extend_from_slice(b"\x86."); // TUPLE2, STOP
            ends.push(writer.out.len());
            whole
        })?;
    }
    if !whole || ends.len() != positions.len() {
        return Ok(None);
    }
    Ok(Some((PyBytes::new(py, &writer.out), ends)))
}
