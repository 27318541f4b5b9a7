//! The signature on real-looking PowerShell and shell error text.
#![allow(clippy::unwrap_used)]

use super::*;

fn template(errors: &str, output: &str, exit: i64, host: &str) -> String {
    Signature::of(errors, output, exit, host).unwrap().template
}

/// A PowerShell 5.1 error record as `script_errors` holds it.
fn ps_record(user: &str, file: &str, line: u32, host: &str) -> String {
    format!(
        "Remove-Item : Access to the path 'C:\\Users\\{user}\\AppData\\Local\\Temp\\{file}' is denied.\r\n\
         At C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Downloads\\clean.ps1:{line} char:1\r\n\
         + Remove-Item -Path $tmp -Force\r\n\
         + ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\r\n    \
         + CategoryInfo          : PermissionDenied: (C:\\Users\\{user}\\...\\{file}:FileInfo) [Remove-Item], UnauthorizedAccessException\r\n    \
         + FullyQualifiedErrorId : RemoveFileSystemItemUnAuthorizedAccess,Microsoft.PowerShell.Commands.RemoveItemCommand\r\n \r\n\
         Second-Error : on {host} something else\r\n"
    )
}

#[test]
fn powershell_records_give_message_id_and_category() {
    let t = template(&ps_record("alice", "a1b2.tmp", 12, "ws-1"), "", 1, "ws-1");
    assert_eq!(
        t,
        "Remove-Item : Access to the path <str> is denied. [RemoveFileSystemItemUnAuthorizedAccess,Microsoft.PowerShell.Commands.RemoveItemCommand] (PermissionDenied, UnauthorizedAccessException)"
    );
}

#[test]
fn the_same_failure_on_other_machines_is_one_signature() {
    let a = Signature::of(&ps_record("alice", "x1.tmp", 12, "ws-1"), "", 1, "ws-1").unwrap();
    let b = Signature::of(
        &ps_record("bob.smith", "9f3e0c11.tmp", 40, "srv-2"),
        "",
        5,
        "srv-2",
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.id.len(), ID_HEX);
    assert!(a.id.chars().all(|c| c.is_ascii_hexdigit()));
}

/// Unquoted paths, numbers, hex, GUIDs, timestamps, addresses and the machine's own name.
#[test]
fn values_are_masked_where_they_stand() {
    let on = |host: &str, path: &str, n: u32, guid: &str| {
        template(
            &format!(
                "Set-ItemProperty : Requested registry access is not allowed on {} for HKLM\\SOFTWARE\\Contoso\\{path} \
                 (attempt {n} of 3, 0x8007{n:04x}, 2026-12-0{}T22:14:0{}Z, {guid}, 10.0.{n}.7:5985, HRESULT 8007{n:04X}, user{n}@contoso.com)",
                host.to_uppercase(),
                n % 9 + 1,
                n % 7,
            ),
            "",
            1,
            &format!("{host}.contoso.com"),
        )
    };
    let a = on(
        "ws-0001",
        "Policies",
        17,
        "6f1c2a5e-0b1d-4c7e-9a2f-3d4e5f6a7b8c",
    );
    let b = on(
        "lap-9",
        "Other Key\\Sub",
        4021,
        "ABCDEF01-2345-6789-ABCD-EF0123456789",
    );
    assert_eq!(a, b);
    assert_eq!(
        a,
        "Set-ItemProperty : Requested registry access is not allowed on <host> for <path> (attempt <n> of <n>, <hex>, <n>, <guid>, <n>, HRESULT <n>, <user>)"
    );
}

#[test]
fn two_failures_are_two_signatures() {
    let a = Signature::of(&ps_record("alice", "x.tmp", 1, "h"), "", 1, "h").unwrap();
    let b = Signature::of(
        "Import-Module : The specified module 'ActiveDirectory' was not loaded because no valid module file was found in any module directory.\n",
        "",
        1,
        "h",
    )
    .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(
        b.template,
        "Import-Module : The specified module <str> was not loaded because no valid module file was found in any module directory."
    );
}

#[test]
fn powershell_7_concise_view() {
    let errors = "Get-Item: C:\\ProgramData\\x\\s.ps1:3\nLine |\n   3 |  Get-Item C:\\nope\\file-77.txt\n     |  ~~~~~~~~~~~~~~~~~~~~~~~~~\n     | Cannot find path 'C:\\nope\\file-77.txt' because it does not exist.\n";
    assert_eq!(
        template(errors, "", 1, "h"),
        "Get-Item: Cannot find path <str> because it does not exist."
    );
}

