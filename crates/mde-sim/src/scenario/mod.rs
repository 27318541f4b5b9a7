//! The simulated tenant: machines and machine actions generated deterministically from the
//! seed, each with its final outcome fixed up front (statuses, commands, transcripts, GetFile
//! blobs), and the JSON view of an action as the API serves it at a given moment (Pending →
//! InProgress → final on the simulator clock).
//!
//! Owns what exists and what it looks like; does not own HTTP, quota or faults (see `gate`,
//! `respond` and the handlers).
//!
//! - `model`: the action, its commands and blobs, and its status at a moment.
//! - `view`: the JSON view of an action (and the `$filter` fields of it).
//! - `generate`: the tenant's library (scripts, files) and the seeded draw of its actions.
//! - `fleet`: the fleet scenario (one script fleet-wide, most devices offline).
//! - `failing`: the failing-fleet scenario (one script failing fleet-wide, #36).
//! - `encode`: timestamps, GUIDs and gzip as the services write them.
//! - `printed`: what two scripts print when `script_metrics` is on (#21).

mod encode;
mod failing;
mod fleet;
mod generate;
mod model;
mod printed;
mod view;

pub use encode::{guid, gzip_bomb, iso};
pub use failing::{FAILING_SCRIPT, Failing, FailingErrors, failing_device};
#[cfg(test)]
pub use generate::MALFORMED_SCRIPT;
pub use model::{Blob, SimAction};
pub use printed::{JSON_SCRIPT, TEXT_SCRIPT, script_metrics_rules};
pub use view::{ActionJson, Head};

#[cfg(test)]
mod tests;

/// The whole scenario of `cfg`: the seeded tenant, its fleet and its failing fleet, by
/// creation time.
pub fn generate(cfg: &crate::SimConfig, anchor: chrono::DateTime<chrono::Utc>) -> Vec<SimAction> {
    let mut actions = generate::generate(cfg, anchor);
    if cfg.fleet > 0 || cfg.failing.machines > 0 {
        actions.extend(fleet::fleet_actions(cfg, anchor));
        actions.extend(failing::failing_actions(cfg, anchor));
        actions.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    }
    actions
}
