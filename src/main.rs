//! The `runai` binary: thin wrapper over the library.
fn main() {}
