//! Bindings of the suffix-tree cache: `Draft`, `SuffixCacheCore` and `SuffixTree`.
//!
//! Thin glue only. Every argument is converted and checked with the GIL held (so bad input
//! raises before any state is touched), then the work runs with the GIL released under an
//! interior `RwLock`: the pyclasses are `frozen` and `Sync`, so several Python threads can
//! share one cache. Panics never cross the FFI boundary: they become `RuntimeError`, and a
//! panic during a mutation marks the object broken (every later call raises).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use numpy::{IntoPyArray, PyArray1};
use parking_lot::RwLock;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PySlice, PyTuple};
use rayon::prelude::*;
use suffixspec_cache::{
    CacheConfig, CacheError, Draft, Drafter, SpecParams, SuffixCache, SuffixTree, TokenId,
    DEFAULT_MAX_CACHED_TOKENS,
};

use crate::arrays::extract_tokens;
use crate::errors::{cache_error, dtype_error, new_error};
use crate::gil::without_gil;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDraft>()?;
    m.add_class::<PySuffixCacheCore>()?;
    m.add_class::<PySuffixTree>()?;
    Ok(())
}

// --- Argument types: each raises a `suffixspec.errors` class on bad input. ---

fn invalid_parameter(py: Python<'_>, message: String) -> PyErr {
    new_error(py, "InvalidParameterError", message)
}

/// The value of a Python int (or an object with `__index__`, e.g. a numpy integer); `None` when
/// it does not fit in an i128. Bools and non-integers raise `DTypeError`.
fn int_value(obj: &Borrowed<'_, '_, PyAny>, what: &str) -> PyResult<Option<i128>> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(dtype_error(py, format!("{what} must be an int, not a bool")));
    }
    match obj.extract::<i128>() {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is_instance_of::<PyOverflowError>(py) => Ok(None),
        Err(_) => {
            let type_name = obj.get_type().name()?.to_string();
            Err(dtype_error(py, format!("{what} must be an int, got {type_name}")))
        }
    }
}

/// A request or sequence handle: an int in `0..2**64`.
#[derive(Debug, Clone, Copy)]
struct Handle(u64);

impl FromPyObject<'_, '_> for Handle {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        // Fast path: a plain int (bools are a subclass, so they are not exact ints).
        if obj.cast_exact::<PyInt>().is_ok() {
            if let Ok(value) = obj.extract::<u64>() {
                return Ok(Handle(value));
            }
        }
        match int_value(&obj, "a request handle")?.and_then(|v| u64::try_from(v).ok()) {
            Some(value) => Ok(Handle(value)),
            None => Err(invalid_parameter(
                obj.py(),
                format!("request handles must be ints in 0..2**64, got {}", obj.repr()?),
            )),
        }
    }
}

/// A non-negative count (sizes, budgets, token limits); ints too large for `usize` saturate,
/// as they mean "no limit" in every place a count is taken.
#[derive(Debug, Clone, Copy)]
struct Count(usize);

impl FromPyObject<'_, '_> for Count {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        let negative = match int_value(&obj, "a count")? {
            Some(value) if value >= 0 => return Ok(Count(usize::try_from(value).unwrap_or(usize::MAX))),
            Some(_) => true,
            None => obj.lt(0)?,
        };
        if negative {
            return Err(invalid_parameter(obj.py(), format!("counts must be >= 0, got {}", obj.repr()?)));
        }
        Ok(Count(usize::MAX))
    }
}

/// A real number (int, float or numpy scalar; not a bool). Ranges are checked by the core.
#[derive(Debug, Clone, Copy)]
struct Real(f64);

impl FromPyObject<'_, '_> for Real {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        if obj.is_instance_of::<PyBool>() {
            return Err(dtype_error(py, "expected a real number, not a bool".to_owned()));
        }
        match obj.extract::<f64>() {
            Ok(value) => Ok(Real(value)),
            Err(err) if err.is_instance_of::<PyOverflowError>(py) => {
                Err(invalid_parameter(py, format!("{} does not fit in a float", obj.repr()?)))
            }
            Err(_) => {
                let type_name = obj.get_type().name()?.to_string();
                Err(dtype_error(py, format!("expected a real number, got {type_name}")))
            }
        }
    }
}

/// A bool (Python or numpy).
#[derive(Debug, Clone, Copy)]
struct Flag(bool);

