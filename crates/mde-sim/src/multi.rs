//! Many simulated tenants on one address, as a managed security provider sees the API: each
//! tenant is a whole [`Simulator`] with its own credentials, seed-derived scenario and quota,
//! and one router sends each request to the tenant it belongs to.
//!
//! Owns the dispatch and the per-tenant derivation ([`tenant_config`]): the token endpoints by
//! the tenant id in their path, `/api/...` by the bearer token (learnt from the token answers
//! this router handed out), and `/blob/...` by the action id in the blob path. A request that
//! belongs to no tenant goes to tenant 0, whose own checks answer it as the single-tenant
//! simulator would (unknown tenant, invalid token, blob not found). Does not own any API
//! behaviour: that stays in [`Simulator`], unchanged. `GET /sim/summary` adds the ground
//! truth summed over all tenants, for benchmarks that run the simulator in another process.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;

use crate::{SimConfig, Simulator};

/// Largest token answer read back to learn its `access_token`.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;

/// Tenant `i`'s scenario and credentials: `base` with the seed advanced by `i`; tenant 0
/// keeps `base`'s credentials (the single simulator's, by default), tenant `i > 0` gets tenant
/// id `{i:08x}-0000-4000-8000-000000005e70`, client id `{i:08x}-1111-4111-8111-111111111111`
/// and secret `sim-client-secret-{i}`.
pub fn tenant_config(base: &SimConfig, i: usize) -> SimConfig {
    let mut cfg = SimConfig {
        seed: base.seed.wrapping_add(i as u64),
        ..base.clone()
    };
    if i > 0 {
        cfg.tenant_id = format!("{i:08x}-0000-4000-8000-000000005e70");
        cfg.client_id = format!("{i:08x}-1111-4111-8111-111111111111");
        cfg.client_secret = format!("sim-client-secret-{i}");
    }
    cfg
}

/// The ground truth summed over every tenant (see [`crate::Truth`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub tenants: usize,
    /// Final Live Response actions.
    pub actions: usize,
    /// Completed RunScript commands of final actions, malformed ones included.
    pub transcripts: usize,
    /// Of those, the malformed ones (the exporter counts them as fetch failures).
    pub malformed: usize,
    /// Completed GetFile commands of final actions.
    pub files: usize,
}

struct Inner {
    sims: Vec<Simulator>,
    routers: Vec<Router>,
    by_tenant: HashMap<String, usize>,
    by_action: HashMap<String, usize>,
    /// Bearer token → tenant, learnt from the token answers. Tokens are kept until the
    /// simulator is dropped: one per tenant and token lifetime.
    by_token: Mutex<HashMap<String, usize>>,
    /// API and blob requests being answered now, over all tenants, and the most ever at once
    /// (token requests are not counted).
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// N simulated tenants behind one router; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct MultiSim {
    inner: Arc<Inner>,
}

