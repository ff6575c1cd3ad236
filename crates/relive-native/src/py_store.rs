//! `relive._native.Store`: the Python binding of [`relive_store::Store`] (the store itself lives in
//! the `relive-store` crate; this file only converts arguments, results and errors).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};
use relive_store::{BufferRef, BufferSource, Id, Problem, Staged, Store, VerifyReport};

use crate::buffer::{LoadedBuffer, MAPPED_FROM};

use crate::errors::store_error;

/// A relive store: packs of content-addressed chunks and records, snapshot manifests, run
/// documents. Thread-safe.
#[pyclass(frozen, name = "Store", module = "relive._native")]
pub struct PyStore {
    inner: Store,
}

/// A record copied out of the program, waiting to be written (`Store.stage_record`).
#[pyclass(frozen, name = "StagedRecord", module = "relive._native")]
pub struct StagedRecord {
    staged: Mutex<Option<Staged>>,
    copied_bytes: u64,
    raw_bytes: u64,
    unread_bytes: u64,
}

impl StagedRecord {
    fn holding(staged: Staged) -> StagedRecord {
        StagedRecord {
            copied_bytes: staged.copied_bytes(),
            raw_bytes: staged.raw_bytes(),
            unread_bytes: staged.unread_bytes(),
            staged: Mutex::new(Some(staged)),
        }
    }
}

#[pymethods]
impl StagedRecord {
    /// The bytes it copied (payload and changed chunks): the memory it holds until written.
    #[getter]
    fn copied_bytes(&self) -> u64 {
        self.copied_bytes
    }

    /// The payload's length plus the buffers' lengths.
    #[getter]
    fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// The bytes of its buffers known unchanged without being read: no page of theirs was
    /// written since the last copies (`Store.begin_copies`).
    #[getter]
    fn unread_bytes(&self) -> u64 {
        self.unread_bytes
    }
}

/// The CPU seconds the store's worker threads have used in this process so far: what a
/// snapshot written by a thread of the program costs beyond that thread's own CPU.
#[pyfunction]
pub fn workers_cpu_seconds() -> f64 {
    relive_store::workers_cpu_seconds()
}

/// The CPU seconds this process has spent compressing chunks at idle priority (on cores
/// nothing else wanted: not charged to the program).
#[pyfunction]
pub fn idle_cpu_seconds() -> f64 {
    relive_store::idle_cpu_seconds()
}

/// Whether this process can watch its pages for writes (Linux 6.7+ with userfaultfd allowed:
/// a seccomp profile may forbid it), as copied snapshots do for large quiet buffers.
#[pyfunction]
pub fn pages_watchable() -> bool {
    relive_store::pages_watchable()
}

/// After the fork, in the program: forgets what was lent.
#[pyfunction]
pub fn take_watch_back() {
    relive_store::take_back_from_child()
}

/// The buffer at `addr..addr + len` (relive's own: a CUDA tensor's host mirror) is cut in
/// blocks of `block` bytes, the k-th last written at `versions[k]`, a number no other write
/// had: a copied snapshot keeps the chunks whose blocks kept their versions unread
/// (`relive_store::tell_written`). `forget_written` must come before the memory is freed.
#[pyfunction]
pub fn tell_written(addr: usize, len: usize, block: usize, versions: Vec<u64>) {
    relive_store::tell_written(addr, len, block, versions)
}

/// The buffer told at `addr..addr + len` is freed.
#[pyfunction]
pub fn forget_written(addr: usize, len: usize) {
    relive_store::forget_told(addr, len)
}

/// How much of its memory the program writes while it runs (`relive_store::WriteProbe`):
/// from `start_write_probe` until `close`.
#[pyclass(name = "WriteProbe", module = "relive._native")]
pub struct PyWriteProbe {
    inner: Option<relive_store::WriteProbe>,
}

#[pymethods]
impl PyWriteProbe {
    /// The bytes of the memory watched written since the start, each page once (0 once closed).
    fn written(&self, py: Python<'_>) -> u64 {
        match &self.inner {
            Some(probe) => py.detach(|| probe.written()),
            None => 0,
        }
    }

    /// Stops watching: the memory loses its protection.
    fn close(&mut self, py: Python<'_>) {
        if let Some(probe) = self.inner.take() {
            py.detach(move || drop(probe));
        }
    }
}