impl FromPyObject<'_, '_> for Flag {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        obj.extract::<bool>().map(Flag).map_err(|_| {
            let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            dtype_error(obj.py(), format!("expected a bool, got {type_name}"))
        })
    }
}

/// A drafting algorithm by name: ``"arctic"`` (arctic-inference's drafts, the default) or
/// ``"suffixspec"`` (drafts sized by expected acceptance; see ``Drafter`` in the core crate).
#[derive(Debug, Clone, Copy)]
struct DrafterName(Drafter);

impl FromPyObject<'_, '_> for DrafterName {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        let Ok(name) = obj.extract::<&str>() else {
            let type_name = obj.get_type().name()?.to_string();
            return Err(dtype_error(obj.py(), format!("drafter must be a str, got {type_name}")));
        };
        match name {
            "arctic" => Ok(DrafterName(Drafter::Arctic)),
            "suffixspec" => Ok(DrafterName(Drafter::Suffixspec)),
            other => Err(invalid_parameter(
                obj.py(),
                format!("unknown drafter {other:?}; known: \"arctic\", \"suffixspec\""),
            )),
        }
    }
}

fn spec_params(
    py: Python<'_>,
    max_spec_tokens: Count,
    max_spec_factor: Real,
    max_spec_offset: Real,
    min_token_prob: Real,
    use_tree_spec: Flag,
    drafter: DrafterName,
) -> PyResult<SpecParams> {
    let params = SpecParams {
        max_spec_tokens: max_spec_tokens.0,
        max_spec_factor: max_spec_factor.0,
        max_spec_offset: max_spec_offset.0,
        min_token_prob: min_token_prob.0,
        use_tree_spec: use_tree_spec.0,
        drafter: drafter.0,
    };
    params.validate().map_err(|err| cache_error(py, err))?;
    Ok(params)
}

/// Token ids as an owned vector (the work runs with the GIL released, or after the borrow of
/// the input ends). Plain lists and tuples of valid ints, what engines pass every step, are
/// read directly; anything else, or any item that is not a valid token id, goes through
/// `extract_tokens`, which handles every other input and names each problem.
fn owned_tokens(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<TokenId>> {
    let direct = if let Ok(list) = obj.cast_exact::<PyList>() {
        read_ints(list.iter())
    } else if let Ok(tuple) = obj.cast_exact::<PyTuple>() {
        read_ints(tuple.iter())
    } else {
        None
    };
    match direct {
        Some(tokens) => Ok(tokens),
        None => Ok(extract_tokens(obj, what)?.into_vec()),
    }
}

/// The items as token ids when each is a plain int in `0..2**31`; `None` otherwise.
fn read_ints<'py>(items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>) -> Option<Vec<TokenId>> {
    let mut tokens = Vec::with_capacity(items.len());
    for item in items {
        if item.cast_exact::<PyInt>().is_err() {
            return None;
        }
        match item.extract::<TokenId>() {
            Ok(token) if token >= 0 => tokens.push(token),
            _ => return None,
        }
    }
    Some(tokens)
}

/// The part of a context a draft can depend on: matches are at most `max_depth` tokens long, so
/// only the last `max_depth` tokens are read (and checked). Long lists are sliced before
/// conversion, which keeps the per-call cost independent of the context length. Copied, because
/// the work runs with the GIL released.
fn context_tail(context: &Bound<'_, PyAny>, max_depth: usize) -> PyResult<Vec<TokenId>> {
    // Lists, tuples, ranges, 1-D arrays: slice first (a view or a short copy). Anything that
    // cannot be sliced goes whole to `extract_tokens`, which names the problem.
    let window = match context.len() {
        Ok(len) if len > max_depth => context
            .get_item(PySlice::new(context.py(), (len - max_depth) as isize, len as isize, 1))
            .unwrap_or_else(|_| context.clone()),
        _ => context.clone(),
    };
    let mut tokens = owned_tokens(&window, "context")?;
    tokens.drain(..tokens.len().saturating_sub(max_depth));
    Ok(tokens)
}

// --- Interior locking, GIL release and panic containment. ---

/// Why a guarded call failed.
enum Failure {
    Cache(CacheError),
    Internal(String),
}

impl Failure {
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Cache(err) => cache_error(py, err),
            Failure::Internal(message) => PyRuntimeError::new_err(message),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("internal error in suffixspec: {detail}")
}

/// Largest mutation (in tokens) run without releasing the GIL: a few microseconds of work.
const KEEP_GIL_MAX_WORK: usize = 16;

