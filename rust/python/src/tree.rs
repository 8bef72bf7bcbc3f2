//! Bindings of the token-tree builder: `TokenTree`, `build_tree_batch` and `accept_greedy_batch`.
//!
//! Thin glue only. Arguments are converted and checked with the GIL held, results move their
//! Rust buffers into numpy arrays (no copy back), and batch work runs with the GIL released.
//! Drafts are read by duck typing (`token_ids`, `parents`, `probs` attributes), so any object
//! shaped like `suffixspec.Draft` works.
use numpy::ndarray::{Array, Dimension, StrideShape};
use numpy::{Element, IntoPyArray, PyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyString};
use suffixspec_tree::{
    accept_greedy_batch as accept_batch, build_verification_batch, merge, TokenTree, TreeError,
};

use crate::arrays::extract_tokens;
use crate::errors::{dtype_error, new_error, tree_error};
use crate::gil::without_gil;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenTree>()?;
    m.add_function(wrap_pyfunction!(build_tree_batch, m)?)?;
    m.add_function(wrap_pyfunction!(accept_greedy_batch, m)?)?;
    Ok(())
}

// --- Argument conversion: each raises a `suffixspec.errors` class on bad input. ---

fn invalid_parameter(py: Python<'_>, message: String) -> PyErr {
    new_error(py, "InvalidParameterError", message)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|name| name.to_string()).unwrap_or_else(|_| "object".to_owned())
}

/// `(dtype kind letter, ndim, dtype name)` of a numpy array (or array-like with a dtype).
fn array_info(obj: &Bound<'_, PyAny>) -> PyResult<Option<(String, usize, String)>> {
    if !(obj.hasattr("dtype")? && obj.hasattr("ndim")?) {
        return Ok(None);
    }
    let dtype = obj.getattr("dtype")?;
    let kind = dtype.getattr("kind").and_then(|k| k.extract::<String>()).unwrap_or_default();
    let ndim = obj.getattr("ndim")?.extract().unwrap_or(0);
    Ok(Some((kind, ndim, dtype.str()?.to_string())))
}

/// One Python integer (or numpy integer), saturated to i64 when it is larger.
fn int_item(item: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let py = item.py();
    if item.is_instance_of::<PyBool>() {
        return Err(dtype_error(py, format!("{what} must hold ints, not bools")));
    }
    match item.extract::<i128>() {
        Ok(value) => Ok(value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64),
        Err(err) if err.is_instance_of::<PyOverflowError>(py) => {
            Ok(if item.lt(0)? { i64::MIN } else { i64::MAX })
        }
        Err(_) => Err(dtype_error(py, format!("{what} must hold ints, got {}", type_name(item)))),
    }
}

/// A 1-D sequence of ints: a list/tuple or a 1-D integer numpy array.
fn int_values(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    let py = obj.py();
    if let Ok(array) = obj.cast::<PyArray1<i64>>() {
        return Ok(array.readonly().as_array().to_vec());
    }
    if let Ok(array) = obj.cast::<PyArray1<i32>>() {
        return Ok(array.readonly().as_array().iter().map(|v| i64::from(*v)).collect());
    }
    if let Some((kind, ndim, dtype)) = array_info(obj)? {
        if ndim != 1 {
            return Err(dtype_error(py, format!("{what} must be 1-D, got an array with {ndim} dimensions")));
        }
        if kind != "i" && kind != "u" {
            return Err(dtype_error(py, format!("{what} must hold integers, got dtype {dtype}")));
        }
        // Rare integer dtypes: through Python ints, which keeps uint64 values exact.
        return int_values(&obj.call_method0("tolist")?, what);
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(dtype_error(py, format!("{what} must be a sequence of ints, not a string")));
    }
    let items: Vec<Bound<'_, PyAny>> = obj
        .extract()
        .map_err(|_| dtype_error(py, format!("{what} must be a sequence of ints, got {}", type_name(obj))))?;
    items.iter().map(|item| int_item(item, what)).collect()
}

