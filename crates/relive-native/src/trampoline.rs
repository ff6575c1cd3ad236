//! `relive._native.InitThen`: the C call a resumed `__init__` runs under, as it ran under
//! `type.__call__`.
//!
//! `obj = Cls(...)` runs `Cls.__init__` from C (`type.__call__`), whose only state of its own
//! is the new object it returns once `__init__` has returned None. A caller resumed inside
//! such a call calls `InitThen(init, obj)` where it called the class: `init` (the `__init__`
//! frame's resume function) runs, called from C as before with no frame of relive's between,
//! and the call returns `obj`, so the caller's `obj = Cls(...)` gets the object as it would have.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

#[pyclass(frozen, weakref, name = "InitThen", module = "relive._native")]
pub struct InitThen {
    #[pyo3(get)]
    init: Py<PyAny>,
    #[pyo3(get)]
    obj: Py<PyAny>,
}

#[pymethods]
impl InitThen {
    #[new]
    fn new(init: Py<PyAny>, obj: Py<PyAny>) -> Self {
        InitThen { init, obj }
    }

    /// Any arguments (the resumed caller passes dummies shaped like its original call).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let result = self.init.bind(py).call0()?;
        if !result.is_none() {
            // What type.__call__ says of an __init__ that returned something.
            let name = result.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "__init__() should return None, not '{name}'"
            )));
        }
        Ok(self.obj.clone_ref(py))
    }
}
