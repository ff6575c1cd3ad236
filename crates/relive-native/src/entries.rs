//! A large dict's entries, fingerprinted without pickling them (see `relive.state.dict_entries`).
//!
//! A program holding a million small objects in a dict changes a few of them between two
//! snapshots; pickling the dict whole at each snapshot costs seconds. Here each entry gets a
//! 128-bit fingerprint of everything pickling it would store (XXH3 over a canonical encoding
//! of the values it reaches), at native speed, so that only the entries whose fingerprint
//! changed are pickled again.
//!
//! An entry is *private* when it can be pickled on its own and load back the same: it
//! reaches only values whose encoding here is complete (None, bools, ints that fit in 64
//! bits, floats, str, bytes, tuples, lists, dicts, and instances of the classes
//! `class_token` accepts: a plain `__dict__`, pickled by the default reduction), and no
//! mutable object it reaches is referenced from anywhere else (its reference count is 1: the
//! reference that led here). Anything else (a NumPy array, an object two entries share, the
//! dict itself) makes the entry not private: it is pickled with the rest of its record, where
//! pickle's memo keeps what it shares.
//!
//! The walk reads objects through the C API with the GIL held and changes nothing, not even a
//! reference count: in a forked snapshot's child, a write copies the page written to.

use std::collections::HashMap;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};
use xxhash_rust::xxh3::xxh3_128;

/// How many entries ahead of the one fingerprinted the walk prefetches.
const PREFETCH_AHEAD: usize = 4;
/// Deeper than this, an entry is not private (pickle would recurse as deep).
const MAX_DEPTH: u32 = 64;
/// More inline attributes than this, an instance is not private (CPython keeps at most 30
/// inline before 3.13).
const MAX_INLINE: usize = 64;

extern "C" {
    fn relive_instance_attributes(
        obj: *mut ffi::PyObject,
        dict: *mut *mut ffi::PyObject,
        keys: *mut *mut ffi::PyObject,
        values: *mut *mut ffi::PyObject,
        max: ffi::Py_ssize_t,
    ) -> ffi::Py_ssize_t;
    /// 1 where the i-th item of the exact dict is its entry i, PyDict_Next's position i.
    fn relive_dict_dense(d: *mut ffi::PyObject) -> std::ffi::c_int;
}

/// Each location is `segment:u32 len:u32 offset:u64`, little-endian (`dict_entries.LOCATION`).
const LOCATION: usize = 16;
/// The segment of an entry to be pickled now, and of one stored with the rest of the record.
const TO_PICKLE: u32 = u32::MAX;
const NOT_PRIVATE: u32 = u32::MAX - 1;

/// The keys and values of an instance's inline attributes, filled by `Attributes::read`: on
/// the stack of each instance's walk (an instance inside another has its own).
pub(crate) type Inline = [*mut ffi::PyObject; MAX_INLINE];
pub(crate) const NO_ATTRIBUTES: Inline = [std::ptr::null_mut(); MAX_INLINE];

/// Where an instance's attributes are (`shim/instance.c`), read without writing anything.
pub(crate) enum Attributes {
    /// Inline: the first `n` of the keys and values given to `read` (borrowed), in order.
    Inline(usize),
    /// In its `__dict__` (borrowed), or nowhere (null: it has none).
    Dict(*mut ffi::PyObject),
    /// More than `MAX_INLINE` inline, or a layout the shim does not know.
    Unknown,
}

impl Attributes {
    /// Reads `obj`'s attributes where CPython keeps them; inline ones into `keys`, `values`.
    ///
    /// # Safety
    /// `obj` is a live object and the GIL is held; the references are borrowed from it.
    pub(crate) unsafe fn read(
        obj: *mut ffi::PyObject,
        keys: &mut Inline,
        values: &mut Inline,
    ) -> Attributes {
        let mut dict = std::ptr::null_mut();
        let n = relive_instance_attributes(
            obj,
            &mut dict,
            keys.as_mut_ptr(),
            values.as_mut_ptr(),
            MAX_INLINE as ffi::Py_ssize_t,
        );
        match n {
            -1 => Attributes::Dict(dict),
            n if n >= 0 => Attributes::Inline(n as usize),
            _ => Attributes::Unknown,
        }
    }
}

