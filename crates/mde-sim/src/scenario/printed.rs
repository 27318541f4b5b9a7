//! What the library's scripts print when the scenario has `script_metrics` on (#21): two
//! scripts report their findings the way a `script_metrics:` rule reads them, amid the usual
//! transcript noise. `check-bitlocker.ps1` prints Prometheus text-format samples (with
//! `# HELP`/`# TYPE`, labels, and a label `machine` of its own that the exporter must rename),
//! `get-av-status.ps1` prints one JSON object over several lines, as `ConvertTo-Json` does.
//!
//! Owns those lines and the values they carry, and the exporter's rules that read them
//! ([`script_metrics_rules`], configuration text: the simulator still imports nothing of the
//! exporter). The values come from a hash of the transcript's
//! own GUID, not from the scenario's random draw, so turning `script_metrics` on changes what
//! two scripts print and nothing else of the tenant. Does not own the rest of the transcript
//! (`generate`).

/// The script whose transcripts print Prometheus text-format samples.
pub const TEXT_SCRIPT: &str = "check-bitlocker.ps1";
/// The script whose transcripts print one JSON object.
pub const JSON_SCRIPT: &str = "get-av-status.ps1";

/// The exporter's `script_metrics:` rules that read what the two scripts print (the demo's
/// rules, without their help texts), as configuration YAML: for tests and benchmarks that
/// turn `script_metrics` on.
pub fn script_metrics_rules() -> String {
    format!(
        "script_metrics:
  - script: {TEXT_SCRIPT}
    format: prometheus
  - script: {JSON_SCRIPT}
    format: json
    metrics:
      - name: av_enabled
        path: antivirus_enabled
      - name: av_signature_age_seconds
        path: signature.age_seconds
      - name: av_quick_scan_age_seconds
        path: quick_scan_age_seconds
"
    )
}

/// FNV-1a: a stable hash, whatever the platform or the Rust version.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The lines `script` prints for the transcript `id` on `dns`, and the samples they carry
/// (`Truth`): for the text format each sample's name (without labels; each name is printed
/// once), for the JSON object each number's dotted path (a boolean as 1/0). `None` for the
/// other scripts.
pub fn printed(script: &str, id: &str, dns: &str) -> Option<(String, Vec<(String, i64)>)> {
    let h = fnv(id);
    match script {
        TEXT_SCRIPT => {
            // One machine in five has BitLocker off.
            let on = i64::from(!h.is_multiple_of(5));
            let encrypted = if on == 1 {
                1
            } else {
                i64::from((h >> 8).is_multiple_of(3))
            };
            let reboot = i64::from((h >> 16).is_multiple_of(7));
            let status = if on == 1 { "On" } else { "Off" };
            let out = format!(
                "MountPoint : C:\n\
                 ProtectionStatus : {status}\n\
                 # HELP bitlocker_protection_on 1 if BitLocker protects the volume.\n\
                 # TYPE bitlocker_protection_on gauge\n\
                 bitlocker_protection_on{{volume=\"C:\",machine=\"{dns}\"}} {on}\n\
                 # TYPE bitlocker_fully_encrypted gauge\n\
                 bitlocker_fully_encrypted{{volume=\"C:\"}} {encrypted}\n\
                 reboot_pending {reboot}\n"
            );
            Some((
                out,
                vec![
                    ("bitlocker_protection_on".into(), on),
                    ("bitlocker_fully_encrypted".into(), encrypted),
                    ("reboot_pending".into(), reboot),
                ],
            ))
        }
        JSON_SCRIPT => {
            let enabled = !h.is_multiple_of(9);
            // In base units, as `promtool check metrics` wants them.
            let age = (h >> 8) as i64 % 40 * 86_400;
            let scan = (h >> 16) as i64 % 10 * 86_400 + 3_600;
            let out = format!(
                "AMRunningMode : Normal\n\
                 AntivirusEnabled : {}\n\
                 {{\n    \"antivirus_enabled\":  {enabled},\n    \"signature\":  {{\n        \"age_seconds\":  {age},\n        \"version\":  \"1.421.{}.0\"\n    }},\n    \"quick_scan_age_seconds\":  {scan}\n}}\n",
                if enabled { "True" } else { "False" },
                (h >> 24) % 1000,
            );
            Some((
                out,
                vec![
                    ("antivirus_enabled".into(), i64::from(enabled)),
                    ("signature.age_seconds".into(), age),
                    ("quick_scan_age_seconds".into(), scan),
                ],
            ))
        }
        _ => None,
    }
}
