//! Bindings of the serving scheduler: `BlockPool`, `Scheduler` and `StepPlan`.
//!
//! Thin glue only. Arguments are converted and checked with the GIL held; `schedule` and
//! `commit` run with the GIL released under the scheduler's lock; plan arrays move their Rust
//! buffers into numpy (no copy). Times are seconds of the engine's clock except the SLO
//! targets, which are milliseconds as in `suffixspec.SLO`.
use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyMapping};
use suffixspec_scheduler::{
    BlockPool, Draft, Phase, Policy, RequestSpec, Scheduler, SchedulerConfig, SchedulerError, Slo,
    StepCostModel, StepPlan, DEFAULT_BLOCK_SIZE,
};

use crate::convert::type_name;
use crate::errors::Error;

/// Draft tokens per request of the uniform policy when not given.
const DEFAULT_DRAFT_TOKENS: u32 = 4;
use crate::gil::without_gil;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBlockPool>()?;
    m.add_class::<PyScheduler>()?;
    m.add_class::<PyStepPlan>()?;
    Ok(())
}

/// Scheduler errors onto the `suffixspec.errors` classes (the one mapping in `errors.rs`).
fn scheduler_error(_py: Python<'_>, err: SchedulerError) -> PyErr {
    Error::from(err).into()
}

fn invalid_parameter(_py: Python<'_>, message: String) -> PyErr {
    Error::Parameter(message).into()
}

fn dtype_error(_py: Python<'_>, message: String) -> PyErr {
    Error::DType(message).into()
}

/// An int argument in `lo..=hi` (`DTypeError` for non-ints, `InvalidParameterError` outside).
fn int_in(obj: &Bound<'_, PyAny>, what: &str, lo: i128, hi: i128) -> PyResult<i128> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(dtype_error(py, format!("{what} must be an int, not a bool")));
    }
    match obj.extract::<i128>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        Ok(v) => Err(invalid_parameter(py, format!("{what} must be in {lo}..={hi}, got {v}"))),
        Err(err) if err.is_instance_of::<PyOverflowError>(py) => {
            Err(invalid_parameter(py, format!("{what} is out of range: {}", obj.str()?)))
        }
        Err(_) => Err(dtype_error(py, format!("{what} must be an int, got {}", type_name(obj)))),
    }
}

fn request_id(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    int_in(obj, "request", 0, i128::from(u64::MAX)).map(|v| v as u64)
}

fn count_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    int_in(obj, what, 0, i128::from(u32::MAX)).map(|v| v as u32)
}

/// An optional count argument (`None` or absent = `default`).
fn count_or(obj: Option<&Bound<'_, PyAny>>, what: &str, default: u32) -> PyResult<u32> {
    obj.filter(|o| !o.is_none()).map_or(Ok(default), |o| count_arg(o, what))
}

fn real(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(dtype_error(py, format!("{what} must be a real number, not a bool")));
    }
    let value: f64 = obj
        .extract()
        .map_err(|_| dtype_error(py, format!("{what} must be a real number, got {}", type_name(obj))))?;
    if !value.is_finite() {
        return Err(invalid_parameter(py, format!("{what} must be finite, got {value}")));
    }
    Ok(value)
}

/// An SLO target in milliseconds (None = no target) as seconds.
fn target_ms(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<f64>> {
    match obj.filter(|o| !o.is_none()) {
        None => Ok(None),
        Some(o) => {
            let ms = real(o, what)?;
            if ms <= 0.0 {
                return Err(invalid_parameter(o.py(), format!("{what} must be > 0 ms, got {ms}")));
            }
            Ok(Some(ms / 1000.0))
        }
    }
}

fn policy_from(py: Python<'_>, name: &str, draft_tokens: u32) -> PyResult<Policy> {
    match name {
        "adaserve" => Ok(Policy::AdaServe),
        "greedy" => Ok(Policy::ProbabilityGreedy),
        "uniform" if draft_tokens >= 1 => Ok(Policy::Uniform { draft_tokens }),
        "uniform" => Err(invalid_parameter(py, "uniform speculation needs draft_tokens >= 1".to_owned())),
        "none" => Ok(Policy::NoSpeculation),
        other => Err(invalid_parameter(
            py,
            format!("policy must be 'adaserve', 'greedy', 'uniform' or 'none', got {other:?}"),
        )),
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::AdaServe => "adaserve",
        Policy::ProbabilityGreedy => "greedy",
        Policy::Uniform { .. } => "uniform",
        Policy::NoSpeculation => "none",
    }
}

/// A sit-out margin in steps (infinity allowed: no sit-outs).
fn margin(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(dtype_error(py, "sit_out_margin must be a real number, not a bool".to_owned()));
    }
    // The range (>= 0, not NaN) is the scheduler's check.
    obj.extract()
        .map_err(|_| dtype_error(py, format!("sit_out_margin must be a real number, got {}", type_name(obj))))
}

