//! Conversions of Python token sequences to Rust slices: int32 numpy arrays are borrowed
//! without a copy; lists, tuples, other integer arrays and sequences are converted once.
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::{dtype_error, token_error};

/// Token ids taken from Python, borrowed when possible.
pub(crate) enum Tokens<'py> {
    Borrowed(PyReadonlyArray1<'py, i32>),
    Owned(Vec<i32>),
}

impl Tokens<'_> {
    pub(crate) fn as_slice(&self) -> &[i32] {
        match self {
            // A readonly 1-D view of a contiguous array: `as_slice` cannot fail here because
            // `extract_tokens` only borrows contiguous arrays.
            Tokens::Borrowed(array) => array.as_slice().unwrap_or(&[]),
            Tokens::Owned(vec) => vec,
        }
    }
    /// Owned copy, for work done with the GIL released.
    pub(crate) fn into_vec(self) -> Vec<i32> {
        match self {
            Tokens::Borrowed(array) => array.as_slice().map(<[i32]>::to_vec).unwrap_or_default(),
            Tokens::Owned(vec) => vec,
        }
    }
}

fn checked(py: Python<'_>, values: impl IntoIterator<Item = i64>) -> PyResult<Vec<i32>> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, v)| i32::try_from(v).ok().filter(|t| *t >= 0).ok_or_else(|| token_error(py, index, v)))
        .collect()
}

/// Accepts a 1-D numpy array of any integer dtype (int32 contiguous is borrowed), or any
/// Python sequence of ints. Floats, bools and other dtypes raise `DTypeError`; negative or
/// too-large ids raise `InvalidTokenError`.
pub(crate) fn extract_tokens<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Tokens<'py>> {
    let py = obj.py();
    // Lists and tuples of plain ints are the common case: read them directly, before the
    // numpy probes below (a failed `hasattr` costs a Python exception per call).
    if let Some(tokens) = plain_int_sequence(obj) {
        return checked(py, tokens).map(Tokens::Owned);
    }
    if let Ok(array) = obj.cast::<PyArray1<i32>>() {
        let view = array.readonly();
        if view.is_contiguous() {
            if let Some(index) = view.as_slice()?.iter().position(|t| *t < 0) {
                return Err(token_error(py, index, i64::from(view.as_slice()?[index])));
            }
            return Ok(Tokens::Borrowed(view));
        }
        return Ok(Tokens::Owned(checked(py, view.as_array().iter().map(|t| i64::from(*t)))?));
    }
    if let Ok(array) = obj.cast::<PyArray1<i64>>() {
        return Ok(Tokens::Owned(checked(py, array.readonly().as_array().iter().copied())?));
    }
    if obj.hasattr("dtype")? && obj.hasattr("ndim")? {
        // Another numpy array (or an array-like with a dtype): name the problem precisely.
        let dtype = obj.getattr("dtype")?.str()?.to_string();
        let ndim: usize = obj.getattr("ndim")?.extract().unwrap_or(0);
        let is_integer = obj
            .getattr("dtype")?
            .getattr("kind")
            .and_then(|k| k.extract::<String>())
            .map(|k| k == "i" || k == "u")
            .unwrap_or(false);
        if ndim != 1 {
            return Err(dtype_error(py, format!("{what} must be 1-D, got an array with {ndim} dimensions")));
        }
        if !is_integer {
            return Err(dtype_error(py, format!("{what} must hold integer token ids, got dtype {dtype}")));
        }
        let values: Vec<i64> = obj.call_method1("astype", ("int64",))?.call_method0("tolist")?.extract()?;
        return checked(py, values).map(Tokens::Owned);
    }
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBytes>() {
        return Err(dtype_error(py, format!("{what} must be a sequence of int token ids, not a string")));
    }
    match obj.extract::<Vec<Bound<'py, PyAny>>>() {
        Ok(items) => {
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                if item.is_instance_of::<pyo3::types::PyBool>()
                    || !item.is_instance_of::<pyo3::types::PyInt>()
                {
                    let type_name = item.get_type().name()?.to_string();
                    return Err(dtype_error(
                        py,
                        format!("{what} must hold int token ids, got {type_name} at index {index}"),
                    ));
                }
                match item.extract::<i64>() {
                    Ok(v) => values.push(v),
                    Err(_) => return Err(token_error(py, index, i64::MAX)),
                }
            }
            checked(py, values).map(Tokens::Owned)
        }
        Err(_) => {
            let type_name = obj.get_type().name()?.to_string();
            Err(dtype_error(
                py,
                format!("{what} must be a list or 1-D int32 array of token ids, got {type_name}"),
            ))
        }
    }
}

/// The items of a list or tuple when every item is an exact `int` (not a bool) fitting i64;
/// `None` sends anything else through the general (error-reporting) path.
fn plain_int_sequence(obj: &Bound<'_, PyAny>) -> Option<Vec<i64>> {
    let read = |item: Bound<'_, PyAny>| -> Option<i64> {
        if item.is_exact_instance_of::<pyo3::types::PyInt>() {
            item.extract::<i64>().ok()
        } else {
            None
        }
    };
    if let Ok(list) = obj.cast::<pyo3::types::PyList>() {
        return list.iter().map(read).collect();
    }
    if let Ok(tuple) = obj.cast::<pyo3::types::PyTuple>() {
        return tuple.iter().map(read).collect();
    }
    None
}
