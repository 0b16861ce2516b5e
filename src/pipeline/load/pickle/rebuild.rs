//! The only calls a checkpoint may make: PyTorch's tensor rebuild functions, storage types in
//! persistent ids, and `collections.OrderedDict()`. Everything else (any other global, a call
//! of a storage type, a malformed argument tuple) is refused with an error that names the
//! problem, never the file's bytes. Nothing is ever executed: a call only builds a tensor
//! record in the arena.

use super::limits::MAX_RANK;
use super::machine::{Builder, Id, Kind};
use super::PickleError;

pub(crate) const REFUSED_GLOBAL: &str =
    "refers to a Python global that is not a tensor rebuild function or storage type";

/// Element type of a storage, from the `torch.*Storage` name in its persistent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageType {
    Double,
    Float,
    Half,
    BFloat16,
    Long,
    Int,
    Short,
    Char,
    Byte,
    Bool,
}

impl StorageType {
    pub(crate) fn elem_size(self) -> usize {
        match self {
            StorageType::Double | StorageType::Long => 8,
            StorageType::Float | StorageType::Int => 4,
            StorageType::Half | StorageType::BFloat16 | StorageType::Short => 2,
            StorageType::Char | StorageType::Byte | StorageType::Bool => 1,
        }
    }
}

/// A global the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2(func, new_type, args, state)`
    RebuildFromTypeV2,
    /// `torch.Tensor` or `torch.nn.Parameter`, as `new_type` above.
    TensorType,
    OrderedDict,
    Storage(StorageType),
}

