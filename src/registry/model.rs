//! What the registry knows about one model on disk, once identified.

use std::path::PathBuf;

use serde::{Serialize, Serializer};

/// A unit enum with one stable name per variant: `as_str` and serde both use it (the `models`
/// reply and every log line show these names).
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

named! {
    /// Stable Diffusion family, detected from the weights (`Xl`: SDXL base and fine-tunes,
    /// two text encoders and the `text_time` added conditioning).
    ModelVersion { V1 = "v1", V2 = "v2", Xl = "sdxl" }
}

named! {
    /// txt2img (4-channel UNet) or inpaint (9-channel UNet).
    ModelKind { Txt2Img = "txt2img", Inpaint = "inpaint" }
}

named! {
    /// How the model's files are laid out.
    ModelFormat { Diffusers = "diffusers", Safetensors = "safetensors", Ckpt = "ckpt" }
}

named! {
    /// What the UNet predicts.
    Prediction { Epsilon = "epsilon", VPrediction = "v_prediction" }
}

/// A model resolved to files on disk, ready for the worker to load (or find in its cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResolvedModel {
    /// Display name: the path relative to its root.
    pub name: String,
    /// Canonical path of the folder or file; the cache key.
    pub path: PathBuf,
    pub version: ModelVersion,
    pub kind: ModelKind,
    pub format: ModelFormat,
    pub prediction: Prediction,
}
