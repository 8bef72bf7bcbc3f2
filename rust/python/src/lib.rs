//! `suffixspec._native`: thin PyO3 glue over the pure-Rust crates.
//!
//! One file per exposed area (`cache`, `tree`, `kernels`, `defaults`), one error type (`errors`),
//! one GIL helper (`gil`) and one conversion path for every Python input (`convert`).
use pyo3::prelude::*;

mod cache;
mod convert;
mod defaults;
mod errors;
mod gil;
mod kernels;
mod scheduler;
mod tree;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::load(m.py())?;
    cache::register(m)?;
    defaults::register(m)?;
    tree::register(m)?;
    kernels::register(m)?;
    scheduler::register(m)?;
    Ok(())
}