struct Fingerprinter<'py> {
    class_token: Bound<'py, PyAny>,
    /// The value fingerprinted whole (`value_fingerprint`): referenced from elsewhere, as
    /// a variable's value is, and still its own.
    top: *mut ffi::PyObject,
    /// Per type: the fingerprint of its token, or None where its instances are not plain.
    classes: HashMap<usize, Option<u128>>,
    last_class: (usize, Option<u128>),
    /// A class met that `classes` does not know yet (see `class`).
    unknown: Option<Py<PyAny>>,
    scratch: Vec<u8>,
}

impl<'py> Fingerprinter<'py> {
    /// The token's fingerprint of class `ty`, where it is known; where it is not, `ty` is
    /// noted in `unknown` (a strong reference) and the walk of this entry stops as if it were
    /// not private: `ask` then runs the Python callback, with no borrowed reference held (the
    /// callback may let the program's other threads run), and the entry is walked again.
    fn class(&mut self, ty: *mut ffi::PyTypeObject) -> Option<Option<u128>> {
        // A large dict's entries are mostly of one class: asked for again and again.
        if self.last_class.0 == ty as usize {
            return Some(self.last_class.1);
        }
        if let Some(&known) = self.classes.get(&(ty as usize)) {
            self.last_class = (ty as usize, known);
            return Some(known);
        }
        // SAFETY: `ty` is the type of a live object, so a live type object; the strong
        // reference taken here keeps it alive until `ask` has asked about it.
        self.unknown =
            Some(unsafe { Bound::from_borrowed_ptr(self.class_token.py(), ty.cast()) }.unbind());
        None
    }

    /// Asks the callback about the class `class` met (see `class`); false when there was none.
    fn ask(&mut self) -> PyResult<bool> {
        let Some(ty) = self.unknown.take() else {
            return Ok(false);
        };
        let py = self.class_token.py();
        let token = self.class_token.call1((ty.bind(py),))?;
        let known = if token.is_none() {
            None
        } else {
            Some(xxh3_128(token.extract::<String>()?.as_bytes()))
        };
        self.classes.insert(ty.as_ptr() as usize, known);
        Ok(true)
    }

    /// Whether nothing but the reference that led here refers to `obj`.
    ///
    /// # Safety
    /// `obj` is a live object and the GIL is held.
    unsafe fn owned(&self, obj: *mut ffi::PyObject) -> bool {
        obj == self.top || ffi::Py_REFCNT(obj) == 1
    }

