//! The reader's limits: every bound a hostile `data.pkl` or zip archive can hit, in one place.
//! Real Stable Diffusion checkpoints (SD1/SD2 full-EMA with optimizer state, SDXL) stay one to
//! two orders of magnitude below each of them; together they cap the reader's memory at about
//! 100 MB and its work at a few hundred milliseconds on any input.

/// Largest `data.pkl` read into memory (real SD checkpoints: 0.1-2 MB).
pub(crate) const MAX_PICKLE_BYTES: u64 = 32 << 20;
/// Opcodes executed before giving up (real: about 20 per tensor).
pub(crate) const MAX_OPS: usize = 8_000_000;
/// Values built (tuples, strings, tensors, ...; real: about 10 per tensor).
pub(crate) const MAX_NODES: usize = 1_000_000;
/// Items held by all tuples, lists and dicts together (a dict entry counts two).
pub(crate) const MAX_CHILDREN: usize = 4_000_000;
/// Memo entries (`BINPUT`, `LONG_BINPUT`, `MEMOIZE`).
pub(crate) const MAX_MEMO: usize = 1_000_000;
/// Values on the stack at once.
pub(crate) const MAX_STACK: usize = 1_000_000;
/// Open `MARK`s at once.
pub(crate) const MAX_MARKS: usize = 64;
/// Nesting depth of containers (real: 6).
pub(crate) const MAX_DEPTH: u32 = 32;
/// One string or bytes value (tensor names are about 100 bytes).
pub(crate) const MAX_STRING_BYTES: usize = 1 << 20;
/// One `GLOBAL` line (module or name).
pub(crate) const MAX_GLOBAL_LINE: usize = 256;
/// Dimensions of one tensor.
pub(crate) const MAX_RANK: usize = 8;
/// Entries in the zip archive (one per storage; real: a few thousand).
pub(crate) const MAX_ZIP_ENTRIES: u64 = 200_000;
/// Size of the zip central directory.
pub(crate) const MAX_CENTRAL_DIRECTORY_BYTES: u64 = 32 << 20;