/// A core object behind a `RwLock`, used with the GIL released.
#[derive(Debug)]
struct Guarded<T> {
    state: RwLock<T>,
    /// Set when a mutation panicked: the state may be half-updated, so it is not used again.
    broken: OnceLock<String>,
}

impl<T: Send + Sync> Guarded<T> {
    fn new(state: T) -> Self {
        Self { state: RwLock::new(state), broken: OnceLock::new() }
    }

    fn usable(&self) -> Result<(), Failure> {
        match self.broken.get() {
            Some(reason) => {
                Err(Failure::Internal(format!("this object is unusable after an earlier {reason}")))
            }
            None => Ok(()),
        }
    }

    /// Runs `f` under the read lock with the GIL released.
    fn read<R, F>(&self, py: Python<'_>, f: F) -> PyResult<R>
    where
        R: Send,
        F: Send + FnOnce(&T) -> Result<R, CacheError>,
    {
        without_gil(py, || {
            self.usable()?;
            catch_unwind(AssertUnwindSafe(|| f(&self.state.read())))
                .map_err(|payload| Failure::Internal(panic_message(payload.as_ref())))?
                .map_err(Failure::Cache)
        })
        .map_err(|failure| failure.into_pyerr(py))
    }

    /// Runs a short read-only `f` under the read lock with the GIL held (borrowed input).
    fn peek<R>(&self, py: Python<'_>, f: impl FnOnce(&T) -> R) -> PyResult<R> {
        self.usable().map_err(|failure| failure.into_pyerr(py))?;
        catch_unwind(AssertUnwindSafe(|| f(&self.state.read())))
            .map_err(|payload| PyRuntimeError::new_err(panic_message(payload.as_ref())))
    }

    /// Runs a mutation of `work` units (tokens): short ones keep the GIL, since releasing and
    /// re-taking it costs more than they do; long ones, or any that would wait for the lock,
    /// release it.
    fn write_sized<R, F>(&self, py: Python<'_>, work: usize, f: F) -> PyResult<R>
    where
        R: Send,
        F: Send + FnOnce(&mut T) -> Result<R, CacheError>,
    {
        if work > KEEP_GIL_MAX_WORK {
            return self.write(py, f);
        }
        let Some(mut state) = self.state.try_write() else { return self.write(py, f) };
        self.usable().map_err(|failure| failure.into_pyerr(py))?;
        match catch_unwind(AssertUnwindSafe(|| f(&mut state))) {
            Ok(result) => result.map_err(|err| cache_error(py, err)),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                let _ = self.broken.set(message.clone());
                Err(PyRuntimeError::new_err(message))
            }
        }
    }

    /// Runs `f` under the write lock with the GIL released.
    fn write<R, F>(&self, py: Python<'_>, f: F) -> PyResult<R>
    where
        R: Send,
        F: Send + FnOnce(&mut T) -> Result<R, CacheError>,
    {
        without_gil(py, || {
            self.usable()?;
            match catch_unwind(AssertUnwindSafe(|| f(&mut self.state.write()))) {
                Ok(result) => result.map_err(Failure::Cache),
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    let _ = self.broken.set(message.clone());
                    Err(Failure::Internal(message))
                }
            }
        })
        .map_err(|failure| failure.into_pyerr(py))
    }
}

// --- Draft ---

/// A speculated token tree (see ``suffixspec.SuffixCache.speculate``).
#[pyclass(frozen, name = "Draft", module = "suffixspec._native")]
#[derive(Debug)]
pub(crate) struct PyDraft {
    token_ids: Py<PyArray1<i32>>,
    parents: Py<PyArray1<i32>>,
    probs: Py<PyArray1<f64>>,
    score: f64,
    match_len: usize,
    len: usize,
}

impl PyDraft {
    /// Moves the draft's vectors into numpy arrays (no copy).
    fn new(py: Python<'_>, draft: Draft) -> Self {
        Self {
            len: draft.token_ids.len(),
            token_ids: draft.token_ids.into_pyarray(py).unbind(),
            parents: draft.parents.into_pyarray(py).unbind(),
            probs: draft.probs.into_pyarray(py).unbind(),
            score: draft.score,
            match_len: draft.match_len,
        }
    }
}

#[pymethods]
impl PyDraft {
    /// Draft token ids (int32), parents before children.
    #[getter]
    fn token_ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        self.token_ids.bind(py).clone()
    }
    /// Parent index of each node; -1 = child of the last context token. Parents first.
    #[getter]
    fn parents<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        self.parents.bind(py).clone()
    }
    /// Estimated probability that the model reaches each node (float64).
    #[getter]
    fn probs<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.probs.bind(py).clone()
    }
    /// Sum of ``probs``: the expected number of accepted tokens.
    #[getter]
    fn score(&self) -> f64 {
        self.score
    }
    /// Length of the context suffix the draft was matched on (0 when the draft is empty).
    #[getter]
    fn match_len(&self) -> usize {
        self.match_len
    }
    fn __len__(&self) -> usize {
        self.len
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Draft(token_ids={}, parents={}, score={}, match_len={})",
            self.token_ids.bind(py).call_method0("tolist")?,
            self.parents.bind(py).call_method0("tolist")?,
            self.score,
            self.match_len
        ))
    }
}