impl MultiSim {
    /// `n` tenants (at least one) derived from `base` by [`tenant_config`].
    pub fn new(base: &SimConfig, n: usize) -> MultiSim {
        let sims: Vec<Simulator> = (0..n.max(1))
            .map(|i| Simulator::new(tenant_config(base, i)))
            .collect();
        let routers = sims.iter().map(Simulator::router).collect();
        let by_tenant = sims
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config().tenant_id.clone(), i))
            .collect();
        let by_action = sims
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.inner.actions.iter().map(move |a| (a.id.clone(), i)))
            .collect();
        MultiSim {
            inner: Arc::new(Inner {
                sims,
                routers,
                by_tenant,
                by_action,
                by_token: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// The most API and blob requests (over all tenants, tokens not counted) that were being
    /// answered at the same time since the start.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every tenant, by index.
    pub fn tenants(&self) -> &[Simulator] {
        &self.inner.sims
    }

    /// The ground truth of every tenant, summed.
    pub fn summary(&self) -> Summary {
        let mut out = Summary {
            tenants: self.inner.sims.len(),
            ..Summary::default()
        };
        for sim in &self.inner.sims {
            let truth = sim.truth();
            out.actions += truth.actions.len();
            out.transcripts += truth.transcripts.len();
            out.malformed += truth.transcripts.iter().filter(|t| t.malformed).count();
            out.files += truth.files.len();
        }
        out
    }

    /// Every tenant on one address, plus `GET /sim/summary`.
    pub fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }

    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Which tenant a request belongs to, and whether it asks for a token.
    fn route(&self, req: &Request) -> (usize, bool) {
        let path = req.uri().path();
        let mut segments = path.trim_start_matches('/').split('/');
        match segments.next() {
            Some("api") => {
                let token = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let index = token.and_then(|t| {
                    self.inner
                        .by_token
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(t)
                        .copied()
                });
                (index.unwrap_or(0), false)
            }
            // /blob/investigation-actions-data/{action id}/...
            Some("blob") => {
                let action = segments.nth(1).unwrap_or_default();
                (
                    self.inner.by_action.get(action).copied().unwrap_or(0),
                    false,
                )
            }
            // /{tenant}/oauth2/token, /{tenant}/oauth2/v2.0/token
            Some(tenant) => (
                self.inner.by_tenant.get(tenant).copied().unwrap_or(0),
                path.ends_with("/token"),
            ),
            None => (0, false),
        }
    }
}

/// One request counted in [`Inner::in_flight`] while it lives.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn dispatch(State(multi): State<MultiSim>, req: Request) -> Response {
    if req.uri().path() == "/sim/summary" {
        return axum::Json(multi.summary()).into_response();
    }
    let (index, token) = multi.route(&req);
    let Some(router) = multi.inner.routers.get(index).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let counted = (!token).then(|| InFlight::enter(&multi.inner));
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    drop(counted);
    if !(token && resp.status().is_success()) {
        return resp;
    }
    // Learn the token so that its API calls reach this tenant.
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, TOKEN_BODY_LIMIT).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let access_token = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned));
    if let Some(t) = access_token {
        multi
            .inner
            .by_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(t, index);
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    async fn start(n: usize, base: SimConfig) -> (MultiSim, String) {
        let multi = MultiSim::new(&base, n);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(multi.clone().serve(listener, std::future::pending()));
        (multi, url)
    }

    async fn token(
        http: &reqwest::Client,
        base: &str,
        sim: &Simulator,
        secret: &str,
    ) -> (u16, Value) {
        let (tenant, client, _) = sim.credentials();
        let resp = http
            .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", secret),
                ("scope", "https://api.securitycenter.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn get(http: &reqwest::Client, url: &str, bearer: &str) -> (u16, Value) {
        let resp = http.get(url).bearer_auth(bearer).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn quick() -> SimConfig {
        SimConfig {
            actions: 6,
            machines: 3,
            finish_within: Duration::ZERO,
            per_minute: 3,
            ..SimConfig::default()
        }
    }

    // See: #11
    #[tokio::test]
    async fn issue_11_each_tenant_has_its_own_credentials_scenario_and_quota() {
        let (multi, base) = start(3, quick()).await;
        let http = reqwest::Client::new();
        let sims = multi.tenants();
        assert_eq!(sims.len(), 3);
        let ids: BTreeSet<&str> = sims.iter().map(|s| s.credentials().0).collect();
        assert_eq!(ids.len(), 3, "tenant ids differ");

        // Tenant 1's secret is not tenant 2's.
        let secret1 = sims[1].config().client_secret.clone();
        let (status, body) = token(&http, &base, &sims[2], &secret1).await;
        assert_eq!(status, 401, "{body}");

        let mut tokens = Vec::new();
        for s in sims {
            let (status, body) = token(&http, &base, s, &s.config().client_secret).await;
            assert_eq!(status, 200, "{body}");
            tokens.push(body["access_token"].as_str().unwrap().to_string());
        }
        // Each token lists its own tenant's actions, which differ between tenants.
        let mut seen = Vec::new();
        for (s, t) in sims.iter().zip(&tokens) {
            let (status, body) = get(&http, &format!("{base}/api/machineactions"), t).await;
            assert_eq!(status, 200, "{body}");
            let listed: BTreeSet<String> = body["value"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["type"] == "LiveResponse")
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect();
            let truth: BTreeSet<String> = s.truth().actions.into_iter().map(|a| a.id).collect();
            assert_eq!(listed, truth);
            seen.push(listed);
        }
        assert!(seen[0].is_disjoint(&seen[1]) && seen[1].is_disjoint(&seen[2]));

        // A result link of tenant 1 downloads from tenant 1.
        let t = &sims[1].truth().transcripts[0];
        let (status, body) = get(
            &http,
            &format!(
                "{base}/api/machineactions/{}/GetLiveResponseResultDownloadLink(index={})",
                t.action_id, t.index
            ),
            &tokens[1],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let link = body["value"].as_str().unwrap();
        let blob = http.get(link).send().await.unwrap();
        assert_eq!(blob.status().as_u16(), 200);
        assert_eq!(sims[1].stats().downloads.len(), 1);
        assert_eq!(sims[0].stats().downloads.len(), 0);

        // Tenant 0 spends its 3 calls a minute (one is spent above); tenant 2 still has room.
        for _ in 0..3 {
            get(&http, &format!("{base}/api/machineactions"), &tokens[0]).await;
        }
        let (status, _) = get(&http, &format!("{base}/api/machineactions"), &tokens[0]).await;
        assert_eq!(status, 429);
        let (status, _) = get(&http, &format!("{base}/api/machineactions/x"), &tokens[2]).await;
        assert_eq!(status, 404, "tenant 2's quota is its own");

        // An unknown token is refused as by one simulator.
        let (status, _) = get(&http, &format!("{base}/api/machineactions"), "nope").await;
        assert_eq!(status, 401);

        let (status, summary) = get(&http, &format!("{base}/sim/summary"), "").await;
        assert_eq!(status, 200);
        let want = multi.summary();
        assert_eq!(summary["tenants"], 3);
        assert_eq!(summary["transcripts"], want.transcripts);
        assert_eq!(
            want.actions,
            sims.iter().map(|s| s.truth().actions.len()).sum::<usize>()
        );
    }

    #[test]
    fn tenant_zero_keeps_the_default_credentials() {
        let base = SimConfig::default();
        let zero = tenant_config(&base, 0);
        assert_eq!(zero.tenant_id, base.tenant_id);
        assert_eq!(zero.client_id, base.client_id);
        assert_eq!(zero.client_secret, base.client_secret);
        let five = tenant_config(&base, 5);
        assert_eq!(five.tenant_id, "00000005-0000-4000-8000-000000005e70");
        assert_eq!(five.seed, base.seed + 5);
    }
}
