//! Machine context for routing alerts: `mde_machine_info` (device group, OS platform, health)
//! and `mde_machine_tag` (allow-listed tags) for every machine that has per-machine series.
//!
//! Owns the slow refresh: which machines to read (those with per-machine script series, so the
//! cost follows the machines watched, not the size of the fleet; kept from the machines that
//! appeared or went since the last check, `metrics`' index of them, so a check costs what
//! changed), the batches of
//! `computerDnsName eq '…'` filters under a URL-length cap, when to read (machines new to the
//! exporter at the next check, every machine again each `machine_info_interval`), and keeping
//! one `mde_machine_info` series per machine (so that a `group_left` join never meets two),
//! and the tag bounds (#24): which allowed tags a machine shows under `max_tags_per_machine`,
//! `max_tag_length` and the room `max_series` leaves, and counting what is left out
//! (`mde_machine_tags_dropped_total`).
//! Calls `GET /api/machines` under its own quota endpoint (`list_machines`) without waiting
//! for room: when the budget is spent it tries at the next check. Never runs on a scrape.
//! Does not own the per-machine script series (`series`, `state`) nor their index by machine
//! (`metrics`) nor the HTTP call (`api`); the machines watched and their spellings are kept
//! by [`watched`].
//! As the tenant's one background task besides the collector, it also copies the token's
//! missing permissions into the tenant status (status page, `/-/ready`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::model::Machine;
use crate::api::{Client, QuotaWait};
use crate::config::{MachineContext, Tenant};
use crate::metrics::{MachineInfoLabels, MachineTagLabels};
use crate::shared::Shared;

mod watched;

use watched::Watched;

/// Longest URL-encoded `$filter` per request; with the host and path the URL stays well
/// under the 2,048 characters that proxies and gateways commonly accept.
pub const MAX_FILTER_CHARS: usize = 1800;

/// The `$filter` batches that select `machines` by `computerDnsName` (a documented filter
/// field), each at most `max` characters once URL-encoded. A name longer than `max` on its
/// own still gets a batch of one.
pub fn filter_batches(machines: &[String], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let encoded = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).count();
    for m in machines {
        // OData string literals double a single quote.
        let term = format!("computerDnsName eq '{}'", m.replace('\'', "''"));
        let joined = if current.is_empty() {
            term.clone()
        } else {
            format!("{current} or {term}")
        };
        if !current.is_empty() && encoded(&joined) > max {
            out.push(std::mem::replace(&mut current, term));
        } else {
            current = joined;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Of several devices answering to one name (a machine onboarded again), the one seen last.
fn latest<'a>(candidates: impl Iterator<Item = &'a Machine>) -> Option<&'a Machine> {
    candidates.max_by(|a, b| a.last_seen.cmp(&b.last_seen).then(a.id.cmp(&b.id)))
}

/// `reason` of `mde_machine_tags_dropped_total`: longer than `max_tag_length`.
const DROPPED_TOO_LONG: &str = "too_long";
/// `reason` of `mde_machine_tags_dropped_total`: beyond `max_tags_per_machine`.
const DROPPED_PER_MACHINE: &str = "per_machine";
/// `reason` of `mde_machine_tags_dropped_total`: no room left under `max_series`.
const DROPPED_MAX_SERIES: &str = "max_series";

/// Allowed tags left out of one machine's, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    too_long: u64,
    per_machine: u64,
    max_series: u64,
}

impl Dropped {
    fn add(&mut self, other: Dropped) {
        self.too_long += other.too_long;
        self.per_machine += other.per_machine;
        self.max_series += other.max_series;
    }

    fn total(&self) -> u64 {
        self.too_long + self.per_machine + self.max_series
    }
}