/// A 1-D sequence of real numbers: a list/tuple or a 1-D float or integer numpy array.
fn float_values(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    let py = obj.py();
    if let Ok(array) = obj.cast::<PyArray1<f64>>() {
        return Ok(array.readonly().as_array().to_vec());
    }
    if let Some((kind, ndim, dtype)) = array_info(obj)? {
        if ndim != 1 {
            return Err(dtype_error(py, format!("{what} must be 1-D, got an array with {ndim} dimensions")));
        }
        if !matches!(kind.as_str(), "f" | "i" | "u") {
            return Err(dtype_error(py, format!("{what} must hold real numbers, got dtype {dtype}")));
        }
        return float_values(&obj.call_method1("astype", ("float64",))?, what);
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(dtype_error(py, format!("{what} must be a sequence of floats, not a string")));
    }
    let items: Vec<Bound<'_, PyAny>> = obj.extract().map_err(|_| {
        dtype_error(py, format!("{what} must be a sequence of floats, got {}", type_name(obj)))
    })?;
    items
        .iter()
        .map(|item| {
            if item.is_instance_of::<PyBool>() {
                return Err(dtype_error(py, format!("{what} must hold floats, not bools")));
            }
            item.extract::<f64>()
                .map_err(|_| dtype_error(py, format!("{what} must hold floats, got {}", type_name(item))))
        })
        .collect()
}

/// A scalar int argument (`prefix_len`, `max_nodes`, a node index).
fn int_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let py = obj.py();
    if obj.is_instance_of::<PyBool>() {
        return Err(dtype_error(py, format!("{what} must be an int, not a bool")));
    }
    match obj.extract::<i64>() {
        Ok(value) => Ok(value),
        Err(err) if err.is_instance_of::<PyOverflowError>(py) => {
            Err(invalid_parameter(py, format!("{what} is out of range: {}", obj.str()?)))
        }
        Err(_) => Err(dtype_error(py, format!("{what} must be an int, got {}", type_name(obj)))),
    }
}

fn tree_from_parts(
    token_ids: &Bound<'_, PyAny>,
    parents: &Bound<'_, PyAny>,
    probs: Option<&Bound<'_, PyAny>>,
) -> PyResult<TokenTree> {
    let py = token_ids.py();
    let tokens = extract_tokens(token_ids, "token_ids")?.into_vec();
    let parents = int_values(parents, "parents")?
        .into_iter()
        .enumerate()
        .map(|(index, parent)| {
            i32::try_from(parent).map_err(|_| tree_error(py, TreeError::InvalidParent { index, parent }))
        })
        .collect::<PyResult<Vec<i32>>>()?;
    let probs = probs.filter(|p| !p.is_none()).map(|p| float_values(p, "probs")).transpose()?;
    TokenTree::new(tokens, parents, probs).map_err(|err| tree_error(py, err))
}

/// A `TokenTree`, or a draft read through its `token_ids`, `parents` and (optional) `probs`.
fn tree_from_object(obj: &Bound<'_, PyAny>) -> PyResult<TokenTree> {
    if let Ok(tree) = obj.cast::<PyTokenTree>() {
        return Ok(tree.get().tree.clone());
    }
    let py = obj.py();
    let field = |name: &str| {
        obj.getattr(name).map_err(|_| {
            let type_name = type_name(obj);
            dtype_error(
                py,
                format!("expected a TokenTree or a Draft-like object, but {type_name} has no {name}"),
            )
        })
    };
    let probs = obj.getattr("probs").ok();
    tree_from_parts(&field("token_ids")?, &field("parents")?, probs.as_ref())
}

/// Trees given as `TokenTree`s (borrowed) or drafts (converted).
enum TreeArg<'py> {
    Native(Bound<'py, PyTokenTree>),
    Converted(TokenTree),
}

impl TreeArg<'_> {
    fn tree(&self) -> &TokenTree {
        match self {
            TreeArg::Native(tree) => &tree.get().tree,
            TreeArg::Converted(tree) => tree,
        }
    }
}

fn tree_args<'py>(trees: &Bound<'py, PyAny>) -> PyResult<Vec<TreeArg<'py>>> {
    let py = trees.py();
    let items: Vec<Bound<'py, PyAny>> = trees.extract().map_err(|_| {
        let type_name = type_name(trees);
        dtype_error(py, format!("trees must be a sequence of TokenTree or Draft objects, got {type_name}"))
    })?;
    items
        .into_iter()
        .map(|item| match item.cast_into::<PyTokenTree>() {
            Ok(tree) => Ok(TreeArg::Native(tree)),
            Err(err) => tree_from_object(&err.into_inner()).map(TreeArg::Converted),
        })
        .collect()
}

