//! The object-graph walk: which of a snapshot's variables reach a common object.
//!
//! Variables that share an object must be pickled together, or they load back as copies
//! (`o1 = [a, c]; o2 = [b, c]` must keep `o1[1] is o2[1]`). Finding them in Python (through the
//! pickle memo) cost 90% of a snapshot of a million small objects; here the walk follows
//! `tp_traverse`, the collector's own view of each object's references, at native speed.
//!
//! What an object's type means for the walk is decided in Python, once per type (`classify`),
//! so that the rules stay beside the pickler that they mirror:
//! - `LEAF`: neither shared nor walked (str, int, modules, classes, code, dtypes, enum members);
//! - `CONTAINER`: walked, not shared by itself (tuples: pickle has no identity to keep for them);
//! - `SHARED`: walked, and two variables reaching it are grouped;
//! - `ASK`: `inspect(obj)` answers per object `(shared, children, keys)`: functions (walk the
//!   closure, not the globals), tensors (two tensors viewing one storage share a `key`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_int, c_void};
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

/// Hashes the addresses the walk's sets and maps are keyed on. SipHash, the default, guards
/// against keys chosen by an attacker, which addresses are not, and cost a third of a walk over
/// a million objects; here an address is multiplied by a large odd constant and its high bits
/// folded down (addresses are 16-byte aligned: their low bits alone would crowd the buckets).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Addresses = BuildHasherDefault<AddressHasher>;
type AddressSet = HashSet<usize, Addresses>;

const LEAF: u8 = 0;
const CONTAINER: u8 = 1;
const SHARED: u8 = 2;
const ASK: u8 = 3;

/// Union-find over variable indices.
struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        // The smaller index wins, so that a group is labelled by its first variable.
        if a < b {
            self.parent[b] = a;
        } else {
            self.parent[a] = b;
        }
    }
}

struct Walk<'py> {
    classify: Bound<'py, PyAny>,
    inspect: Bound<'py, PyAny>,
    stop: AddressSet,
    /// Large dicts whose private entries are not walked: their flags, by the dict's address.
    private: HashMap<usize, Bound<'py, PyBytes>, Addresses>,
    /// Values private as a whole (`entries::value_fingerprint`): only the value itself may
    /// be shared (another variable naming it), nothing it reaches. Not walked into.
    whole: AddressSet,
    kinds: HashMap<usize, u8, Addresses>,
    /// Shared objects (and keys) seen so far, and the variable that reached each first.
    owner: HashMap<usize, usize, Addresses>,
    keys: HashMap<u64, usize, Addresses>,
    groups: Groups,
}