fn drafts_to_py(py: Python<'_>, drafts: Vec<Draft>) -> Vec<PyDraft> {
    drafts.into_iter().map(|draft| PyDraft::new(py, draft)).collect()
}

// --- SuffixCacheCore ---

/// The native cache, keyed by integer request handles (``suffixspec.SuffixCache`` wraps it with
/// arbitrary hashable request ids). Thread-safe; long calls release the GIL.
#[pyclass(frozen, name = "SuffixCacheCore", module = "suffixspec._native")]
#[derive(Debug)]
pub(crate) struct PySuffixCacheCore {
    cache: Guarded<SuffixCache>,
    config: CacheConfig,
}

#[pymethods]
impl PySuffixCacheCore {
    #[new]
    #[pyo3(signature = (max_depth = Count(64), max_cached_requests = None, max_cached_tokens = Count(DEFAULT_MAX_CACHED_TOKENS)))]
    #[pyo3(text_signature = "(max_depth=64, max_cached_requests=None, max_cached_tokens=4194304)")]
    fn new(
        py: Python<'_>,
        max_depth: Count,
        max_cached_requests: Option<Count>,
        max_cached_tokens: Count,
    ) -> PyResult<Self> {
        let config = CacheConfig {
            max_depth: max_depth.0,
            max_cached_requests: max_cached_requests.map(|c| c.0),
            max_cached_tokens: max_cached_tokens.0,
        };
        let cache = SuffixCache::new(config).map_err(|err| cache_error(py, err))?;
        Ok(Self { cache: Guarded::new(cache), config })
    }

    /// Depth of every tree: the longest match and the deepest draft node.
    #[getter]
    fn max_depth(&self) -> usize {
        self.config.max_depth
    }
    /// Most cached responses kept (``None`` = no limit, 0 = no global tree).
    #[getter]
    fn max_cached_requests(&self) -> Option<usize> {
        self.config.max_cached_requests
    }
    /// Most tokens of cached responses kept (0 = no global tree).
    #[getter]
    fn max_cached_tokens(&self) -> usize {
        self.config.max_cached_tokens
    }

    /// Starts request ``req`` and builds its local tree over the prompt.
    fn start_request(
        &self,
        py: Python<'_>,
        req: Handle,
        prompt_token_ids: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let prompt = extract_tokens(prompt_token_ids, "prompt_token_ids")?.into_vec();
        self.cache.write(py, |cache| cache.start_request(req.0, &prompt))
    }

    /// Appends generated tokens to active request ``req``.
    fn add_active_response(&self, py: Python<'_>, req: Handle, token_ids: &Bound<'_, PyAny>) -> PyResult<()> {
        let tokens = owned_tokens(token_ids, "token_ids")?;
        self.cache.write_sized(py, tokens.len(), |cache| cache.add_active_response(req.0, &tokens))
    }

    /// Stops active request ``req``; its response stays cached (budgets permitting).
    fn stop_request(&self, py: Python<'_>, req: Handle) -> PyResult<()> {
        self.cache.write(py, |cache| cache.stop_request(req.0))
    }

    /// Removes the cached response of ``req``.
    fn evict_cached_response(&self, py: Python<'_>, req: Handle) -> PyResult<()> {
        self.cache.write(py, |cache| cache.evict_cached_response(req.0))
    }