/// Resolves `module.name` against the accepted globals.
pub(crate) fn global(module: &[u8], name: &[u8]) -> Option<Global> {
    use StorageType::*;
    Some(match (module, name) {
        (b"torch._utils", b"_rebuild_tensor_v2") => Global::RebuildTensorV2,
        (b"torch._utils", b"_rebuild_tensor") => Global::RebuildTensor,
        (b"torch._utils", b"_rebuild_parameter") => Global::RebuildParameter,
        (b"torch._utils", b"_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        (b"torch._tensor", b"_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        (b"torch._tensor", b"Tensor")
        | (b"torch", b"Tensor")
        | (b"torch.nn.parameter", b"Parameter") => Global::TensorType,
        (b"collections", b"OrderedDict") => Global::OrderedDict,
        (b"torch", storage) => Global::Storage(match storage {
            b"DoubleStorage" => Double,
            b"FloatStorage" => Float,
            b"HalfStorage" => Half,
            b"BFloat16Storage" => BFloat16,
            b"LongStorage" => Long,
            b"IntStorage" => Int,
            b"ShortStorage" => Short,
            b"CharStorage" => Char,
            b"ByteStorage" => Byte,
            b"BoolStorage" => Bool,
            _ => return None,
        }),
        _ => return None,
    })
}

fn args<B: Builder>(b: &B, id: Id) -> Result<&[Id], PickleError> {
    match b.kind(id) {
        Kind::Tuple(items) => Ok(items),
        _ => Err(b.error("call arguments are not a tuple")),
    }
}

fn non_negative<B: Builder>(b: &B, id: Id, reason: &'static str) -> Result<u64, PickleError> {
    match b.kind(id) {
        Kind::Int(i) if *i >= 0 => Ok(*i as u64),
        _ => Err(b.error(reason)),
    }
}

/// A tensor's size or stride: a tuple of at most [`MAX_RANK`] non-negative integers.
fn dims<B: Builder>(b: &B, id: Id, reason: &'static str) -> Result<usize, PickleError> {
    let Kind::Tuple(items) = b.kind(id) else {
        return Err(b.error(reason));
    };
    if items.len() > MAX_RANK {
        return Err(b.error("tensor has too many dimensions"));
    }
    for &d in items {
        non_negative(b, d, reason)?;
    }
    Ok(items.len())
}

/// `_rebuild_tensor(_v2)(storage, offset, size, stride, ...)` as a tensor record.
fn rebuild_tensor<B: Builder>(b: &mut B, items: &[Id], v2: bool) -> Result<Id, PickleError> {
    let expected = if v2 { 6..=7 } else { 4..=4 };
    if !expected.contains(&items.len()) {
        return Err(b.error("tensor rebuild call with the wrong number of arguments"));
    }
    let (storage, offset, size, stride) = (items[0], items[1], items[2], items[3]);
    if !matches!(b.kind(storage), Kind::Storage { .. }) {
        return Err(b.error("tensor rebuild call without a storage"));
    }
    let offset = non_negative(
        b,
        offset,
        "tensor storage offset is not a non-negative integer",
    )?;
    let rank = dims(
        b,
        size,
        "tensor size is not a tuple of non-negative integers",
    )?;
    if dims(
        b,
        stride,
        "tensor stride is not a tuple of non-negative integers",
    )? != rank
    {
        return Err(b.error("tensor size and stride differ in length"));
    }
    let kind = Kind::Tensor {
        storage,
        offset,
        size,
        stride,
    };
    b.build(kind, &[storage, size, stride])
}

/// `REDUCE`: `callable(*args)` for the accepted callables only.
pub(crate) fn call<B: Builder>(b: &mut B, callable: Id, args_id: Id) -> Result<Id, PickleError> {
    let Kind::Global(global) = *b.kind(callable) else {
        return Err(b.error("calls something that is not an accepted global"));
    };
    // No accepted call takes more than 7 arguments: refuse before copying a long tuple.
    let items = match args(b, args_id)? {
        items if items.len() <= 7 => items.to_vec(),
        _ => return Err(b.error("call with too many arguments")),
    };
    match global {
        Global::RebuildTensorV2 => rebuild_tensor(b, &items, true),
        Global::RebuildTensor => rebuild_tensor(b, &items, false),
        Global::RebuildParameter | Global::RebuildParameterWithState => {
            let n = if global == Global::RebuildParameter {
                3
            } else {
                4
            };
            match items.as_slice() {
                [data, ..] if items.len() == n && matches!(b.kind(*data), Kind::Tensor { .. }) => {
                    Ok(*data)
                }
                _ => Err(b.error("parameter rebuild call without a tensor")),
            }
        }
        Global::RebuildFromTypeV2 => {
            let [func, new_type, inner, _state] = items.as_slice() else {
                return Err(b.error("_rebuild_from_type_v2 with the wrong number of arguments"));
            };
            if *b.kind(*new_type) != Kind::Global(Global::TensorType) {
                return Err(b.error("_rebuild_from_type_v2 of a type that is not a tensor"));
            }
            let inner = match args(b, *inner)? {
                inner if inner.len() <= 7 => inner.to_vec(),
                _ => return Err(b.error("call with too many arguments")),
            };
            match b.kind(*func) {
                Kind::Global(Global::RebuildTensorV2) => rebuild_tensor(b, &inner, true),
                Kind::Global(Global::RebuildTensor) => rebuild_tensor(b, &inner, false),
                _ => {
                    Err(b.error("_rebuild_from_type_v2 of a function that is not a tensor rebuild"))
                }
            }
        }
        Global::OrderedDict if items.is_empty() => b.build(Kind::Dict(Vec::new()), &[]),
        Global::OrderedDict => Err(b.error("OrderedDict called with arguments")),
        Global::TensorType | Global::Storage(_) => Err(b.error("calls a type")),
    }
}

/// `BINPERSID`: `('storage', torch.XStorage, key, location, numel)` as a storage record.
pub(crate) fn persistent_id<B: Builder>(b: &mut B, pid: Id) -> Result<Id, PickleError> {
    let items = match b.kind(pid) {
        Kind::Tuple(items) if items.len() == 5 => items.clone(),
        _ => return Err(b.error("persistent id is not a 5-tuple")),
    };
    if b.text(items[0]) != Some("storage") {
        return Err(b.error("persistent id is not a storage"));
    }
    let Kind::Global(Global::Storage(ty)) = *b.kind(items[1]) else {
        return Err(b.error("persistent id without a storage type"));
    };
    let key_ok = b.text(items[2]).is_some_and(|k| {
        !k.is_empty() && k.len() <= 64 && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
    });
    if !key_ok {
        return Err(b.error("storage key is not a short alphanumeric name"));
    }
    if b.text(items[3]).is_none() {
        return Err(b.error("storage location is not a string"));
    }
    let numel = non_negative(b, items[4], "storage size is not a non-negative integer")?;
    let kind = Kind::Storage {
        ty,
        key: items[2],
        numel,
    };
    b.build(kind, &[items[2]])
}