/// The tags a machine shows: of `tags`, those an allow-list regex matches, each once; a tag
/// longer than `max_tag_length` characters dropped whole (a cut one could collide with
/// another); then the first `max_tags` in alphabetical order (stable whatever order the API
/// answers in); then at most `room`, what `max_series` leaves. See: #24
fn select_tags<'a>(
    tags: &'a [String],
    context: &MachineContext,
    room: usize,
) -> (Vec<&'a String>, Dropped) {
    let mut dropped = Dropped::default();
    let allowed: BTreeSet<&String> = tags
        .iter()
        .filter(|t| context.tags.iter().any(|re| re.is_match(t)))
        .collect();
    let mut kept = Vec::with_capacity(allowed.len().min(context.max_tags));
    for t in allowed {
        if t.chars().count() > context.max_tag_length {
            dropped.too_long += 1;
        } else if kept.len() >= context.max_tags {
            dropped.per_machine += 1;
        } else {
            kept.push(t);
        }
    }
    if kept.len() > room {
        dropped.max_series += (kept.len() - room) as u64;
        kept.truncate(room);
    }
    (kept, dropped)
}

/// What is exposed for one machine: its label sets, whose values the families hold too
/// (shared `LabelValue`s), so keeping them costs their pointers.
#[derive(Debug, Clone, PartialEq)]
struct Exposed {
    info: MachineInfoLabels,
    tags: Vec<MachineTagLabels>,
}

/// The machine-context refresh of one tenant.
pub struct MachineRefresh {
    tenant: String,
    client: Client,
    shared: Arc<Shared>,
    context: MachineContext,
    /// By machine name (lower case): what is exposed now.
    exposed: BTreeMap<String, Exposed>,
    /// Names the API did not know at the last read; asked again at the next full refresh.
    unknown: BTreeSet<String>,
    /// The machines with per-machine series.
    watched: Watched,
    /// Machines that appeared and were not read yet (a failed read keeps them here).
    pending: BTreeSet<String>,
    last_full: Option<Instant>,
    /// The configuration in force after a reload that kept this tenant as it was (#34): taken
    /// between two checks, so the refresh goes on with its machines and its schedule.
    feed: Option<watch::Receiver<Arc<Shared>>>,
}

impl MachineRefresh {
    /// The refresh of tenant `t`, through `client` (a sibling of its collector's).
    pub fn new(t: &Tenant, client: Client, shared: Arc<Shared>) -> Self {
        if !t.machine_context.tags.is_empty() {
            for why in [DROPPED_TOO_LONG, DROPPED_PER_MACHINE, DROPPED_MAX_SERIES] {
                shared
                    .metrics
                    .machines
                    .record_machine_tags_dropped(&t.name, why, 0);
            }
        }
        MachineRefresh {
            tenant: t.name.clone(),
            client,
            shared,
            context: t.machine_context.clone(),
            exposed: BTreeMap::new(),
            unknown: BTreeSet::new(),
            watched: Watched::default(),
            pending: BTreeSet::new(),
            last_full: None,
            feed: None,
        }
    }