/// Starts watching all the process's private anonymous memory for writes; None where this
/// system cannot (before Linux 6.7, userfaultfd refused).
#[pyfunction]
pub fn start_write_probe(py: Python<'_>) -> Option<PyWriteProbe> {
    let probe = py.detach(relive_store::WriteProbe::start).ok()?;
    Some(PyWriteProbe { inner: Some(probe) })
}

#[pymethods]
impl PyStore {
    /// Opens the store at `path` (creating it when `create` is true). Raises `StoreNotFound` when
    /// there is none and `create` is false.
    #[staticmethod]
    #[pyo3(signature = (path, create = false))]
    fn open(py: Python<'_>, path: PathBuf, create: bool) -> PyResult<PyStore> {
        let inner = py
            .detach(|| {
                if create {
                    Store::create(&path)
                } else {
                    Store::open(&path)
                }
            })
            .map_err(store_error)?;
        Ok(PyStore { inner })
    }

    #[getter]
    fn path(&self) -> OsString {
        self.inner.path().as_os_str().to_owned()
    }

    #[getter]
    fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }

    /// Stores a record: `payload` and `buffers` (objects with the buffer protocol, C-contiguous:
    /// memoryviews, `PickleBuffer.raw()`, bytes, bytearray, arrays). Returns `(id, new_bytes,
    /// raw_bytes)`: the record's hex id, the bytes newly written (0 when nothing changed) and the
    /// bytes it holds.
    ///
    /// The GIL stays held for the whole call, so the program's threads cannot change the buffers
    /// while they are read; the hashing and compression threads need no GIL.
    fn put_record(
        &self,
        payload: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<(String, u64, u64)> {
        let outcome = with_record_bytes(payload, &buffers, |payload, buffers| {
            self.inner.put_record(payload, buffers)
        })?
        .map_err(store_error)?;
        Ok((outcome.id.to_hex(), outcome.new_bytes, outcome.raw_bytes))
    }

    /// Like `put_record`, but an item of `buffers` may be `(record_id, index)`: that buffer
    /// of a stored record, whose chunks the new record refers to without reading them
    /// (`relive.state.dict_entries` keeps a large dict's unchanged segments so).
    fn put_record_from(
        &self,
        payload: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<(String, u64, u64)> {
        let outcome = self
            .with_sources(payload, &buffers, |payload, sources| {
                self.inner.put_record_from(payload, sources)
            })?
            .map_err(store_error)?;
        Ok((outcome.id.to_hex(), outcome.new_bytes, outcome.raw_bytes))
    }

    /// The lengths of a stored record's buffers, read from the record alone.
    fn record_buffer_lens(&self, py: Python<'_>, id: &str) -> PyResult<Vec<u64>> {
        let id = parse_id(id)?;
        let record = py
            .detach(|| self.inner.get_record(&id))
            .map_err(store_error)?;
        Ok(record.buffers.iter().map(|b| b.len).collect())
    }

    /// One buffer of a stored record (its chunks read and checked), as `get_record` gives it.
    fn record_buffer<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        index: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_id(id)?;
        let record = py
            .detach(|| self.inner.get_record(&id))
            .map_err(store_error)?;
        let buffer = record
            .buffers
            .get(index)
            .ok_or_else(|| PyValueError::new_err(format!("the record has no buffer {index}")))?;
        self.load_buffer(py, buffer)
    }

    /// Whether the store holds the record `id` (a stored value reused without pickling it
    /// again must still be there: `relive.state.dict_entries`).
    fn has_record(&self, id: &str) -> PyResult<bool> {
        Ok(self.inner.contains(&parse_id(id)?))
    }

    /// Starts the copies of one snapshot (`--mode thread`): the number to give `stage_record`
    /// as `copies`, with which the pages of large buffers the program wrote since the last
    /// copies are asked of the kernel rather than every byte fingerprinted. Lets go of the
    /// memory kept for copies that the last copies did not reuse.
    fn begin_copies(&self) -> u64 {
        self.inner.begin_copies()
    }

    /// Copies a record out of the program for `put_staged` to write later (`--mode thread`):
    /// the payload and the chunks of `buffers` the store does not hold yet; chunks it holds are
    /// kept by id. Same arguments as `put_record`. The GIL stays held, as in `put_record`, so
    /// the buffers stand still while they are read; once this returns, the program may change
    /// them. None, with nothing copied, where that would copy more than `at_most` bytes.
    /// `copies`: `begin_copies`'s number (0: fingerprint every byte); with it, buffers found
    /// rewritten at the last copies are copied without a fingerprint pass, and with
    /// `watch_pages` too, the kernel is asked which pages of large quiet buffers were written
    /// (not where a device may write the program's memory by DMA: CUDA's pinned memory).
    #[pyo3(signature = (payload, buffers, at_most=None, copies=0, watch_pages=true))]
    fn stage_record(
        &self,
        payload: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
        at_most: Option<u64>,
        copies: u64,
        watch_pages: bool,
    ) -> PyResult<Option<StagedRecord>> {
        let staged = with_record_bytes(payload, &buffers, |payload, buffers| {
            let sources: Vec<BufferSource<'_>> =
                buffers.iter().map(|b| BufferSource::Bytes(b)).collect();
            let at_most = at_most.unwrap_or(u64::MAX);
            self.inner
                .stage_from(payload, &sources, at_most, copies, watch_pages)
        })?;
        Ok(staged.map(StagedRecord::holding))
    }

    /// `stage_record` where an item of `buffers` may be `(record_id, index)`, as in
    /// `put_record_from`: that stored buffer is referred to by its chunks, not copied.
    #[pyo3(signature = (payload, buffers, at_most=None, copies=0, watch_pages=true))]
    fn stage_record_from(
        &self,
        payload: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
        at_most: Option<u64>,
        copies: u64,
        watch_pages: bool,
    ) -> PyResult<Option<StagedRecord>> {
        let staged = self.with_sources(payload, &buffers, |payload, sources| {
            let at_most = at_most.unwrap_or(u64::MAX);
            self.inner
                .stage_from(payload, sources, at_most, copies, watch_pages)
        })?;
        Ok(staged.map(StagedRecord::holding))
    }

    /// Writes a record `stage_record` copied, without the GIL: `(id, new_bytes, raw_bytes)`,
    /// as `put_record` returns. A staged record is written once.
    fn put_staged(&self, py: Python<'_>, staged: &StagedRecord) -> PyResult<(String, u64, u64)> {
        let staged = staged
            .staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| PyValueError::new_err("this staged record was already written"))?;
        let outcome = py
            .detach(|| self.inner.put_staged(staged))
            .map_err(store_error)?;
        Ok((outcome.id.to_hex(), outcome.new_bytes, outcome.raw_bytes))
    }

    /// Loads a record: `(payload, buffers)`, each buffer new writable memory (a `bytearray`, or
    /// a `Buffer` mapping for large ones). Every byte is verified; raises `CorruptionError` when
    /// something fails its check.
    fn get_record<'py>(
        &self,
        py: Python<'py>,
        id: &str,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<Bound<'py, PyAny>>)> {
        let id = parse_id(id)?;
        let record = py
            .detach(|| self.inner.get_record(&id))
            .map_err(store_error)?;
        let payload = PyBytes::new(py, &record.payload);
        let buffers = record
            .buffers
            .iter()
            .map(|buffer| self.load_buffer(py, buffer))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((payload, buffers))
    }

    /// Takes in what other processes (forked snapshots) wrote since the store was opened, so
    /// that this handle does not write it again.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.refresh()).map_err(store_error)
    }

    /// The chunks this handle hashed, as bytes: a forked snapshot child gives them to the
    /// program, whose copy-then-write snapshots then need not copy those chunks to hash them.
    fn proven_chunks<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.proven_chunks())
    }

    /// The raw bytes of the blobs this handle has written so far (before compression).
    fn raw_bytes_written(&self) -> u64 {
        self.inner.raw_bytes_written()
    }

    /// Before the program forks a snapshot's child: the ids of the chunks of the buffers
    /// watched for this handle's copies that no page was written of since, for the child
    /// (which opens its own handle on this store) to keep unread. Returns the bytes lent.
    fn lend_watch_to_child(&self) -> u64 {
        self.inner.lend_to_child()
    }

    /// In a forked child: the bytes kept by the ids the program lent it, unread.
    fn unread_bytes(&self) -> u64 {
        self.inner.unread_bytes()
    }

    /// Takes in a forked child's `proven_chunks()`; False when `data` is not that.
    fn add_proven_chunks(&self, data: &[u8]) -> bool {
        self.inner.add_proven_chunks(data)
    }

    /// Seals the pack being written, durably.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).map_err(store_error)
    }

    /// Commits a snapshot: `manifest` is JSON with `"records": [ids]`, every one already stored.
    /// Returns the snapshot's id. The snapshot is visible to readers only once this returns.
    fn commit(&self, py: Python<'_>, manifest: &[u8]) -> PyResult<String> {
        let id = py
            .detach(|| self.inner.commit(manifest))
            .map_err(store_error)?;
        Ok(id.to_hex())
    }

    /// The ids of all snapshots (in id order; their manifests say when they were taken).
    fn snapshot_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let ids = py
            .detach(|| self.inner.snapshot_ids())
            .map_err(store_error)?;
        Ok(ids.iter().map(Id::to_hex).collect())
    }

    /// A snapshot's manifest JSON, verified.
    fn read_snapshot<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyBytes>> {
        let id = parse_id(id)?;
        let json = py
            .detach(|| self.inner.read_snapshot(&id))
            .map_err(store_error)?;
        Ok(PyBytes::new(py, &json))
    }

    /// Writes (or atomically replaces) a run document. `run_id`: letters, digits, `_` and `-`.
    fn put_run(&self, py: Python<'_>, run_id: &str, doc: &[u8]) -> PyResult<()> {
        py.detach(|| self.inner.put_run(run_id, doc))
            .map_err(store_error)
    }

    /// Every run document: `[(run_id, doc)]`, in run id order.
    fn runs<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyBytes>)>> {
        let runs = py.detach(|| self.inner.runs()).map_err(store_error)?;
        Ok(runs
            .into_iter()
            .map(|(id, doc)| (id, PyBytes::new(py, &doc)))
            .collect())
    }

    /// Reads and checks the whole store. `progress(bytes_done, bytes_total)` is called as packs
    /// are read. Returns `{"packs", "blobs", "snapshots", "bytes", "problems", "notes"}`, each
    /// problem or note `{"kind", "id", "path", "detail", "needed_by": [[snapshot, record]]}`;
    /// an exception from `progress` stops reporting and is raised at the end.
    #[pyo3(signature = (progress = None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let report = with_progress(py, progress, |report_progress| {
            self.inner.verify(report_progress)
        })?;
        report_dict(py, &report)
    }

    /// `verify` of the store at `path`, which need not open: a missing or damaged config is
    /// reported as a problem. Raises `StoreNotFound` when there is no store at all.
    #[staticmethod]
    #[pyo3(signature = (path, progress = None))]
    fn check<'py>(
        py: Python<'py>,
        path: PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let report = with_progress(py, progress, |report_progress| {
            Store::check(&path, report_progress)
        })?;
        report_dict(py, &report)
    }

    /// Makes the store at `path` whole (see `relive repair`). Returns `(actions, report)`: one
    /// line per thing done, and `verify`'s report of the store afterwards.
    #[staticmethod]
    #[pyo3(signature = (path, progress = None))]
    fn repair<'py>(
        py: Python<'py>,
        path: PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(Vec<String>, Bound<'py, PyDict>)> {
        let repaired = with_progress(py, progress, |report_progress| {
            Store::repair(&path, report_progress)
        })?;
        Ok((repaired.actions, report_dict(py, &repaired.report)?))
    }

    /// Copies `snapshots` (hex ids, with every record and chunk they need) and the run
    /// documents `runs` into `dst`, transferring only blobs `dst` lacks. `progress(done,
    /// total)` counts blob bytes. Returns `{"snapshots", "objects", "bytes"}` written.
    #[pyo3(signature = (dst, snapshots, runs, progress = None))]
    fn copy_to<'py>(
        &self,
        py: Python<'py>,
        dst: &PyStore,
        snapshots: Vec<String>,
        runs: Vec<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ids = snapshots
            .iter()
            .map(|s| parse_id(s))
            .collect::<PyResult<Vec<Id>>>()?;
        let report = with_progress(py, progress, |report_progress| {
            self.inner.copy_to(&dst.inner, &ids, &runs, report_progress)
        })?;
        let dict = PyDict::new(py);
        dict.set_item("snapshots", report.snapshots)?;
        dict.set_item("objects", report.objects)?;
        dict.set_item("bytes", report.bytes)?;
        Ok(dict)
    }

    /// Forgets the snapshots `forget` (hex ids) and reclaims packs no remaining snapshot
    /// uses, in two phases (see `relive prune`): packs named by a prune more than `grace_s`
    /// seconds ago are deleted if still unused, others are named for a later prune; `grace_s`
    /// 0 deletes at once. Returns `{"forgotten", "packs_deleted", "bytes_freed",
    /// "packs_pending", "bytes_pending", "bytes_kept_unused"}`.
    #[pyo3(signature = (forget, grace_s, dry_run = false))]
    fn prune<'py>(
        &self,
        py: Python<'py>,
        forget: Vec<String>,
        grace_s: f64,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ids = forget
            .iter()
            .map(|s| parse_id(s))
            .collect::<PyResult<Vec<Id>>>()?;
        let grace = std::time::Duration::from_secs_f64(grace_s.max(0.0));
        let r = py
            .detach(|| self.inner.prune(&ids, grace, dry_run))
            .map_err(store_error)?;
        let dict = PyDict::new(py);
        dict.set_item("forgotten", r.forgotten)?;
        dict.set_item("packs_deleted", r.packs_deleted)?;
        dict.set_item("bytes_freed", r.bytes_freed)?;
        dict.set_item("packs_pending", r.packs_pending)?;
        dict.set_item("bytes_pending", r.bytes_pending)?;
        dict.set_item("bytes_kept_unused", r.bytes_kept_unused)?;
        Ok(dict)
    }

    /// Creates the store at `path` with this one's chunk size, or opens it if it exists.
    fn create_like(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyStore> {
        let chunk_size = self.inner.chunk_size();
        let inner = py
            .detach(|| Store::create_with_chunk_size(&path, chunk_size))
            .map_err(store_error)?;
        Ok(PyStore { inner })
    }

    fn __repr__(&self) -> String {
        format!("Store({:?})", self.inner.path().display().to_string())
    }
}

