//! The current script-output series (#21): per (tenant, machine, script) the samples of the
//! latest transcript, held as their rendered sample lines (`lines`) indexed by family, and
//! served at scrape time from them (`render`: a direct writer of the two text formats and
//! collectors for the other paths), with the counts of invalid lines and dropped samples.
//!
//! Owns turning a rule and a transcript's output into a set ([`extract`]: prefix, the
//! exporter's own labels, `exported_` for a sample's own `tenant`/`machine`/`script`, the
//! bounds), which set is current (the latest by the action's `lastUpdateDateTimeUtc`; a later
//! command wins within one action), how the sets are held (by family, each family's sets in
//! key order, help texts once), the totals per rule (series and bytes, each set never held
//! below an equal share of them: `share`), one family name across sets (the first held wins:
//! `clash`) and ttl expiry. Does not own the bytes of
//! a sample line (`lines`) nor rendering (`render`), fetching transcripts (`collector`) nor
//! keeping sets across restarts (`state`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::json;
use super::parse::{self, Drop, Kind, Limits};
use crate::config::{ScriptFormat, ScriptRule, is_reserved};

/// Labels the exporter sets on every script series; a sample's own label of one of these
/// names becomes `exported_<name>`.
const OWN_LABELS: [&str; 3] = ["tenant", "machine", "script"];

/// One family of a set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Family {
    /// The full name (prefix + the sample's name).
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    /// Each sample's own labels (renamed where they clash) and value.
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

/// What one transcript gave under its rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub families: Vec<Family>,
    pub invalid: u64,
    pub dropped: BTreeMap<Drop, u64>,
}

impl Extracted {
    pub fn series(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// The samples of `output` under `rule`.
pub fn extract(rule: &ScriptRule, output: &[u8]) -> Extracted {
    let limits = Limits {
        max_series: rule.max_series,
        max_name_len: rule.max_name_length,
        max_label_value_len: rule.max_label_length,
        max_labels: rule.max_labels,
    };
    match rule.format {
        ScriptFormat::Prometheus => {
            let parsed = parse::parse(output, &limits);
            let mut out = Extracted {
                invalid: parsed.invalid,
                dropped: parsed.dropped,
                ..Extracted::default()
            };
            let mut at: HashMap<String, usize> = HashMap::new();
            for s in parsed.samples {
                let name = format!("{}{}", rule.prefix, s.name);
                if is_reserved(&name) {
                    *out.dropped.entry(Drop::ReservedName).or_default() += 1;
                    continue;
                }
                let i = *at.entry(name.clone()).or_insert_with(|| {
                    out.families.push(Family {
                        name,
                        kind: parsed.kinds.get(&s.name).copied().unwrap_or(Kind::Untyped),
                        help: parsed.help.get(&s.name).cloned(),
                        samples: Vec::new(),
                    });
                    out.families.len() - 1
                });
                out.families[i].samples.push((renamed(s.labels), s.value));
            }
            out
        }
        ScriptFormat::Json => {
            let mut out = Extracted::default();
            let object = json::find_object(output);
            for m in &rule.metrics {
                match object.as_ref().and_then(|o| json::number_at(o, &m.path)) {
                    Some(v) => out.families.push(Family {
                        name: format!("{}{}", rule.prefix, m.name),
                        kind: Kind::Gauge,
                        help: m.help.clone(),
                        samples: vec![(Vec::new(), v)],
                    }),
                    None => out.invalid += 1,
                }
            }
            out
        }
    }
}

/// A sample's own `tenant`, `machine` or `script` label never replaces the real one: it
/// becomes `exported_<name>` (Prometheus' honor_labels convention), and `exported_` again
/// while that name is taken by another of the sample's labels, so no name is there twice.
fn renamed(labels: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut taken: HashSet<String> = labels.iter().map(|(k, _)| k.clone()).collect();
    labels
        .into_iter()
        .map(|(k, v)| {
            if !OWN_LABELS.contains(&k.as_str()) {
                return (k, v);
            }
            let mut name = format!("exported_{k}");
            while taken.contains(&name) || OWN_LABELS.contains(&name.as_str()) {
                name = format!("exported_{name}");
            }
            taken.insert(name.clone());
            (name, v)
        })
        .collect()
}

/// (tenant, machine, script).
pub type SetKey = (String, String, String);

/// The current set of one (tenant, machine, script); its JSON is what the state file keeps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Set {
    /// The action's `lastUpdateDateTimeUtc` (the set's age and which set is later).
    pub produced: DateTime<Utc>,
    /// The command index within the action: a later command wins within one action.
    pub index: u32,
    pub ttl: Duration,
    pub families: Vec<Family>,
}

impl Set {
    /// The set `extracted` would be, before the rule's total is applied.
    pub fn new(
        produced: DateTime<Utc>,
        index: u32,
        rule: &ScriptRule,
        extracted: &Extracted,
    ) -> Set {
        Set {
            produced,
            index,
            ttl: rule.ttl,
            families: extracted.families.clone(),
        }
    }