    /// Take each configuration put in force later from `feed` (see [`Self::run`]).
    pub fn following(mut self, feed: watch::Receiver<Arc<Shared>>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The tenant is no longer refreshed here (removed, or started again with other settings,
    /// #34): what it exposed leaves /metrics, so that a label that changed never leaves two
    /// info series for one machine.
    pub fn retire(self) {
        for e in self.exposed.values() {
            self.unexpose(e);
        }
    }

    /// Check every poll interval until shutdown; then the refresh is given back (see
    /// [`Self::retire`]). A configuration put in force meanwhile (`following`) is taken
    /// between two checks.
    ///
    /// An `async` block, not an `async fn`, so that the task holds the refresh once (see
    /// `TenantCollector::run`). See: #34
    #[allow(clippy::manual_async_fn)]
    pub fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Self> {
        async move {
            let mut ticks = tokio::time::interval(self.shared.settings.poll_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.changed() => return self,
                    _ = crate::shared::next_shared(&mut self.feed) => {
                        self.follow();
                        continue;
                    }
                }
                // Boxed while it runs, so the task is small between refreshes (see
                // `TenantCollector::run`). See: #11
                tokio::select! {
                    _ = Box::pin(self.refresh_once()) => {}
                    _ = shutdown.changed() => return self,
                }
                if *shutdown.borrow() {
                    return self;
                }
            }
        }
    }

    /// Take the configuration in force now, if the feed has a newer one.
    fn follow(&mut self) {
        if let Some(shared) = crate::shared::newer_shared(&mut self.feed) {
            self.shared = shared;
        }
    }

    /// One check: forget machines without series, then read the new ones (or all, when a
    /// full refresh is due). A failed read keeps what is exposed and is tried again later.
    #[tracing::instrument(name = "machine_context", skip(self), fields(tenant = %self.tenant))]
    pub async fn refresh_once(&mut self) {
        // The permissions read from the token go to the status page and readiness from here,
        // the tenant's one background task besides the collector.
        if let Some(missing) = self.client.missing_permissions() {
            self.shared
                .update_status(&self.tenant, |s| s.missing_permissions = missing);
        }
        let changes = self.watched.update(&self.shared.metrics, &self.tenant);
        for k in changes.gone {
            self.unknown.remove(&k);
            self.pending.remove(&k);
            if let Some(old) = self.exposed.remove(&k) {
                self.unexpose(&old);
            }
        }
        self.pending.extend(changes.appeared);
        let full = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.context.interval);
        // A full refresh reads every machine; otherwise only the new ones.
        let wanted: Vec<String> = if full {
            self.watched.by_key.keys().cloned().collect()
        } else {
            self.pending.iter().cloned().collect()
        };
        let wanted: Vec<String> = wanted
            .iter()
            .filter_map(|k| self.watched.name(k).cloned())
            .collect();
        for batch in wanted.chunks(200) {
            for filter in filter_batches(batch, MAX_FILTER_CHARS) {
                match self.client.list_machines(&filter, QuotaWait::No).await {
                    Ok(found) => self.apply(&filter_names(batch, &filter), &found),
                    Err(e) => {
                        tracing::warn!(tenant = %self.tenant, error = %e, "machine context not refreshed; trying again later");
                        return;
                    }
                }
            }
        }
        if full {
            self.last_full = Some(Instant::now());
        }
    }

    /// Expose what the API said about `asked` (lower-case names).
    fn apply(&mut self, asked: &[String], found: &[Machine]) {
        // Tags count against max_series after the per-machine script series (#24).
        let scripts = self.shared.with_state(|s| s.last_runs_len());
        let max_series = self.shared.settings.max_series;
        let mut dropped = Dropped::default();
        for key in asked {
            self.pending.remove(key);
            let Some(name) = self.watched.name(key).cloned() else {
                continue;
            };
            let machine = latest(
                found
                    .iter()
                    .filter(|m| m.computer_dns_name.to_lowercase() == *key),
            );
            let Some(machine) = machine else {
                self.unknown.insert(key.clone());
                if let Some(old) = self.exposed.remove(key) {
                    self.unexpose(&old);
                }
                continue;
            };
            self.unknown.remove(key);
            let info = MachineInfoLabels {
                tenant: self.tenant.as_str().into(),
                machine: name.as_str().into(),
                machine_id: machine.id.as_str().into(),
                rbac_group: machine.rbac_group_name.as_str().into(),
                os_platform: machine.os_platform.as_str().into(),
                health_status: machine.health_status.as_str().into(),
            };
            // The room of this machine: what the script series and the other machines' tags
            // leave (its own tags, replaced now, do not count).
            let mine = self.exposed.get(key).map_or(0, |e| e.tags.len());
            let others = self
                .shared
                .metrics
                .machines
                .machine_tag_series()
                .saturating_sub(mine);
            let room = max_series.saturating_sub(scripts + others);
            let (tags, left_out) = select_tags(&machine.machine_tags, &self.context, room);
            dropped.add(left_out);
            let next = Exposed {
                info,
                tags: tags
                    .into_iter()
                    .map(|t| MachineTagLabels {
                        tenant: self.tenant.as_str().into(),
                        machine: name.as_str().into(),
                        tag: t.as_str().into(),
                    })
                    .collect(),
            };
            if let Some(old) = self.exposed.get(key) {
                if *old == next {
                    continue;
                }
                let old = old.clone();
                self.unexpose(&old);
            }
            self.shared
                .metrics
                .machines
                .expose_machine(&next.info, &next.tags);
            self.exposed.insert(key.clone(), next);
        }
        self.count_dropped(dropped);
    }