/// Runs `work` without the GIL, passing it a progress callback that calls `progress` (with the
/// GIL) until that raises; the exception is raised when `work` is done.
fn with_progress<T>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    work: impl FnOnce(&mut dyn FnMut(u64, u64)) -> relive_store::Result<T> + Send,
) -> PyResult<T>
where
    T: Send,
{
    let mut callback_error: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut report_progress = |done: u64, total: u64| {
            if let (Some(callback), None) = (&progress, &callback_error) {
                Python::attach(|py| {
                    if let Err(e) = callback.call1(py, (done, total)) {
                        callback_error = Some(e);
                    }
                });
            }
        };
        work(&mut report_progress)
    });
    if let Some(e) = callback_error {
        return Err(e);
    }
    result.map_err(store_error)
}

fn report_dict<'py>(py: Python<'py>, report: &VerifyReport) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("packs", report.packs)?;
    dict.set_item("blobs", report.blobs)?;
    dict.set_item("snapshots", report.snapshots)?;
    dict.set_item("bytes", report.bytes)?;
    dict.set_item("problems", problem_list(py, &report.problems)?)?;
    dict.set_item("notes", problem_list(py, &report.notes)?)?;
    Ok(dict)
}

fn problem_list<'py>(py: Python<'py>, problems: &[Problem]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for p in problems {
        let problem = PyDict::new(py);
        problem.set_item("kind", &p.kind)?;
        problem.set_item("id", &p.id)?;
        problem.set_item("path", p.path.as_os_str())?;
        problem.set_item("detail", &p.detail)?;
        problem.set_item("needed_by", &p.needed_by)?;
        list.append(problem)?;
    }
    Ok(list)
}