    /// Whether the set is older than its ttl at `now`.
    pub fn is_past_ttl(&self, now: DateTime<Utc>) -> bool {
        past_ttl(self.produced, self.ttl, now)
    }

    /// The series the set has.
    pub fn series(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// A held set: when it was produced, its ttl, how many series it has and which families;
/// its samples are in [`Inner::families`] as held lines (`lines`).
#[derive(Debug)]
struct Held {
    produced: DateTime<Utc>,
    index: u32,
    ttl: Duration,
    series: usize,
    /// About the bytes of its held lines ([`share::set_bytes`]).
    bytes: usize,
    /// The set's own labels as they follow a name in its lines (`lines::prefix`).
    prefix: Box<str>,
    /// The set's families, in the order the transcript gave them (the names are the keys of
    /// [`Inner::families`], shared).
    names: Vec<Arc<str>>,
}

/// One family of one set as held: its kind and help (a family's first set in key order gives
/// the family's) and its samples as their whole lines (`lines::lines`).
#[derive(Debug)]
struct Fragment {
    kind: Kind,
    help: Option<Arc<str>>,
    lines: Box<str>,
    /// A value is infinite (spelled otherwise in OpenMetrics).
    infinite: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// In key order, so that a scrape needs no sort (#21).
    sets: BTreeMap<Arc<SetKey>, Held>,
    /// Every family by name (name order), and its sets in key order: what a scrape walks,
    /// with no index to build and no sample to format (#21).
    families: BTreeMap<Arc<str>, BTreeMap<Arc<SetKey>, Fragment>>,
    /// The help texts held, once each (10,000 machines print the same `# HELP`).
    helps: HashSet<Arc<str>>,
    /// How many help texts were left by the last prune (see [`HELPS_PRUNED_FROM`]).
    helps_kept: usize,
    /// Series held per (tenant, script): the rule's total, kept by `insert` and `remove`.
    totals: HashMap<(String, String), usize>,
    /// Bytes held per (tenant, script), about ([`share::set_bytes`]), and sets held per
    /// (tenant, script): the rule's byte total and its fair shares (#32 item 5).
    total_bytes: HashMap<(String, String), usize>,
    sets_held: HashMap<(String, String), usize>,
    invalid: BTreeMap<(String, String), u64>,
    dropped: BTreeMap<(String, String, &'static str), u64>,
    /// Transcripts whose reading was abandoned at its time bound, per (tenant, script)
    /// (`pool`, #32 item 1).
    abandoned: BTreeMap<(String, String), u64>,
}

impl Inner {
    /// Hold `set` as the set of `key` (replacing the one held), its series counted in its
    /// rule's total.
    fn insert(&mut self, key: SetKey, mut set: Set) {
        self.remove(&key);
        // A set put back at start (or cut to its share) is held by the same rule as one just
        // recorded: a family another set holds under a clashing name stays out (`clash`).
        clash::leave_out(self, &key, &mut set.families, &mut BTreeMap::new());
        let key = Arc::new(key);
        let prefix = lines::prefix(&key.0, &key.1, &key.2);
        let bytes = share::set_bytes(&set.families, prefix.len());
        let mut names: Vec<Arc<str>> = Vec::with_capacity(set.families.len());
        let mut series = 0;
        for f in set.families {
            series += f.samples.len();
            let name = match self.families.get_key_value(f.name.as_str()) {
                Some((name, _)) => name.clone(),
                None => Arc::from(f.name.as_str()),
            };
            let help = f.help.map(|h| intern(&mut self.helps, h));
            let sets = self.families.entry(name.clone()).or_default();
            match sets.get_mut(&*key) {
                // A name twice in one set: its samples together, under the first's kind.
                Some(fragment) => {
                    let sample = lines::sample_name(&name, fragment.kind);
                    let (held, infinite) = lines::lines(&sample, &prefix, &f.samples);
                    fragment.lines = format!("{}{held}", fragment.lines).into_boxed_str();
                    fragment.infinite |= infinite;
                }
                None => {
                    let sample = lines::sample_name(&name, f.kind);
                    let (held, infinite) = lines::lines(&sample, &prefix, &f.samples);
                    sets.insert(
                        key.clone(),
                        Fragment {
                            kind: f.kind,
                            help,
                            lines: held,
                            infinite,
                        },
                    );
                    names.push(name);
                }
            }
        }
        let rule_key = (key.0.clone(), key.2.clone());
        *self.totals.entry(rule_key.clone()).or_default() += series;
        *self.total_bytes.entry(rule_key.clone()).or_default() += bytes;
        *self.sets_held.entry(rule_key).or_default() += 1;
        self.sets.insert(
            key,
            Held {
                produced: set.produced,
                index: set.index,
                ttl: set.ttl,
                series,
                bytes,
                prefix: prefix.into_boxed_str(),
                names,
            },
        );
        if self.helps.len() > HELPS_PRUNED_FROM.max(2 * self.helps_kept) {
            self.prune_helps();
        }
    }

    /// Stop holding the set of `key` (its series leave its rule's total); it, if one was held.
    fn remove(&mut self, key: &SetKey) -> Option<Held> {
        let held = self.sets.remove(key)?;
        let rule_key = (key.0.clone(), key.2.clone());
        if let Some(t) = self.totals.get_mut(&rule_key) {
            *t -= held.series;
        }
        if let Some(t) = self.total_bytes.get_mut(&rule_key) {
            *t -= held.bytes;
        }
        if let Some(t) = self.sets_held.get_mut(&rule_key) {
            *t -= 1;
        }
        for name in &held.names {
            if let Some(sets) = self.families.get_mut(name) {
                sets.remove(key);
                if sets.is_empty() {
                    self.families.remove(name);
                }
            }
        }
        Some(held)
    }

    /// Stop holding the sets `gone` picks, and the help texts only they had; their keys.
    fn remove_where(&mut self, gone: impl Fn(&SetKey, &Held) -> bool) -> Vec<SetKey> {
        let keys: Vec<SetKey> = self
            .sets
            .iter()
            .filter(|(k, h)| gone(k, h))
            .map(|(k, _)| SetKey::clone(k))
            .collect();
        for k in &keys {
            self.remove(k);
        }
        if !keys.is_empty() {
            self.prune_helps();
        }
        keys
    }

    /// Forget the help texts no held family has.
    fn prune_helps(&mut self) {
        self.helps.retain(|h| Arc::strong_count(h) > 1);
        self.helps_kept = self.helps.len();
    }

    /// The set of `key` as it was given (its samples read back from their held lines).
    fn get(&self, key: &SetKey) -> Option<Set> {
        let held = self.sets.get(key)?;
        let mut families = Vec::with_capacity(held.names.len());
        for name in &held.names {
            let f = self.families.get(name)?.get(key)?;
            families.push(Family {
                name: name.to_string(),
                kind: f.kind,
                help: f.help.as_deref().map(str::to_string),
                samples: lines::read(&f.lines).ok()?,
            });
        }
        Some(Set {
            produced: held.produced,
            index: held.index,
            ttl: held.ttl,
            families,
        })
    }

    /// When the sets of `rule_key` hold more than the rule's totals (a set took its fair
    /// share that the total did not leave), cut every set over an equal share to it, counted
    /// as `fair_share`: two noisy machines cannot keep the others out for the rule's ttl.
    fn share_fairly(&mut self, rule_key: &(String, String), rule: &ScriptRule) {
        let get = |m: &HashMap<(String, String), usize>| m.get(rule_key).copied().unwrap_or(0);
        let (series, bytes, sets) = (
            get(&self.totals),
            get(&self.total_bytes),
            get(&self.sets_held),
        );
        if series <= rule.max_total_series && bytes <= rule.max_total_bytes {
            return;
        }
        let fair_series = rule.max_total_series / sets.max(1);
        let fair_bytes = rule.max_total_bytes / sets.max(1);
        let over: Vec<SetKey> = self
            .sets
            .iter()
            .filter(|(k, h)| {
                k.0 == rule_key.0
                    && k.2 == rule_key.1
                    && (h.series > fair_series || h.bytes > fair_bytes)
            })
            .map(|(k, _)| SetKey::clone(k))
            .collect();
        let mut dropped = BTreeMap::new();
        for k in over {
            let Some(mut set) = self.get(&k) else {
                continue;
            };
            let prefix_len = lines::prefix(&k.0, &k.1, &k.2).len();
            share::cut(
                &mut set.families,
                prefix_len,
                fair_series,
                fair_bytes,
                Drop::FairShare,
                &mut dropped,
            );
            self.insert(k, set);
        }
        for (why, n) in dropped {
            *self
                .dropped
                .entry((rule_key.0.clone(), rule_key.1.clone(), why.as_str()))
                .or_default() += n;
        }
    }
}

/// From this many help texts held on (or twice as many as the last prune left, whichever is
/// more: a prune walks them all), an insert forgets those no family has any more (a script
/// that prints a new help every run must not grow them for good).
const HELPS_PRUNED_FROM: usize = 4096;

/// `help`, shared with the family that already has the same text.
fn intern(helps: &mut HashSet<Arc<str>>, help: String) -> Arc<str> {
    if let Some(h) = helps.get(help.as_str()) {
        return h.clone();
    }
    let h: Arc<str> = help.into();
    helps.insert(h.clone());
    h
}

/// The current sets and the counts, shared by the collectors and the scrape.
#[derive(Debug, Default)]
pub struct Store {
    inner: RwLock<Inner>,
}

/// What [`Store::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The set is the current one now.
    Current,
    /// An older transcript than the set held: counted, not shown.
    Older,
}

impl Store {
    /// A transcript's set for `key`, produced at `produced` (command `index`): it replaces
    /// the held set unless that one is later. Samples beyond the rule's total are dropped
    /// (`max_total`); invalid lines and drops are counted either way.
    pub fn record(
        &self,
        key: SetKey,
        produced: DateTime<Utc>,
        index: u32,
        rule: &ScriptRule,
        mut extracted: Extracted,
    ) -> Recorded {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let rule_key = (key.0.clone(), key.2.clone());
        if extracted.invalid > 0 {
            *inner.invalid.entry(rule_key.clone()).or_default() += extracted.invalid;
        }
        // Shown at 0 from a rule's first set on, so that the first abandoned reading is an
        // increase (`count_abandoned`).
        inner.abandoned.entry(rule_key.clone()).or_default();
        let older = inner
            .sets
            .get(&key)
            .is_some_and(|held| (held.produced, held.index) > (produced, index));
        if !older {
            cap(&inner, &key, rule, &mut extracted);
            let set = Set {
                produced,
                index,
                ttl: rule.ttl,
                families: std::mem::take(&mut extracted.families),
            };
            inner.insert(key.clone(), set);
            inner.share_fairly(&rule_key, rule);
        }
        for (why, n) in extracted.dropped {
            *inner
                .dropped
                .entry((key.0.clone(), key.2.clone(), why.as_str()))
                .or_default() += n;
        }
        if older {
            Recorded::Older
        } else {
            Recorded::Current
        }
    }

    /// Cut `extracted` to the room its rule's total leaves for `key` (the set `key` holds
    /// makes room), counting the excess as `max_total`: what the state file keeps must be
    /// what is served, or a restart would restore sets beyond the total. [`Store::record`]
    /// cuts again, which changes nothing when nothing was recorded in between.
    pub fn cap_to_total(&self, key: &SetKey, rule: &ScriptRule, extracted: &mut Extracted) {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        cap(&inner, key, rule, extracted);
    }

    /// A transcript of `script` in `tenant` whose reading was abandoned at its time bound
    /// (`pool`): counted, its set not recorded (the set held stays).
    pub fn count_abandoned(&self, tenant: &str, script: &str) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        *inner
            .abandoned
            .entry((tenant.to_string(), script.to_string()))
            .or_default() += 1;
    }

    /// Put a set back as it was (after a restart), without counting anything.
    pub fn restore(&self, key: SetKey, set: Set) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.insert(key, set);
    }

