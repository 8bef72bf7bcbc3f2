//! The one conversion path from Python values to Rust values: every token sequence, integer,
//! count, handle, real number and flag a binding accepts is read here, and every bad input gets
//! its typed error here.
//!
//! Token sequences may be:
//! * a list or tuple of ints (the per-step form of engines: read directly) or of numpy integer
//!   scalars (arctic's simulator passes those), or any other sequence of them (`range`, ...);
//! * a single int or numpy integer scalar: one token (arctic accepts `add_active_response(id, 5)`);
//! * a 1-D numpy array of any integer dtype (a contiguous, aligned int32 array is borrowed
//!   without a copy; misaligned, strided or byte-swapped arrays are copied first);
//! * a 1-D integer torch tensor on any device (moved to the CPU; bfloat16, float8, quantized,
//!   sparse, nested and meta tensors are refused with `DTypeError`).
//!
//! Bools are never integers here: `True`, `np.True_`, bool arrays and bool tensors raise
//! `DTypeError` wherever a token id, count or index is expected (they are almost always a mask
//! passed by mistake); flags accept both bool types.
use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyInt, PyList, PyString, PyTuple, PyType};
use suffixspec_cache::{Drafter, TokenId};

use crate::errors::{Error, Result};

/// Largest token id (ids are `i32` in the core).
const MAX_TOKEN: i128 = i32::MAX as i128;

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|name| name.to_string()).unwrap_or_else(|_| "object".to_owned())
}

// --- Scalars ---

/// The value of an integer object, saturated to the `i128` range (the sign is kept, so range
/// errors name the right bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int(pub(crate) i128);

/// Whether `obj` is a Python or numpy bool.
fn is_bool(obj: &Bound<'_, PyAny>) -> bool {
    static NUMPY_BOOL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    if obj.is_instance_of::<PyBool>() {
        return true;
    }
    let py = obj.py();
    NUMPY_BOOL
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py.import("numpy")?.getattr("bool_")?.cast_into::<PyType>()?.unbind())
        })
        .is_ok_and(|numpy_bool| obj.is_instance(numpy_bool.bind(py)).unwrap_or(false))
}

/// The integer value of `obj` (a Python int, or anything with `__index__`: numpy integer scalars,
/// 0-d integer tensors); `None` for bools and non-integers.
pub(crate) fn int_value(obj: &Bound<'_, PyAny>) -> Result<Option<Int>> {
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(value) = obj.extract::<i64>() {
            return Ok(Some(Int(i128::from(value))));
        }
    } else if is_bool(obj) {
        return Ok(None);
    }
    match obj.extract::<i128>() {
        Ok(value) => Ok(Some(Int(value))),
        Err(err) if err.is_instance_of::<PyOverflowError>(obj.py()) => {
            Ok(Some(Int(if obj.lt(0)? { i128::MIN } else { i128::MAX })))
        }
        Err(_) => Ok(None),
    }
}

/// An integer argument named `what`, or a `DTypeError` naming what was given.
pub(crate) fn int_arg(obj: &Bound<'_, PyAny>, what: &str) -> Result<Int> {
    int_value(obj)?.ok_or_else(|| Error::DType(format!("{what} must be an int, got {}", type_name(obj))))
}

/// An integer argument in `T`'s range; `InvalidParameterError` (naming the value) outside it.
pub(crate) fn ranged<T: TryFrom<i128>>(obj: &Bound<'_, PyAny>, what: &str, range: &str) -> Result<T> {
    let Int(value) = int_arg(obj, what)?;
    T::try_from(value).map_err(|_| Error::Parameter(format!("{what} must be in {range}, got {}", repr(obj))))
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".to_owned())
}

/// A request or sequence handle: an int in `0..2**64`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handle(pub(crate) u64);

impl FromPyObject<'_, '_> for Handle {
    type Error = Error;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self> {
        ranged(&obj, "a request handle", "0..2**64").map(Handle)
    }
}

/// A non-negative count (sizes, budgets, token limits); ints too large for `usize` saturate,
/// as they mean "no limit" in every place a count is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count(pub(crate) usize);

