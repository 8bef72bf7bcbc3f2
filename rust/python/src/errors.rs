//! The one error-mapping file: every Rust error becomes an exception of the Python
//! `suffixspec.errors` hierarchy (each class also derives from the matching builtin).
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use suffixspec_cache::CacheError;

/// Builds an instance of `suffixspec.errors.<class_name>` with `message`.
pub(crate) fn new_error(py: Python<'_>, class_name: &str, message: String) -> PyErr {
    let class = py
        .import("suffixspec.errors")
        .and_then(|module| module.getattr(class_name))
        .and_then(|class| class.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, message),
        // Only reachable when the Python package is broken; still never a panic.
        Err(import_error) => PyRuntimeError::new_err(format!(
            "{message} (and suffixspec.errors.{class_name} could not be loaded: {import_error})"
        )),
    }
}

pub(crate) fn cache_error(py: Python<'_>, err: CacheError) -> PyErr {
    let class = match &err {
        CacheError::UnknownRequest(_) => "UnknownRequestError",
        CacheError::DuplicateRequest(_) => "DuplicateRequestError",
        CacheError::InvalidToken { .. } => "InvalidTokenError",
        CacheError::InvalidParameter { .. } => "InvalidParameterError",
    };
    new_error(py, class, err.to_string())
}

/// A wrong array dtype or a non-integer sequence.
pub(crate) fn dtype_error(py: Python<'_>, message: String) -> PyErr {
    new_error(py, "DTypeError", message)
}

/// A token id outside `0..=i32::MAX` (checked while converting Python input).
pub(crate) fn token_error(py: Python<'_>, index: usize, token: i64) -> PyErr {
    cache_error(py, CacheError::InvalidToken { index, token })
}

/// Token-tree errors: inconsistent trees -> `InvalidTreeError`, bad token ids ->
/// `InvalidTokenError`, out-of-range node indices and parameters -> `InvalidParameterError`.
pub(crate) fn tree_error(py: Python<'_>, err: suffixspec_tree::TreeError) -> PyErr {
    use suffixspec_tree::TreeError;
    let class = match &err {
        TreeError::LengthMismatch { .. }
        | TreeError::InvalidParent { .. }
        | TreeError::InvalidProb { .. } => "InvalidTreeError",
        TreeError::InvalidToken { .. } => "InvalidTokenError",
        TreeError::NodeOutOfRange { .. } | TreeError::InvalidParameter { .. } => "InvalidParameterError",
    };
    new_error(py, class, err.to_string())
}
