//! The one place that releases the GIL around native work.
use pyo3::prelude::*;

/// Runs `f` with the GIL released. `f` must not touch Python objects; every argument it
/// needs is converted to Rust data before the call. Callers that can panic catch it inside
/// `f` and map it to a Python `RuntimeError` (a panic never crosses the FFI boundary).
pub(crate) fn without_gil<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(f)
}
