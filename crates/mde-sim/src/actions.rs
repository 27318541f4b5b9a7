//! The machine-action API: `GET /api/machineactions` (OData `$filter`, `$top`, `$skip`,
//! `$orderby`, `$count`, `@odata.nextLink`, injected raw items), `GET /api/machineactions/{id}`
//! and `GetLiveResponseResultDownloadLink(index=N)` with its SAS link.
//!
//! Owns those answers and the link's signature fields. Does not own the checks before them
//! (`gate`), `$filter` (`filter`), the blob behind the link (`blob`) or the scenario
//! (`scenario`).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Timelike as _};
use serde::Serialize;

use super::endpoints::{GET, LINK, LIST};
use super::gate::api_call;
use super::respond::{api_error, base_url, json_ok};
use super::scenario::{self, ActionJson, SimAction};
use super::{Simulator, filter};

const TOP_MAX: usize = 10_000;
const LINK_FN: &str = "GetLiveResponseResultDownloadLink";

#[derive(Serialize)]
struct Page<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(rename = "@odata.count", skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
    value: Vec<ActionJson<'a>>,
}

fn odata_error(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "ODataError", message)
}

/// `$orderby`: only `creationDateTimeUtc` with an optional direction; true = descending.
fn order_desc(orderby: &str) -> Result<bool, String> {
    let mut words = orderby.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("creationDateTimeUtc"), None | Some("asc"), None) => Ok(false),
        (Some("creationDateTimeUtc"), Some("desc"), None) => Ok(true),
        _ => Err(format!(
            "The query specified in the URI is not valid. Order by '{orderby}' is not allowed."
        )),
    }
}

pub(crate) async fn list_actions(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = api_call(&sim, &headers, LIST).await {
        return r;
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if sim.inner.lock().faults.refuse_in_flight_filter
        && param("$filter").is_some_and(|f| {
            f.contains("status eq 'Pending'") || f.contains("status eq 'InProgress'")
        })
    {
        return odata_error(
            "The query specified in the URI is not valid. Filtering on status 'Pending' or 'InProgress' is not supported.",
        );
    }
    if sim.inner.lock().faults.refuse_combined_filter
        && param("$filter").is_some_and(|f| f.contains(" or (creationDateTimeUtc ge "))
    {
        return odata_error(
            "The query specified in the URI is not valid. An 'or' of different properties is not supported.",
        );
    }
    let filter = match param("$filter").map(filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return odata_error(&e.to_string()),
    };
    let top = match param("$top").map(str::parse::<usize>) {
        None => None,
        Some(Ok(t)) if t <= TOP_MAX => Some(t),
        Some(Ok(_)) => {
            return odata_error(&format!(
                "The limit of '{TOP_MAX}' for Top query has been exceeded. The value from the incoming request is '{}'.",
                param("$top").unwrap_or_default()
            ));
        }
        Some(Err(_)) => {
            return odata_error(&format!(
                "Invalid value '{}' for $top query option found.",
                param("$top").unwrap_or_default()
            ));
        }
    };
    let skip = match param("$skip").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            return odata_error(&format!(
                "Invalid value '{}' for $skip query option found.",
                param("$skip").unwrap_or_default()
            ));
        }
    };
    let desc = match param("$orderby").map(order_desc).transpose() {
        Ok(d) => d.unwrap_or(false),
        Err(e) => return odata_error(&e),
    };
    let count = match param("$count") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return odata_error(&format!(
                "Invalid value '{other}' for $count query option found."
            ));
        }
    };

    let elapsed = sim.elapsed();
    let hidden = sim.inner.lock().faults.hidden.clone();
    // The filter is evaluated on a cheap head of each action; only the page served is
    // rendered, so a 100,000-action history costs little per call.
    let mut matching: Vec<&scenario::SimAction> = sim
        .inner
        .actions
        .iter()
        .filter(|a| hidden.is_empty() || !hidden.contains(&a.id))
        .filter(|a| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(&scenario::Head::new(a, elapsed)))
        })
        .collect();
    if desc {
        matching.reverse();
    }
    let total = matching.len();
    // The client's page ($top) is served in server pages of at most `page_size`.
    let wanted_end = top.map_or(total, |t| skip.saturating_add(t)).min(total);
    let end = skip
        .saturating_add(sim.inner.cfg.page_size.max(1))
        .min(wanted_end);
    // Hostile: an API that ignores `$skip` serves the first items again.
    let from = if sim.inner.lock().faults.ignore_skip {
        0
    } else {
        skip
    };
    let value: Vec<ActionJson<'_>> = matching
        .into_iter()
        .skip(from)
        .take(end.saturating_sub(skip))
        .map(|a| a.view(elapsed, None))
        .collect();
    let base = base_url(&headers);
    let (looping, items) = {
        let st = sim.inner.lock();
        (st.faults.loop_next_link, st.faults.list_items.clone())
    };
    let next_link = if looping {
        // Hostile: the next page is this page again.
        Some(format!("{base}{uri}"))
    } else {
        (end < wanted_end).then(|| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &params {
                if k != "$skip" && k != "$top" {
                    q.append_pair(k, v);
                }
            }
            if let Some(t) = top {
                q.append_pair("$top", &(t - (end - skip)).to_string());
            }
            q.append_pair("$skip", &end.to_string());
            format!("{base}{}?{}", uri.path(), q.finish())
        })
    };
    let served = value.len() as u64;
    let page = Page {
        context: format!("{base}/api/$metadata#MachineActions"),
        count: count.then_some(total),
        next_link,
        value,
    };
    let response = if items.is_empty() {
        json_ok(&page)
    } else {
        with_raw_items(&page, &items)
    };
    let bytes = http_body_len(&response);
    let mut st = sim.inner.lock();
    st.stats.list_items += served;
    *st.stats.response_bytes.entry(LIST.to_string()).or_insert(0) += bytes;
    drop(st);
    sim.on_list_page();
    response
}

