//! `runai replay`: runs one golden case of a fixtures manifest with the case's recorded noise
//! (`init_noise`, `randn_i`: the supplied inputs) and writes our intermediate tensors under
//! the golden names, so they can be compared with the reference. Reads only the golden
//! inputs, never the golden outputs.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{replay_prompt, replay_safety};
use crate::pipeline::load::loader::load_diffusers_folder;
use crate::pipeline::load::model_parts::ModelParts;
use crate::pipeline::lora::{read_lora, AppliedLora};
use crate::pipeline::noise::NoiseSource;
use crate::pipeline::params::{
    EmptyNegative, GenerateParams, LoraRequest, PromptSyntax, SchedulerKind, Task, XlOptions,
};
use crate::pipeline::trace::Trace;
use crate::pipeline::{RuntimeOptions, StableDiffusion};

/// Names of the tensors a replay writes, as in the golden files.
pub const OUTPUT_NAMES: &[&str] = &[
    "prompt_embeds",
    "negative_prompt_embeds",
    "unet_out_0",
    "final_latents",
    "vae_decode_out",
    "image",
];

/// The further names an SDXL replay writes (pooled embeddings, micro-conditioning).
pub(crate) const XL_OUTPUT_NAMES: &[&str] = &[
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "add_time_ids",
    "unet_added_text_embeds",
];

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The fixtures manifest.json.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Case id, e.g. `tiny-sd1/txt2img_ddim`.
    #[arg(long)]
    pub case: String,
    /// Model to run instead of the case's own diffusers folder (for a safety-checker case:
    /// the checker folder).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

/// One manifest case, resolved to paths and a typed request.
pub struct GoldenCase {
    pub(crate) id: String,
    pub model_dir: PathBuf,
    pub tensors_path: PathBuf,
    pub(crate) scheduler_config: Value,
    pub params: GenerateParams,
    /// Keys of the recorded draws, in the order the reference pipeline made them.
    pub(crate) randn_keys: Vec<String>,
}

fn field<'a>(v: &'a Value, key: &str) -> anyhow::Result<&'a Value> {
    v.get(key)
        .ok_or_else(|| anyhow!("manifest case lacks `{key}`"))
}

/// Reads JSON as Python's `json` writes it: bare `NaN`, `Infinity` and `-Infinity` (outside
/// strings) become `null`, which strict JSON parsers reject.
pub fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&strip_non_finite(&text))
        .with_context(|| format!("parsing {}", path.display()))
}

fn strip_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push_str("null");
                rest = &rest[t.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Case `id` of a parsed manifest.
fn find_case<'a>(doc: &'a Value, id: &str) -> anyhow::Result<&'a Value> {
    doc.get("cases")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("manifest has no cases"))?
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .ok_or_else(|| anyhow!("no case {id} in the manifest"))
}

