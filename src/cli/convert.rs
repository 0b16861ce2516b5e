//! `runai convert SRC DST`: writes a diffusers folder from a single-file checkpoint
//! (`.safetensors` or zip `.ckpt`). The only command that writes model files; it refuses to
//! overwrite anything and never modifies SRC.

use std::path::PathBuf;

use anyhow::Context;

use crate::registry::convert::{convert_single_file, default_destination};

#[derive(clap::Args, Debug, Clone)]
pub struct ConvertArgs {
    /// The checkpoint to convert (`.safetensors` or `.ckpt`; a `.yaml` beside it is used).
    pub(crate) src: PathBuf,
    /// The diffusers folder to create (must not exist). Default: SRC without its extension.
    pub(crate) dst: Option<PathBuf>,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let dst = args.dst.unwrap_or_else(|| default_destination(&args.src));
    let report = convert_single_file(&args.src, &dst)
        .with_context(|| format!("converting {}", args.src.display()))?;
    println!(
        "wrote {} ({:?}, {:?})",
        report.destination.display(),
        report.version,
        report.kind
    );
    Ok(())
}
