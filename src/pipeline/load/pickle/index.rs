//! Turns what a `data.pkl` returned into the tensor index: the state dict is the top-level dict
//! or, as LDM training checkpoints store it, the dict under its `"state_dict"` key. Each entry
//! with a string key and a tensor value becomes a [`PickledTensor`]; other entries (step
//! counters, nested metadata) are skipped. A flat pass over two dicts: no recursion.

use std::collections::BTreeMap;

use super::machine::{Graph, Id, Kind};
use super::rebuild::StorageType;
use super::PickleError;

/// Where a tensor's values are, as the pickle describes them (offsets in elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickledTensor {
    pub storage_key: String,
    pub dtype: StorageType,
    pub storage_numel: u64,
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

fn dict_items<'g>(graph: &'g Graph<'_>, id: Id) -> Option<&'g [Id]> {
    match graph.kind(id) {
        Kind::Dict(items) => Some(items),
        _ => None,
    }
}

fn usizes(graph: &Graph<'_>, id: Id) -> Option<Vec<usize>> {
    graph
        .tuple(id)?
        .iter()
        .map(|&d| graph.int(d).and_then(|v| usize::try_from(v).ok()))
        .collect()
}

fn tensor(graph: &Graph<'_>, id: Id) -> Option<PickledTensor> {
    let Kind::Tensor {
        storage,
        offset,
        size,
        stride,
    } = graph.kind(id)
    else {
        return None;
    };
    let Kind::Storage { ty, key, numel } = graph.kind(*storage) else {
        return None;
    };
    Some(PickledTensor {
        storage_key: graph.str(*key)?.to_string(),
        dtype: *ty,
        storage_numel: *numel,
        offset: *offset,
        shape: usizes(graph, *size)?,
        stride: usizes(graph, *stride)?,
    })
}

/// The state dict's tensors by name, and whether they sat under `"state_dict"`.
pub(crate) fn state_dict(
    graph: &Graph<'_>,
) -> Result<(BTreeMap<String, PickledTensor>, bool), PickleError> {
    let root = dict_items(graph, graph.root).ok_or(PickleError::Archive(
        "the pickle does not hold a dict of tensors",
    ))?;
    let nested = root
        .chunks_exact(2)
        .rev()
        .find(|kv| graph.str(kv[0]) == Some("state_dict"))
        .and_then(|kv| dict_items(graph, kv[1]));
    let items = nested.unwrap_or(root);
    let mut tensors = BTreeMap::new();
    for kv in items.chunks_exact(2) {
        if let (Some(name), Some(t)) = (graph.str(kv[0]), tensor(graph, kv[1])) {
            tensors.insert(name.to_string(), t);
        }
    }
    if tensors.is_empty() {
        return Err(PickleError::Archive("no tensors found in the pickle"));
    }
    Ok((tensors, nested.is_some()))
}
