//! The one error type of the bindings and its mapping onto the Python `suffixspec.errors`
//! hierarchy (each class also derives from the matching builtin).
//!
//! Every conversion and every binding returns [`Result`], so `?` works on core errors
//! (`CacheError`, `TreeError`), on Python errors and on the bindings' own checks alike; the
//! conversion to a Python exception happens once, in `From<Error> for PyErr`. The exception
//! classes are imported handles, loaded (and checked) once when the module is initialised, so a
//! misspelt class name cannot compile and a broken package fails at import, not at raise time.
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use suffixspec_cache::CacheError;
use suffixspec_scheduler::SchedulerError;
use suffixspec_tree::TreeError;

pyo3::import_exception!(suffixspec.errors, DTypeError);
pyo3::import_exception!(suffixspec.errors, DuplicateRequestError);
pyo3::import_exception!(suffixspec.errors, InvalidParameterError);
pyo3::import_exception!(suffixspec.errors, InvalidTokenError);
pyo3::import_exception!(suffixspec.errors, InvalidTreeError);
pyo3::import_exception!(suffixspec.errors, UnknownRequestError);

/// Loads every exception class once at module init: a missing class is an `ImportError` of
/// `suffixspec._native` instead of a panic at the first raise.
pub(crate) fn load(py: Python<'_>) -> PyResult<()> {
    let module = py.import("suffixspec.errors")?;
    for name in [
        "DTypeError",
        "DuplicateRequestError",
        "InvalidParameterError",
        "InvalidTokenError",
        "InvalidTreeError",
        "UnknownRequestError",
    ] {
        module.getattr(name)?;
    }
    Ok(())
}

/// Why a native call failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// An exception already raised by Python (propagated as is).
    Py(PyErr),
    Cache(CacheError),
    Tree(TreeError),
    Scheduler(SchedulerError),
    /// A value of the wrong type, dtype or shape.
    DType(String),
    /// A token id outside `0..=i32::MAX` (the message names the value and its index).
    Token(String),
    /// A parameter out of its range.
    Parameter(String),
    /// A broken invariant of suffixspec itself (a caught panic, a poisoned object).
    Internal(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl From<PyErr> for Error {
    fn from(err: PyErr) -> Self {
        Error::Py(err)
    }
}

impl From<CacheError> for Error {
    fn from(err: CacheError) -> Self {
        Error::Cache(err)
    }
}

impl From<SchedulerError> for Error {
    fn from(err: SchedulerError) -> Self {
        Error::Scheduler(err)
    }
}

impl From<TreeError> for Error {
    fn from(err: TreeError) -> Self {
        Error::Tree(err)
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> Self {
        match err {
            Error::Py(err) => err,
            Error::Cache(err) => {
                let message = err.to_string();
                match err {
                    CacheError::UnknownRequest(_) => UnknownRequestError::new_err(message),
                    CacheError::DuplicateRequest(_) => DuplicateRequestError::new_err(message),
                    CacheError::InvalidToken { .. } => InvalidTokenError::new_err(message),
                    CacheError::InvalidParameter { .. } => InvalidParameterError::new_err(message),
                }
            }
            // Inconsistent trees -> InvalidTreeError, bad token ids -> InvalidTokenError,
            // out-of-range node indices and parameters -> InvalidParameterError.
            Error::Tree(err) => {
                let message = err.to_string();
                match err {
                    TreeError::LengthMismatch { .. }
                    | TreeError::InvalidParent { .. }
                    | TreeError::InvalidProb { .. } => InvalidTreeError::new_err(message),
                    TreeError::InvalidToken { .. } => InvalidTokenError::new_err(message),
                    TreeError::NodeOutOfRange { .. } | TreeError::InvalidParameter { .. } => {
                        InvalidParameterError::new_err(message)
                    }
                }
            }
            Error::Scheduler(err) => {
                let message = err.to_string();
                match err {
                    SchedulerError::UnknownRequest(_) => UnknownRequestError::new_err(message),
                    SchedulerError::DuplicateRequest(_) => DuplicateRequestError::new_err(message),
                    SchedulerError::InvalidTree { .. } => InvalidTreeError::new_err(message),
                    SchedulerError::InvalidParameter { .. }
                    | SchedulerError::OutOfBlocks { .. }
                    | SchedulerError::StepOrder(_) => InvalidParameterError::new_err(message),
                }
            }
            Error::DType(message) => DTypeError::new_err(message),
            Error::Token(message) => InvalidTokenError::new_err(message),
            Error::Parameter(message) => InvalidParameterError::new_err(message),
            Error::Internal(message) => PyRuntimeError::new_err(message),
        }
    }
}