impl FromPyObject<'_, '_> for Count {
    type Error = Error;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self> {
        match int_arg(&obj, "a count")? {
            Int(value) if value >= 0 => Ok(Count(usize::try_from(value).unwrap_or(usize::MAX))),
            _ => Err(Error::Parameter(format!("counts must be >= 0, got {}", repr(&obj)))),
        }
    }
}

/// A real number (int, float or numpy scalar; not a bool). Ranges are checked by the core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Real(pub(crate) f64);

impl FromPyObject<'_, '_> for Real {
    type Error = Error;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self> {
        real_value(&obj, "expected a real number").map(Real)
    }
}

fn real_value(obj: &Bound<'_, PyAny>, what: &str) -> Result<f64> {
    if is_bool(obj) {
        return Err(Error::DType(format!("{what}, not a bool")));
    }
    match obj.extract::<f64>() {
        Ok(value) => Ok(value),
        Err(err) if err.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(Error::Parameter(format!("{} does not fit in a float", repr(obj))))
        }
        Err(_) => Err(Error::DType(format!("{what}, got {}", type_name(obj)))),
    }
}

/// A bool (Python or numpy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag(pub(crate) bool);

impl FromPyObject<'_, '_> for Flag {
    type Error = Error;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self> {
        if !is_bool(&obj) {
            return Err(Error::DType(format!("expected a bool, got {}", type_name(&obj))));
        }
        Ok(Flag(obj.is_truthy()?))
    }
}

/// A drafting algorithm by name: `"arctic"` (arctic-inference's drafts) or `"suffixspec"` (drafts
/// sized by expected acceptance; see `Drafter` in the core crate).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DrafterName(pub(crate) Drafter);

impl FromPyObject<'_, '_> for DrafterName {
    type Error = Error;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self> {
        let Ok(name) = obj.extract::<&str>() else {
            return Err(Error::DType(format!("drafter must be a str, got {}", type_name(&obj))));
        };
        match name {
            "arctic" => Ok(DrafterName(Drafter::Arctic)),
            "suffixspec" => Ok(DrafterName(Drafter::Suffixspec)),
            other => {
                Err(Error::Parameter(format!("unknown drafter {other:?}; known: \"arctic\", \"suffixspec\"")))
            }
        }
    }
}

// --- Integer sequences ---

/// How the items of an integer sequence are checked: their Rust type, and the error for a value
/// outside its range (`index`, the value as Python prints it).
pub(crate) trait Items: Sized + Copy + TryFrom<i128> {
    fn out_of_range(what: &str, index: usize, value: &str) -> Error;
}

impl Items for TokenId {
    // Token ids: `0..=i32::MAX` (i32 also holds tree parents, checked by the tree itself).
    fn out_of_range(what: &str, index: usize, value: &str) -> Error {
        Error::Token(format!(
            "invalid token id {value} at index {index} of {what}: token ids must be in 0..={}",
            i32::MAX
        ))
    }
}

impl Items for i64 {
    fn out_of_range(what: &str, index: usize, value: &str) -> Error {
        Error::Parameter(format!("{what}[{index}] = {value} does not fit in a 64-bit integer"))
    }
}

/// `value` as a `T` (tokens: also non-negative).
fn item<T: Items>(value: i128, index: usize, what: &str, is_token: bool) -> Result<T> {
    let in_range = !is_token || (0..=MAX_TOKEN).contains(&value);
    let shown = || match value {
        i128::MAX => "(an int beyond 2**127)".to_owned(),
        i128::MIN => "(an int below -2**127)".to_owned(),
        _ => value.to_string(),
    };
    match T::try_from(value) {
        Ok(v) if in_range => Ok(v),
        _ => Err(T::out_of_range(what, index, &shown())),
    }
}

