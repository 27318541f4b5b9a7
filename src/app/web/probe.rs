//! `GET /probe?target=<tenant>`: one tenant's series out of the cached metrics, for the
//! Prometheus multi-target convention (one scrape job, or one scrape, per customer; the
//! target comes from `__param_target` relabelling, as with blackbox_exporter).
//!
//! Owns picking a tenant's series out of an encoded exposition and the probe's answers
//! (200, 400 without a target, 404 naming an unknown one, 503 while unfinished responses hold
//! the cap). Does not own the metrics or their encoding (`metrics`), nor the shared render and
//! the cap (`app::render`): it filters the text render `/metrics` shares, so concurrent probes
//! and scrapes cost one render, a probe never calls the MDE API, and the bytes of a probe's
//! answer count against the same cap as unfinished scrapes. It answers text whatever the
//! `Accept` (a scraper accepts it), so exemplars are on `/metrics` only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

use crate::app::render::Renders;
use crate::metrics::{Format, PROMETHEUS_CONTENT_TYPE};
use crate::shared::{Current, shared_now};

/// The `/probe` route, with its own state so the server mounts it with one line.
pub fn route<S: Clone + Send + Sync + 'static>(
    current: Current,
    renders: Arc<Renders>,
) -> MethodRouter<S> {
    get(probe).with_state((current, renders))
}