/// Moves `data` into a numpy array of `shape` (no copy).
fn shaped<'py, T: Element, D: Dimension>(
    py: Python<'py>,
    shape: impl Into<StrideShape<D>>,
    data: Vec<T>,
) -> PyResult<Bound<'py, PyArray<T, D>>> {
    Array::from_shape_vec(shape, data)
        .map(|array| array.into_pyarray(py))
        .map_err(|err| PyRuntimeError::new_err(format!("internal shape error: {err}")))
}

fn to_i64(values: &[usize]) -> Vec<i64> {
    values.iter().map(|&v| v as i64).collect()
}

// --- TokenTree ---

/// A token tree of draft nodes (parents before children) for one verification step.
#[pyclass(frozen, name = "TokenTree", module = "suffixspec._native")]
#[derive(Debug)]
pub(crate) struct PyTokenTree {
    tree: TokenTree,
}

impl From<TokenTree> for PyTokenTree {
    fn from(tree: TokenTree) -> Self {
        Self { tree }
    }
}

#[pymethods]
impl PyTokenTree {
    #[new]
    #[pyo3(signature = (token_ids, parents, probs = None))]
    fn new(
        token_ids: &Bound<'_, PyAny>,
        parents: &Bound<'_, PyAny>,
        probs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        tree_from_parts(token_ids, parents, probs).map(Self::from)
    }

    #[staticmethod]
    fn from_draft(draft: &Bound<'_, PyAny>) -> PyResult<Self> {
        tree_from_object(draft).map(Self::from)
    }

    #[staticmethod]
    fn merge(py: Python<'_>, trees: &Bound<'_, PyAny>) -> PyResult<Self> {
        let args = tree_args(trees)?;
        let refs: Vec<&TokenTree> = args.iter().map(TreeArg::tree).collect();
        Ok(without_gil(py, || merge(refs)).into())
    }

    fn prune(&self, max_nodes: &Bound<'_, PyAny>) -> PyResult<Self> {
        let budget = int_arg(max_nodes, "max_nodes")?;
        let budget = usize::try_from(budget).map_err(|_| {
            invalid_parameter(max_nodes.py(), format!("max_nodes must be non-negative, got {budget}"))
        })?;
        Ok(self.tree.prune(budget).into())
    }

    fn __len__(&self) -> usize {
        self.tree.len()
    }

    fn __repr__(&self) -> String {
        format!("TokenTree(len={}, max_depth={})", self.tree.len(), self.tree.max_depth())
    }

    #[getter]
    fn token_ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        PyArray1::from_slice(py, self.tree.tokens())
    }

    #[getter]
    fn parents<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        PyArray1::from_slice(py, self.tree.parents())
    }

    #[getter]
    fn depths<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        // Depths are bounded by the node count, which fits in i32 for any real tree.
        self.tree.depths().iter().map(|&d| d as i32).collect::<Vec<_>>().into_pyarray(py)
    }

    #[getter]
    fn probs<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, self.tree.probs())
    }

    fn position_ids<'py>(
        &self,
        py: Python<'py>,
        prefix_len: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let prefix_len = int_arg(prefix_len, "prefix_len")?;
        self.tree.position_ids(prefix_len).map(|p| p.into_pyarray(py)).map_err(|err| tree_error(py, err))
    }

    fn ancestor_mask_bits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<u64>>> {
        let mask = self.tree.ancestor_mask();
        let shape = (mask.len(), mask.words_per_row());
        shaped(py, shape, mask.into_bits())
    }

    fn ancestor_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let n = self.tree.len();
        shaped(py, (n, n), self.tree.ancestor_mask().to_bools())
    }

    fn children<'py>(
        &self,
        py: Python<'py>,
        node: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let node = int_arg(node, "node")?;
        let children = self.tree.children(node).map_err(|err| tree_error(py, err))?;
        Ok(children.into_iter().map(|c| c as i32).collect::<Vec<_>>().into_pyarray(py))
    }

    fn children_csr<'py>(&self, py: Python<'py>) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i32>>) {
        let csr = self.tree.children_csr();
        let indices: Vec<i32> = csr.indices.iter().map(|&c| c as i32).collect();
        (to_i64(&csr.offsets).into_pyarray(py), indices.into_pyarray(py))
    }

    fn path_to<'py>(&self, py: Python<'py>, node: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let node = int_arg(node, "node")?;
        let path = self.tree.path_to(node).map_err(|err| tree_error(py, err))?;
        Ok(to_i64(&path).into_pyarray(py))
    }

    fn accept_greedy<'py>(
        &self,
        py: Python<'py>,
        target_ids: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<i64>>, i64)> {
        let targets = extract_tokens(target_ids, "target_ids")?;
        let acceptance = self.tree.accept_greedy(targets.as_slice()).map_err(|err| tree_error(py, err))?;
        Ok((to_i64(&acceptance.nodes).into_pyarray(py), i64::from(acceptance.bonus)))
    }
}

