//! The A1111 endpoints that describe the server rather than generate: samplers, schedule
//! types, upscalers, latent upscale modes, VAEs, LoRAs, embeddings, scripts, command-line
//! flags, memory, and `/health`. Honest values: empty lists where runai has none; LoRAs and
//! embeddings from the registry's listing of their folders.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::caller_of;
use super::error::ApiError;
use super::samplers::{SAMPLERS, SCHEDULE_TYPES};
use super::state::HttpState;
use crate::messages::registry::{ListAddOns, REGISTRY_DOWN};
use crate::messages::session::ErrorKind;
use crate::messages::worker::GetWorkerStatus;
use crate::registry::addons::AddOns;

/// LoRAs and textual-inversion embeddings available to prompts, from the registry's listing
/// of their folders, in A1111's shapes (`/loras`: `[{"name", "alias", "path", "metadata"}]`,
/// `/embeddings`: `{"loaded": {name: {...}}, "skipped": {}}`).
pub(crate) mod extra_networks {
    use serde_json::{json, Map, Value};

    use crate::registry::addons::AddOns;

    pub(crate) fn loras(add_ons: &AddOns) -> Value {
        add_ons
            .loras
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "alias": e.name,
                    "path": e.path.to_string_lossy(),
                    "metadata": {},
                })
            })
            .collect()
    }

    /// runai reads an embedding when a prompt names it, so the listing cannot tell its
    /// vector count or model family: those fields are null, as A1111 leaves what it does not
    /// know.
    pub(crate) fn embeddings(add_ons: &AddOns) -> Value {
        let loaded: Map<String, Value> = add_ons
            .embeddings
            .iter()
            .map(|e| {
                let v = json!({"step": null, "sd_checkpoint": null,
                    "sd_checkpoint_name": null, "shape": null, "vectors": null});
                (e.name.clone(), v)
            })
            .collect();
        json!({"loaded": loaded, "skipped": {}})
    }
}

async fn add_ons(state: &HttpState) -> Result<AddOns, ApiError> {
    match state.peers.add_ons.send(ListAddOns).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(ApiError::new(ErrorKind::from(&e), e.to_string())),
        Err(_) => Err(ApiError::new(ErrorKind::Unavailable, REGISTRY_DOWN)),
    }
}

fn ok(v: Value) -> HttpResponse {
    HttpResponse::Ok().json(v)
}

pub(crate) async fn samplers(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    let list: Vec<Value> = SAMPLERS
        .iter()
        .map(|(name, aliases, _)| json!({"name": name, "aliases": aliases, "options": {}}))
        .collect();
    Ok(ok(Value::from(list)))
}

pub(crate) async fn schedulers(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    let list: Vec<Value> = SCHEDULE_TYPES
        .iter()
        .map(|(name, label)| {
            json!({"name": name, "label": label, "aliases": null, "default_rho": -1, "need_inner_model": false})
        })
        .collect();
    Ok(ok(Value::from(list)))
}

/// `/upscalers`, `/latent-upscale-modes`, `/sd-vae`, `/scripts`: runai has none of these.
pub(crate) async fn empty_list(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    Ok(ok(json!([])))
}

pub(crate) async fn scripts(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    Ok(ok(json!({"txt2img": [], "img2img": []})))
}

pub(crate) async fn loras(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    Ok(ok(extra_networks::loras(&add_ons(&state).await?)))
}

pub(crate) async fn embeddings(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    Ok(ok(extra_networks::embeddings(&add_ons(&state).await?)))
}

pub(crate) async fn cmd_flags(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    Ok(ok(state.flags.clone()))
}

/// `/proc/meminfo` values in bytes (Linux); `None` elsewhere.
fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

pub(crate) async fn memory(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    let ram = match meminfo() {
        Some((total, free)) => {
            json!({"free": free, "used": total - free.min(total), "total": total})
        }
        None => json!({"error": "memory statistics are not available on this system"}),
    };
    let device = match state.peers.status.send(GetWorkerStatus).await {
        Ok(s) => s.device,
        Err(_) => "unavailable".to_string(),
    };
    Ok(ok(json!({
        "ram": ram,
        "cuda": {"error": format!("runai does not report GPU memory (device: {device})")},
    })))
}

/// `GET /health`: 200 while the worker and the model registry serve, 503 otherwise.
pub(crate) async fn health(state: Data<HttpState>) -> HttpResponse {
    let status = state.peers.status.send(GetWorkerStatus).await;
    match status {
        _ if state.registry_health.is_down() => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "detail": REGISTRY_DOWN})),
        Ok(s) => ok(json!({"status": "ok", "queue": s.queue, "device": s.device})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "detail": "worker is down"})),
    }
}
