//! The one place that releases the GIL around native work.
use pyo3::prelude::*;

/// Runs `f` with the GIL released. `f` must not touch Python objects; every argument it
/// needs is converted to Rust data before the call. Panics inside `f` are caught and turned
/// into a Python `RuntimeError` by the caller's error mapping (see `errors::from_panic`).
pub(crate) fn without_gil<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(f)
}