/// The exact length of a body built in memory (0 for a streamed one).
fn http_body_len(r: &Response) -> u64 {
    use axum::body::HttpBody as _;
    r.body().size_hint().exact().unwrap_or(0)
}

/// The page as JSON with `items` (raw bytes, not necessarily UTF-8 or valid) spliced in
/// first in `value`.
fn with_raw_items(page: &Page<'_>, items: &[Vec<u8>]) -> Response {
    let Ok(text) = serde_json::to_vec(page) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    const VALUE: &[u8] = b"\"value\":[";
    let Some(at) = text.windows(VALUE.len()).position(|w| w == VALUE) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let at = at + VALUE.len();
    let mut body = text[..at].to_vec();
    for item in items {
        body.extend_from_slice(item);
        body.push(b',');
    }
    if text.get(at) == Some(&b']') {
        body.pop();
    }
    body.extend_from_slice(&text[at..]);
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn action_not_found(id: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("Machine action {id} was not found"),
    )
}

pub(crate) async fn get_action(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = api_call(&sim, &headers, GET).await {
        return r;
    }
    match sim.find(&id) {
        Some(a) => {
            let ctx = format!(
                "{}/api/$metadata#MachineActions/$entity",
                base_url(&headers)
            );
            json_ok(&a.view(sim.elapsed(), Some(ctx)))
        }
        None => action_not_found(&id),
    }
}

/// `index` from `GetLiveResponseResultDownloadLink(index=N)`; `None` if it is another
/// function, `Some(Err)` if the argument is bad.
fn link_index(op: &str) -> Option<Result<u32, String>> {
    let args = op.strip_prefix(LINK_FN)?;
    Some(
        args.strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.trim().strip_prefix("index"))
            .and_then(|r| r.trim_start().strip_prefix('='))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                format!(
                    "Bad Request - Error in query syntax: '{op}' needs one argument index=<int>."
                )
            }),
    )
}

pub(crate) async fn action_function(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path((id, op)): Path<(String, String)>,
) -> Response {
    let Some(index) = link_index(&op) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "No HTTP resource was found that matches the request URI 'machineactions/{id}/{op}'."
            ),
        );
    };
    if let Err(r) = api_call(&sim, &headers, LINK).await {
        return r;
    }
    let index = match index {
        Ok(i) => i,
        Err(e) => return odata_error(&e),
    };
    let Some(a) = sim.find(&id) else {
        return action_not_found(&id);
    };
    let no_result = || {
        api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("Live response result for action {id} and index {index} was not found"),
        )
    };
    if !a.is_final_at(sim.elapsed()) {
        return no_result();
    }
    let Some(c) = a
        .commands
        .iter()
        .find(|c| c.index == index && c.blob.is_some())
    else {
        return no_result();
    };
    let elapsed = sim.elapsed();
    let expired = {
        let mut st = sim.inner.lock();
        *st.stats
            .link_requests
            .entry((id.clone(), index))
            .or_insert(0) += 1;
        st.stats
            .first_link
            .entry((id.clone(), index))
            .or_insert(elapsed);
        st.faults.expire_links
    };
    let now = sim.now_wall();
    let se = if expired {
        now.with_nanosecond(0).unwrap_or(now) - chrono::Duration::seconds(1)
    } else {
        // Whole seconds, rounded up, so a link never lives shorter than `link_ttl`.
        let t = now + chrono::Duration::from_std(sim.inner.cfg.link_ttl).unwrap_or_default();
        t.with_nanosecond(0).unwrap_or(t) + chrono::Duration::seconds(1)
    };
    let se = se.to_rfc3339_opts(SecondsFormat::Secs, true);
    let path = format!(
        "/blob/investigation-actions-data/{id}/CustomPlaybookCommandOutput/{}",
        c.blob_name
    );
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("se", &se)
        .append_pair("sp", "r")
        .append_pair("sv", "2019-07-07")
        .append_pair("sr", "b")
        .append_pair("sig", &sim.sign(&path, &se));
    let base = base_url(&headers);
    let link_base = sim
        .inner
        .lock()
        .faults
        .link_base
        .clone()
        .unwrap_or_else(|| base.clone());
    json_ok(&serde_json::json!({
        "@odata.context": format!("{base}/api/$metadata#Edm.String"),
        "value": format!("{link_base}{path}?{}", q.finish()),
    }))
}

impl Simulator {
    pub(crate) fn find(&self, id: &str) -> Option<&SimAction> {
        self.inner
            .by_id
            .get(id)
            .and_then(|i| self.inner.actions.get(*i))
    }
}