impl PyStore {
    fn load_buffer<'py>(&self, py: Python<'py>, buffer: &BufferRef) -> PyResult<Bound<'py, PyAny>> {
        let len = usize::try_from(buffer.len).map_err(|_| {
            PyValueError::new_err(format!(
                "a buffer of {} bytes does not fit in memory",
                buffer.len
            ))
        })?;
        if len < MAPPED_FROM {
            // The new bytearray is reachable from nowhere else yet, so no Python code can
            // resize or read it while it is filled without the GIL.
            let array = PyByteArray::new_with(py, len, |out| {
                py.detach(|| self.inner.read_buffer_into(buffer, out))
                    .map_err(store_error)
            })?;
            return Ok(array.into_any());
        }
        let mut mapped = LoadedBuffer::new(len)
            .map_err(|err| PyMemoryError::new_err(format!("cannot map {len} bytes: {err}")))?;
        py.detach(|| self.inner.read_buffer_into(buffer, mapped.bytes_mut()))
            .map_err(store_error)?;
        Ok(Bound::new(py, mapped)?.into_any())
    }
}

/// A buffer-protocol view of `obj`, which must be C-contiguous.
fn contiguous(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<PyUntypedBuffer> {
    let view = PyUntypedBuffer::get(obj).map_err(|e| {
        if !e.is_instance_of::<PyTypeError>(obj.py()) {
            return e; // the exporter's own refusal (a released view, ...) says more
        }
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "{what} is a {type_name}, which does not support the buffer protocol \
             (pass bytes, bytearray, a memoryview or PickleBuffer.raw())"
        ))
    })?;
    if !view.is_c_contiguous() {
        return Err(PyBufferError::new_err(format!(
            "{what} is not C-contiguous: pass a contiguous copy (e.g. numpy.ascontiguousarray)"
        )));
    }
    Ok(view)
}