    /// Count the tags left out by one read, and say so once for the read.
    fn count_dropped(&self, dropped: Dropped) {
        if dropped.total() == 0 {
            return;
        }
        let m = &self.shared.metrics;
        m.machines
            .record_machine_tags_dropped(&self.tenant, DROPPED_TOO_LONG, dropped.too_long);
        m.machines.record_machine_tags_dropped(
            &self.tenant,
            DROPPED_PER_MACHINE,
            dropped.per_machine,
        );
        m.machines.record_machine_tags_dropped(
            &self.tenant,
            DROPPED_MAX_SERIES,
            dropped.max_series,
        );
        tracing::info!(
            tenant = %self.tenant,
            too_long = dropped.too_long,
            per_machine = dropped.per_machine,
            max_series = dropped.max_series,
            max_tags_per_machine = self.context.max_tags,
            max_tag_length = self.context.max_tag_length,
            "machine tags left out by their caps (mde_machine_tags_dropped_total)"
        );
    }

    fn unexpose(&self, old: &Exposed) {
        self.shared
            .metrics
            .machines
            .unexpose_machine(&old.info, &old.tags);
    }
}

/// The lower-case names of `batch` that `filter` asks for.
fn filter_names(batch: &[String], filter: &str) -> Vec<String> {
    batch
        .iter()
        .filter(|m| filter.contains(&format!("'{}'", m.replace('\'', "''"))))
        .map(|m| m.to_lowercase())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // See: #10
    #[test]
    fn batches_stay_under_the_cap_and_cover_every_machine() {
        let names: Vec<String> = (0..300)
            .map(|i| format!("ws-eng-{i:04}.contoso.com"))
            .collect();
        let batches = filter_batches(&names, MAX_FILTER_CHARS);
        assert!(batches.len() > 1);
        for b in &batches {
            let encoded = url::form_urlencoded::byte_serialize(b.as_bytes()).count();
            assert!(encoded <= MAX_FILTER_CHARS, "{encoded}");
        }
        let covered = names
            .iter()
            .filter(|n| batches.iter().any(|b| b.contains(&format!("'{n}'"))))
            .count();
        assert_eq!(covered, names.len());
        assert_eq!(
            filter_batches(&["o'brien".to_string()], MAX_FILTER_CHARS),
            vec!["computerDnsName eq 'o''brien'".to_string()]
        );
    }

    // See: #24
    #[test]
    fn tags_are_capped_per_machine_by_length_and_by_room() {
        let context = MachineContext {
            tags: vec![regex::Regex::new("^(?:t-.*|long-.*)$").unwrap()],
            max_tags: 3,
            max_tag_length: 10,
            ..MachineContext::default()
        };
        let tags: Vec<String> = [
            "t-5",
            "other",
            "t-1",
            "t-1",
            "long-xxxxxxxx",
            "t-4",
            "t-2",
            "t-3",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let (kept, dropped) = select_tags(&tags, &context, usize::MAX);
        // Allowed, each once, alphabetical, the long one dropped whole, not cut.
        assert_eq!(kept, ["t-1", "t-2", "t-3"]);
        assert_eq!(
            dropped,
            Dropped {
                too_long: 1,
                per_machine: 2,
                max_series: 0
            }
        );
        let (kept, dropped) = select_tags(&tags, &context, 1);
        assert_eq!(kept, ["t-1"]);
        assert_eq!((dropped.per_machine, dropped.max_series), (2, 2));
        // Characters, not bytes: ten of them in 20 bytes fit.
        let wide = vec!["t-éééééééé".to_string()];
        assert_eq!(select_tags(&wide, &context, 5).0.len(), 1);
        // Nothing allowed: nothing dropped either.
        let (kept, dropped) = select_tags(&tags, &MachineContext::default(), 5);
        assert!(kept.is_empty());
        assert_eq!(dropped.total(), 0);
    }

    #[test]
    fn the_device_seen_last_wins() {
        let m = |id: &str, seen: &str| Machine {
            id: id.into(),
            computer_dns_name: "a".into(),
            rbac_group_name: String::new(),
            os_platform: String::new(),
            health_status: String::new(),
            machine_tags: Vec::new(),
            last_seen: Some(seen.into()),
        };
        let list = [
            m("old", "2025-01-01T00:00:00Z"),
            m("new", "2025-06-01T00:00:00Z"),
        ];
        assert_eq!(latest(list.iter()).unwrap().id, "new");
    }
}