/// `[(tokens, seconds), ...]` as a cost model.
fn cost_model(obj: &Bound<'_, PyAny>) -> PyResult<StepCostModel> {
    let py = obj.py();
    let items: Vec<Bound<'_, PyAny>> = obj.extract().map_err(|_| {
        dtype_error(
            py,
            format!("cost_points must be a sequence of (tokens, seconds), got {}", type_name(obj)),
        )
    })?;
    let mut points = Vec::with_capacity(items.len());
    for item in &items {
        let (tokens, seconds): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item
            .extract()
            .map_err(|_| dtype_error(py, "each cost point must be a (tokens, seconds) pair".to_owned()))?;
        points.push((count_arg(&tokens, "cost point tokens")?, real(&seconds, "cost point seconds")?));
    }
    StepCostModel::piecewise(&points).map_err(|err| scheduler_error(py, err))
}

/// A 1-D sequence of values extracted as `T` (numpy arrays of the exact dtype are read directly).
fn values<'py, T>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<T>>
where
    T: numpy::Element + Copy + for<'a> FromPyObject<'a, 'py>,
{
    let py = obj.py();
    if let Ok(array) = obj.cast::<PyArray1<T>>() {
        // A contiguous array is copied without numpy's borrow bookkeeping.
        if let Ok(values) = array.to_vec() {
            return Ok(values);
        }
        return Ok(array.readonly().as_array().to_vec());
    }
    let items: Vec<Bound<'py, PyAny>> = obj
        .extract()
        .map_err(|_| dtype_error(py, format!("{what} must be a 1-D sequence, got {}", type_name(obj))))?;
    items
        .iter()
        .map(|item| {
            if item.is_instance_of::<PyBool>() {
                return Err(dtype_error(py, format!("{what} must not hold bools")));
            }
            item.extract::<T>()
                .map_err(|_| dtype_error(py, format!("{what} holds an invalid {}", type_name(item))))
        })
        .collect()
}

/// Request ids from any iterable of ints; `plan.request_ids` (uint64) is read directly.
fn request_ids_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(array) = obj.cast::<PyArray1<u64>>() {
        return Ok(array.to_vec().unwrap_or_else(|_| array.readonly().as_array().to_vec()));
    }
    let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
    items.iter().map(request_id).collect()
}

/// Counts from any iterable of ints; int32 / int64 arrays are read directly.
fn counts_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u32>> {
    let py = obj.py();
    let checked = |values: Vec<i64>| -> PyResult<Vec<u32>> {
        values
            .into_iter()
            .map(|v| {
                u32::try_from(v).map_err(|_| invalid_parameter(py, format!("{what} must be >= 0, got {v}")))
            })
            .collect()
    };
    if let Ok(array) = obj.cast::<PyArray1<i32>>() {
        let values = array.to_vec().unwrap_or_else(|_| array.readonly().as_array().to_vec());
        return checked(values.into_iter().map(i64::from).collect());
    }
    if let Ok(array) = obj.cast::<PyArray1<i64>>() {
        return checked(array.to_vec().unwrap_or_else(|_| array.readonly().as_array().to_vec()));
    }
    let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
    items.iter().map(|c| count_arg(c, what)).collect()
}

/// Runs `f` on the locked core with the GIL released; a panic becomes `RuntimeError`.
fn locked<T: Send, R: Send>(
    py: Python<'_>,
    core: &Mutex<T>,
    f: impl Send + FnOnce(&mut T) -> Result<R, SchedulerError>,
) -> PyResult<R> {
    let result = without_gil(py, || catch_unwind(AssertUnwindSafe(|| f(&mut core.lock()))));
    match result {
        Ok(result) => result.map_err(|err| scheduler_error(py, err)),
        Err(_) => Err(PyRuntimeError::new_err("internal error in the suffixspec scheduler")),
    }
}

// --- BlockPool ---

