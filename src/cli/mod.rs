//! Command-line subcommands of the `runai` binary other than serving (no server state here).

pub mod convert;
pub mod replay;