    /// The set of `key`, if any, as it was given (its samples read back from the held lines).
    pub fn get(&self, key: &SetKey) -> Option<Set> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.get(key)
    }

    /// When the set of `key` was produced and by which command, if one is held: which of two
    /// transcripts is later, without reading the set back.
    pub fn produced(&self, key: &SetKey) -> Option<(DateTime<Utc>, u32)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.sets.get(key).map(|h| (h.produced, h.index))
    }

    /// Keep only the sets, and the counts of invalid lines and drops, of the (tenant, script)
    /// pairs `kept` (a tenant served here with a rule for the script): after a reload that
    /// removed a tenant or a rule, its series leave `/metrics` now, not at the rule's ttl.
    /// The state file keeps its copies until then. How many sets were removed.
    pub fn retain(&self, kept: &dyn Fn(&str, &str) -> bool) -> usize {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let gone = inner.remove_where(|k, _| !kept(&k.0, &k.2));
        inner.totals.retain(|(t, s), _| kept(t, s));
        inner.total_bytes.retain(|(t, s), _| kept(t, s));
        inner.sets_held.retain(|(t, s), _| kept(t, s));
        inner.invalid.retain(|(t, s), _| kept(t, s));
        inner.dropped.retain(|(t, s, _), _| kept(t, s));
        inner.abandoned.retain(|(t, s), _| kept(t, s));
        gone.len()
    }

    /// Remove the sets older than their rule's ttl at `now_of(tenant)` (the tenant's API
    /// time; `None`: its clock refuses the judgement, nothing of it expires); the keys
    /// removed. See: #24 item 7
    pub fn expire(&self, now_of: &dyn Fn(&str) -> Option<DateTime<Utc>>) -> Vec<SetKey> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.remove_where(|k, s| now_of(&k.0).is_some_and(|now| past_ttl(s.produced, s.ttl, now)))
    }
}