/// The paged KV pool of ``docs/paged_kv.md`` on its own (the scheduler holds its own one).
#[pyclass(frozen, name = "BlockPool", module = "suffixspec._native")]
pub(crate) struct PyBlockPool {
    pool: Mutex<BlockPool>,
}

#[pymethods]
impl PyBlockPool {
    #[new]
    #[pyo3(signature = (num_blocks, block_size = None))]
    fn new(
        py: Python<'_>,
        num_blocks: &Bound<'_, PyAny>,
        block_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let block_size = count_or(block_size, "block_size", DEFAULT_BLOCK_SIZE)?;
        let pool = BlockPool::new(count_arg(num_blocks, "num_blocks")?, block_size)
            .map_err(|err| scheduler_error(py, err))?;
        Ok(Self { pool: Mutex::new(pool) })
    }

    #[getter]
    fn num_blocks(&self) -> u32 {
        self.pool.lock().num_blocks()
    }
    #[getter]
    fn block_size(&self) -> u32 {
        self.pool.lock().block_size()
    }
    #[getter]
    fn num_free(&self) -> u32 {
        self.pool.lock().num_free()
    }
    #[getter]
    fn num_used(&self) -> u32 {
        self.pool.lock().num_used()
    }

    fn reserve(&self, request: &Bound<'_, PyAny>, num_slots: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (request, slots) = (request_id(request)?, count_arg(num_slots, "num_slots")?);
        Ok(self.pool.lock().reserve(request, slots).is_ok())
    }

    fn truncate(&self, request: &Bound<'_, PyAny>, num_slots: &Bound<'_, PyAny>) -> PyResult<()> {
        let (request, slots) = (request_id(request)?, count_arg(num_slots, "num_slots")?);
        self.pool.lock().truncate(request, slots);
        Ok(())
    }

    fn release(&self, request: &Bound<'_, PyAny>) -> PyResult<u32> {
        let request = request_id(request)?;
        Ok(self.pool.lock().release(request))
    }

    fn block_table<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let request = request_id(request)?;
        let table: Vec<i32> = self.pool.lock().table(request).iter().map(|&b| b as i32).collect();
        Ok(table.into_pyarray(py))
    }

    fn slot_mapping<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'_, PyAny>,
        start: &Bound<'_, PyAny>,
        count: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let (request, start, n) =
            (request_id(request)?, count_arg(start, "start")?, count_arg(count, "count")?);
        let mut out = Vec::with_capacity(n as usize);
        self.pool
            .lock()
            .write_slot_mapping(request, start, n, &mut out)
            .map_err(|err| scheduler_error(py, err))?;
        Ok(out.into_pyarray(py))
    }

    fn check_integrity(&self) -> PyResult<()> {
        self.pool.lock().check_integrity().map_err(PyRuntimeError::new_err)
    }
}

// --- StepPlan ---

/// One step's work as int32 arrays in the paged layout (built once, returned without copies).
#[pyclass(frozen, name = "StepPlan", module = "suffixspec._native")]
pub(crate) struct PyStepPlan {
    #[pyo3(get)]
    request_ids: Py<PyArray1<u64>>,
    #[pyo3(get)]
    context_lens: Py<PyArray1<i32>>,
    #[pyo3(get)]
    query_lens: Py<PyArray1<i32>>,
    #[pyo3(get)]
    chunk_lens: Py<PyArray1<i32>>,
    #[pyo3(get)]
    tree_lens: Py<PyArray1<i32>>,
    #[pyo3(get)]
    emits: Py<PyArray1<bool>>,
    #[pyo3(get)]
    block_tables: Py<PyArray2<i32>>,
    #[pyo3(get)]
    slot_mapping: Py<PyArray1<i32>>,
    #[pyo3(get)]
    tree_offsets: Py<PyArray1<i64>>,
    #[pyo3(get)]
    tree_nodes: Py<PyArray1<i32>>,
    #[pyo3(get)]
    tree_parents: Py<PyArray1<i32>>,
    #[pyo3(get)]
    preempted: Vec<u64>,
    #[pyo3(get)]
    sat_out: Vec<u64>,
    #[pyo3(get)]
    step_time_bound: f64,
    #[pyo3(get)]
    step_time_estimate: f64,
    #[pyo3(get)]
    verify_tokens: usize,
    batch: usize,
    tokens: usize,
}

