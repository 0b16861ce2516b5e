//! The HTTP front end (actix-web): AUTOMATIC1111's `/sdapi/v1` and OpenAI's `/v1/images`,
//! served from the same process, models, worker and fair queue as the socket protocol. Like
//! the socket session it is a translator: requests become the protocol's options and are
//! validated by `protocol::validate`; jobs go to the worker as `SubmitJob` in the caller's
//! lane; the worker's `JobEvent`s come back through a per-job bridge. The worker knows
//! nothing of HTTP.
//!
//! - `server`: bind (plain/TLS), routes, CORS, drain; `auth`: allow-list, token, caller.
//! - `a1111`, `models`, `info`: the `/sdapi/v1` endpoints; `openai`: `/v1/images`.
//! - `a1111_request` / `a1111_response`: A1111 bodies in and out; `infotext`, `png_text`:
//!   the generation parameters as text and in PNG chunks; `samplers`: A1111 sampler names.
//! - `generate`: validation and model resolution; `bridge`: the job's trip to the worker;
//!   `job_body`: the streamed reply that notices a client gone;
//!   `callers`: lanes, progress and per-caller choices; `body`, `multipart`: request bodies;
//!   `error`: statuses and JSON error bodies; `state`: what handlers share.

mod a1111;
mod a1111_request;
mod a1111_response;
mod auth;
mod body;
mod bridge;
mod callers;
mod error;
mod generate;
mod info;
mod infotext;
mod job_body;
mod models;
mod multipart;
mod openai;
mod png_text;
mod samplers;
pub(crate) mod server;
pub(crate) mod state;