/// Reads the items of a list, tuple or other sequence: plain ints straight away, anything else
/// (numpy scalars, huge ints) through [`int_value`], which also names each bad item.
fn int_items<'py, T: Items>(
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    what: &str,
    is_token: bool,
) -> Result<Vec<T>> {
    let mut values = Vec::with_capacity(items.len());
    for (index, obj) in items.enumerate() {
        let value = match int_value(&obj)? {
            Some(Int(value)) => value,
            None => {
                let kind = if is_bool(&obj) { "bool".to_owned() } else { type_name(&obj) };
                return Err(Error::DType(format!("{what} must hold int ids, got {kind} at index {index}")));
            }
        };
        values.push(item(value, index, what, is_token)?);
    }
    Ok(values)
}

/// Integer dtype kinds (signed, unsigned) and real ones (also float).
const INTEGER_KINDS: &[u8] = b"iu";
const REAL_KINDS: &[u8] = b"iuf";

/// The one dtype probe: a `DTypeError` unless `array` has `ndim` dimensions and a dtype kind in
/// `kinds` (the message names `what` must hold: "integer ids", "real numbers").
fn check_array(
    array: &Bound<'_, PyUntypedArray>,
    what: &str,
    ndim: usize,
    kinds: &[u8],
    holds: &str,
) -> Result<()> {
    if array.ndim() != ndim {
        return Err(Error::DType(format!(
            "{what} must be {ndim}-D, got an array with {} dimensions",
            array.ndim()
        )));
    }
    let dtype = array.dtype();
    if !kinds.contains(&dtype.kind()) {
        return Err(Error::DType(format!("{what} must hold {holds}, got dtype {}", dtype.str()?)));
    }
    Ok(())
}

/// The values of an integer numpy array of any dtype, layout and alignment. Fast for aligned
/// native int32/int64; anything else is first copied by numpy into a fresh aligned int64 (or,
/// for uint64, uint64) array.
fn array_values<T: Items>(array: &Bound<'_, PyUntypedArray>, what: &str, is_token: bool) -> Result<Vec<T>> {
    check_array(array, what, 1, INTEGER_KINDS, "integer ids")?;
    let check = |values: &mut dyn Iterator<Item = i128>| -> Result<Vec<T>> {
        values.enumerate().map(|(index, value)| item(value, index, what, is_token)).collect()
    };
    if array.is_aligned() {
        if let Ok(array) = array.cast::<PyArray1<i32>>() {
            return check(&mut array.readonly().as_array().iter().map(|&v| i128::from(v)));
        }
        if let Ok(array) = array.cast::<PyArray1<i64>>() {
            return check(&mut array.readonly().as_array().iter().map(|&v| i128::from(v)));
        }
    }
    check(&mut widened(array)?.into_iter())
}

/// Every value of an integer array (any dimensions, dtype, layout and alignment) in row-major
/// order, copied by numpy into a fresh aligned int64 array first (uint64 into uint64, so values
/// above `i64::MAX` stay exact).
fn widened(array: &Bound<'_, PyUntypedArray>) -> Result<Vec<i128>> {
    let dtype = array.dtype();
    let flat = array.call_method1("reshape", (-1,))?;
    if dtype.kind() == b'u' && dtype.itemsize() == 8 {
        let copy = flat.call_method1("astype", ("uint64",))?;
        let copy = copy.cast::<PyArray1<u64>>().map_err(PyErr::from)?.readonly();
        return Ok(copy.as_array().iter().map(|&v| i128::from(v)).collect());
    }
    let copy = flat.call_method1("astype", ("int64",))?;
    let copy = copy.cast::<PyArray1<i64>>().map_err(PyErr::from)?.readonly();
    Ok(copy.as_array().iter().map(|&v| i128::from(v)).collect())
}

/// `obj` when it is a torch tensor holding plain strided data (any device), `None` when it is
/// not a tensor; nested, quantized, sparse and meta tensors raise `DTypeError`.
fn torch_tensor<'py>(obj: &Bound<'py, PyAny>, what: &str) -> Result<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    // A tensor implies torch is already imported: never import it here.
    let torch = py.import("sys")?.getattr("modules")?.call_method1("get", ("torch",))?;
    if torch.is_none() || !obj.is_instance(&torch.getattr("Tensor")?)? {
        return Ok(None);
    }
    let refuse = |kind: &str| Err(Error::DType(format!("{what} must be a plain tensor, got {kind}")));
    if obj.getattr("is_nested")?.is_truthy()? {
        return refuse("a nested tensor");
    }
    if obj.getattr("is_quantized")?.is_truthy()? {
        return refuse("a quantized tensor");
    }
    if obj.getattr("is_meta")?.is_truthy()? {
        return refuse("a meta tensor (it holds no data)");
    }
    let layout = obj.getattr("layout")?.str()?.to_string();
    if layout != "torch.strided" {
        return refuse(&format!("a tensor with layout {layout}"));
    }
    Ok(Some(obj.call_method0("detach")?.call_method0("cpu")?))
}

