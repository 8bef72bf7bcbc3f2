//! Bindings of the suffix-tree cache: `Draft`, `SuffixCacheCore` and `SuffixTree`.
//!
//! Thin glue only. Every argument is converted and checked with the GIL held (so bad input
//! raises before any state is touched), then the work runs with the GIL released under an
//! interior `RwLock`: the pyclasses are `frozen` and `Sync`, so several Python threads can
//! share one cache. Panics never cross the FFI boundary: they become `RuntimeError`, and a
//! panic during a mutation marks the object broken (every later call raises).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice};
use rayon::prelude::*;
use suffixspec_cache::{
    CacheConfig, CacheError, Draft, Drafter, SpecParams, SuffixCache, SuffixTree, TokenId,
    DEFAULT_MAX_CACHED_REQUESTS, DEFAULT_MAX_CACHED_TOKENS, MAX_DEPTH,
};

use crate::convert::{owned_tokens, tokens, type_name, Count, DrafterName, Flag, Handle, Real};
use crate::errors::{Error, Result};
use crate::gil::without_gil;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDraft>()?;
    m.add_class::<PySuffixCacheCore>()?;
    m.add_class::<PySuffixTree>()?;
    m.add("MAX_DEPTH", MAX_DEPTH)?;
    m.add("DEFAULT_MAX_CACHED_REQUESTS", DEFAULT_MAX_CACHED_REQUESTS)?;
    m.add("DEFAULT_MAX_CACHED_TOKENS", DEFAULT_MAX_CACHED_TOKENS)?;
    Ok(())
}

fn spec_params(
    max_spec_tokens: Count,
    max_spec_factor: Real,
    max_spec_offset: Real,
    min_token_prob: Real,
    use_tree_spec: Flag,
    drafter: DrafterName,
) -> Result<SpecParams> {
    let params = SpecParams {
        max_spec_tokens: max_spec_tokens.0,
        max_spec_factor: max_spec_factor.0,
        max_spec_offset: max_spec_offset.0,
        min_token_prob: min_token_prob.0,
        use_tree_spec: use_tree_spec.0,
        drafter: drafter.0,
    };
    params.validate()?;
    Ok(params)
}

/// The part of a context a draft can depend on: matches are at most `max_depth` tokens long, so
/// only the last `max_depth` tokens are read (and checked). Long lists are sliced before
/// conversion, which keeps the per-call cost independent of the context length. Copied, because
/// the work runs with the GIL released.
fn context_tail(context: &Bound<'_, PyAny>, max_depth: usize) -> Result<Vec<TokenId>> {
    // Lists, tuples, ranges, 1-D arrays: slice first (a view or a short copy). Anything that
    // cannot be sliced goes whole to the conversion, which names the problem.
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

/// The items of a sequence argument (not a string), or a `DTypeError` naming `what`.
fn sequence<'py>(obj: &Bound<'py, PyAny>, what: &str) -> Result<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBytes>() {
        return Err(Error::DType(format!("{what} must be a sequence, not a string")));
    }
    obj.extract().map_err(|_| Error::DType(format!("{what} must be a sequence, got {}", type_name(obj))))
}

// --- Interior locking, GIL release and panic containment. ---

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

