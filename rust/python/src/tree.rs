//! Bindings of the token-tree builder: `TokenTree`, `build_tree_batch` and `accept_greedy_batch`.
//!
//! Thin glue only. Arguments are converted and checked with the GIL held, results move their
//! Rust buffers into numpy arrays (no copy back), and batch work runs with the GIL released.
//! Drafts are read by duck typing (`token_ids`, `parents`, `probs` attributes), so any object
//! shaped like `suffixspec.Draft` works.
use numpy::ndarray::{Array, Dimension, StrideShape};
use numpy::{Element, IntoPyArray, PyArray, PyArray1, PyArray2, PyArray3};
use pyo3::prelude::*;
use suffixspec_tree::{
    accept_greedy_batch as accept_batch, build_verification_batch, merge, TokenTree, TreeError,
};

use crate::cache::PyDraft;
use crate::convert::{int64s, owned_tokens, ranged, reals, token_matrix, tokens, type_name};
use crate::errors::{Error, Result};
use crate::gil::without_gil;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenTree>()?;
    m.add_function(wrap_pyfunction!(build_tree_batch, m)?)?;
    m.add_function(wrap_pyfunction!(accept_greedy_batch, m)?)?;
    Ok(())
}

fn tree_from_parts(
    token_ids: &Bound<'_, PyAny>,
    parents: &Bound<'_, PyAny>,
    probs: Option<&Bound<'_, PyAny>>,
) -> Result<TokenTree> {
    let tokens = owned_tokens(token_ids, "token_ids")?;
    let parents = int64s(parents, "parents")?
        .into_iter()
        .enumerate()
        .map(|(index, parent)| i32::try_from(parent).map_err(|_| TreeError::InvalidParent { index, parent }))
        .collect::<Result<Vec<i32>, _>>()?;
    let probs = probs.filter(|p| !p.is_none()).map(|p| reals(p, "probs")).transpose()?;
    Ok(TokenTree::new(tokens, parents, probs)?)
}

