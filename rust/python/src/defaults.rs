//! `SPEC_DEFAULTS`: the core crate's drafting defaults as a dict, read by `suffixspec.SpecConfig`.
use pyo3::prelude::*;
use pyo3::types::PyDict;
use suffixspec_cache::defaults as d;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let dict = PyDict::new(py);
    dict.set_item("max_depth", d::MAX_DEPTH)?;
    dict.set_item("max_spec_tokens", d::MAX_SPEC_TOKENS)?;
    dict.set_item("max_spec_factor", d::MAX_SPEC_FACTOR)?;
    dict.set_item("max_spec_offset", d::MAX_SPEC_OFFSET)?;
    dict.set_item("min_token_prob", d::MIN_TOKEN_PROB)?;
    dict.set_item("use_tree_spec", d::USE_TREE_SPEC)?;
    dict.set_item("max_tree_nodes", d::MAX_TREE_NODES)?;
    dict.set_item("drafter", d::DRAFTER)?;
    dict.set_item("min_match_len", d::MIN_MATCH_LEN)?;
    dict.set_item("max_cached_requests", d::MAX_CACHED_REQUESTS)?;
    dict.set_item("max_cached_tokens", d::MAX_CACHED_TOKENS)?;
    m.add("SPEC_DEFAULTS", dict)
}