/// Smallest `speculate_batch` drafted on the thread pool: a lone request is drafted on the
/// calling thread (a hand-off to a worker and back costs more than its draft).
const PARALLEL_MIN_REQUESTS: usize = 2;

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

    fn usable(&self) -> Result<()> {
        match self.broken.get() {
            Some(reason) => {
                Err(Error::Internal(format!("this object is unusable after an earlier {reason}")))
            }
            None => Ok(()),
        }
    }

    /// Runs `f` under the read lock with the GIL released.
    fn read<R, F>(&self, py: Python<'_>, f: F) -> Result<R>
    where
        R: Send,
        F: Send + FnOnce(&T) -> Result<R, CacheError>,
    {
        without_gil(py, || {
            self.usable()?;
            catch_unwind(AssertUnwindSafe(|| f(&self.state.read())))
                .map_err(|payload| Error::Internal(panic_message(payload.as_ref())))?
                .map_err(Error::Cache)
        })
    }

    /// Runs a short read-only `f` under the read lock: with the GIL held when the lock is free
    /// (no release/re-take cost, for the per-step queries of engines), with the GIL released
    /// when a writer holds it (other Python threads keep running while this one waits).
    fn peek<R, F>(&self, py: Python<'_>, f: F) -> Result<R>
    where
        R: Send,
        F: Send + FnOnce(&T) -> R,
    {
        self.usable()?;
        match self.state.try_read() {
            Some(state) => catch_unwind(AssertUnwindSafe(|| f(&state)))
                .map_err(|payload| Error::Internal(panic_message(payload.as_ref()))),
            None => self.read(py, |state| Ok(f(state))),
        }
    }

    /// Runs a mutation of `work` units (tokens): short ones keep the GIL, since releasing and
    /// re-taking it costs more than they do; long ones, or any that would wait for the lock,
    /// release it.
    fn write_sized<R, F>(&self, py: Python<'_>, work: usize, f: F) -> Result<R>
    where
        R: Send,
        F: Send + FnOnce(&mut T) -> Result<R, CacheError>,
    {
        if work > KEEP_GIL_MAX_WORK {
            return self.write(py, f);
        }
        let Some(mut state) = self.state.try_write() else { return self.write(py, f) };
        self.usable()?;
        self.mutate(&mut state, f)
    }

    /// Runs `f` under the write lock with the GIL released.
    fn write<R, F>(&self, py: Python<'_>, f: F) -> Result<R>
    where
        R: Send,
        F: Send + FnOnce(&mut T) -> Result<R, CacheError>,
    {
        without_gil(py, || {
            self.usable()?;
            self.mutate(&mut self.state.write(), f)
        })
    }

    /// Runs a mutation, marking the object broken if it panics (its state may be half-updated).
    fn mutate<R>(&self, state: &mut T, f: impl FnOnce(&mut T) -> Result<R, CacheError>) -> Result<R> {
        match catch_unwind(AssertUnwindSafe(|| f(state))) {
            Ok(result) => result.map_err(Error::Cache),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                let _ = self.broken.set(message.clone());
                Err(Error::Internal(message))
            }
        }
    }
}

// --- Draft ---

/// A speculated token tree (see ``suffixspec.SuffixCache.speculate``).
///
/// ``token_ids``, ``parents`` and ``probs`` are Python lists, as arctic-inference returns them
/// (engines test them for truth and slice them in place); ``token_ids_array``, ``parents_array``
/// and ``probs_array`` are the same data as numpy arrays without a copy.
#[pyclass(frozen, name = "Draft", module = "suffixspec._native")]
#[derive(Debug)]
pub(crate) struct PyDraft {
    token_ids: Py<PyArray1<TokenId>>,
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

    /// The draft's token ids, parents and probabilities, read natively (e.g. by
    /// ``TokenTree.from_draft``) without going through Python lists.
    pub(crate) fn to_vecs(&self, py: Python<'_>) -> (Vec<TokenId>, Vec<i32>, Vec<f64>) {
        (
            self.token_ids.bind(py).readonly().as_array().to_vec(),
            self.parents.bind(py).readonly().as_array().to_vec(),
            self.probs.bind(py).readonly().as_array().to_vec(),
        )
    }
}

#[pymethods]
impl PyDraft {
    /// Draft token ids, parents before children (a new list on each access).
    #[getter]
    fn token_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        list(self.token_ids.bind(py))
    }
    /// Parent index of each node; -1 = child of the last context token. Parents first.
    #[getter]
    fn parents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        list(self.parents.bind(py))
    }
    /// Estimated probability that the model reaches each node.
    #[getter]
    fn probs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        list(self.probs.bind(py))
    }
    /// ``token_ids`` as an int32 numpy array (no copy; do not modify it).
    #[getter]
    fn token_ids_array<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<TokenId>> {
        self.token_ids.bind(py).clone()
    }
    /// ``parents`` as an int32 numpy array (no copy; do not modify it).
    #[getter]
    fn parents_array<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        self.parents.bind(py).clone()
    }
    /// ``probs`` as a float64 numpy array (no copy; do not modify it).
    #[getter]
    fn probs_array<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
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
            list(self.token_ids.bind(py))?,
            list(self.parents.bind(py))?,
            self.score,
            self.match_len
        ))
    }
}