/// A torch tensor of integer ids as a numpy array; `None` when `obj` is not a tensor. Float
/// (including bfloat16, float8), complex and bool tensors raise `DTypeError`.
fn torch_ints<'py>(obj: &Bound<'py, PyAny>, what: &str) -> Result<Option<Bound<'py, PyAny>>> {
    let Some(tensor) = torch_tensor(obj, what)? else { return Ok(None) };
    let dtype = tensor.getattr("dtype")?;
    let integer = !dtype.getattr("is_floating_point")?.is_truthy()?
        && !dtype.getattr("is_complex")?.is_truthy()?
        && dtype.getattr("itemsize")?.extract::<usize>()? > 0
        && dtype.str()? != "torch.bool";
    if !integer {
        return Err(Error::DType(format!("{what} must hold integer ids, got dtype {}", dtype.str()?)));
    }
    // Integer dtypes numpy lacks would fail here: still a typed error.
    let array = tensor
        .call_method0("numpy")
        .map_err(|err| Error::DType(format!("{what}: a tensor of dtype {dtype} cannot be read ({err})")))?;
    Ok(Some(array))
}

/// The integer values of any accepted sequence form (see the module docs), checked as `T`.
fn values<T: Items>(obj: &Bound<'_, PyAny>, what: &str, is_token: bool) -> Result<Vec<T>> {
    if let Ok(list) = obj.cast_exact::<PyList>() {
        return int_items(list.iter(), what, is_token);
    }
    if let Ok(tuple) = obj.cast_exact::<PyTuple>() {
        return int_items(tuple.iter(), what, is_token);
    }
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return array_values(array, what, is_token);
    }
    if let Some(Int(value)) = int_value(obj)? {
        return Ok(vec![item(value, 0, what, is_token)?]);
    }
    if let Some(array) = torch_ints(obj, what)? {
        return values(&array, what, is_token);
    }
    if is_bool(obj) {
        return Err(Error::DType(format!("{what} must be token ids, not a bool")));
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Error::DType(format!("{what} must be a sequence of int ids, not a string")));
    }
    let items: Vec<Bound<'_, PyAny>> = obj.extract().map_err(|_| {
        Error::DType(format!("{what} must be a sequence or 1-D integer array of ids, got {}", type_name(obj)))
    })?;
    int_items(items.into_iter(), what, is_token)
}

/// Token ids taken from Python, borrowed when possible.
pub(crate) enum Tokens<'py> {
    Borrowed(PyReadonlyArray1<'py, TokenId>),
    Owned(Vec<TokenId>),
}

impl Tokens<'_> {
    pub(crate) fn as_slice(&self) -> &[TokenId] {
        match self {
            // `tokens` only borrows contiguous arrays, so `as_slice` cannot fail here.
            Tokens::Borrowed(array) => array.as_slice().unwrap_or(&[]),
            Tokens::Owned(vec) => vec,
        }
    }
    /// Owned copy, for work done with the GIL released.
    pub(crate) fn into_vec(self) -> Vec<TokenId> {
        match self {
            Tokens::Borrowed(array) => array.as_slice().map(<[TokenId]>::to_vec).unwrap_or_default(),
            Tokens::Owned(vec) => vec,
        }
    }
}