impl<'py> Walk<'py> {
    fn kind(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<u8> {
        if self.stop.contains(&(obj.as_ptr() as usize)) || obj.is_instance_of::<PyType>() {
            return Ok(LEAF);
        }
        let ty = obj.get_type();
        let key = ty.as_ptr() as usize;
        if let Some(&kind) = self.kinds.get(&key) {
            return Ok(kind);
        }
        let kind: u8 = self.classify.call1((ty,))?.extract()?;
        if kind > ASK {
            return Err(PyValueError::new_err(format!("classify returned {kind}")));
        }
        self.kinds.insert(key, kind);
        Ok(kind)
    }

    /// Marks `obj` (or `key`) as reached by `root`; true when it was reached before, by this
    /// root or another (whose group `root` then joins).
    fn reach(&mut self, ptr: usize, root: usize) -> bool {
        match self.owner.entry(ptr) {
            Entry::Vacant(slot) => {
                slot.insert(root);
                false
            }
            Entry::Occupied(first) => {
                let other = *first.get();
                self.groups.join(root, other);
                true
            }
        }
    }

    fn reach_key(&mut self, key: u64, root: usize) {
        let other = *self.keys.entry(key).or_insert(root);
        self.groups.join(root, other);
    }

    /// Walks everything `value` reaches, joining `root` with every variable it shares with.
    fn walk_root(&mut self, root: usize, value: Bound<'py, PyAny>) -> PyResult<()> {
        let mut pending = vec![value];
        // Containers are not shared, so they are walked again from each root that reaches
        // them; within one root, once.
        let mut seen_containers = AddressSet::default();
        while let Some(obj) = pending.pop() {
            let ptr = obj.as_ptr() as usize;
            if self.whole.contains(&ptr) {
                self.reach(ptr, root);
                continue;
            }
            match self.kind(&obj)? {
                LEAF => {}
                CONTAINER => {
                    if seen_containers.insert(ptr) {
                        push_referents(&obj, &self.stop, &mut pending);
                    }
                }
                SHARED => {
                    if !self.reach(ptr, root) {
                        match self.private.get(&ptr) {
                            Some(private) => {
                                push_shared_entries(&obj, private.as_bytes(), &mut pending)
                            }
                            None => push_referents(&obj, &self.stop, &mut pending),
                        }
                    }
                }
                _ => {
                    let answer = self.inspect.call1((&obj,))?;
                    let (shared, children, keys): (bool, Bound<'py, PyAny>, Vec<u64>) =
                        answer.extract()?;
                    for key in keys {
                        self.reach_key(key, root);
                    }
                    if shared && self.reach(ptr, root) {
                        continue;
                    }
                    if !children.is_none() {
                        for child in children.try_iter()? {
                            pending.push(child?);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Pushes the objects `obj` refers to, as the garbage collector sees them, but for those in
/// `stop` and the values no walk goes into (str, int, float, bytes, None, bools). Those are
/// not even referenced: in a forked snapshot's child, every reference count written copies
/// the page it is on (a large dict's million entries cost 100 ms in page copies).
fn push_referents<'py>(
    obj: &Bound<'py, PyAny>,
    stop: &AddressSet,
    pending: &mut Vec<Bound<'py, PyAny>>,
) {
    extern "C" fn visit(child: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
        if !child.is_null() {
            // SAFETY: `arg` is the `Vec` below, alive and exclusively ours for the traversal.
            unsafe { (*arg.cast::<Vec<*mut ffi::PyObject>>()).push(child) };
        }
        0
    }
    let mut found: Vec<*mut ffi::PyObject> = Vec::new();
    // SAFETY: we are attached to the interpreter and hold a strong reference to `obj`; a type's
    // tp_traverse only reports references (it runs no Python code and frees nothing), and it is
    // called only for types that declare one (collector-tracked types).
    unsafe {
        let ty = ffi::Py_TYPE(obj.as_ptr());
        if ffi::PyType_HasFeature(ty, ffi::Py_TPFLAGS_HAVE_GC) == 0 {
            return;
        }
        if let Some(traverse) = (*ty).tp_traverse {
            traverse(
                obj.as_ptr(),
                visit,
                (&mut found as *mut Vec<*mut ffi::PyObject>).cast(),
            );
        }
    }
    let py = obj.py();
    for child in found {
        // SAFETY: as below: `child` is alive; its type is only read.
        // The type first: a list of a million strings asks the set about none of them.
        if unsafe { is_plain_value(child) } || stop.contains(&(child as usize)) {
            continue;
        }
        // SAFETY: `child` was reported by tp_traverse just now, with no Python code run since,
        // so it is alive (`obj` holds it); taking a strong reference keeps it so while walked.
        pending.push(unsafe { Bound::from_borrowed_ptr(py, child) });
    }
}

/// Pushes the keys and values of `dict`'s entries that are not private (`private[i] == 0`):
/// the private ones reach nothing anything else refers to (see `entries.rs`).
fn push_shared_entries<'py>(
    dict: &Bound<'py, PyAny>,
    private: &[u8],
    pending: &mut Vec<Bound<'py, PyAny>>,
) {
    let py = dict.py();
    let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
    let mut flags = private.iter();
    // SAFETY: attached to the interpreter; `dict` is an exact dict (entry_fingerprints took
    // only those) that no Python code changes meanwhile; PyDict_Next lends its references, made
    // strong before they are kept.
    unsafe {
        while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
            if flags.next() != Some(&0) {
                continue;
            }
            for child in [key, value] {
                if !is_plain_value(child) {
                    pending.push(Bound::from_borrowed_ptr(py, child));
                }
            }
        }
    }
}

/// Whether `obj` is a value the walk never goes into: an exact str, int, float or bytes,
/// None or a bool (what `classify` calls LEAF, without asking it).
///
/// # Safety
/// `obj` is a live object and we are attached to the interpreter.
unsafe fn is_plain_value(obj: *mut ffi::PyObject) -> bool {
    let ty = ffi::Py_TYPE(obj);
    obj == ffi::Py_None()
        || ty == std::ptr::addr_of_mut!(ffi::PyUnicode_Type)
        || ty == std::ptr::addr_of_mut!(ffi::PyLong_Type)
        || ty == std::ptr::addr_of_mut!(ffi::PyFloat_Type)
        || ty == std::ptr::addr_of_mut!(ffi::PyBytes_Type)
        || ty == std::ptr::addr_of_mut!(ffi::PyBool_Type)
}

/// For each value, the index of the first value it shares an object with, through any chain
/// of shared objects (itself when it shares nothing).
///
/// `classify(type)` returns LEAF (0), CONTAINER (1), SHARED (2) or ASK (3); `inspect(obj)`
/// returns `(shared, children or None, keys)` for ASK objects; `stop` holds objects never
/// walked (the script's globals dict: functions refer to it, variables do not share it).
///
/// `private_entries` holds `(dict, private)` pairs from `entry_fingerprints`: the entries it
/// found private reach no object anything else refers to, so they are not walked (a large
/// dict's entries were most of the walk). `private_values` holds values found private as a
/// whole (`value_fingerprint`): each may be another variable's too, but nothing it reaches is
/// anything else's, so it is not walked into (a list of a million strings was the rest).
#[pyfunction]
#[pyo3(signature = (values, classify, inspect, stop, private_entries = Vec::new(), private_values = Vec::new()))]
pub fn shared_groups<'py>(
    values: Vec<Bound<'py, PyAny>>,
    classify: Bound<'py, PyAny>,
    inspect: Bound<'py, PyAny>,
    stop: Bound<'py, PyTuple>,
    private_entries: Vec<(Bound<'py, PyDict>, Bound<'py, PyBytes>)>,
    private_values: Vec<Bound<'py, PyAny>>,
) -> PyResult<Vec<usize>> {
    let mut private = HashMap::default();
    for (dict, flags) in private_entries {
        if flags.as_bytes().len() != dict.len() {
            return Err(PyValueError::new_err("one private flag per entry"));
        }
        private.insert(dict.as_ptr() as usize, flags);
    }
    let mut walk = Walk {
        classify,
        inspect,
        stop: stop.iter().map(|o| o.as_ptr() as usize).collect(),
        private,
        whole: private_values.iter().map(|o| o.as_ptr() as usize).collect(),
        kinds: HashMap::default(),
        owner: HashMap::default(),
        keys: HashMap::default(),
        groups: Groups::new(values.len()),
    };
    for (root, value) in values.into_iter().enumerate() {
        walk.walk_root(root, value)?;
    }
    Ok((0..walk.groups.parent.len())
        .map(|i| walk.groups.find(i))
        .collect())
}
