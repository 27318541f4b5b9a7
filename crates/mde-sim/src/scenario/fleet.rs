//! The fleet scenario (#20): one script run fleet-wide, most of its devices offline. Each
//! action is on a device of its own, created within the last 90 minutes and `Pending`; every
//! tenth device comes online during the run (`InProgress` for a moment, then `Succeeded`
//! within `finish_within`), the others stay `Pending` until their 2-hour offline queue ends
//! (`TimeOut`, commands never started), which is past any test or benchmark run.
//!
//! Owns the draw of those actions (seeded, from an rng of its own, so that scenarios without
//! a fleet stay as they were). Does not own the types (`model`) nor the rest of the tenant
//! (`generate`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::encode::{guid, hex};
use super::generate::{REQUESTORS, SCRIPTS, transcript};
use super::model::{SimAction, SimCommand};
use crate::SimConfig;

/// How long the API queues an action for an offline device (the run-live-response page of
/// 2025-12-31; older pages said 3 days).
const OFFLINE_QUEUE: Duration = Duration::from_secs(2 * 3600);
/// One device in this many comes online during the run.
pub const ONLINE_EVERY: usize = 10;

/// The script every device of the fleet is asked to run.
pub fn fleet_script() -> &'static str {
    SCRIPTS[2]
}

/// `cfg.fleet` actions, see the module header.
pub fn fleet_actions(cfg: &SimConfig, anchor: DateTime<Utc>) -> Vec<SimAction> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xF1EE7);
    let finish_us = u64::try_from(cfg.finish_within.as_micros())
        .unwrap_or(u64::MAX)
        .max(20);
    let script = fleet_script();
    (0..cfg.fleet)
        .map(|i| {
            let dns = format!("fleet-{i:05}.contoso.com");
            let machine_id = hex(&mut rng, 40);
            let age = Duration::from_secs(rng.random_range(60..90 * 60));
            let created = anchor - chrono::Duration::from_std(age).unwrap_or_default();
            let online = i % ONLINE_EVERY == ONLINE_EVERY - 1;
            let (status, final_after, started_after) = if online {
                let f = Duration::from_micros(rng.random_range(finish_us / 10..finish_us));
                ("Succeeded", f, f.mul_f64(0.9))
            } else {
                // Queued until the offline queue ends: Pending throughout, then TimeOut.
                let f = OFFLINE_QUEUE.saturating_sub(age);
                ("TimeOut", f, f)
            };
            let started = anchor + chrono::Duration::from_std(started_after).unwrap_or_default();
            let finished = anchor + chrono::Duration::from_std(final_after).unwrap_or_default();
            let ran = online;
            let blob = ran.then(|| transcript(&mut rng, script, &dns, false));
            let command = SimCommand {
                index: 0,
                kind: "RunScript",
                params: vec![("ScriptName", script.to_string())],
                status: if ran { "Completed" } else { "Created" },
                errors: Vec::new(),
                start: ran.then_some(started),
                end: ran.then(|| started + (finished - started) / 2),
                blob_name: format!("0-{}", hex(&mut rng, 32)),
                blob,
            };
            SimAction {
                id: guid(&mut rng),
                kind: "LiveResponse",
                requestor: REQUESTORS[0],
                comment: "fleet-wide run",
                machine_id,
                dns,
                scope: None,
                created,
                started,
                finished,
                started_after,
                final_after,
                status,
                commands: vec![command],
            }
        })
        .collect()
}
