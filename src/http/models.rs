//! Checkpoints as A1111 clients see them: `/sd-models` (title, model_name, hash, sha256,
//! filename, config), `/refresh-checkpoints`, and `/options`, whose `sd_model_checkpoint` is
//! the *caller's* model: `POST /options` (the whole dict back, as Open WebUI sends it) switches
//! the model this caller's requests use when they name none, given as title, name or file
//! name, without changing anyone else's. Hashes are not computed (null), as A1111 reports
//! models it has not hashed yet.

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::a1111_request::checkpoint_name;
use super::auth::caller_of;
use super::body;
use super::error::ApiError;
use super::generate::resolve;
use super::state::HttpState;
use crate::messages::registry::{ListModels, REGISTRY_DOWN};
use crate::messages::session::ErrorKind;
use crate::protocol::lenient;
use crate::registry::model::ResolvedModel;

async fn list(state: &HttpState) -> Result<Vec<ResolvedModel>, ApiError> {
    match state.peers.list.send(ListModels).await {
        Ok(Ok(models)) => Ok(models),
        Ok(Err(e)) => Err(ApiError::new(ErrorKind::from(&e), e.to_string())),
        Err(_) => Err(ApiError::new(ErrorKind::Unavailable, REGISTRY_DOWN)),
    }
}

/// A1111's `model_name`: the file or folder name without extension.
fn model_name(m: &ResolvedModel) -> String {
    m.path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| m.name.clone())
}

fn entry(m: &ResolvedModel) -> Value {
    json!({
        "title": m.name,
        "model_name": model_name(m),
        "hash": null,
        "sha256": null,
        "filename": m.path.to_string_lossy(),
        "config": null,
    })
}

pub(crate) async fn sd_models(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    let models = list(&state).await?;
    Ok(HttpResponse::Ok().json(models.iter().map(entry).collect::<Vec<_>>()))
}

pub(crate) async fn refresh_checkpoints(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    list(&state).await?;
    Ok(HttpResponse::Ok().json(Value::Null))
}

/// The model a checkpoint string names: a listed title, model name or file name, else
/// whatever the registry resolves it to (paths inside the roots; refusals for the rest).
async fn find(state: &HttpState, given: &str) -> Result<ResolvedModel, ApiError> {
    let wanted = checkpoint_name(given);
    let models = list(state).await?;
    let listed = models.into_iter().find(|m| {
        m.name == wanted || model_name(m) == wanted || m.path.to_string_lossy() == wanted
    });
    match listed {
        Some(m) => Ok(m),
        None => resolve(state, &wanted).await,
    }
}

pub(crate) async fn get_options(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let mine = state.callers.defaults(&caller);
    let checkpoint = match mine.model {
        Some(m) => m,
        // The server's default model; none configured (or unusable) reads as "".
        None => resolve(&state, "")
            .await
            .map(|m| m.name)
            .unwrap_or_default(),
    };
    Ok(HttpResponse::Ok().json(json!({
        "sd_model_checkpoint": checkpoint,
        "sd_checkpoint_hash": null,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": mine.clip_stop.unwrap_or(1),
        "samples_format": "png",
        "samples_save": false,
        "grid_save": false,
        "save_images_add_number": false,
        "outdir_samples": "",
        "sd_checkpoints_limit": 1,
        "enable_pnginfo": true,
    })))
}

pub(crate) async fn set_options(
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let body = body::read_json(&req, payload, state.max_body).await?;
    let model = match lenient::get_str(&body, "sd_model_checkpoint")
        .map_err(|e| ApiError::invalid(e.to_string()))?
    {
        Some(m) if !m.trim().is_empty() => Some(find(&state, &m).await?.name),
        _ => None,
    };
    let clip_stop = lenient::get_i64(&body, "CLIP_stop_at_last_layers")
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(c) = clip_stop.filter(|c| !(1..=12).contains(c)) {
        return Err(ApiError::invalid(format!(
            "CLIP_stop_at_last_layers: must be 1..=12, got {c}"
        )));
    }
    if model.is_some() || clip_stop.is_some() {
        state.callers.set_defaults(&caller, |d| {
            if model.is_some() {
                d.model = model;
            }
            if clip_stop.is_some() {
                d.clip_stop = clip_stop;
            }
        });
    }
    Ok(HttpResponse::Ok().json(Value::Null))
}