/// Token ids in any accepted form: a contiguous, aligned, native int32 array is borrowed;
/// everything else is converted once. Out-of-range ids raise `InvalidTokenError`.
pub(crate) fn tokens<'py>(obj: &Bound<'py, PyAny>, what: &str) -> Result<Tokens<'py>> {
    if let Ok(array) = obj.cast::<PyArray1<TokenId>>() {
        if array.is_contiguous() && array.is_aligned() {
            let view = array.readonly();
            let slice = view.as_slice().map_err(|err| Error::Internal(err.to_string()))?;
            if let Some(index) = slice.iter().position(|t| *t < 0) {
                let value = slice[index].to_string();
                return Err(TokenId::out_of_range(what, index, &value));
            }
            return Ok(Tokens::Borrowed(view));
        }
    }
    values(obj, what, true).map(Tokens::Owned)
}

/// Token ids as an owned vector (for work done with the GIL released).
pub(crate) fn owned_tokens(obj: &Bound<'_, PyAny>, what: &str) -> Result<Vec<TokenId>> {
    tokens(obj, what).map(Tokens::into_vec)
}

/// A 1-D sequence of arbitrary 64-bit integers (tree parents, prefix lengths).
pub(crate) fn int64s(obj: &Bound<'_, PyAny>, what: &str) -> Result<Vec<i64>> {
    values(obj, what, false)
}

/// A 1-D sequence of real numbers: a list/tuple or a 1-D float or integer array (or tensor).
pub(crate) fn reals(obj: &Bound<'_, PyAny>, what: &str) -> Result<Vec<f64>> {
    if let Ok(array) = obj.cast::<PyArray1<f64>>() {
        if array.is_aligned() {
            return Ok(array.readonly().as_array().to_vec());
        }
    }
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        check_array(array, what, 1, REAL_KINDS, "real numbers")?;
        return reals(&array.call_method1("astype", ("float64",))?, what);
    }
    if let Some(tensor) = torch_tensor(obj, what)? {
        // Probabilities may be any real dtype: read in float64 (bfloat16, float8 widen exactly).
        let wide = tensor.call_method1("to", (obj.py().import("torch")?.getattr("float64")?,))?;
        return reals(&wide.call_method0("numpy")?, what);
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Error::DType(format!("{what} must be a sequence of floats, not a string")));
    }
    let items: Vec<Bound<'_, PyAny>> = obj
        .extract()
        .map_err(|_| Error::DType(format!("{what} must be a sequence of floats, got {}", type_name(obj))))?;
    items.iter().map(|item| real_value(item, &format!("{what} must hold floats"))).collect()
}

/// A 2-D integer matrix of token ids (row-major) with its shape: a numpy array, a torch tensor
/// or nested sequences of equal length.
pub(crate) fn token_matrix(obj: &Bound<'_, PyAny>, what: &str) -> Result<(Vec<TokenId>, usize, usize)> {
    let py = obj.py();
    let array = match torch_ints(obj, what)? {
        Some(array) => array,
        None if obj.cast::<PyUntypedArray>().is_ok() => obj.clone(),
        None => {
            let rows: Vec<Bound<'_, PyAny>> = obj.extract().map_err(|_| {
                Error::DType(format!("{what} must be a 2-D integer array, got {}", type_name(obj)))
            })?;
            let rows = rows.iter().map(|row| int64s(row, what)).collect::<Result<Vec<_>>>()?;
            let width = rows.first().map_or(0, Vec::len);
            if let Some(index) = rows.iter().position(|row| row.len() != width) {
                return Err(Error::DType(format!(
                    "{what} must be a 2-D array: row {index} has {} ids, row 0 has {width}",
                    rows[index].len()
                )));
            }
            let flat: Vec<i64> = rows.concat();
            numpy::PyArray1::from_vec(py, flat).reshape([rows.len(), width])?.into_any()
        }
    };
    let array = array.cast::<PyUntypedArray>().map_err(PyErr::from)?;
    check_array(array, what, 2, INTEGER_KINDS, "integer ids")?;
    let (rows, width) = (array.shape()[0], array.shape()[1]);
    let tokens = widened(array)?
        .into_iter()
        .enumerate()
        .map(|(index, value)| item(value, index, what, true))
        .collect::<Result<Vec<TokenId>>>()?;
    Ok((tokens, rows, width))
}