#[test]
fn shell_errors_and_apostrophes() {
    let a = template(
        "/opt/contoso/check.sh: line 12: jq: command not found\n",
        "",
        127,
        "web-01",
    );
    let b = template(
        "/home/bob/tmp/check.sh: line 230: jq: command not found\n",
        "",
        127,
        "db-7",
    );
    assert_eq!(a, b);
    assert_eq!(a, "<path>: line <n>: jq: command not found");
    assert_eq!(
        template(
            "ls: cannot access '/var/log/x-1': No such file or directory\nmore\n",
            "",
            2,
            "h"
        ),
        "ls: cannot access <str>: No such file or directory more"
    );
    // An apostrophe inside a word opens no quote.
    assert_eq!(
        template("The service can't start: it doesn't exist.", "", 1, "h"),
        "The service can't start: it doesn't exist."
    );
}

#[test]
fn without_errors_the_exit_code_and_the_last_line() {
    assert_eq!(Signature::of("", "all good\n", 0, "h"), None);
    assert_eq!(Signature::of(" \r\n", "all good\n", 0, "h"), None);
    assert_eq!(
        template(
            "",
            "Collected 12 items\nDisk C: 97% full on WS-12\n\n",
            3,
            "ws-12.contoso.com"
        ),
        "exit code 3: Disk C: <n>% full on <host>"
    );
    assert_eq!(template("", "  \n", 1, "h"), "exit code 1 (no output)");
}

/// A record whose message is huge, a stream of 1 MB, quotes that never close, control
/// characters: bounded bytes, one line, no `"`.
#[test]
fn hostile_text_is_bounded() {
    let huge = "x".repeat(1 << 20);
    let t = template(&huge, "", 1, "h");
    assert!(t.len() <= MAX_TEMPLATE_BYTES, "{}", t.len());
    assert!(t.ends_with('…'));
    let quotes = "'a ".repeat(100_000) + "\"b \u{0}\u{7}\t" + &"\"".repeat(10);
    let t = template(&quotes, "", 1, "h");
    assert!(t.len() <= MAX_TEMPLATE_BYTES, "{}", t.len());
    assert!(
        !t.contains('\0') && !t.contains('\n') && !t.contains('"'),
        "{t:?}"
    );
    let tail_only = "y".repeat(MAX_TAIL_BYTES * 3) + "\nlast line 1\n";
    assert_eq!(
        template("", &tail_only, 1, "h"),
        "exit code 1: last line <n>"
    );
    // Multi-byte characters at every cut.
    let wide = "é".repeat(MAX_SCAN_BYTES);
    let t = template(&wide, &wide, 1, "h");
    assert!(t.len() <= MAX_TEMPLATE_BYTES);
}

#[test]
fn the_policy_scrubs_or_withholds_the_template() {
    let s = Signature::of("Login failed for token=abc123 on x\n", "", 1, "h").unwrap();
    let scrub = Redaction {
        mode: RedactMode::Truncate,
        scrubbers: vec![regex::Regex::new("token=\\S+").unwrap()],
        ..Redaction::default()
    };
    let r = s.redacted(&scrub);
    assert_eq!(r.template, "Login failed for [REDACTED] on x");
    assert_eq!(r.id, s.id);
    for mode in [RedactMode::Hash, RedactMode::Drop] {
        let policy = Redaction {
            mode,
            ..Redaction::default()
        };
        let r = s.redacted(&policy);
        assert_eq!((r.id.as_str(), r.template.as_str()), (s.id.as_str(), ""));
    }
}

/// A run kept before signatures existed loads without one; a run with one keeps it through
/// the state's JSON (the form a cluster store holds too). See: #36
#[test]
fn the_run_keeps_its_signature_and_old_runs_load() {
    use crate::record::state::LastRun;
    let old = r#"{"end_time":"2026-12-01T10:00:00Z","exit_code":1,"errors_present":true,"action_id":"a"}"#;
    let run: LastRun = serde_json::from_str(old).unwrap();
    assert_eq!(run.signature, None);
    let with = LastRun {
        signature: Signature::of("Access denied on x\n", "", 1, "h"),
        ..run
    };
    let json = serde_json::to_string(&with).unwrap();
    assert!(json.contains("\"signature\":{\"id\":"), "{json}");
    assert_eq!(serde_json::from_str::<LastRun>(&json).unwrap(), with);
    let none = serde_json::to_string(&LastRun {
        signature: None,
        ..with
    })
    .unwrap();
    assert!(!none.contains("signature"), "{none}");
}