    /// Draft for active request ``req`` after ``context``.
    #[pyo3(signature = (req, context, max_spec_tokens, max_spec_factor = Real(1.0), max_spec_offset = Real(0.0), min_token_prob = Real(0.1), use_tree_spec = Flag(false), drafter = DrafterName(Drafter::Arctic)))]
    #[pyo3(
        text_signature = "(self, req, context, max_spec_tokens, max_spec_factor=1.0, max_spec_offset=0.0, min_token_prob=0.1, use_tree_spec=False, drafter='arctic')"
    )]
    #[allow(clippy::too_many_arguments)]
    fn speculate(
        &self,
        py: Python<'_>,
        req: Handle,
        context: &Bound<'_, PyAny>,
        max_spec_tokens: Count,
        max_spec_factor: Real,
        max_spec_offset: Real,
        min_token_prob: Real,
        use_tree_spec: Flag,
        drafter: DrafterName,
    ) -> PyResult<PyDraft> {
        let context = context_tail(context, self.config.max_depth)?;
        let params = spec_params(
            py,
            max_spec_tokens,
            max_spec_factor,
            max_spec_offset,
            min_token_prob,
            use_tree_spec,
            drafter,
        )?;
        let draft = self.cache.read(py, |cache| cache.speculate(req.0, &context, &params))?;
        Ok(PyDraft::new(py, draft))
    }

    /// All requests of one engine step in one call (GIL released, requests in parallel).
    #[pyo3(signature = (reqs, contexts, max_spec_tokens, max_spec_factor = Real(1.0), max_spec_offset = Real(0.0), min_token_prob = Real(0.1), use_tree_spec = Flag(false), drafter = DrafterName(Drafter::Arctic)))]
    #[pyo3(
        text_signature = "(self, reqs, contexts, max_spec_tokens, max_spec_factor=1.0, max_spec_offset=0.0, min_token_prob=0.1, use_tree_spec=False, drafter='arctic')"
    )]
    #[allow(clippy::too_many_arguments)]
    fn speculate_batch(
        &self,
        py: Python<'_>,
        reqs: Vec<Handle>,
        contexts: Vec<Bound<'_, PyAny>>,
        max_spec_tokens: Count,
        max_spec_factor: Real,
        max_spec_offset: Real,
        min_token_prob: Real,
        use_tree_spec: Flag,
        drafter: DrafterName,
    ) -> PyResult<Vec<PyDraft>> {
        if reqs.len() != contexts.len() {
            return Err(invalid_parameter(
                py,
                format!("got {} requests but {} contexts", reqs.len(), contexts.len()),
            ));
        }
        let contexts = contexts
            .iter()
            .map(|context| context_tail(context, self.config.max_depth))
            .collect::<PyResult<Vec<_>>>()?;
        let params = spec_params(
            py,
            max_spec_tokens,
            max_spec_factor,
            max_spec_offset,
            min_token_prob,
            use_tree_spec,
            drafter,
        )?;
        let drafts = self.cache.read(py, |cache| {
            reqs.par_iter()
                .zip(contexts.par_iter())
                .map(|(req, context)| cache.speculate(req.0, context, &params))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(drafts_to_py(py, drafts))
    }

    /// Active request handles, in start order.
    fn active_requests(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.cache.peek(py, SuffixCache::active_requests)
    }
    /// Cached request handles, oldest first.
    fn cached_requests(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.cache.peek(py, SuffixCache::cached_requests)
    }
    fn is_active(&self, py: Python<'_>, req: Handle) -> PyResult<bool> {
        self.cache.peek(py, |cache| cache.is_active(req.0))
    }
    fn is_cached(&self, py: Python<'_>, req: Handle) -> PyResult<bool> {
        self.cache.peek(py, |cache| cache.is_cached(req.0))
    }

    /// Keys: active_requests, cached_requests, tokens, cached_tokens, nodes, bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.cache.read(py, |cache| Ok(cache.stats()))?;
        let dict = PyDict::new(py);
        dict.set_item("active_requests", stats.active_requests)?;
        dict.set_item("cached_requests", stats.cached_requests)?;
        dict.set_item("tokens", stats.tokens)?;
        dict.set_item("cached_tokens", stats.cached_tokens)?;
        dict.set_item("nodes", stats.nodes)?;
        dict.set_item("bytes", stats.bytes)?;
        Ok(dict)
    }

    /// Raises RuntimeError describing the first broken invariant (debug aid).
    fn check_integrity(&self, py: Python<'_>) -> PyResult<()> {
        self.cache.read(py, |cache| Ok(cache.check_integrity()))?.map_err(PyRuntimeError::new_err)
    }

    fn __repr__(&self) -> String {
        format!(
            "SuffixCacheCore(max_depth={}, max_cached_requests={:?}, max_cached_tokens={})",
            self.config.max_depth, self.config.max_cached_requests, self.config.max_cached_tokens
        )
    }
}