impl PyStepPlan {
    fn new(py: Python<'_>, plan: StepPlan) -> PyResult<Self> {
        let (batch, tokens) = (plan.batch_size(), plan.num_tokens());
        let tables = Array2::from_shape_vec((batch, plan.max_blocks), plan.block_tables)
            .map_err(|err| PyRuntimeError::new_err(format!("internal error: block tables: {err}")))?;
        let offsets: Vec<i64> = plan.trees.offsets.iter().map(|&o| o as i64).collect();
        Ok(Self {
            request_ids: plan.request_ids.into_pyarray(py).unbind(),
            context_lens: plan.context_lens.into_pyarray(py).unbind(),
            query_lens: plan.query_lens.into_pyarray(py).unbind(),
            chunk_lens: plan.chunk_lens.into_pyarray(py).unbind(),
            tree_lens: plan.tree_lens.into_pyarray(py).unbind(),
            emits: plan.emits.into_pyarray(py).unbind(),
            block_tables: tables.into_pyarray(py).unbind(),
            slot_mapping: plan.slot_mapping.into_pyarray(py).unbind(),
            tree_offsets: offsets.into_pyarray(py).unbind(),
            tree_nodes: plan
                .trees
                .nodes
                .iter()
                .map(|&n| n as i32)
                .collect::<Vec<_>>()
                .into_pyarray(py)
                .unbind(),
            tree_parents: plan.trees.parents.into_pyarray(py).unbind(),
            preempted: plan.preempted,
            sat_out: plan.sat_out,
            step_time_bound: plan.step_time_bound,
            step_time_estimate: plan.step_time_estimate,
            verify_tokens: plan.verify_tokens,
            batch,
            tokens,
        })
    }
}

#[pymethods]
impl PyStepPlan {
    fn __len__(&self) -> usize {
        self.batch
    }

    #[getter]
    fn num_tokens(&self) -> usize {
        self.tokens
    }

    fn __repr__(&self) -> String {
        format!(
            "StepPlan(batch={}, tokens={}, verify_tokens={}, preempted={}, sat_out={})",
            self.batch,
            self.tokens,
            self.verify_tokens,
            self.preempted.len(),
            self.sat_out.len()
        )
    }
}

// --- Scheduler ---

/// The continuous-batching scheduler (see the `suffixspec-scheduler` crate).
#[pyclass(frozen, name = "Scheduler", module = "suffixspec._native")]
pub(crate) struct PyScheduler {
    core: Mutex<Scheduler>,
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting => "waiting",
        Phase::Running => "running",
        Phase::Preempted => "preempted",
    }
}