    /// Appends `obj`'s encoding to the scratch buffer. Ok(None): not private; Ok(Some(m)):
    /// private, `m` telling whether it reaches a mutable object.
    ///
    /// # Safety
    /// `obj` is a live object and the GIL is held.
    unsafe fn feed(&mut self, obj: *mut ffi::PyObject, depth: u32) -> PyResult<Option<bool>> {
        if depth > MAX_DEPTH {
            return Ok(None);
        }
        let ty = ffi::Py_TYPE(obj);
        let out = &mut self.scratch;
        if obj == ffi::Py_None() {
            out.push(0);
        } else if obj == ffi::Py_True() || obj == ffi::Py_False() {
            out.push(if obj == ffi::Py_True() { 1 } else { 2 });
        } else if ty == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            let mut overflow = 0;
            let value = ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow);
            if overflow != 0 {
                return Ok(None);
            }
            out.push(3);
            out.extend_from_slice(&value.to_le_bytes());
        } else if ty == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            out.push(4);
            out.extend_from_slice(&ffi::PyFloat_AsDouble(obj).to_bits().to_le_bytes());
        } else if ty == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            let mut len: ffi::Py_ssize_t = 0;
            let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut len);
            if data.is_null() {
                ffi::PyErr_Clear(); // lone surrogates: pickle copes, this encoding does not
                return Ok(None);
            }
            out.push(5);
            out.extend_from_slice(&(len as u64).to_le_bytes());
            out.extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len as usize));
        } else if ty == std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
            let len = ffi::PyBytes_Size(obj);
            out.push(6);
            out.extend_from_slice(&(len as u64).to_le_bytes());
            out.extend_from_slice(std::slice::from_raw_parts(
                ffi::PyBytes_AsString(obj).cast::<u8>(),
                len as usize,
            ));
        } else if ty == std::ptr::addr_of_mut!(ffi::PyTuple_Type) {
            let len = ffi::PyTuple_Size(obj);
            out.push(7);
            out.extend_from_slice(&(len as u64).to_le_bytes());
            let mut mutable = false;
            prefetch_items(obj, len, ffi::PyTuple_GetItem);
            for i in 0..len {
                match self.feed(ffi::PyTuple_GetItem(obj, i), depth + 1)? {
                    None => return Ok(None),
                    Some(m) => mutable |= m,
                }
            }
            // A tuple held elsewhere too shares what it holds: fine for values, not for
            // mutable objects, which would load back as two.
            if mutable && !self.owned(obj) {
                return Ok(None);
            }
            return Ok(Some(mutable));
        } else if ty == std::ptr::addr_of_mut!(ffi::PyList_Type) {
            if !self.owned(obj) {
                return Ok(None);
            }
            let len = ffi::PyList_Size(obj);
            self.scratch.push(8);
            self.scratch.extend_from_slice(&(len as u64).to_le_bytes());
            prefetch_items(obj, len, ffi::PyList_GetItem);
            for i in 0..len {
                if self.feed(ffi::PyList_GetItem(obj, i), depth + 1)?.is_none() {
                    return Ok(None);
                }
            }
            return Ok(Some(true));
        } else if ty == std::ptr::addr_of_mut!(ffi::PyDict_Type) {
            if !self.owned(obj) {
                return Ok(None);
            }
            self.scratch.push(9);
            return Ok(self.feed_items(obj, depth)?.then_some(true));
        } else {
            return self.feed_instance(obj, ty, depth);
        }
        Ok(Some(false))
    }

    /// An instance of a plain class: its class's token, then its attributes, read where
    /// CPython keeps them (`shim/instance.c`: no `__dict__` is made, nothing is written).
    ///
    /// # Safety
    /// As for `feed`.
    unsafe fn feed_instance(
        &mut self,
        obj: *mut ffi::PyObject,
        ty: *mut ffi::PyTypeObject,
        depth: u32,
    ) -> PyResult<Option<bool>> {
        let Some(Some(token)) = self.class(ty) else {
            return Ok(None); // not plain, or not known yet (`ask`)
        };
        if !self.owned(obj) {
            return Ok(None);
        }
        let (mut keys, mut values) = (NO_ATTRIBUTES, NO_ATTRIBUTES);
        let attributes = Attributes::read(obj, &mut keys, &mut values);
        self.scratch.push(10);
        self.scratch.extend_from_slice(&token.to_le_bytes());
        self.scratch
            .extend_from_slice(&(ty as usize as u64).to_le_bytes());
        // The attributes as marked pairs: the same bytes whether they are inline or in a dict.
        match attributes {
            Attributes::Inline(n) => {
                for &value in &values[..n] {
                    prefetch(value);
                }
                for (&key, &value) in keys[..n].iter().zip(&values[..n]) {
                    self.scratch.push(1);
                    if self.feed(key, depth + 1)?.is_none()
                        || self.feed(value, depth + 1)?.is_none()
                    {
                        return Ok(None);
                    }
                }
            }
            Attributes::Dict(dict) if !dict.is_null() => {
                // Held by the instance alone (`d = obj.__dict__` would share it).
                if ffi::PyDict_CheckExact(dict) == 0 || ffi::Py_REFCNT(dict) != 1 {
                    return Ok(None);
                }
                let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                while ffi::PyDict_Next(dict, &mut pos, &mut key, &mut value) != 0 {
                    self.scratch.push(1);
                    if self.feed(key, depth + 1)?.is_none()
                        || self.feed(value, depth + 1)?.is_none()
                    {
                        return Ok(None);
                    }
                }
            }
            Attributes::Dict(_) => {} // none
            Attributes::Unknown => return Ok(None),
        }
        self.scratch.push(0);
        Ok(Some(true))
    }

    /// A dict's length, then its keys and values in order; false where one is not private.
    ///
    /// # Safety
    /// As for `feed`; `dict` is an exact dict.
    unsafe fn feed_items(&mut self, dict: *mut ffi::PyObject, depth: u32) -> PyResult<bool> {
        let len = ffi::PyDict_Size(dict);
        self.scratch.extend_from_slice(&(len as u64).to_le_bytes());
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        while ffi::PyDict_Next(dict, &mut pos, &mut key, &mut value) != 0 {
            if self.feed(key, depth + 1)?.is_none() || self.feed(value, depth + 1)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Asks the CPU to start loading the object at `obj` into its caches, so that the objects an
/// entry refers to load side by side, not one after the other (the walk waits on memory far
/// more than it computes: each object of a large graph is a cache miss).
#[inline(always)]
fn prefetch(obj: *const ffi::PyObject) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing into the program and never faults,
    // whatever the address; SSE, which has it, is part of every x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch(obj.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = obj;
}

/// Prefetches the first items of a list or tuple (`get` reads item i) before they are fed.
///
/// # Safety
/// `obj` is a live list or tuple of `len` items (as `get` expects) and the GIL is held.
unsafe fn prefetch_items(
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    get: unsafe extern "C" fn(*mut ffi::PyObject, ffi::Py_ssize_t) -> *mut ffi::PyObject,
) {
    for i in 0..len.min(16) {
        prefetch(get(obj, i));
    }
}

/// The fingerprint (16 bytes, little-endian) of each entry of `d`, in order, and whether
/// each is private (1) or not (0). `class_token(type)` returns a string that names a class
/// whose instances pickle by their `__dict__` alone (it goes into the fingerprint), or None.
#[pyfunction]
pub fn entry_fingerprints<'py>(
    py: Python<'py>,
    d: &Bound<'py, PyDict>,
    class_token: Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let mut walk = Fingerprinter {
        class_token,
        top: std::ptr::null_mut(),
        classes: HashMap::new(),
        last_class: (0, None),
        unknown: None,
        scratch: Vec::with_capacity(4096),
    };
    let n = d.len();
    let mut fps = Vec::with_capacity(n * 16);
    let mut private = Vec::with_capacity(n);
    let mut pos: ffi::Py_ssize_t = 0;
    let mut key = std::ptr::null_mut();
    let mut value = std::ptr::null_mut();
    // SAFETY: the GIL is held (`py`) and no Python code runs while borrowed references are
    // held (the callback runs in `ask`, between two entries), so no other thread runs and
    // nothing changes `d` or what it reaches: PyDict_Next's borrowed references stay valid.
    unsafe {
        let mut at = pos;
        // PREFETCH_AHEAD entries ahead of `pos`: their key and value are prefetched.
        let mut ahead = pos;
        for _ in 0..PREFETCH_AHEAD {
            ffi::PyDict_Next(d.as_ptr(), &mut ahead, &mut key, &mut value);
        }
        while ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
            let (mut next_key, mut next_value) = (std::ptr::null_mut(), std::ptr::null_mut());
            if ffi::PyDict_Next(d.as_ptr(), &mut ahead, &mut next_key, &mut next_value) != 0 {
                prefetch(next_key);
                prefetch(next_value);
            }
            walk.scratch.clear();
            let ok = walk.feed(key, 0)?.is_some() && {
                walk.scratch.push(0xff);
                walk.feed(value, 0)?.is_some()
            };
            if walk.ask()? {
                if d.len() != n {
                    break; // changed by another thread meanwhile: reported below
                }
                pos = at; // this entry again, now that its class is known
                continue;
            }
            fps.extend_from_slice(&xxh3_128(&walk.scratch).to_le_bytes());
            private.push(ok as u8);
            at = pos;
        }
    }
    if private.len() != n || d.len() != n {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "the dict changed size while it was fingerprinted",
        ));
    }
    Ok((PyBytes::new(py, &fps), PyBytes::new(py, &private)))
}