impl PyStore {
    /// Calls `f` with the payload's bytes and each of `buffers` as a `BufferSource`: a
    /// `(record_id, index)` pair names a stored record's buffer (each record read once), any
    /// other item is bytes. As `with_record_bytes`, within which `f` runs.
    fn with_sources<R>(
        &self,
        payload: &Bound<'_, PyAny>,
        buffers: &[Bound<'_, PyAny>],
        f: impl FnOnce(&[u8], &[BufferSource<'_>]) -> R,
    ) -> PyResult<R> {
        let mut stored = Vec::with_capacity(buffers.len());
        let mut bytes = Vec::new();
        let mut records = std::collections::HashMap::new();
        for buffer in buffers {
            match buffer.extract::<(String, usize)>() {
                Ok((record, index)) => {
                    let found = match records.entry(record.clone()) {
                        std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                        std::collections::hash_map::Entry::Vacant(slot) => slot.insert(
                            self.inner
                                .get_record(&parse_id(&record)?)
                                .map_err(store_error)?,
                        ),
                    };
                    let buffer = found.buffers.get(index).cloned().ok_or_else(|| {
                        PyValueError::new_err(format!("record {record} has no buffer {index}"))
                    })?;
                    stored.push(Some(buffer));
                }
                Err(_) => {
                    stored.push(None);
                    bytes.push(buffer.clone());
                }
            }
        }
        with_record_bytes(payload, &bytes, |payload, slices| {
            let mut slices = slices.iter();
            let sources: Vec<BufferSource<'_>> = stored
                .into_iter()
                .map(|s| match s {
                    Some(buffer) => BufferSource::Stored(buffer),
                    None => BufferSource::Bytes(slices.next().expect("one slice per buffer")),
                })
                .collect();
            f(payload, &sources)
        })
    }
}

/// `f` over the bytes of a record's `payload` and `buffers` (each C-contiguous), which stand
/// still while it runs: the GIL is held throughout (see `bytes_of`).
fn with_record_bytes<R>(
    payload: &Bound<'_, PyAny>,
    buffers: &[Bound<'_, PyAny>],
    f: impl FnOnce(&[u8], &[&[u8]]) -> R,
) -> PyResult<R> {
    let payload_view = contiguous(payload, "the payload")?;
    let views = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| contiguous(b, &format!("buffer {i}")))
        .collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = views.iter().map(bytes_of).collect();
    Ok(f(bytes_of(&payload_view), &slices))
}

/// The bytes of a C-contiguous view.
fn bytes_of(view: &PyUntypedBuffer) -> &[u8] {
    let (ptr, len) = (view.buf_ptr().cast::<u8>().cast_const(), view.len_bytes());
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: a buffer exporter guarantees `buf` points to `len` readable bytes, laid out
    // contiguously (checked by `contiguous`), for as long as the view is held; the returned slice
    // borrows the view, so it cannot outlive it. Nothing mutates the bytes while the slice lives:
    // it is only used inside `with_record_bytes`, whose callers (`put_record`, `stage_record`)
    // hold the GIL and never call back into Python, and the module declares `gil_used`, so no
    // Python thread can run in the meantime.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

fn parse_id(id: &str) -> PyResult<Id> {
    Id::from_hex(id).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{id:?} is not a relive id (expected 64 hex digits)"
        ))
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()
}
