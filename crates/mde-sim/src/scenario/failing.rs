//! The failing-fleet scenario (#36): one script, [`FAILING_SCRIPT`], run once on each of
//! `cfg.failing.machines` devices of their own, every action `Succeeded` before the start and
//! every run failing (exit code 1) with `script_errors` whose paths, numbers, user and host
//! names are the device's own: the same failure on every device ([`FailingErrors::Same`]), one
//! of two (`Two`: even devices one, odd devices the other), or unique garbage per device
//! (`Garbage`: words drawn at random, nothing to mask).
//!
//! Owns the draw of those actions (seeded, from an rng of its own, so that scenarios without
//! them stay as they were) and their error text. Does not own the types (`model`) nor the rest
//! of the tenant (`generate`).

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::encode::{guid, hex};
use super::generate::REQUESTORS;
use super::model::{Blob, SimAction, SimCommand};
use crate::SimConfig;

/// The script every device of the failing fleet runs.
pub const FAILING_SCRIPT: &str = "compliance-check.ps1";

/// Which errors the failing fleet's runs write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailingErrors {
    /// The same failure everywhere (a registry key denied), in each device's own words.
    #[default]
    Same,
    /// Even devices: the registry key denied; odd devices: a remote session refused.
    Two,
    /// Each device writes words of its own: as many signatures as devices.
    Garbage,
}

/// The failing fleet of a scenario (#36): off with 0 machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failing {
    pub machines: usize,
    pub errors: FailingErrors,
}

const DEVICE_KINDS: &[&str] = &["ws", "lap", "srv", "kiosk"];

/// The device name of failing device `i`: names differ in kind, number and width.
pub fn failing_device(i: usize) -> String {
    format!(
        "{}-{}{:03}.contoso.com",
        DEVICE_KINDS[i % DEVICE_KINDS.len()],
        ["", "eu", "nyc"][i % 3],
        i
    )
}

/// `cfg.failing.machines` actions, see the module header.
pub fn failing_actions(cfg: &SimConfig, anchor: DateTime<Utc>) -> Vec<SimAction> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xFA11);
    (0..cfg.failing.machines)
        .map(|i| {
            let dns = failing_device(i);
            let created =
                anchor - chrono::Duration::seconds(rng.random_range(15 * 60..4 * 3600));
            let started = created + chrono::Duration::seconds(rng.random_range(1..30));
            let finished = started + chrono::Duration::seconds(rng.random_range(20..300));
            let errors = error_text(cfg.failing.errors, i, &dns, &mut rng);
            let output = format!(
                "Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_{}.txt\nChecking {} settings on {dns}\nTranscript ended.\n",
                guid(&mut rng).to_uppercase(),
                rng.random_range(3..90)
            );
            let bytes = serde_json::json!({
                "script_name": FAILING_SCRIPT,
                "exit_code": 1,
                "script_output": output,
                "script_errors": errors,
            })
            .to_string()
            .into_bytes();
            let command = SimCommand {
                index: 0,
                kind: "RunScript",
                params: vec![("ScriptName", FAILING_SCRIPT.to_string())],
                status: "Completed",
                errors: Vec::new(),
                start: Some(started),
                end: Some(finished - chrono::Duration::seconds(1)),
                blob_name: format!("0-{}", hex(&mut rng, 32)),
                blob: Some(Blob::Transcript {
                    bytes,
                    script: FAILING_SCRIPT.to_string(),
                    exit_code: 1,
                    errors_present: true,
                    malformed: false,
                    printed: Vec::new(),
                }),
            };
            SimAction {
                id: guid(&mut rng),
                kind: "LiveResponse",
                requestor: REQUESTORS[1],
                comment: "weekly compliance sweep",
                machine_id: hex(&mut rng, 40),
                dns,
                scope: None,
                created,
                started,
                finished,
                started_after: std::time::Duration::ZERO,
                final_after: std::time::Duration::ZERO,
                status: "Succeeded",
                commands: vec![command],
            }
        })
        .collect()
}

/// The `script_errors` of failing device `i`, named `dns`.
fn error_text(kind: FailingErrors, i: usize, dns: &str, rng: &mut StdRng) -> String {
    let host = dns.split('.').next().unwrap_or(dns).to_uppercase();
    let user = ["alice", "bob.smith", "svc_compliance", "j-doe2"][i % 4];
    let n: u32 = rng.random_range(1..100_000);
    let at = format!(
        "At C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Downloads\\{FAILING_SCRIPT}:{} char:{}\r\n",
        rng.random_range(1..400),
        rng.random_range(1..40)
    );
    let when = format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        rng.random_range(1..13),
        rng.random_range(1..29),
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60)
    );
    match (kind, i % 2) {
        (FailingErrors::Same, _) | (FailingErrors::Two, 0) => format!(
            "Set-ItemProperty : Requested registry access is not allowed on {host} for HKLM\\SOFTWARE\\Policies\\Contoso\\Baseline{n} \
             (user {user}@contoso.com, attempt {} of 3, 0x{:08X}, {when}).\r\n{at}\
             + Set-ItemProperty -Path $key -Name Enforce -Value 1\r\n\
             + ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\r\n    \
             + CategoryInfo          : PermissionDenied: (HKEY_LOCAL_MACHINE\\...\\Baseline{n}:String) [Set-ItemProperty], SecurityException\r\n    \
             + FullyQualifiedErrorId : System.Security.SecurityException,Microsoft.PowerShell.Commands.SetItemPropertyCommand\r\n",
            rng.random_range(1..4),
            rng.random::<u32>(),
        ),
        (FailingErrors::Two, _) => format!(
            "New-PSSession : [{dns}] Connecting to remote server {dns} failed with the following error message : \
             WinRM cannot complete the operation within {} ms (10.{}.{}.{}:5985, session {}).\r\n{at}\
             + CategoryInfo          : OpenError: (System.Manageme....RemoteRunspace:RemoteRunspace) [New-PSSession], PSRemotingTransportException\r\n    \
             + FullyQualifiedErrorId : WinRMOperationTimeout,PSSessionOpenFailed\r\n",
            rng.random_range(1000..90_000),
            rng.random_range(0..255),
            rng.random_range(0..255),
            rng.random_range(1..255),
            guid(rng),
        ),
        (FailingErrors::Garbage, _) => {
            let mut words = Vec::new();
            for _ in 0..8 {
                let len = rng.random_range(4..10);
                words.push(
                    (0..len)
                        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                        .collect::<String>(),
                );
            }
            format!("{}\r\n{at}", words.join(" "))
        }
    }
}
