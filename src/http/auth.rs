//! Who may call, and as whom: the allow-list (before anything else; 403 for other peers),
//! then, with a token configured, `Authorization: Bearer <token>` or HTTP Basic with the
//! token as password (and `http_user` as user name when set), as A1111's `--api-auth`. Without
//! a token every request is let through and any `Authorization` header, such as the empty
//! `Basic` Open WebUI always sends, is ignored. `/health` needs no credentials. The caller's
//! identity (its fairness lane) is the Basic user name once authenticated, else the peer's
//! IP address; it is stored in the request for the handlers. Never logs credentials.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpMessage, HttpRequest, ResponseError};
use base64::Engine;

use super::callers::Caller;
use super::error::ApiError;
use super::state::{Access, HttpState};
use crate::messages::session::ErrorKind;

/// What an `Authorization` header offers.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

fn credentials(header: &str) -> Credentials {
    let h = header.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credentials::Bearer(rest.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") || rest.is_empty() {
        return Credentials::None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    match decoded.split_once(':') {
        Some(("", "")) | None => Credentials::None,
        Some((user, password)) => Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        },
    }
}

/// The caller behind `header` from `peer`, or why it is refused.
fn identify(
    access: &Access,
    peer: Option<std::net::IpAddr>,
    header: &str,
) -> Result<Caller, ApiError> {
    let by_address = || {
        Caller(format!(
            "ip:{}",
            peer.map(|p| p.to_string()).unwrap_or_default()
        ))
    };
    let Some(token) = &access.token else {
        return Ok(by_address());
    };
    match credentials(header) {
        Credentials::Bearer(t) if token.matches(&t) => Ok(by_address()),
        Credentials::Basic { user, password }
            if token.matches(&password) && (access.user.is_empty() || access.user == user) =>
        {
            Ok(if user.is_empty() {
                by_address()
            } else {
                Caller(format!("user:{user}"))
            })
        }
        Credentials::None => Err(ApiError::new(
            ErrorKind::Unauthorized,
            "this server requires credentials: Authorization: Bearer <token>, or HTTP Basic \
             with the token as password",
        )),
        _ => Err(ApiError::new(ErrorKind::Unauthorized, "wrong credentials")),
    }
}

/// The middleware: allow-list, then credentials (except for `/health`).
pub(crate) async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<Data<HttpState>>().cloned() else {
        let e = ApiError::new(ErrorKind::Internal, "server state missing");
        return Ok(req.into_response(e.error_response()));
    };
    let peer = req.peer_addr().map(|a| a.ip());
    if let Some(ip) = peer {
        if !state.access.allow.permits(ip) {
            log::info!("http: refused {ip}: not in the allow-list");
            let e = ApiError::forbidden("your address is not in this server's allow-list");
            return Ok(req.into_response(e.error_response()));
        }
    }
    if req.path() != "/health" {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match identify(&state.access, peer, header) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
            }
            Err(e) => {
                log::info!("http: refused a request from {peer:?}: {}", e.message);
                return Ok(req.into_response(e.error_response()));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The caller the gate identified.
pub(crate) fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorKind::Internal, "request was not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::secret::Secret;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn headers_parse() {
        assert_eq!(credentials(""), Credentials::None);
        assert_eq!(credentials("Basic "), Credentials::None);
        assert_eq!(credentials(&basic(":")), Credentials::None);
        assert_eq!(credentials("bearer abc"), Credentials::Bearer("abc".into()));
        assert_eq!(
            credentials(&basic("ann:p:w")),
            Credentials::Basic {
                user: "ann".into(),
                password: "p:w".into()
            }
        );
    }

    #[test]
    fn token_user_and_address_identities() {
        let peer = Some("10.1.2.3".parse().unwrap());
        let open = Access::default();
        assert_eq!(identify(&open, peer, "Basic ").unwrap().0, "ip:10.1.2.3");
        assert_eq!(identify(&open, peer, "Bearer x").unwrap().0, "ip:10.1.2.3");
        let closed = Access {
            token: Some(Secret::new("tok")),
            ..Access::default()
        };
        assert_eq!(
            identify(&closed, peer, "Bearer tok").unwrap().0,
            "ip:10.1.2.3"
        );
        assert_eq!(
            identify(&closed, peer, &basic("ann:tok")).unwrap().0,
            "user:ann"
        );
        assert_eq!(
            identify(&closed, peer, "").unwrap_err().status().as_u16(),
            401
        );
        assert!(identify(&closed, peer, "Bearer nope").is_err());
        assert!(identify(&closed, peer, &basic("ann:nope")).is_err());
        let named = Access {
            user: "runai".into(),
            ..closed
        };
        assert!(identify(&named, peer, &basic("ann:tok")).is_err());
        assert_eq!(
            identify(&named, peer, &basic("runai:tok")).unwrap().0,
            "user:runai"
        );
    }
}