async fn probe(
    State((current, renders)): State<(Current, Arc<Renders>)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(target) = params.get("target").filter(|t| !t.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing target parameter: /probe?target=<tenant name>\n",
        )
            .into_response();
    };
    let shared = shared_now(&current);
    let known = shared
        .status
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains_key(target.as_str());
    if !known {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "unknown target {target:?}: no tenant of that name is served here (a tenant's `name:` in the configuration, on this shard)\n"
            ),
        )
            .into_response();
    }
    match probe_body(&renders, &shared.metrics, target).await {
        Ok(Some(held)) => (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            held.into_body(),
        )
            .into_response(),
        Ok(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "unfinished responses hold the cap on bytes held: try again when they are sent\n",
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// One tenant's part of the shared text render, held as an unfinished response (`None` past
/// the cap). Each chunk of the render is whole families, so each is filtered on its own.
async fn probe_body(
    renders: &Renders,
    metrics: &crate::metrics::Metrics,
    tenant: &str,
) -> Result<Option<Arc<crate::app::render::Held>>, std::fmt::Error> {
    if renders.full() {
        return Ok(None);
    }
    let render = renders.body(metrics, Format::Text).await?;
    let mut out = String::new();
    for chunk in &render.chunks {
        out.push_str(&only_tenant(&String::from_utf8_lossy(chunk), tenant));
    }
    Ok(Some(renders.hold(vec![bytes::Bytes::from(out)], render)))
}

/// Families a probe answers whatever the tenant: `mde_exporter_build_info`, by which the
/// dashboards find the exporter's jobs (so a probe job shows on them too).
const EVERY_PROBE: &[&str] = &["mde_exporter_build_info"];

/// The samples of `text` (Prometheus text or OpenMetrics) whose `tenant` label is `tenant`,
/// plus those of [`EVERY_PROBE`], each family's `# HELP`/`# TYPE`/`# UNIT` lines kept when one
/// of its samples is, and the OpenMetrics `# EOF`. The other series without a `tenant` label
/// (process, HTTP server, configuration reload) belong to no tenant and are left out.
pub fn only_tenant(text: &str, tenant: &str) -> String {
    let mut out = String::new();
    let mut pending_meta: Vec<&str> = Vec::new();
    let mut meta_family = "";
    for line in text.lines() {
        if line == "# EOF" {
            out.push_str("# EOF\n");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let family = rest.split_whitespace().nth(1).unwrap_or_default();
            if family != meta_family {
                pending_meta.clear();
                meta_family = family;
            }
            pending_meta.push(line);
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let keep = EVERY_PROBE.contains(&name)
            || (!line.is_empty() && label_value(line, "tenant").as_deref() == Some(tenant));
        if !keep {
            continue;
        }
        for m in pending_meta.drain(..) {
            out.push_str(m);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The (unescaped) value of label `name` of a sample line, if it has that label.
fn label_value(line: &str, name: &str) -> Option<String> {
    let open = line.find('{')?;
    // A metric name holds no space: a `{` after one is in a value or an exemplar.
    if line[..open].contains(' ') {
        return None;
    }
    let mut chars = line[open + 1..].chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || *c == ' ') {
            chars.next();
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            if c == '}' {
                return None;
            }
            key.push(c);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        if key == name {
            return Some(value);
        }
        match chars.next()? {
            ',' => continue,
            '}' => return None,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\n\
a_total{tenant=\"alpha\",script=\"x.ps1\"} 3\n\
a_total{tenant=\"beta\",script=\"x.ps1\"} 5\n\
a_total{script=\"s\\\"tenant=\\\"alpha\",tenant=\"al\\\\pha\"} 7\n\
# HELP b B.\n# TYPE b gauge\nb{tenant=\"beta\"} 1\n\
# HELP process_open_fds Fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 9\n\
# HELP mde_exporter_build_info Build.\n# TYPE mde_exporter_build_info gauge\n\
mde_exporter_build_info{version=\"1\"} 1\n# EOF\n";
    const BUILD: &str = "# HELP mde_exporter_build_info Build.\n# TYPE mde_exporter_build_info gauge\n\
mde_exporter_build_info{version=\"1\"} 1\n";

    #[test]
    fn keeps_one_tenants_samples_and_their_families_only() {
        let alpha = "# HELP a_total A.\n# TYPE a_total counter\n\
a_total{tenant=\"alpha\",script=\"x.ps1\"} 3\n";
        assert_eq!(
            only_tenant(TEXT, "alpha"),
            [alpha, BUILD, "# EOF\n"].concat()
        );
        let beta = "# HELP a_total A.\n# TYPE a_total counter\n\
a_total{tenant=\"beta\",script=\"x.ps1\"} 5\n# HELP b B.\n# TYPE b gauge\nb{tenant=\"beta\"} 1\n";
        assert_eq!(only_tenant(TEXT, "beta"), [beta, BUILD, "# EOF\n"].concat());
    }

    #[test]
    fn label_values_are_read_unescaped_not_searched_for() {
        // The `script` value spells `tenant="alpha"`; the real tenant is `al\pha`.
        let line = "a_total{script=\"s\\\"tenant=\\\"alpha\",tenant=\"al\\\\pha\"} 7";
        assert_eq!(label_value(line, "tenant").as_deref(), Some("al\\pha"));
        assert_eq!(
            label_value(line, "script").as_deref(),
            Some("s\"tenant=\"alpha")
        );
        assert_eq!(only_tenant(TEXT, "al\\pha").lines().count(), 7);
        assert_eq!(label_value("process_open_fds 9", "tenant"), None);
        assert_eq!(
            label_value("a{x=\"1\"} 2 # {tenant=\"alpha\"} 1", "tenant"),
            None
        );
    }

    /// Probes arriving together share one render with each other and with `/metrics`, and
    /// past the cap on held bytes a probe is refused instead of pinning another body: 100
    /// stalled readers of /probe held 483 MB before. See: #32 item 2
    #[tokio::test(start_paused = true)]
    #[allow(clippy::unwrap_used)]
    async fn probes_share_the_render_and_respect_the_cap() {
        let metrics = crate::metrics::Metrics::new();
        metrics
            .poll
            .set_discovery_interval("alpha", std::time::Duration::from_secs(5));
        let renders = Renders::new(crate::app::render::MAX_HELD_RESPONSE_BYTES);
        let a = probe_body(&renders, &metrics, "alpha")
            .await
            .unwrap()
            .unwrap();
        let b = probe_body(&renders, &metrics, "alpha")
            .await
            .unwrap()
            .unwrap();
        let scrape = renders.body(&metrics, Format::Text).await.unwrap();
        assert_eq!(
            renders.renders(),
            1,
            "one render for two probes and a scrape"
        );
        let body = String::from_utf8_lossy(&a.chunks[0]).to_string();
        assert!(body.contains("tenant=\"alpha\""), "{body}");
        assert_eq!(renders.held(), a.len + b.len + scrape.len);
        drop((a, b, scrape));
        assert_eq!(renders.held(), 0);

        let tiny = Renders::new(1);
        let stalled = probe_body(&tiny, &metrics, "alpha").await.unwrap();
        assert!(stalled.is_some());
        assert!(
            probe_body(&tiny, &metrics, "alpha")
                .await
                .unwrap()
                .is_none(),
            "past the cap"
        );
        drop(stalled);
        assert!(
            probe_body(&tiny, &metrics, "alpha")
                .await
                .unwrap()
                .is_some()
        );
    }
}
