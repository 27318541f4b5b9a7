//! The real binary: `--config.check` on good and bad files (exact messages), and the demo that
//! the README's first command runs.

use std::process::Command;
use std::time::Duration;

use crate::common::{BIN, Binary};

fn check(file: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args([
            "--config.check",
            "--config.file",
            &format!("tests/fixtures/config/{file}"),
        ])
        .env("MDE_CLIENT_SECRET", "from-env")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn good_config_checks_ok() {
    let (code, out, err) = check("good.yml");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "tests/fixtures/config/good.yml: OK (2 tenant(s))");
}

// See: #34. The defaults and every tenant file are checked, with the messages a running
// exporter logs; each file says how many tenants it brings.
#[test]
fn config_check_reads_the_defaults_and_every_tenant_file() {
    let (code, out, err) = check("mssp.yml");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "tests/fixtures/config/mssp.yml: OK (0 tenant(s))\n\
         tests/fixtures/config/mssp/eu.yml: OK (2 tenant(s))\n\
         tests/fixtures/config/mssp/us.json: OK (1 tenant(s))"
    );
    let (code, _, err) = check("bad-mssp.yml");
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        "tenant file tests/fixtures/config/bad-mssp/eu.yml: line 3: [1].lookback: must be greater than 0"
    );
}

#[test]
fn bad_configs_name_the_problem() {
    let cases = [
        (
            "bad-unknown-key.yml",
            "config file tests/fixtures/config/bad-unknown-key.yml: tenants[0]: unknown field `pol_interval`",
        ),
        (
            "bad-http.yml",
            "config file tests/fixtures/config/bad-http.yml: tenants[0].api_url: \"http://api.example.com\": plain http is only allowed for loopback hosts; use https",
        ),
        (
            "bad-no-tenants.yml",
            "config file tests/fixtures/config/bad-no-tenants.yml: tenants: at least one tenant is required",
        ),
        (
            "bad-cloud.yml",
            "config file tests/fixtures/config/bad-cloud.yml: tenants[0].cloud: unknown variant `azure-china`",
        ),
        (
            "bad-yaml.yml",
            "config file tests/fixtures/config/bad-yaml.yml: ",
        ),
        // See: #10
        (
            "bad-auth-key.yml",
            "config file tests/fixtures/config/bad-auth-key.yml: tenants[0].auth.certificate_file: not used by method managed_identity",
        ),
        (
            "bad-token-file.yml",
            "config file tests/fixtures/config/bad-token-file.yml: tenants[0].auth.token_file: cannot read /nonexistent/azure-identity-token: No such file or directory",
        ),
        (
            "missing.yml",
            "cannot read config file tests/fixtures/config/missing.yml: No such file or directory",
        ),
    ];
    for (file, want) in cases {
        let (code, _, err) = check(file);
        assert_eq!(code, 1, "{file}: {err}");
        assert!(
            err.starts_with(want),
            "{file}: got {err:?}, want it to start with {want:?}"
        );
    }
}

#[test]
fn unset_secret_variable_is_named() {
    let out = Command::new(BIN)
        .args([
            "--config.check",
            "--config.file",
            "tests/fixtures/config/good.yml",
        ])
        .env_remove("MDE_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "config file tests/fixtures/config/good.yml: tenants[0].client_secret: environment variable MDE_CLIENT_SECRET is not set"
    );
}