/// A `TokenTree`, a native `Draft` (its arrays read without a copy back to Python), or any
/// draft-like object read through its `token_ids`, `parents` and (optional) `probs`.
fn tree_from_object(obj: &Bound<'_, PyAny>) -> Result<TokenTree> {
    if let Ok(tree) = obj.cast::<PyTokenTree>() {
        return Ok(tree.get().tree.clone());
    }
    if let Ok(draft) = obj.cast::<PyDraft>() {
        let (tokens, parents, probs) = draft.get().to_vecs(obj.py());
        return Ok(TokenTree::new(tokens, parents, Some(probs))?);
    }
    let field = |name: &str| {
        obj.getattr(name).map_err(|_| {
            Error::DType(format!(
                "expected a TokenTree or a Draft-like object, but {} has no {name}",
                type_name(obj)
            ))
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

fn tree_args<'py>(trees: &Bound<'py, PyAny>) -> Result<Vec<TreeArg<'py>>> {
    let items: Vec<Bound<'py, PyAny>> = trees.extract().map_err(|_| {
        Error::DType(format!(
            "trees must be a sequence of TokenTree or Draft objects, got {}",
            type_name(trees)
        ))
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
) -> Result<Bound<'py, PyArray<T, D>>> {
    Array::from_shape_vec(shape, data)
        .map(|array| array.into_pyarray(py))
        .map_err(|err| Error::Internal(format!("internal shape error: {err}")))
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
    ) -> Result<Self> {
        tree_from_parts(token_ids, parents, probs).map(Self::from)
    }

    #[staticmethod]
    fn from_draft(draft: &Bound<'_, PyAny>) -> Result<Self> {
        tree_from_object(draft).map(Self::from)
    }

    #[staticmethod]
    fn merge(py: Python<'_>, trees: &Bound<'_, PyAny>) -> Result<Self> {
        let args = tree_args(trees)?;
        let refs: Vec<&TokenTree> = args.iter().map(TreeArg::tree).collect();
        Ok(without_gil(py, || merge(refs)).into())
    }

    fn prune(&self, max_nodes: &Bound<'_, PyAny>) -> Result<Self> {
        let budget: usize = ranged(max_nodes, "max_nodes", "0..2**64")?;
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
    ) -> Result<Bound<'py, PyArray1<i64>>> {
        let prefix_len: i64 = ranged(prefix_len, "prefix_len", "the int64 range")?;
        Ok(self.tree.position_ids(prefix_len)?.into_pyarray(py))
    }

    fn ancestor_mask_bits<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyArray2<u64>>> {
        let mask = self.tree.ancestor_mask();
        let shape = (mask.len(), mask.words_per_row());
        shaped(py, shape, mask.into_bits())
    }

    fn ancestor_mask<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyArray2<bool>>> {
        let n = self.tree.len();
        shaped(py, (n, n), self.tree.ancestor_mask().to_bools())
    }

    fn children<'py>(&self, py: Python<'py>, node: &Bound<'py, PyAny>) -> Result<Bound<'py, PyArray1<i32>>> {
        let node: i64 = ranged(node, "node", "the int64 range")?;
        let children = self.tree.children(node)?;
        Ok(children.into_iter().map(|c| c as i32).collect::<Vec<_>>().into_pyarray(py))
    }

    fn children_csr<'py>(&self, py: Python<'py>) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i32>>) {
        let csr = self.tree.children_csr();
        let indices: Vec<i32> = csr.indices.iter().map(|&c| c as i32).collect();
        (to_i64(&csr.offsets).into_pyarray(py), indices.into_pyarray(py))
    }

    fn path_to<'py>(&self, py: Python<'py>, node: &Bound<'py, PyAny>) -> Result<Bound<'py, PyArray1<i64>>> {
        let node: i64 = ranged(node, "node", "the int64 range")?;
        let path = self.tree.path_to(node)?;
        Ok(to_i64(&path).into_pyarray(py))
    }

    fn accept_greedy<'py>(
        &self,
        py: Python<'py>,
        target_ids: &Bound<'py, PyAny>,
    ) -> Result<(Bound<'py, PyArray1<i64>>, i64)> {
        let targets = tokens(target_ids, "target_ids")?;
        let acceptance = self.tree.accept_greedy(targets.as_slice())?;
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
) -> Result<TreeBatch<'py>> {
    let args = tree_args(trees)?;
    let prefix_lens = int64s(prefix_lens, "prefix_lens")?;
    let roots = owned_tokens(root_token_ids, "root_token_ids")?;
    let refs: Vec<&TokenTree> = args.iter().map(TreeArg::tree).collect();
    let batch = without_gil(py, || build_verification_batch(&refs, &prefix_lens, &roots))?;
    let (b, n) = (batch.batch, batch.width);
    Ok((
        shaped(py, (b, n), batch.token_ids)?,
        shaped(py, (b, n), batch.position_ids)?,
        shaped(py, (b, n, n), batch.mask)?,
        batch.lengths.into_pyarray(py),
    ))
}

/// Accepted node indices per tree, and the bonus token of each tree.
type BatchAcceptance<'py> = (Vec<Bound<'py, PyArray1<i64>>>, Bound<'py, PyArray1<i64>>);

/// Greedy acceptance of a whole batch from the model's tokens over its verification block.
#[pyfunction]
fn accept_greedy_batch<'py>(
    py: Python<'py>,
    trees: &Bound<'py, PyAny>,
    target_ids: &Bound<'py, PyAny>,
) -> Result<BatchAcceptance<'py>> {
    let args = tree_args(trees)?;
    let (targets, rows, width) = token_matrix(target_ids, "target_ids")?;
    let refs: Vec<&TokenTree> = args.iter().map(TreeArg::tree).collect();
    if rows != refs.len() {
        let reason = format!("target_ids has {rows} rows, expected one per tree ({})", refs.len());
        return Err(TreeError::InvalidParameter { name: "target_ids", reason }.into());
    }
    let accepted = without_gil(py, || accept_batch(&refs, &targets, width))?;
    let bonus: Vec<i64> = accepted.iter().map(|a| i64::from(a.bonus)).collect();
    let nodes = accepted.into_iter().map(|a| to_i64(&a.nodes).into_pyarray(py)).collect();
    Ok((nodes, bonus.into_pyarray(py)))
}
