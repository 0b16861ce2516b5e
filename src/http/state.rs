//! What every HTTP handler shares: the actors it talks to (as the recipients of the messages
//! it sends, never their types), the request limits, the access settings and the callers.
//! Built once by `server::start`; read-only apart from `Callers`.

use std::sync::atomic::{AtomicU64, Ordering};

use actix::Recipient;
use serde_json::Value;

use super::callers::Callers;
use crate::messages::registry::{ListAddOns, ListModels, RegistryHealth, ResolveModel};
use crate::messages::shutdown::{SessionClosed, SessionOpened};
use crate::messages::worker::{CancelJobs, GetWorkerStatus, SubmitJob};
use crate::net::allow::AllowList;
use crate::net::secret::Secret;
use crate::protocol::validate::Limits;

/// The messages the HTTP front end sends.
#[derive(Clone)]
pub(crate) struct Peers {
    pub(crate) submit: Recipient<SubmitJob>,
    pub(crate) cancel: Recipient<CancelJobs>,
    pub(crate) status: Recipient<GetWorkerStatus>,
    pub(crate) resolve: Recipient<ResolveModel>,
    pub(crate) list: Recipient<ListModels>,
    pub(crate) add_ons: Recipient<ListAddOns>,
    pub(crate) opened: Recipient<SessionOpened>,
    pub(crate) closed: Recipient<SessionClosed>,
}

/// Who may call and how they prove it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    pub(crate) allow: AllowList,
    /// The shared token (Bearer, or Basic's password); `None` = open.
    pub(crate) token: Option<Secret>,
    /// The Basic user name required with the token; "" = any.
    pub(crate) user: String,
}

pub(crate) struct HttpState {
    pub(crate) peers: Peers,
    pub(crate) access: Access,
    pub(crate) limits: Limits,
    /// Largest request body in bytes.
    pub(crate) max_body: usize,
    pub(crate) registry_health: RegistryHealth,
    pub(crate) callers: Callers,
    /// What `/cmd-flags` reports.
    pub(crate) flags: Value,
    next_job: AtomicU64,
}

impl HttpState {
    pub(crate) fn new(
        peers: Peers,
        access: Access,
        limits: Limits,
        max_body: usize,
        registry_health: RegistryHealth,
        flags: Value,
    ) -> Self {
        HttpState {
            peers,
            access,
            limits,
            max_body,
            registry_health,
            callers: Callers::default(),
            flags,
            next_job: AtomicU64::new(1),
        }
    }

    /// A job id unique in this process (HTTP clients never see it).
    pub(crate) fn job_id(&self) -> String {
        format!("http-{}", self.next_job.fetch_add(1, Ordering::SeqCst))
    }
}