// --- SuffixTree ---

/// One suffix tree over several sequences (the building block of the cache).
#[pyclass(frozen, name = "SuffixTree", module = "suffixspec._native")]
#[derive(Debug)]
pub(crate) struct PySuffixTree {
    tree: Guarded<SuffixTree>,
    max_depth: usize,
}

#[pymethods]
impl PySuffixTree {
    #[new]
    #[pyo3(signature = (max_depth = Count(64)))]
    #[pyo3(text_signature = "(max_depth=64)")]
    fn new(py: Python<'_>, max_depth: Count) -> PyResult<Self> {
        let tree = SuffixTree::new(max_depth.0).map_err(|err| cache_error(py, err))?;
        Ok(Self { tree: Guarded::new(tree), max_depth: max_depth.0 })
    }

    /// Longest substring counted (and deepest draft node).
    #[getter]
    fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Appends tokens to sequence ``seq_id`` (created on first use).
    fn extend(&self, py: Python<'_>, seq_id: Handle, token_ids: &Bound<'_, PyAny>) -> PyResult<()> {
        let tokens = owned_tokens(token_ids, "token_ids")?;
        self.tree.write_sized(py, tokens.len(), |tree| tree.extend(seq_id.0, &tokens))
    }

    /// Removes sequence ``seq_id`` and all its counts.
    fn remove(&self, py: Python<'_>, seq_id: Handle) -> PyResult<()> {
        self.tree.write(py, |tree| tree.remove(seq_id.0))
    }

    /// Occurrences of the string (0 if empty, absent or longer than max_depth).
    fn count(&self, py: Python<'_>, token_ids: &Bound<'_, PyAny>) -> PyResult<u64> {
        let tokens = extract_tokens(token_ids, "token_ids")?;
        self.tree.peek(py, |tree| tree.count(tokens.as_slice()))
    }

    /// Draft after ``context`` from this tree alone.
    #[pyo3(signature = (context, max_spec_tokens, max_spec_factor = Real(1.0), max_spec_offset = Real(0.0), min_token_prob = Real(0.1), use_tree_spec = Flag(false), drafter = DrafterName(Drafter::Arctic)))]
    #[pyo3(
        text_signature = "(self, context, max_spec_tokens, max_spec_factor=1.0, max_spec_offset=0.0, min_token_prob=0.1, use_tree_spec=False, drafter='arctic')"
    )]
    #[allow(clippy::too_many_arguments)]
    fn speculate(
        &self,
        py: Python<'_>,
        context: &Bound<'_, PyAny>,
        max_spec_tokens: Count,
        max_spec_factor: Real,
        max_spec_offset: Real,
        min_token_prob: Real,
        use_tree_spec: Flag,
        drafter: DrafterName,
    ) -> PyResult<PyDraft> {
        let context = context_tail(context, self.max_depth)?;
        let params = spec_params(
            py,
            max_spec_tokens,
            max_spec_factor,
            max_spec_offset,
            min_token_prob,
            use_tree_spec,
            drafter,
        )?;
        let draft = self.tree.read(py, |tree| tree.speculate(&context, &params))?;
        Ok(PyDraft::new(py, draft))
    }

    /// Tokens held (sum of sequence lengths).
    fn num_tokens(&self, py: Python<'_>) -> PyResult<usize> {
        self.tree.peek(py, SuffixTree::num_tokens)
    }
    fn num_nodes(&self, py: Python<'_>) -> PyResult<usize> {
        self.tree.peek(py, SuffixTree::num_nodes)
    }
    /// Heap bytes owned (capacity-based estimate).
    fn memory_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.tree.read(py, |tree| Ok(tree.memory_bytes()))
    }
    /// Raises RuntimeError describing the first broken invariant (debug aid).
    fn check_integrity(&self, py: Python<'_>) -> PyResult<()> {
        self.tree.read(py, |tree| Ok(tree.check_integrity()))?.map_err(PyRuntimeError::new_err)
    }

    fn __repr__(&self) -> String {
        format!("SuffixTree(max_depth={})", self.max_depth)
    }
}
