//! The simulator's HTTP surface: which handler answers which path (the two AAD token endpoints,
//! the managed-identity endpoint, the machine-action API, `GET /api/machines` and the blob
//! container), and the middleware in front of all of them (Host/Referer counting, injected
//! redirects, announced headers such as `Sunset`).
//!
//! Owns the route table and that middleware. Does not own the handlers (`identity` for tokens,
//! `actions`, `machines`, `blob`), the checks of a call (`gate`) or the response shapes
//! (`respond`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Faults, Simulator, actions, blob, identity, machines};

impl Faults {
    /// Every answer under `path_prefix` from now on carries `header: value`, as an API that
    /// announces an endpoint's end would (`Deprecation`, `Sunset`). An invalid header name or
    /// value is ignored.
    pub fn announce(&self, path_prefix: &str, header: &str, value: &str) {
        self.with(|f| {
            f.announce
                .push((path_prefix.into(), header.into(), value.into()));
        });
    }
}

pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(identity::token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(identity::token_v2))
        .route("/api/machineactions", get(actions::list_actions))
        .route("/api/v1.0/machineactions", get(actions::list_actions))
        .route("/api/machineactions/{id}", get(actions::get_action))
        .route("/api/v1.0/machineactions/{id}", get(actions::get_action))
        .route(
            "/api/machineactions/{id}/{op}",
            get(actions::action_function),
        )
        .route(
            "/api/v1.0/machineactions/{id}/{op}",
            get(actions::action_function),
        )
        .route("/blob/{*path}", get(blob::blob))
        .route("/api/machines", get(machines::list_machines))
        .route("/api/v1.0/machines", get(machines::list_machines))
        .route(
            "/metadata/identity/oauth2/token",
            get(identity::metadata_token),
        )
        .layer(axum::middleware::from_fn_with_state(sim.clone(), hostile))
        .with_state(sim)
}

/// Before any route: note the Host and any Referer the request came with, and answer an
/// injected redirect (see [`super::Faults::redirect_next`]); after it, add the announced
/// headers (see [`Faults::announce`]).
async fn hostile(
    State(sim): State<Simulator>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (redirect, announced) = {
        let mut st = sim.inner.lock();
        *st.stats.hosts.entry(host).or_insert(0) += 1;
        if req.headers().contains_key(header::REFERER) {
            st.stats.with_referer += 1;
        }
        let path = req.uri().path();
        let announced: Vec<(String, String)> = st
            .faults
            .announce
            .iter()
            .filter(|(prefix, _, _)| path.starts_with(prefix.as_str()))
            .map(|(_, h, v)| (h.clone(), v.clone()))
            .collect();
        let redirect = st
            .faults
            .redirect
            .iter_mut()
            .find(|(prefix, _, n)| *n > 0 && path.starts_with(prefix.as_str()))
            .map(|(_, base, n)| {
                *n -= 1;
                format!("{base}{path_and_query}")
            });
        (redirect, announced)
    };
    match redirect {
        Some(location) => match HeaderValue::from_str(&location) {
            Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        None => {
            let mut resp = next.run(req).await;
            for (h, v) in announced {
                if let (Ok(h), Ok(v)) = (
                    header::HeaderName::from_bytes(h.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().append(h, v);
                }
            }
            resp
        }
    }
}
