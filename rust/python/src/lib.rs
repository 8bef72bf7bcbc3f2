//! `suffixspec._native`: thin PyO3 glue over the pure-Rust crates.
//!
//! One file per exposed area (`cache`, `tree`, `kernels`), one error-mapping file (`errors`),
//! one GIL helper (`gil`) and one array-conversion helper (`arrays`).
use pyo3::prelude::*;

mod arrays;
mod cache;
mod errors;
mod gil;
mod kernels;
mod scheduler;
mod tree;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    cache::register(m)?;
    tree::register(m)?;
    kernels::register(m)?;
    scheduler::register(m)?;
    Ok(())
}