/// Whether something produced at `produced` is older than `ttl` at `now`.
fn past_ttl(produced: DateTime<Utc>, ttl: Duration, now: DateTime<Utc>) -> bool {
    chrono::Duration::from_std(ttl).is_ok_and(|ttl| produced + ttl < now)
}

/// Cut `extracted` to the room the rule's totals leave for `key` (the set `key` holds makes
/// room), but never below an equal share of them ([`share::room`]; the sets over theirs are
/// cut after, see [`Inner::share_fairly`]), and to the transcript's own `max_bytes`; the
/// families that clash with another set's are left out first (`clash`).
fn cap(inner: &Inner, key: &SetKey, rule: &ScriptRule, extracted: &mut Extracted) {
    let rule_key = (key.0.clone(), key.2.clone());
    let held = inner.sets.get(key);
    let get = |m: &HashMap<(String, String), usize>| m.get(&rule_key).copied().unwrap_or(0);
    let others_series = get(&inner.totals) - held.map_or(0, |h| h.series);
    let others_bytes = get(&inner.total_bytes) - held.map_or(0, |h| h.bytes);
    let sets = get(&inner.sets_held) - usize::from(held.is_some()) + 1;
    let room_series = share::room(rule.max_total_series, others_series, sets);
    let room_bytes = share::room(rule.max_total_bytes, others_bytes, sets);
    let prefix_len = lines::prefix(&key.0, &key.1, &key.2).len();
    let dropped = &mut extracted.dropped;
    let families = &mut extracted.families;
    // A family another set holds under a clashing name first (#32 item 3): left out before
    // the totals are applied, so that it takes no room.
    clash::leave_out(inner, key, families, dropped);
    share::cut(
        families,
        prefix_len,
        room_series,
        usize::MAX,
        Drop::MaxTotal,
        dropped,
    );
    let (bytes, why) = if rule.max_bytes <= room_bytes {
        (rule.max_bytes, Drop::MaxBytes)
    } else {
        (room_bytes, Drop::MaxTotalBytes)
    };
    share::cut(families, prefix_len, usize::MAX, bytes, why, dropped);
}

mod clash;
mod lines;
mod render;
mod share;
pub use render::Part;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