#[pymethods]
impl PyScheduler {
    #[new]
    #[pyo3(signature = (
        *, num_blocks, block_size = None, max_tokens_per_step = None, max_prefill_tokens_per_step = None,
        max_running = None, max_verify_tokens = None, policy = "adaserve", draft_tokens = None, cost_points = None,
        sit_out_margin = None, sit_out_min_target_steps = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        num_blocks: &Bound<'_, PyAny>,
        block_size: Option<&Bound<'_, PyAny>>,
        max_tokens_per_step: Option<&Bound<'_, PyAny>>,
        max_prefill_tokens_per_step: Option<&Bound<'_, PyAny>>,
        max_running: Option<&Bound<'_, PyAny>>,
        max_verify_tokens: Option<&Bound<'_, PyAny>>,
        policy: &str,
        draft_tokens: Option<&Bound<'_, PyAny>>,
        cost_points: Option<&Bound<'_, PyAny>>,
        sit_out_margin: Option<&Bound<'_, PyAny>>,
        sit_out_min_target_steps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let defaults = SchedulerConfig::default();
        let config = SchedulerConfig {
            num_blocks: count_arg(num_blocks, "num_blocks")?,
            block_size: count_or(block_size, "block_size", defaults.block_size)?,
            max_tokens_per_step: count_or(
                max_tokens_per_step,
                "max_tokens_per_step",
                defaults.max_tokens_per_step,
            )?,
            max_prefill_tokens_per_step: count_or(
                max_prefill_tokens_per_step,
                "max_prefill_tokens_per_step",
                defaults.max_prefill_tokens_per_step,
            )?,
            max_running: count_or(max_running, "max_running", defaults.max_running)?,
            max_verify_tokens: count_or(max_verify_tokens, "max_verify_tokens", defaults.max_verify_tokens)?,
            policy: policy_from(py, policy, count_or(draft_tokens, "draft_tokens", DEFAULT_DRAFT_TOKENS)?)?,
            cost_model: match cost_points.filter(|c| !c.is_none()) {
                Some(points) => cost_model(points)?,
                None => StepCostModel::default(),
            },
            sit_out_margin: match sit_out_margin.filter(|m| !m.is_none()) {
                Some(m) => margin(m)?,
                None => defaults.sit_out_margin,
            },
            sit_out_min_target_steps: match sit_out_min_target_steps.filter(|m| !m.is_none()) {
                Some(m) => real(m, "sit_out_min_target_steps")?,
                None => defaults.sit_out_min_target_steps,
            },
        };
        let core = Scheduler::new(config).map_err(|err| scheduler_error(py, err))?;
        Ok(Self { core: Mutex::new(core) })
    }

    /// Registers a request (it waits until a step admits it).
    #[pyo3(signature = (request, prompt_len, max_len, now, *, priority = None, tpot_ms = None, ttft_ms = None))]
    #[allow(clippy::too_many_arguments)]
    fn add_request(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        prompt_len: &Bound<'_, PyAny>,
        max_len: &Bound<'_, PyAny>,
        now: &Bound<'_, PyAny>,
        priority: Option<&Bound<'_, PyAny>>,
        tpot_ms: Option<&Bound<'_, PyAny>>,
        ttft_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let id = request_id(request)?;
        let spec = RequestSpec {
            prompt_len: count_arg(prompt_len, "prompt_len")?,
            max_len: count_arg(max_len, "max_len")?,
            priority: match priority.filter(|p| !p.is_none()) {
                Some(p) => int_in(p, "priority", i128::from(i32::MIN), i128::from(i32::MAX))? as i32,
                None => 0,
            },
            slo: Slo { tpot: target_ms(tpot_ms, "tpot_ms")?, ttft: target_ms(ttft_ms, "ttft_ms")? },
            arrival: real(now, "now")?,
        };
        self.core.lock().add_request(id, spec).map_err(|err| scheduler_error(py, err))
    }

    /// Plans one step. ``drafts`` maps request ids to draft trees (objects with ``parents``
    /// and ``probs``, e.g. ``Draft`` or ``TokenTree``) of decoding requests.
    #[pyo3(signature = (now, drafts = None))]
    fn schedule(
        &self,
        py: Python<'_>,
        now: &Bound<'_, PyAny>,
        drafts: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyStepPlan> {
        let now = real(now, "now")?;
        let mut owned: Vec<(u64, Vec<i32>, Vec<f64>)> = Vec::new();
        if let Some(drafts) = drafts.filter(|d| !d.is_none()) {
            let mapping = drafts.cast::<PyMapping>().map_err(|_| {
                dtype_error(py, format!("drafts must map request ids to drafts, got {}", type_name(drafts)))
            })?;
            for item in mapping.items()?.iter() {
                let (key, draft): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
                let id = request_id(&key)?;
                let field = |name: &str| {
                    draft.getattr(name).map_err(|_| {
                        dtype_error(
                            py,
                            format!("draft of request {id} ({}) has no {name}", type_name(&draft)),
                        )
                    })
                };
                owned.push((
                    id,
                    values::<i32>(&field("parents")?, "parents")?,
                    values::<f64>(&field("probs")?, "probs")?,
                ));
            }
        }
        let plan = locked(py, &self.core, |core| {
            let drafts: Vec<Draft<'_>> = owned
                .iter()
                .map(|(request, parents, probs)| Draft { request: *request, parents, probs })
                .collect();
            core.schedule(now, &drafts)
        })?;
        PyStepPlan::new(py, plan)
    }

    /// Applies a step's results: ``accepted[i]`` tree nodes of ``request_ids[i]`` were accepted.
    fn commit(
        &self,
        py: Python<'_>,
        now: &Bound<'_, PyAny>,
        request_ids: &Bound<'_, PyAny>,
        accepted: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let now = real(now, "now")?;
        let ids = request_ids_of(request_ids)?;
        let counts = counts_of(accepted, "accepted")?;
        if ids.len() != counts.len() {
            return Err(invalid_parameter(
                py,
                format!("{} request ids but {} accepted counts", ids.len(), counts.len()),
            ));
        }
        let results: Vec<(u64, u32)> = ids.into_iter().zip(counts).collect();
        locked(py, &self.core, |core| core.commit(now, &results))
    }

    fn finish(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = request_id(request)?;
        self.core.lock().finish(id).map_err(|err| scheduler_error(py, err))
    }

    fn abort(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = request_id(request)?;
        self.core.lock().abort(id).map_err(|err| scheduler_error(py, err))
    }

    /// Running requests whose next step decodes (draft for these before ``schedule``).
    fn decode_ready(&self) -> Vec<u64> {
        self.core.lock().decode_ready()
    }

    #[pyo3(signature = (policy, draft_tokens = None))]
    fn set_policy(
        &self,
        py: Python<'_>,
        policy: &str,
        draft_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let policy = policy_from(py, policy, count_or(draft_tokens, "draft_tokens", DEFAULT_DRAFT_TOKENS)?)?;
        self.core.lock().set_policy(policy).map_err(|err| scheduler_error(py, err))
    }

    /// AdaServe's sit-out margin in steps (``math.inf``: no sit-outs).
    fn set_sit_out_margin(&self, py: Python<'_>, sit_out_margin: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = margin(sit_out_margin)?;
        self.core.lock().set_sit_out_margin(value).map_err(|err| scheduler_error(py, err))
    }

    fn set_cost_model(&self, cost_points: &Bound<'_, PyAny>) -> PyResult<()> {
        let model = cost_model(cost_points)?;
        self.core.lock().set_cost_model(model);
        Ok(())
    }

    /// Estimated seconds of a step feeding ``tokens`` tokens.
    fn step_time(&self, tokens: &Bound<'_, PyAny>) -> PyResult<f64> {
        let tokens = count_arg(tokens, "tokens")?;
        Ok(self.core.lock().config().cost_model.step_time(tokens as usize))
    }

    #[getter]
    fn policy(&self) -> &'static str {
        policy_name(self.core.lock().config().policy)
    }
    #[getter]
    fn sit_out_margin(&self) -> f64 {
        self.core.lock().config().sit_out_margin
    }
    #[getter]
    fn block_size(&self) -> u32 {
        self.core.lock().pool().block_size()
    }
    #[getter]
    fn num_blocks(&self) -> u32 {
        self.core.lock().pool().num_blocks()
    }
    #[getter]
    fn num_free_blocks(&self) -> u32 {
        self.core.lock().pool().num_free()
    }
    #[getter]
    fn step_in_flight(&self) -> bool {
        self.core.lock().step_in_flight()
    }
    #[getter]
    fn waiting(&self) -> Vec<u64> {
        self.core.lock().waiting().to_vec()
    }
    #[getter]
    fn running(&self) -> Vec<u64> {
        self.core.lock().running().to_vec()
    }
    #[getter]
    fn preempted(&self) -> Vec<u64> {
        self.core.lock().preempted().to_vec()
    }

    fn __len__(&self) -> usize {
        self.core.lock().num_requests()
    }

    fn __contains__(&self, request: &Bound<'_, PyAny>) -> bool {
        request_id(request).is_ok_and(|id| self.core.lock().request(id).is_some())
    }

    /// One request's counts: phase, known / computed / output tokens, preemptions, ...
    fn request_state<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id = request_id(request)?;
        let core = self.core.lock();
        let state =
            core.request(id).ok_or_else(|| scheduler_error(py, SchedulerError::UnknownRequest(id)))?;
        let dict = PyDict::new(py);
        dict.set_item("phase", phase_name(state.phase))?;
        dict.set_item("known", state.known)?;
        dict.set_item("computed", state.computed)?;
        dict.set_item("outputs", state.outputs)?;
        dict.set_item("first_token_at", state.first_token_at)?;
        dict.set_item("preemptions", state.preemptions)?;
        dict.set_item("blocks", core.pool().table(id).len())?;
        Ok(dict)
    }

    /// Counters: steps, preemptions, finished, aborted, queue sizes, blocks.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let core = self.core.lock();
        let stats = core.stats();
        let dict = PyDict::new(py);
        dict.set_item("steps", stats.steps)?;
        dict.set_item("preemptions", stats.preemptions)?;
        dict.set_item("finished", stats.finished)?;
        dict.set_item("aborted", stats.aborted)?;
        dict.set_item("sit_outs", stats.sit_outs)?;
        dict.set_item("waiting", core.waiting().len())?;
        dict.set_item("running", core.running().len())?;
        dict.set_item("preempted", core.preempted().len())?;
        dict.set_item("free_blocks", core.pool().num_free())?;
        dict.set_item("used_blocks", core.pool().num_used())?;
        Ok(dict)
    }

    fn check_integrity(&self) -> PyResult<()> {
        self.core.lock().check_integrity().map_err(PyRuntimeError::new_err)
    }
}
