//! Secured HTTP serving for Prometheus exporters: TLS, mutual TLS, basic auth, a rate limit and
//! response headers, driven by a `--web.config.file` in the format of
//! [prometheus/exporter-toolkit](https://github.com/prometheus/exporter-toolkit), so operators
//! can reuse the file they give node_exporter or blackbox_exporter.
//!
//! # What this crate owns, and what it does not
//!
//! It owns reading and validating the web config file ([`WebConfig::load`], with errors that
//! name the file and the key), turning it into a rustls configuration, checking each request
//! (rate limit, basic auth, extra headers) and the accept loop ([`serve()`], [`serve_with`])
//! that terminates TLS, times out and caps connections, and hands requests to an axum
//! [`Router`](axum::Router). It does not own the routes, the flags (`--web.listen-address`,
//! `--web.config.file`: the caller parses them and binds the listener), reloading the file
//! (load a new [`WebConfig`] and restart [`serve()`]), nor metrics: [`ServeStats`] counts what
//! the connection limits did, for the caller to expose if it wants.
//!
//! # Layout
//!
//! - [`config`]: the validated [`WebConfig`] (raw → checked), re-exporting [`Error`].
//! - `raw`: the file's serde schema, read strictly.
//! - `error`: [`Error`] and the helpers that build its messages.
//! - [`tls`]: the rustls server config, client-certificate verifiers, certificate rotation.
//! - [`guard`]: rate limit, basic auth (bcrypt on a bounded queue, plus a cache), response
//!   headers.
//! - [`serve`](mod@serve): the accept loop, timeouts, connection limits, graceful shutdown;
//!   [`ServeOptions`] holds every number, with defaults meant for an exporter.
//!
//! # Where this differs from exporter-toolkit, on purpose
//!
//! - TLS 1.0 and 1.1 are rejected at load time: rustls does not implement them.
//! - Only HTTP/1.1 is served (ALPN advertises `http/1.1`); `http_server_config.http2` is accepted
//!   and ignored.
//! - `client_auth_type: VerifyClientCertIfGiven`/`RequireAndVerifyClientCert` need a
//!   `client_ca_file` (or inline `client_ca`); Go would fall back to the system roots, which is
//!   never what an exporter operator means.
//! - `client_allowed_sans` matches DNS names and IP addresses only (rustls' name check, so a
//!   wildcard SAN in a client certificate covers the names it matches); e-mail and URI entries
//!   are rejected at load time instead of never matching.
//! - `cert_file`/`key_file` are re-read when they change (checked at most once a second, on a
//!   handshake), so certificate rotation needs no restart, as with Go which re-reads them on
//!   every handshake. A pair that does not load (say, mid-rotation, new cert with the old key)
//!   is logged and the previous one kept. `client_ca_file` is read once, at load.
//! - `curve_preferences: [CurveP521]` is rejected: the aws-lc-rs provider has no P-521 key
//!   exchange.
//! - `rate_limit` with an interval but no `burst` is rejected (Go would refuse every request).
//!
//! # Usage
//!
//! Load the file named by `--web.config.file` (if any) once at start-up, then serve a router:
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::routing::get;
//! use exporter_web::WebConfig;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // `None` when the flag is not given: plain HTTP, no auth.
//!     let web = Some(Arc::new(WebConfig::load(Path::new("web-config.yml"))?));
//!     let router = Router::new().route("/metrics", get(|| async { "up 1\n" }));
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:9100").await?;
//!     // Any future: resolve it (say, on SIGTERM) to stop accepting and drain requests.
//!     let shutdown = std::future::pending::<()>();
//!     let mut options = exporter_web::ServeOptions::default();
//!     options.realm = "my-exporter".to_string();
//!     exporter_web::serve_with(listener, router, web, shutdown, options).await?;
//!     Ok(())
//! }
//! ```

pub mod config;
mod error;
pub mod guard;
mod raw;
pub mod serve;
pub mod tls;

#[cfg(test)]
mod fixtures;

pub use config::{Error, WebConfig};
pub use serve::{ServeOptions, ServeStats, serve, serve_with};
