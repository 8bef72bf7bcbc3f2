//! The CUDA sources of `cuda/`, embedded in the native module so that they reach every
//! installed wheel; `suffixspec.kernels` compiles them at run time with CuPy (NVRTC).
use pyo3::prelude::*;

use crate::errors::{Error, Result};

/// (file name, text) of every `.cu` file shipped.
const SOURCES: &[(&str, &str)] = &[("tree_attention.cu", include_str!("../../../cuda/tree_attention.cu"))];

/// Text of a `.cu` file of `cuda/` embedded in the native module.
#[pyfunction]
fn cuda_source(name: &str) -> Result<&'static str> {
    SOURCES.iter().find(|(file, _)| *file == name).map(|(_, text)| *text).ok_or_else(|| {
        let known: Vec<&str> = SOURCES.iter().map(|(file, _)| *file).collect();
        Error::Parameter(format!("no embedded CUDA source named {name:?} (known: {known:?})"))
    })
}

/// Names of the embedded `.cu` files.
#[pyfunction]
fn cuda_source_names() -> Vec<&'static str> {
    SOURCES.iter().map(|(file, _)| *file).collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cuda_source, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_source_names, m)?)?;
    Ok(())
}