// --- Batch functions ---

type TreeBatch<'py> = (
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray3<bool>>,
    Bound<'py, PyArray1<i64>>,
);

/// The root-first verification block of a batch of trees (see `_native.pyi`).
#[pyfunction]
fn build_tree_batch<'py>(
    py: Python<'py>,
    trees: &Bound<'py, PyAny>,
    prefix_lens: &Bound<'py, PyAny>,
    root_token_ids: &Bound<'py, PyAny>,
) -> PyResult<TreeBatch<'py>> {
    let args = tree_args(trees)?;
    let prefix_lens = int_values(prefix_lens, "prefix_lens")?;
    let roots = extract_tokens(root_token_ids, "root_token_ids")?;
    let roots = roots.as_slice();
    let refs: Vec<&TokenTree> = args.iter().map(TreeArg::tree).collect();
    let batch = without_gil(py, || build_verification_batch(&refs, &prefix_lens, roots))
        .map_err(|err| tree_error(py, err))?;
    let (b, n) = (batch.batch, batch.width);
    Ok((
        shaped(py, (b, n), batch.token_ids)?,
        shaped(py, (b, n), batch.position_ids)?,
        shaped(py, (b, n, n), batch.mask)?,
        batch.lengths.into_pyarray(py),
    ))
}

/// `target_ids` as row-major i32 tokens plus the row width; any 2-D integer array-like.
fn target_matrix(target_ids: &Bound<'_, PyAny>) -> PyResult<(Vec<i32>, usize, usize)> {
    let py = target_ids.py();
    let array = py.import("numpy")?.call_method1("asarray", (target_ids,))?;
    let (kind, ndim, dtype) = array_info(&array)?.unwrap_or_default();
    if ndim != 2 {
        return Err(dtype_error(py, format!("target_ids must be 2-D [batch, width], got {ndim} dimensions")));
    }
    if kind != "i" && kind != "u" {
        return Err(dtype_error(py, format!("target_ids must hold integer token ids, got dtype {dtype}")));
    }
    let array = array.call_method1("astype", ("int64",))?;
    let array = array.cast::<PyArray2<i64>>()?.readonly();
    let view = array.as_array();
    let values = view
        .iter()
        .enumerate()
        .map(|(index, &token)| {
            i32::try_from(token)
                .ok()
                .filter(|t| *t >= 0)
                .ok_or_else(|| tree_error(py, TreeError::InvalidToken { index, token }))
        })
        .collect::<PyResult<Vec<i32>>>()?;
    Ok((values, view.nrows(), view.ncols()))
}

/// Accepted node indices per tree, and the bonus token of each tree.
type BatchAcceptance<'py> = (Vec<Bound<'py, PyArray1<i64>>>, Bound<'py, PyArray1<i64>>);

/// Greedy acceptance of a whole batch from the model's tokens over its verification block.
#[pyfunction]
fn accept_greedy_batch<'py>(
    py: Python<'py>,
    trees: &Bound<'py, PyAny>,
    target_ids: &Bound<'py, PyAny>,
) -> PyResult<BatchAcceptance<'py>> {
    let args = tree_args(trees)?;
    let (targets, rows, width) = target_matrix(target_ids)?;
    let refs: Vec<&TokenTree> = args.iter().map(TreeArg::tree).collect();
    if rows != refs.len() {
        let message = format!("target_ids has {rows} rows, expected one per tree ({})", refs.len());
        return Err(tree_error(py, TreeError::InvalidParameter { name: "target_ids", reason: message }));
    }
    let accepted =
        without_gil(py, || accept_batch(&refs, &targets, width)).map_err(|err| tree_error(py, err))?;
    let bonus: Vec<i64> = accepted.iter().map(|a| i64::from(a.bonus)).collect();
    let nodes = accepted.into_iter().map(|a| to_i64(&a.nodes).into_pyarray(py)).collect();
    Ok((nodes, bonus.into_pyarray(py)))
}
