//! The A1111 generation endpoints (`/sdapi/v1/txt2img`, `/img2img`) and the per-caller
//! controls around them: `/progress` (from the caller's own jobs, answered without asking the
//! worker), `/interrupt` and `/skip` (the caller's own jobs only: one user cannot stop a
//! colleague's), `/png-info`.

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};

use super::a1111_request::{strip_data_url, translate, Endpoint};
use super::a1111_response::reply;
use super::auth::caller_of;
use super::body;
use super::error::{ApiError, Dialect};
use super::generate::{prepare, run};
use super::infotext;
use super::png_text;
use super::state::HttpState;
use crate::messages::worker::CancelJobs;
use crate::protocol::lenient;

async fn generate(
    endpoint: Endpoint,
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let body = body::read_json(&req, payload, state.max_body).await?;
    let request = translate(endpoint, &body, &state.callers.defaults(&caller))?;
    drop(body);
    let prepared = prepare(&state, request).await?;
    run(&state, caller, prepared, Dialect::A1111, |p, r| {
        reply(p, &r)
    })
    .await
}

pub(crate) async fn txt2img(
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    generate(Endpoint::Txt2Img, req, payload, state).await
}

pub(crate) async fn img2img(
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    generate(Endpoint::Img2Img, req, payload, state).await
}

/// `GET /sdapi/v1/progress`: the caller's running (else oldest waiting) job.
pub(crate) async fn progress(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    let snap = state.callers.snapshot(&caller);
    let (progress, eta, step, steps, job_no, interrupted, text) = match &snap.current {
        None => (0.0, 0.0, 0, 0, 0, false, Value::Null),
        Some(j) => {
            let per_image = if j.total > 0 {
                j.step as f64 / j.total as f64
            } else {
                0.0
            };
            let p = if j.images > 0 {
                ((j.images_done as f64 + per_image) / j.images as f64).min(1.0)
            } else {
                per_image
            };
            let eta = match j.started {
                Some(t) if p > 0.0 => {
                    let spent = t.elapsed().as_secs_f64();
                    spent / p - spent
                }
                _ => 0.0,
            };
            let text = if j.started.is_some() {
                format!("Sampling step {}/{}", j.step, j.total)
            } else {
                format!("Waiting in the queue ({} job(s) ahead)", j.position)
            };
            (
                p,
                eta,
                j.step,
                j.total,
                j.images_done,
                j.interrupted,
                Value::from(text),
            )
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "progress": progress,
        "eta_relative": eta,
        "state": {
            "skipped": false,
            "interrupted": interrupted,
            "stopping_generation": false,
            "job": snap.current.as_ref().map(|j| j.job_id.clone()).unwrap_or_default(),
            "job_count": snap.jobs,
            "job_timestamp": "0",
            "job_no": job_no,
            "sampling_step": step,
            "sampling_steps": steps,
        },
        "current_image": null,
        "textinfo": text,
        "current_task": null,
    })))
}

/// `POST /sdapi/v1/interrupt` and `/skip`: cancels the caller's jobs, nobody else's.
pub(crate) async fn interrupt(
    req: HttpRequest,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req)?;
    if let Some(lane) = state.callers.interrupt(&caller) {
        state.peers.cancel.do_send(CancelJobs {
            session: lane,
            job_id: None,
        });
    }
    Ok(HttpResponse::Ok().json(Value::Null))
}

/// `POST /sdapi/v1/png-info`: the infotext stored in a PNG, raw and parsed.
pub(crate) async fn png_info(
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    caller_of(&req)?;
    let body = body::read_json(&req, payload, state.max_body).await?;
    let image = lenient::get_str(&body, "image")
        .map_err(|e| ApiError::invalid(e.to_string()))?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid("image: a base64 PNG is required"))?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(strip_data_url(image.trim()))
        .map_err(|e| ApiError::bad_request(format!("image: not valid base64: {e}")))?;
    let texts =
        png_text::texts(&png).ok_or_else(|| ApiError::bad_request("image: not a PNG image"))?;
    let info = texts
        .iter()
        .find(|(k, _)| k == "parameters")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let items: serde_json::Map<String, Value> = texts
        .iter()
        .filter(|(k, _)| k != "parameters")
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let parameters = if info.is_empty() {
        serde_json::Map::new()
    } else {
        infotext::parse(&info)
    };
    Ok(HttpResponse::Ok().json(json!({"info": info, "items": items, "parameters": parameters})))
}
