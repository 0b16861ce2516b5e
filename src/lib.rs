//! runai: a Stable Diffusion inference server speaking the RunAI wire protocol of the Krita
//! plugin. Crate map (dependencies point one way):
//!
//! - [`protocol`]: packet codec, message assembly, wire types, Python-style JSON writer,
//!   request validation. Pure code, no actix, no candle.
//! - [`pipeline`]: Stable Diffusion on candle (text encoder, UNet, VAE, schedulers, noise,
//!   image conversion). No actix, no wire.
//! - [`registry`]: model discovery, version detection, single-file checkpoint conversion.
//! - [`messages`]: typed actor messages, grouped by the actor that handles them.
//! - [`actors`]: the actix actors (listener, session, GPU worker, model registry, shutdown).
//! - [`net`]: access control: allow-list, token secret, TLS set-up, session transport.
//! - `http`: the HTTP front end (A1111 `/sdapi/v1`, OpenAI `/v1/images`) on actix-web.
//! - [`config`]: typed configuration (file < env < CLI) validated at start-up.
//! - [`app`]: wiring: starts the actors in order and returns a handle.

pub mod actors;
pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub(crate) mod http;
pub mod messages;
pub mod net;
pub mod pipeline;
pub mod protocol;
pub mod registry;
