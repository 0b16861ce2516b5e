//! The A1111 reply of `txt2img`/`img2img`: `images` (bare base64 PNGs, each carrying its
//! infotext in a `parameters` text chunk), `parameters` (the request echoed with defaults)
//! and `info` (a JSON *string*, as A1111 sends it: seeds, infotexts, sampler, model, job
//! timestamp, the safety checker's verdicts and any fallback warnings). Pure formatting.

use base64::Engine;
use serde_json::{json, Value};

use super::bridge::{JobImage, JobResult};
use super::error::ApiError;
use super::generate::Prepared;
use super::infotext::InfoText;
use super::png_text;
use crate::messages::session::ErrorKind;
use crate::pipeline::params::Task;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Width and height of the job's images (known after validation; 512 if left to the model).
pub(crate) fn size(p: &Prepared) -> (u32, u32) {
    (
        p.params.width.unwrap_or(512),
        p.params.height.unwrap_or(512),
    )
}

fn denoising(p: &Prepared) -> Option<f64> {
    match &p.params.task {
        Task::Txt2Img => None,
        Task::Img2Img { strength, .. } | Task::Inpaint { strength, .. } => Some(*strength),
    }
}

/// The infotext of the image with `seed`.
pub(crate) fn infotext(p: &Prepared, seed: u64) -> String {
    let (width, height) = size(p);
    InfoText {
        prompt: &p.params.prompt,
        negative_prompt: &p.params.negative_prompt,
        steps: p.params.steps,
        sampler: p.request.sampler.sampler,
        schedule: p.request.sampler.schedule,
        cfg_scale: p.params.guidance_scale,
        seed,
        width,
        height,
        model: &p.model.name,
        denoising_strength: denoising(p),
        clip_skip: p.request.clip_stop as usize,
    }
    .render()
}

/// The image's PNG with its infotext chunk, as bare base64.
pub(crate) fn tagged_png(image: &JobImage, text: &str) -> Result<String, ApiError> {
    let bad = || ApiError::new(ErrorKind::Internal, "the worker sent an unreadable PNG");
    let tagged = png_text::with_text(&image.png, "parameters", text).ok_or_else(bad)?;
    Ok(b64().encode(tagged))
}

/// `YYYYMMDDhhmmss` in UTC, as A1111's `job_timestamp`.
pub(crate) fn job_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The whole reply.
pub(crate) fn reply(p: &Prepared, result: &JobResult) -> Result<Value, ApiError> {
    let (width, height) = size(p);
    let seeds: Vec<u64> = if result.images.is_empty() {
        (0..p.params.n_samples as u64)
            .map(|i| p.params.seed.wrapping_add(i))
            .collect()
    } else {
        result.images.iter().map(|i| i.seed).collect()
    };
    let infotexts: Vec<String> = seeds.iter().map(|s| infotext(p, *s)).collect();
    let images = if p.request.send_images {
        result
            .images
            .iter()
            .zip(&infotexts)
            .map(|(img, text)| tagged_png(img, text))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let n = seeds.len();
    let mut info = json!({
        "prompt": p.params.prompt,
        "all_prompts": vec![&p.params.prompt; n],
        "negative_prompt": p.params.negative_prompt,
        "all_negative_prompts": vec![&p.params.negative_prompt; n],
        "seed": seeds.first().copied().unwrap_or(p.params.seed),
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": vec![-1; n],
        "subseed_strength": 0,
        "width": width,
        "height": height,
        "sampler_name": p.request.sampler.sampler,
        "cfg_scale": p.params.guidance_scale,
        "steps": p.params.steps,
        "batch_size": p.request.echo.get("batch_size").cloned().unwrap_or(json!(1)),
        "restore_faces": false,
        "face_restoration_model": null,
        "sd_model_name": p.model.name,
        "sd_model_hash": null,
        "sd_vae_name": null,
        "sd_vae_hash": null,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": denoising(p),
        "extra_generation_params": {"Schedule type": p.request.sampler.schedule},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": job_timestamp(unix_now()),
        "clip_skip": p.request.clip_stop,
        "is_using_inpainting_conditioning": matches!(p.params.task, Task::Inpaint { .. }),
        "version": format!("runai {}", crate::protocol::RUNAI_VERSION),
        "interrupted": result.interrupted,
        "warnings": p.request.sampler.warnings,
    });
    if result.images.iter().any(|i| i.nsfw.is_some()) {
        let verdicts: Vec<Value> = result.images.iter().map(|i| json!(i.nsfw)).collect();
        info["nsfw"] = Value::from(verdicts);
    }
    Ok(json!({
        "images": images,
        "parameters": Value::Object(p.request.echo.clone()),
        "info": info.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(job_timestamp(0), "19700101000000");
        assert_eq!(job_timestamp(951_782_400), "20000229000000");
        assert_eq!(job_timestamp(1_767_225_599), "20251231235959");
    }
}