/// The fingerprint of a variable's value as a whole, or None where it is not private (as
/// an entry is, but for the value itself, which the variable refers to).
#[pyfunction]
pub fn value_fingerprint<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    class_token: Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut walk = Fingerprinter {
        class_token,
        top: value.as_ptr(),
        classes: HashMap::new(),
        last_class: (0, None),
        unknown: None,
        scratch: Vec::with_capacity(1 << 16),
    };
    // SAFETY: the GIL is held (`py`) and `value` is alive; no Python code runs during a walk
    // (see entry_fingerprints): the walk is repeated once per class it meets for the first time.
    let private = loop {
        walk.scratch.clear();
        let private = unsafe { walk.feed(value.as_ptr(), 0)? }.is_some();
        if !walk.ask()? {
            break private;
        }
    };
    Ok(private.then(|| PyBytes::new(py, &xxh3_128(&walk.scratch).to_le_bytes())))
}

/// Where each entry's pickle is: the last snapshot's location where the entry is unchanged
/// (same fingerprint, at the same position or elsewhere), `TO_PICKLE` where it must be
/// pickled now, `NOT_PRIVATE` where it is stored with the rest of its record. Returns the
/// locations (16 bytes each) and the positions to pickle.
#[pyfunction]
pub fn entry_locations<'py>(
    py: Python<'py>,
    fps: &[u8],
    private: &[u8],
    last_fps: &[u8],
    last_locations: &[u8],
) -> PyResult<(Bound<'py, PyByteArray>, Vec<usize>)> {
    let n = private.len();
    let last_n = last_fps.len() / 16;
    if fps.len() != n * 16 || last_locations.len() != last_n * LOCATION {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "fingerprints and locations do not match",
        ));
    }
    let fp = |all: &[u8], i: usize| -> [u8; 16] { all[i * 16..i * 16 + 16].try_into().unwrap() };
    // Entries that moved (an entry deleted or inserted before them) are looked up by
    // fingerprint; where few entries differ from the last snapshot at their position, they
    // changed in place, and pickling those few costs less than mapping them all.
    let differing = (0..n)
        .filter(|&i| private[i] != 0 && (i >= last_n || fp(last_fps, i) != fp(fps, i)))
        .count();
    let moved = differing > n / 16 + 64;
    let mut by_fp: Option<HashMap<[u8; 16], usize>> = None;
    let mut locations = vec![0u8; n * LOCATION];
    let mut to_pickle = Vec::new();
    for i in 0..n {
        let out = &mut locations[i * LOCATION..(i + 1) * LOCATION];
        if private[i] == 0 {
            out[..4].copy_from_slice(&NOT_PRIVATE.to_le_bytes());
            continue;
        }
        let here = fp(fps, i);
        let found = if i < last_n && fp(last_fps, i) == here {
            Some(i)
        } else if !moved {
            None
        } else {
            // Moved (an entry deleted or inserted before it): looked up by fingerprint.
            let map =
                by_fp.get_or_insert_with(|| (0..last_n).map(|j| (fp(last_fps, j), j)).collect());
            map.get(&here).copied()
        };
        match found.map(|j| &last_locations[j * LOCATION..(j + 1) * LOCATION]) {
            Some(last)
                if last[..4] != TO_PICKLE.to_le_bytes()
                    && last[..4] != NOT_PRIVATE.to_le_bytes() =>
            {
                out.copy_from_slice(last)
            }
            _ => {
                out[..4].copy_from_slice(&TO_PICKLE.to_le_bytes());
                to_pickle.push(i);
            }
        }
    }
    Ok((PyByteArray::new(py, &locations), to_pickle))
}