fn list<'py, T: numpy::Element>(array: &Bound<'py, PyArray1<T>>) -> PyResult<Bound<'py, PyList>> {
    Ok(array.call_method0("tolist")?.cast_into::<PyList>()?)
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
    #[pyo3(signature = (max_depth = Count(64), max_cached_requests = Some(Count(DEFAULT_MAX_CACHED_REQUESTS)), max_cached_tokens = Count(DEFAULT_MAX_CACHED_TOKENS)))]
    #[pyo3(text_signature = "(max_depth=64, max_cached_requests=65536, max_cached_tokens=4194304)")]
    fn new(max_depth: Count, max_cached_requests: Option<Count>, max_cached_tokens: Count) -> Result<Self> {
        let config = CacheConfig {
            max_depth: max_depth.0,
            max_cached_requests: max_cached_requests.map(|c| c.0),
            max_cached_tokens: max_cached_tokens.0,
        };
        let cache = SuffixCache::new(config)?;
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
    fn start_request(&self, py: Python<'_>, req: Handle, prompt_token_ids: &Bound<'_, PyAny>) -> Result<()> {
        let prompt = owned_tokens(prompt_token_ids, "prompt_token_ids")?;
        self.cache.write(py, |cache| cache.start_request(req.0, &prompt))
    }

    /// Appends generated tokens to active request ``req``.
    fn add_active_response(&self, py: Python<'_>, req: Handle, token_ids: &Bound<'_, PyAny>) -> Result<()> {
        let tokens = owned_tokens(token_ids, "token_ids")?;
        self.cache.write_sized(py, tokens.len(), |cache| cache.add_active_response(req.0, &tokens))
    }

    /// Stops active request ``req``; its response stays cached (budgets permitting). Returns
    /// the handles whose cached responses went away (``req`` itself when its response was not
    /// kept), so callers can forget them.
    fn stop_request(&self, py: Python<'_>, req: Handle) -> Result<Vec<u64>> {
        self.cache.write(py, |cache| cache.stop_request(req.0))
    }

    /// Removes the cached response of ``req``.
    fn evict_cached_response(&self, py: Python<'_>, req: Handle) -> Result<()> {
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
    ) -> Result<PyDraft> {
        let context = context_tail(context, self.config.max_depth)?;
        let params = spec_params(
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
        reqs: &Bound<'_, PyAny>,
        contexts: &Bound<'_, PyAny>,
        max_spec_tokens: Count,
        max_spec_factor: Real,
        max_spec_offset: Real,
        min_token_prob: Real,
        use_tree_spec: Flag,
        drafter: DrafterName,
    ) -> Result<Vec<PyDraft>> {
        let reqs =
            sequence(reqs, "reqs")?.iter().map(|req| req.extract::<Handle>()).collect::<Result<Vec<_>>>()?;
        let contexts = sequence(contexts, "contexts")?;
        if reqs.len() != contexts.len() {
            return Err(Error::Parameter(format!(
                "got {} requests but {} contexts",
                reqs.len(),
                contexts.len()
            )));
        }
        let contexts = contexts
            .iter()
            .map(|context| context_tail(context, self.config.max_depth))
            .collect::<Result<Vec<_>>>()?;
        let params = spec_params(
            max_spec_tokens,
            max_spec_factor,
            max_spec_offset,
            min_token_prob,
            use_tree_spec,
            drafter,
        )?;
        let drafts = self.cache.read(py, |cache| {
            let draft = |(req, context): (&Handle, &Vec<TokenId>)| cache.speculate(req.0, context, &params);
            if reqs.len() < PARALLEL_MIN_REQUESTS {
                reqs.iter().zip(&contexts).map(draft).collect::<Result<Vec<_>, _>>()
            } else {
                reqs.par_iter().zip(contexts.par_iter()).map(draft).collect::<Result<Vec<_>, _>>()
            }
        })?;
        Ok(drafts_to_py(py, drafts))
    }

    /// Active request handles, in start order.
    fn active_requests(&self, py: Python<'_>) -> Result<Vec<u64>> {
        self.cache.peek(py, SuffixCache::active_requests)
    }
    /// Cached request handles, oldest first.
    fn cached_requests(&self, py: Python<'_>) -> Result<Vec<u64>> {
        self.cache.peek(py, SuffixCache::cached_requests)
    }
    fn is_active(&self, py: Python<'_>, req: Handle) -> Result<bool> {
        self.cache.peek(py, |cache| cache.is_active(req.0))
    }
    fn is_cached(&self, py: Python<'_>, req: Handle) -> Result<bool> {
        self.cache.peek(py, |cache| cache.is_cached(req.0))
    }

    /// Keys: active_requests, cached_requests, tokens, cached_tokens, nodes, bytes.
    fn stats<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyDict>> {
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

    /// Heap bytes of the global response tree (arctic's ``_global_tree.estimate_memory()``).
    fn global_tree_bytes(&self, py: Python<'_>) -> Result<usize> {
        self.cache.read(py, |cache| Ok(cache.global_tree().map_or(0, SuffixTree::memory_bytes)))
    }

    /// Raises RuntimeError describing the first broken invariant (debug aid).
    fn check_integrity(&self, py: Python<'_>) -> Result<()> {
        self.cache.read(py, |cache| Ok(cache.check_integrity()))?.map_err(Error::Internal)
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
    fn new(max_depth: Count) -> Result<Self> {
        let tree = SuffixTree::new(max_depth.0)?;
        Ok(Self { tree: Guarded::new(tree), max_depth: max_depth.0 })
    }

    /// Longest substring counted (and deepest draft node).
    #[getter]
    fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Appends tokens to sequence ``seq_id`` (created on first use).
    fn extend(&self, py: Python<'_>, seq_id: Handle, token_ids: &Bound<'_, PyAny>) -> Result<()> {
        let tokens = owned_tokens(token_ids, "token_ids")?;
        self.tree.write_sized(py, tokens.len(), |tree| tree.extend(seq_id.0, &tokens))
    }

    /// Removes sequence ``seq_id`` and all its counts.
    fn remove(&self, py: Python<'_>, seq_id: Handle) -> Result<()> {
        self.tree.write(py, |tree| tree.remove(seq_id.0))
    }

    /// Occurrences of the string (0 if empty, absent or longer than max_depth).
    fn count(&self, py: Python<'_>, token_ids: &Bound<'_, PyAny>) -> Result<u64> {
        let tokens = tokens(token_ids, "token_ids")?.into_vec();
        self.tree.peek(py, |tree| tree.count(&tokens))
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
    ) -> Result<PyDraft> {
        let context = context_tail(context, self.max_depth)?;
        let params = spec_params(
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
    fn num_tokens(&self, py: Python<'_>) -> Result<usize> {
        self.tree.peek(py, SuffixTree::num_tokens)
    }
    fn num_nodes(&self, py: Python<'_>) -> Result<usize> {
        self.tree.peek(py, SuffixTree::num_nodes)
    }
    /// Heap bytes owned (capacity-based estimate).
    fn memory_bytes(&self, py: Python<'_>) -> Result<usize> {
        self.tree.read(py, |tree| Ok(tree.memory_bytes()))
    }
    /// Raises RuntimeError describing the first broken invariant (debug aid).
    fn check_integrity(&self, py: Python<'_>) -> Result<()> {
        self.tree.read(py, |tree| Ok(tree.check_integrity()))?.map_err(Error::Internal)
    }

    fn __repr__(&self) -> String {
        format!("SuffixTree(max_depth={})", self.max_depth)
    }
}