#[test]
fn demo_serves_transcript_metrics_and_stops_on_sigterm() {
    let mut exporter = Binary::demo(&[]);
    let addr = exporter.addr;
    let mut body = String::new();
    for _ in 0..300 {
        if let Ok(resp) = reqwest::blocking::get(format!("http://{addr}/metrics")) {
            body = resp.text().unwrap_or_default();
            // The first poll has ended (its success is recorded at the end) with transcripts.
            if body.contains("mde_liveresponse_script_runs_total{")
                && body.contains("mde_liveresponse_script_exit_code{")
                && body.contains("mde_exporter_poll_success{tenant=\"demo\"} 1")
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        body.contains("mde_liveresponse_script_runs_total{tenant=\"demo\""),
        "{body}"
    );
    assert!(
        body.contains("mde_exporter_poll_success{tenant=\"demo\"} 1"),
        "{body}"
    );
    // See: #21. After that one poll, the demo's script_metrics rules show what its scripts
    // printed: text-format samples and the numbers of a JSON object.
    for family in [
        "mde_script_bitlocker_protection_on{tenant=\"demo\"",
        "mde_script_av_signature_age_seconds{tenant=\"demo\"",
        "mde_script_metrics_last_transcript_timestamp_seconds{tenant=\"demo\"",
    ] {
        assert!(body.contains(family), "no {family} in {body}");
    }

    // SIGTERM: a clean exit with status 0.
    assert_eq!(exporter.terminate(), Some(0));
    let logs = exporter.logs();
    // One JSON event per transcript, and never the simulator's secret.
    assert!(logs.iter().any(|l| l.contains("\"event\":\"transcript\"")));
    assert!(logs.iter().all(|l| !l.contains("sim-client-secret")));
}

// See: #23 (item 3). `--config.check` accepted OTLP metrics variables that start-up refuses:
// it refuses them too, with the same words, never showing a header's value.
#[test]
fn config_check_refuses_the_otlp_metrics_variables_start_up_refuses() {
    let cases = [
        (
            ("OTEL_METRIC_EXPORT_INTERVAL", "1m"),
            "OTEL_METRIC_EXPORT_INTERVAL=\"1m\" is not a positive number of milliseconds",
        ),
        (
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=s3cret%0Avalue"),
            "OTEL_EXPORTER_OTLP_HEADERS: header \"x-key\" cannot be sent (its value is not shown)",
        ),
    ];
    for ((var, value), want) in cases {
        for check in [true, false] {
            let mut cmd = Command::new(BIN);
            if check {
                cmd.arg("--config.check");
            }
            let out = cmd
                .args(["--config.file", "tests/fixtures/config/good.yml"])
                .env("MDE_CLIENT_SECRET", "from-env")
                .env("OTEL_METRICS_EXPORTER", "otlp")
                .env(var, value)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "check {check}: {err}");
            assert!(err.contains(want), "check {check}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}

// See: #24 (item 8). `--config.check` accepted `--shard.index 5 --shard.count 2`, which
// start-up then refused: the check refuses what start-up refuses, with the same words.
#[test]
fn issue_24_config_check_refuses_the_flags_start_up_refuses() {
    let run = |flags: &[&str], hostname: &str| {
        let out = Command::new(BIN)
            .args([
                "--config.check",
                "--config.file",
                "tests/fixtures/config/good.yml",
            ])
            .args(flags)
            .env("MDE_CLIENT_SECRET", "from-env")
            .env("HOSTNAME", hostname)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["--shard.index", "5", "--shard.count", "2"],
            "",
            "--shard.index 5 must be less than --shard.count 2",
        ),
        (
            &["--shard.count", "0"],
            "",
            "--shard.count must be at least 1",
        ),
        (
            &["--shard.index", "1"],
            "",
            "--shard.index needs --shard.count",
        ),
        (
            &["--shard.count", "3"],
            "exporter",
            "--shard.index not given and HOSTNAME \"exporter\" does not end in -<ordinal>",
        ),
        (
            &["--web.listen-address", "nowhere"],
            "",
            "--web.listen-address \"nowhere\" is not host:port: invalid socket address syntax",
        ),
    ];
    for (flags, hostname, want) in cases {
        let (code, out, err) = run(flags, hostname);
        assert_eq!((code, err.as_str()), (1, want), "{flags:?}: {out}");
    }
    // Flags that start-up accepts pass the check, the shard from the pod name too.
    for (flags, hostname) in [
        (&["--shard.index", "1", "--shard.count", "2"][..], ""),
        (&["--shard.count", "3"][..], "exporter-2"),
    ] {
        let (code, out, err) = run(flags, hostname);
        assert_eq!(code, 0, "{flags:?}: {err}");
        assert_eq!(out, "tests/fixtures/config/good.yml: OK (2 tenant(s))");
    }
}
