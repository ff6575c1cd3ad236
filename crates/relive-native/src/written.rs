//! The files the program writes, tracked by an `open` that adds no Python frame.
//!
//! relive replaces `builtins.open` and `io.open` with `open` below: a builtin like the real
//! one, so a failed `open` shows the traceback `python` shows and the program's tracers see
//! no call of relive's. It calls the real `io.open`, then remembers each file opened by name
//! for writing:
//! - the file itself, weakly, so that a snapshot flushes it and records its position;
//! - its absolute path, so that a resume cuts what a killed run appended after the snapshot.
//!
//! The cost of a snapshot stays bounded: it reads the files open then (bounded by the
//! process's descriptors) and the last `RECENT` paths opened for writing, never every file the
//! program ever wrote. No Python code runs while the registry is locked.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple, PyWeakrefMethods, PyWeakrefReference};

/// How many of the paths last opened for writing (closed since) a snapshot records.
pub const RECENT: usize = 1024;

static REAL_OPEN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static WRITTEN: LazyLock<Mutex<Written>> = LazyLock::new(|| Mutex::new(Written::default()));

#[derive(Default)]
struct Written {
    files: Vec<(Py<PyWeakrefReference>, PathBuf)>,
    prune_at: usize,
    recent: HashMap<PathBuf, u64>, // path -> when it was last opened (a counter)
    clock: u64,
}

impl Written {
    fn add(&mut self, py: Python<'_>, file: Py<PyWeakrefReference>, path: PathBuf) {
        self.clock += 1;
        self.recent.insert(path.clone(), self.clock);
        if self.recent.len() > 2 * RECENT {
            let mut times: Vec<u64> = self.recent.values().copied().collect();
            times.sort_unstable();
            let oldest_kept = times[times.len() - RECENT];
            self.recent.retain(|_, when| *when >= oldest_kept);
        }
        self.files.push((file, path));
        if self.files.len() >= self.prune_at {
            self.prune(py);
            self.prune_at = (2 * self.files.len()).max(64);
        }
    }

    /// Forget files the program dropped (a weak reference's own deallocation runs no Python code).
    fn prune(&mut self, py: Python<'_>) {
        self.files
            .retain(|(file, _)| file.bind(py).upgrade().is_some());
    }
}

fn real_open(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    REAL_OPEN
        .get_or_try_init(py, || py.import("_io")?.getattr("open").map(Bound::unbind))
        .map(|open| open.bind(py))
}

/// Open file and return a stream (`io.open`; relive notes the files opened for writing).
#[pyfunction]
#[pyo3(
    signature = (*args, **kwargs),
    text_signature = "(file, mode='r', buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None)"
)]
pub fn open<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let file = real_open(py)?.call(args, kwargs)?;
    if writes(args, kwargs) {
        // Never into the program: a file relive cannot note is only not flushed by a snapshot.
        let _ = remember(py, &file);
    }
    Ok(file)
}

fn writes(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> bool {
    let mode = match args.get_item(1) {
        Ok(mode) => Some(mode),
        Err(_) => kwargs.and_then(|k| k.get_item("mode").ok().flatten()),
    };
    match mode
        .as_ref()
        .map(|m| m.cast::<PyString>().map(|s| s.to_cow()))
    {
        Some(Ok(Ok(mode))) => mode.contains(['w', 'a', 'x', '+']),
        _ => false, // "r", the default (the real open refused anything else)
    }
}

fn remember(py: Python<'_>, file: &Bound<'_, PyAny>) -> PyResult<()> {
    // The name the file was opened with, as `io.open` took it (after `os.fspath`): read from
    // the file, so that a path object's `__fspath__` is not called a second time.
    let name = file.getattr(pyo3::intern!(py, "name"))?;
    let path = if let Ok(bytes) = name.cast::<PyBytes>() {
        PathBuf::from(OsStr::from_bytes(bytes.as_bytes()))
    } else if name.is_instance_of::<PyString>() {
        name.extract::<PathBuf>()?
    } else {
        return Ok(()); // a descriptor: no name to reopen or cut
    };
    let Some(path) = absolute(&path) else {
        return Ok(());
    };
    let weak = PyWeakrefReference::new(file)?.unbind();
    let mut written = WRITTEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    written.add(py, weak, path);
    Ok(())
}

/// `path` from the current directory, without `.` components (as `os.path.abspath`, but
/// `..` is kept: it means something else across symbolic links).
fn absolute(path: &Path) -> Option<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    Some(
        joined
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect(),
    )
}

/// `(files, paths)`: the files opened for writing that the program still holds, and the
/// paths a snapshot records the size of (those files' and the last `RECENT` opened for
/// writing), at most once each.
#[pyfunction]
pub fn written_files(py: Python<'_>) -> (Vec<Bound<'_, PyAny>>, Vec<PathBuf>) {
    let mut written = WRITTEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    written.prune(py);
    let files: Vec<Bound<'_, PyAny>> = written
        .files
        .iter()
        .filter_map(|(f, _)| f.bind(py).upgrade())
        .collect();
    let mut seen = HashSet::new();
    let mut recent: Vec<(&PathBuf, &u64)> = written.recent.iter().collect();
    recent.sort_unstable_by(|a, b| b.1.cmp(a.1));
    let paths = written
        .files
        .iter()
        .map(|(_, path)| path)
        .chain(recent.into_iter().take(RECENT).map(|(path, _)| path))
        .filter(|path| seen.insert(*path))
        .cloned()
        .collect();
    (files, paths)
}
