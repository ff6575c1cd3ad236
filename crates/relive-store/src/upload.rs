//! Packs going up to a remote store in the background: the writer fills the next pack while
//! the last ones upload (each in parallel parts), at most [`IN_FLIGHT`] at a time. Every
//! upload is joined before a manifest is written ([`crate::Store::flush`]), so a snapshot is
//! still committed only after all its data is durable.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use crate::backend::Backend;
use crate::error::Result;
use crate::id::Id;

/// Packs uploading at once (each of up to 64 MiB, sent in 8 MiB parts at once).
const IN_FLIGHT: usize = 3;

type Pending = VecDeque<(Id, JoinHandle<Result<()>>)>;

pub(crate) struct Uploads {
    /// The process that started them: after `fork` the child has none of its parent's threads.
    pending: Mutex<(u32, Pending)>,
}

impl Uploads {
    pub(crate) fn new() -> Uploads {
        Uploads {
            pending: Mutex::new((std::process::id(), VecDeque::new())),
        }
    }

    /// Uploads `staged` as `name` in the background, then waits until at most [`IN_FLIGHT`]
    /// uploads remain. Err: an upload that failed, with its pack's id.
    pub(crate) fn start(
        &self,
        backend: &Arc<dyn Backend>,
        id: Id,
        name: String,
        staged: PathBuf,
    ) -> Result<(), (Id, crate::Error)> {
        let spawned = {
            let backend = Arc::clone(backend);
            let (name, staged) = (name.clone(), staged.clone());
            thread::Builder::new()
                .name("relive-upload".into())
                .spawn(move || backend.put_file(&name, &staged))
        };
        match spawned {
            Ok(handle) => self.lock().1.push_back((id, handle)),
            // No thread: this one uploads.
            Err(_) => backend.put_file(&name, &staged).map_err(|e| (id, e))?,
        }
        self.wait_until(IN_FLIGHT)
    }

    /// Waits for every upload. Err: the first that failed, with its pack's id (the others are
    /// waited for all the same).
    pub(crate) fn finish(&self) -> Result<(), (Id, crate::Error)> {
        self.wait_until(0)
    }

    fn wait_until(&self, left: usize) -> Result<(), (Id, crate::Error)> {
        let mut first_error = None;
        loop {
            let next = {
                let mut pending = self.lock();
                if pending.1.len() <= left {
                    break;
                }
                pending.1.pop_front()
            };
            let Some((id, handle)) = next else { break };
            let result = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if let (Err(e), None) = (result, &first_error) {
                first_error = Some((id, e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, Pending)> {
        let mut guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        if guard.0 != pid {
            // Inherited across fork: those threads are not in this process.
            std::mem::forget(std::mem::take(&mut guard.1));
            guard.0 = pid;
        }
        guard
    }
}
