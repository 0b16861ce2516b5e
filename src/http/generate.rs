//! From a translated A1111 request to a job ready for the worker, shared by the A1111 and
//! OpenAI endpoints: validation by the socket protocol's validator (off the reactor: it
//! decodes images), the sampler and clip skip applied, mask inversion and blur, and the
//! model resolved by the model registry (default model, roots, containment). Then the job
//! runs through the bridge and its reply is rendered.

use actix_web::web::{self, Data};
use actix_web::HttpResponse;
use image::GrayImage;
use serde_json::Value;

use super::a1111_request::{a1111_names, A1111Job};
use super::bridge::{JobResult, RunningJob};
use super::callers::Caller;
use super::error::{ApiError, Dialect};
use super::job_body::{respond, Finish};
use super::state::HttpState;
use crate::engine::client_text::without_backtrace;
use crate::engine::GenerateJob;
use crate::messages::registry::{ResolveModel, REGISTRY_DOWN};
use crate::messages::session::ErrorKind;
use crate::pipeline::params::{GenerateParams, Task};
use crate::protocol::validate::validate_generate;
use crate::registry::model::ResolvedModel;

/// A validated job with what its reply needs.
pub(crate) struct Prepared {
    pub(crate) request: A1111Job,
    pub(crate) params: GenerateParams,
    pub(crate) model: ResolvedModel,
}

/// Resolves a model name through the registry ("" = the default model).
pub(crate) async fn resolve(state: &HttpState, requested: &str) -> Result<ResolvedModel, ApiError> {
    let asked = state.peers.resolve.send(ResolveModel {
        requested: requested.to_string(),
    });
    match asked.await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorKind::from(&e),
            without_backtrace(&e.to_string()),
        )),
        Err(_) => Err(ApiError::new(ErrorKind::Unavailable, REGISTRY_DOWN)),
    }
}

fn shape_mask(mask: &mut GrayImage, invert: bool, blur: u32) {
    if invert {
        for p in mask.pixels_mut() {
            p.0[0] = 255 - p.0[0];
        }
    }
    if blur > 0 {
        *mask = image::imageops::blur(mask, blur as f32);
    }
}

/// Validates and resolves `request`.
pub(crate) async fn prepare(state: &HttpState, request: A1111Job) -> Result<Prepared, ApiError> {
    let limits = state.limits;
    let raw = request.raw.clone();
    let action = raw.action;
    let (invert, blur) = (request.invert_mask, request.mask_blur);
    let validated = web::block(move || {
        let mut v = validate_generate(&raw, &limits, &mut || rand::random::<u32>() as u64)?;
        if let Task::Inpaint { mask: Some(m), .. } = &mut v.params.task {
            shape_mask(m, invert, blur);
        }
        Ok::<_, crate::protocol::error::RequestError>(v)
    })
    .await
    .map_err(|_| ApiError::new(ErrorKind::Internal, "request validation failed"))?
    .map_err(|e| ApiError::new(e.code, a1111_names(&e.message, action)))?;
    let mut params = validated.params;
    params.scheduler = request.sampler.kind;
    params.clip_skip = Some((request.clip_stop - 1) as usize).filter(|c| *c > 0);
    let model = resolve(state, &validated.model).await?;
    Ok(Prepared {
        request,
        params,
        model,
    })
}

/// Runs a prepared job for `caller` and answers with `render`'s document (or the error in
/// `dialect`), streaming once the job runs (see `job_body`).
pub(crate) async fn run(
    state: &Data<HttpState>,
    caller: Caller,
    p: Prepared,
    dialect: Dialect,
    render: impl FnOnce(&Prepared, JobResult) -> Result<Value, ApiError> + 'static,
) -> Result<HttpResponse, ApiError> {
    let action = p.request.raw.action;
    let job = GenerateJob {
        model: p.model.clone(),
        params: p.params.clone(),
        nsfw_filter: None,
    };
    let running = RunningJob::submit(state.clone(), caller, action.as_str(), job);
    let named = move |e: ApiError| {
        let message = a1111_names(&e.message, action);
        ApiError { message, ..e }.in_dialect(dialect)
    };
    let finish: Finish = Box::new(move |end| {
        let doc = end.and_then(|r| render(&p, r)).map_err(named);
        match doc {
            Ok(v) => v.to_string().into_bytes(),
            Err(e) => e.body().to_string().into_bytes(),
        }
    });
    respond(running, finish).await.map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_invert_then_blur() {
        let mut m = GrayImage::from_fn(16, 16, |x, _| image::Luma([if x < 8 { 255 } else { 0 }]));
        shape_mask(&mut m, true, 0);
        assert_eq!((m.get_pixel(0, 0).0[0], m.get_pixel(15, 0).0[0]), (0, 255));
        shape_mask(&mut m, false, 2);
        let edge = m.get_pixel(8, 8).0[0];
        assert!(edge > 0 && edge < 255, "{edge}");
    }
}