/// The diffusers folder of `case`'s model: the manifest's `models.<name>.path`, else
/// `base_model_<name>.path` (a model kept outside the fixture set), else `models/<name>`.
fn model_dir(root: &Path, doc: &Value, case: &Value) -> anyhow::Result<PathBuf> {
    let model = field(case, "model")?.as_str().unwrap_or_default();
    let path_of = |v: Option<&Value>| {
        v.and_then(|m| m.get("path"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let key = format!("base_model_{}", model.replace('-', "_"));
    let rel = path_of(doc.get("models").and_then(|m| m.get(model)))
        .or_else(|| path_of(doc.get(&key)))
        .unwrap_or_else(|| format!("models/{model}"));
    Ok(root.join(rel))
}

/// Parses case `id` of the manifest at `manifest`.
pub fn load_case(manifest: &Path, id: &str) -> anyhow::Result<GoldenCase> {
    let root = manifest
        .parent()
        .ok_or_else(|| anyhow!("manifest path has no parent folder"))?;
    let doc = read_json(manifest)?;
    let case = find_case(&doc, id)?;
    let files = field(case, "files")?;
    let rel = |key: &str| -> anyhow::Result<PathBuf> {
        let s = files
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("case files lack `{key}`"))?;
        Ok(root.join(s))
    };
    let scheduler_config = read_json(&rel("scheduler_config")?)?;
    let sched_name = field(field(case, "scheduler")?, "name")?
        .as_str()
        .unwrap_or_default();
    let scheduler = SchedulerKind::from_name(sched_name)
        .ok_or_else(|| anyhow!("unknown scheduler {sched_name}"))?;
    let load_rgb = |key: &str| -> anyhow::Result<image::RgbImage> {
        let p = root.join(field(case, key)?.as_str().unwrap_or_default());
        Ok(image::open(&p)
            .with_context(|| format!("opening {}", p.display()))?
            .to_rgb8())
    };
    let strength = case.get("strength").and_then(Value::as_f64).unwrap_or(1.0);
    // Task names beyond the public ones are inferred from the inputs the case supplies.
    let has = |key: &str| case.get(key).is_some_and(|v| !v.is_null());
    let task_name = match field(case, "task")?.as_str().unwrap_or_default() {
        known @ ("txt2img" | "img2img" | "inpaint") => known,
        "ancestral" => "txt2img",
        "outpaint" => "inpaint",
        _ if has("mask") => "inpaint",
        _ if has("image") => "img2img",
        _ => "txt2img",
    };
    let task = match task_name {
        "txt2img" => Task::Txt2Img,
        "img2img" => Task::Img2Img {
            init: load_rgb("image")?,
            strength,
        },
        "inpaint" => {
            let mask = match case.get("mask").and_then(Value::as_str) {
                Some(m) => {
                    let p = root.join(m);
                    Some(
                        image::open(&p)
                            .with_context(|| format!("opening {}", p.display()))?
                            .to_luma8(),
                    )
                }
                None => None,
            };
            Task::Inpaint {
                init: load_rgb("image")?,
                mask,
                strength,
            }
        }
        other => bail!("unsupported task {other}"),
    };
    let usize_of = |key: &str, default: usize| -> usize {
        case.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(default)
    };
    let u32_of = |key: &str| {
        case.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let params = GenerateParams {
        task,
        prompt: field(case, "prompt")?
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        negative_prompt: case
            .get("negative_prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        steps: usize_of("num_inference_steps", 0),
        guidance_scale: case
            .get("guidance_scale")
            .and_then(Value::as_f64)
            .unwrap_or(7.5),
        seed: 0,
        width: u32_of("width"),
        height: u32_of("height"),
        n_samples: usize_of("num_images_per_prompt", 1),
        scheduler,
        eta: case
            .get("scheduler_call_kwargs")
            .and_then(|k| k.get("eta"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        clip_skip: case
            .get("clip_skip")
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok()),
        syntax: case_syntax(case),
        loras: case_loras(case)?,
        timestep_spacing: None,
        xl: xl_options(case)?,
    };
    let randn_keys = case
        .get("randn_draws_in_order")
        .and_then(Value::as_array)
        .map(|draws| {
            draws
                .iter()
                .filter_map(|d| d.get("key").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(GoldenCase {
        id: id.to_owned(),
        model_dir: model_dir(root, &doc, case)?,
        tensors_path: rel("tensors")?,
        scheduler_config,
        params,
        randn_keys,
    })
}

/// A1111 syntax for the cases that say so (`a1111_long_prompt`); such a case padded the
/// shorter prompt unless its `uncond_padding` says `pad_cond_uncond off` (A1111's default:
/// separate cond and uncond UNet calls).
fn case_syntax(case: &Value) -> PromptSyntax {
    if !case
        .get("a1111_long_prompt")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return PromptSyntax::Literal;
    }
    let split = case
        .get("uncond_padding")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("pad_cond_uncond off"));
    PromptSyntax::A1111 {
        pad_cond_uncond: !split,
    }
}

/// The case's LoRAs (`loras`: name and multiplier), none when it has none.
fn case_loras(case: &Value) -> anyhow::Result<Vec<LoraRequest>> {
    let Some(list) = case.get("loras").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|l| {
            let name = field(l, "name")?.as_str().unwrap_or_default().to_owned();
            let m = field(l, "multiplier")?
                .as_f64()
                .ok_or_else(|| anyhow!("LoRA {name}: multiplier is not a number"))?;
            Ok(LoraRequest {
                name,
                text_multiplier: m,
                unet_multiplier: m,
            })
        })
        .collect()
}

/// The case's LoRA files (`loras[].file`, relative to the manifest) read and paired with
/// their multipliers.
fn case_lora_files(root: &Path, case: &Value) -> anyhow::Result<Vec<AppliedLora>> {
    let requests = case_loras(case)?;
    let list = field(case, "loras")?
        .as_array()
        .cloned()
        .unwrap_or_default();
    requests
        .into_iter()
        .zip(list)
        .map(|(r, l)| {
            let path = root.join(field(&l, "file")?.as_str().unwrap_or_default());
            Ok(AppliedLora {
                file: Arc::new(read_lora(&path, &r.name)?),
                text_multiplier: r.text_multiplier,
                unet_multiplier: r.unet_multiplier,
            })
        })
        .collect()
}

/// SDXL fields of a case: a `null` negative prompt is diffusers' `None` (zeros where the
/// model forces them), `""` is encoded; recorded time ids must be the defaults or sizes.
fn xl_options(case: &Value) -> anyhow::Result<XlOptions> {
    let empty_negative = match case.get("negative_prompt") {
        None | Some(Value::Null) => EmptyNegative::Zeros,
        Some(_) => EmptyNegative::Encode,
    };
    let mut xl = XlOptions {
        empty_negative,
        ..XlOptions::default()
    };
    if let Some(ids) = case.get("add_time_ids").and_then(Value::as_array) {
        let v: Vec<u32> = ids
            .iter()
            .map(|x| x.as_f64().map(|f| f as u32))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("add_time_ids must be numbers"))?;
        let [oh, ow, ct, cl, th, tw] = v[..] else {
            bail!("add_time_ids must have 6 values");
        };
        xl.original_size = Some((ow, oh));
        xl.crop_top_left = (ct, cl);
        xl.target_size = Some((tw, th));
    }
    Ok(xl)
}

/// Replays recorded draws: `init_noise` for the initial latents, `randn_i` in order for
/// everything else. A recorded single-image draw is repeated when a batch asks for more.
pub struct RecordedNoise {
    init: Option<Tensor>,
    draws: VecDeque<Tensor>,
}

impl RecordedNoise {
    /// Reads only the supplied inputs (`init_noise`, the case's `randn_*` keys).
    pub fn from_case(case: &GoldenCase) -> anyhow::Result<RecordedNoise> {
        let mut all: HashMap<String, Tensor> =
            candle_core::safetensors::load(&case.tensors_path, &Device::Cpu)
                .with_context(|| format!("reading {}", case.tensors_path.display()))?;
        let init = all.remove("init_noise");
        let draws = case
            .randn_keys
            .iter()
            .map(|k| {
                all.remove(k)
                    .ok_or_else(|| anyhow!("golden file lacks {k}"))
            })
            .collect::<anyhow::Result<VecDeque<_>>>()?;
        Ok(RecordedNoise { init, draws })
    }

    fn fit(t: Tensor, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let t = t.to_dtype(candle_core::DType::F32)?;
        let t = if t.dims() == shape {
            t
        } else if t.dim(0)? == 1 && t.dims().get(1..) == shape.get(1..) {
            let mut reps = vec![1usize; shape.len()];
            reps[0] = shape[0];
            t.repeat(reps)?
        } else {
            return Err(candle_core::Error::Msg(format!(
                "recorded draw {:?} does not fit requested {shape:?}",
                t.dims()
            )));
        };
        t.to_device(device)
    }
}

impl NoiseSource for RecordedNoise {
    fn randn(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let t = self.draws.pop_front().ok_or_else(|| {
            candle_core::Error::Msg("the pipeline drew more noise than was recorded".into())
        })?;
        Self::fit(t, shape, device)
    }

    fn initial_latents(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        match self.init.take() {
            Some(t) => Self::fit(t, shape, device),
            None => self.randn(shape, device),
        }
    }
}

/// What a replay produced: the recorded intermediates and the 8-bit images.
pub struct Replay {
    pub trace: Trace,
    pub images: Vec<image::RgbImage>,
}

/// Runs `case` on `model` with its recorded noise.
pub fn replay_case(model: &StableDiffusion, case: &GoldenCase) -> anyhow::Result<Replay> {
    let mut noise = RecordedNoise::from_case(case)?;
    let mut trace = Trace::new();
    let mut progress = |_: usize, _: usize| true;
    let images = model
        .run_with_scheduler_config(
            &case.params,
            &case.scheduler_config,
            &mut noise,
            Some(&mut trace),
            &mut progress,
        )
        .with_context(|| format!("replaying {}", case.id))?;
    Ok(Replay {
        trace,
        images: images.into_iter().map(|g| g.image).collect(),
    })
}

/// The CLI entry point, loading models from diffusers folders.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let opts = RuntimeOptions::default();
    run_with_loader(args, &|p: &Path| Ok(load_diffusers_folder(p, &opts)?))
}

/// As [`run`] with a caller-supplied model loader (e.g. one that also reads single-file
/// checkpoints).
pub fn run_with_loader(
    args: ReplayArgs,
    loader: &dyn Fn(&Path) -> anyhow::Result<ModelParts>,
) -> anyhow::Result<()> {
    let doc = read_json(&args.manifest)?;
    let case = find_case(&doc, &args.case)?;
    if replay_safety::is_safety_case(case) {
        return replay_safety::run(&args.manifest, &doc, case, args.model.as_deref(), &args.out);
    }
    let opts = RuntimeOptions::default();
    if replay_prompt::is_prompt_case(case) {
        let root = args
            .manifest
            .parent()
            .ok_or_else(|| anyhow!("manifest path has no parent folder"))?;
        let dir = match &args.model {
            Some(p) => p.clone(),
            None => model_dir(root, &doc, case)?,
        };
        let mut model = StableDiffusion::from_parts(loader(&dir)?, &opts)?;
        let out = replay_prompt::replay(root, case, &mut model)?;
        return save(&out, &args.out);
    }
    let case = load_case(&args.manifest, &args.case)?;
    let model_path = args.model.clone().unwrap_or_else(|| case.model_dir.clone());
    let parts = loader(&model_path)?;
    let model = if case.params.loras.is_empty() {
        StableDiffusion::from_parts(parts, &opts)?
    } else {
        let root = args
            .manifest
            .parent()
            .ok_or_else(|| anyhow!("manifest path has no parent folder"))?;
        let loras = case_lora_files(root, find_case(&doc, &args.case)?)?;
        StableDiffusion::with_loras(&parts, &loras, &opts)?
    };
    let trace = replay_case(&model, &case)?.trace;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for name in OUTPUT_NAMES.iter().chain(XL_OUTPUT_NAMES) {
        if let Some(t) = trace.get(name) {
            out.insert((*name).to_owned(), t.clone());
        }
    }
    for name in EXTRA_OUTPUT_NAMES {
        if let Some(t) = trace.get(name) {
            out.insert((*name).to_owned(), t.clone());
        }
    }
    save(&out, &args.out)?;
    log::info!("replayed {} into {}", case.id, args.out.display());
    Ok(())
}

/// Intermediates written when a case produces them (A1111 split cond/uncond).
pub const EXTRA_OUTPUT_NAMES: &[&str] = &["uncond_prompt_embeds"];

fn save(tensors: &HashMap<String, Tensor>, out: &Path) -> anyhow::Result<()> {
    candle_core::safetensors::save(tensors, out)
        .with_context(|| format!("writing {}", out.display()))
}