/// Fills in the locations of the entries just pickled, one after the other into `segment`:
/// `ends[k]` is where the pickle of `positions[k]` ends. Returns the bytes the locations
/// point to in each segment (live bytes; the rest of a segment is dead).
#[pyfunction]
pub fn place_entries(
    locations: &Bound<'_, PyByteArray>,
    positions: Vec<usize>,
    segment: u32,
    ends: Vec<u64>,
    segments: usize,
) -> PyResult<Vec<u64>> {
    if positions.len() != ends.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "one end per position",
        ));
    }
    // SAFETY: no Python code runs while the bytearray's buffer is borrowed here, so it can
    // be neither resized nor freed.
    let locations = unsafe { locations.as_bytes_mut() };
    let mut start = 0u64;
    for (&i, &end) in positions.iter().zip(&ends) {
        let len = u32::try_from(end.saturating_sub(start))
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("an entry of 4 GiB or more"))?;
        let out = locations
            .get_mut(i * LOCATION..(i + 1) * LOCATION)
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("position out of range"))?;
        out[..4].copy_from_slice(&segment.to_le_bytes());
        out[4..8].copy_from_slice(&len.to_le_bytes());
        out[8..].copy_from_slice(&start.to_le_bytes());
        start = end;
    }
    let mut live = vec![0u64; segments];
    for loc in locations.chunks_exact(LOCATION) {
        let seg = u32::from_le_bytes(loc[..4].try_into().unwrap());
        if let Some(bytes) = live.get_mut(seg as usize) {
            *bytes += u32::from_le_bytes(loc[4..8].try_into().unwrap()) as u64;
        }
    }
    Ok(live)
}

