//! relive's exceptions, and the mapping from store errors to them.
//!
//! ```text
//! ReliveError(Exception)
//! └── StoreError                 I/O errors, invalid arguments to the store
//!     ├── StoreNotFound          no store at the path
//!     ├── FormatError            written by a newer relive
//!     └── CorruptionError        an integrity check failed, or a blob is missing
//! ```

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use relive_store::Error;

create_exception!(
    relive._native,
    ReliveError,
    PyException,
    "Base class of relive's errors."
);
create_exception!(
    relive._native,
    StoreError,
    ReliveError,
    "A store could not be read or written."
);
create_exception!(
    relive._native,
    StoreNotFound,
    StoreError,
    "There is no relive store at the path."
);
create_exception!(
    relive._native,
    FormatError,
    StoreError,
    "The store was written by a newer relive; upgrade relive to read it."
);
create_exception!(
    relive._native,
    CorruptionError,
    StoreError,
    "Part of the store failed its integrity check or is missing; `relive verify` lists the damage."
);

/// The Python exception for a store error, carrying the store's message.
pub(crate) fn store_error(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::NotFound { .. } => StoreNotFound::new_err(message),
        Error::FormatTooNew { .. } => FormatError::new_err(message),
        Error::Corrupt { .. } | Error::MissingBlob { .. } | Error::ConfigMissing { .. } => {
            CorruptionError::new_err(message)
        }
        _ => StoreError::new_err(message),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ReliveError", py.get_type::<ReliveError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("StoreNotFound", py.get_type::<StoreNotFound>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("CorruptionError", py.get_type::<CorruptionError>())?;
    Ok(())
}