/// Calls `f` with the key and value of each item of the exact dict `d` at `positions`
/// (ascending, else an error), borrowed; stops where `f` returns false or at the dict's
/// end (the caller counts what it got). Where the dict has no deleted entry, the
/// i-th item is PyDict_Next's position i (`relive_dict_dense`): no scan from the start.
///
/// # Safety
/// Attached to the interpreter; `d` is a live dict and `f` runs no Python code, so the
/// borrowed references stay valid while it runs.
pub(crate) unsafe fn each_item_at(
    d: *mut ffi::PyObject,
    positions: &[usize],
    mut f: impl FnMut(*mut ffi::PyObject, *mut ffi::PyObject) -> bool,
) -> PyResult<()> {
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "positions must be ascending",
        ));
    }
    let (mut key, mut value) = (std::ptr::null_mut(), std::ptr::null_mut());
    if relive_dict_dense(d) == 1 {
        for &at in positions {
            let mut pos = at as ffi::Py_ssize_t;
            if ffi::PyDict_Next(d, &mut pos, &mut key, &mut value) == 0
                || pos != at as ffi::Py_ssize_t + 1
                || !f(key, value)
            {
                return Ok(());
            }
        }
        return Ok(());
    }
    let mut wanted = positions.iter().copied().peekable();
    let (mut pos, mut i) = (0, 0);
    while wanted.peek().is_some() && ffi::PyDict_Next(d, &mut pos, &mut key, &mut value) != 0 {
        if wanted.peek() == Some(&i) {
            wanted.next();
            if !f(key, value) {
                return Ok(());
            }
        }
        i += 1;
    }
    Ok(())
}

/// The `(key, value)` items of `d` at `positions` (ascending), without taking a reference to
/// the others (in a forked child, writing their reference counts would copy their pages).
#[pyfunction]
pub fn items_at<'py>(
    d: &Bound<'py, PyDict>,
    positions: Vec<usize>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = d.py();
    let mut out = Vec::with_capacity(positions.len());
    // SAFETY: attached to the interpreter (`py`); the borrowed references are made strong at
    // once, and no Python code runs meanwhile.
    unsafe {
        each_item_at(d.as_ptr(), &positions, |key, value| {
            out.push((
                Bound::from_borrowed_ptr(py, key),
                Bound::from_borrowed_ptr(py, value),
            ));
            true
        })?;
    }
    if out.len() != positions.len() {
        return Err(pyo3::exceptions::PyIndexError::new_err(
            "a position past the dict's end",
        ));
    }
    Ok(out)
}
