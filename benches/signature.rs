//! Failure-signature benchmark (not a test, #36): the cost per transcript of taking the
//! signature of a failed run (`record::signature::Signature::of`), on error streams of
//! `BENCH_BYTES` (default 1 MiB) of several shapes: PowerShell error records one after the
//! other (the first is the one read), one line with no break, quotes that never close, a
//! blank error stream over a large output (the exit code and the output's last line), and
//! control characters. Each shape is run `BENCH_RUNS` times (default 200); it prints the
//! p50, p99 and max wall time per transcript and the template's length. The cost does not
//! grow with the stream: only the first 16 KiB of `script_errors` and the last 4 KiB of
//! `script_output` are read. Run it with `cargo bench --bench signature`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use mde_liveresponse_exporter::record::signature::Signature;

mod common;

use common::env_or;

/// A PowerShell 5.1 error record, its values the `i`-th machine's own.
fn record(i: usize) -> String {
    format!(
        "Set-ItemProperty : Requested registry access is not allowed on WS-{i:04} for HKLM\\SOFTWARE\\Policies\\Contoso\\Baseline{i} (user u{i}@contoso.com, attempt {} of 3, 0x{:08X}).\r\n\
         At C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Downloads\\compliance.ps1:{} char:5\r\n\
         + Set-ItemProperty -Path $key -Name Enforce -Value 1\r\n\
         + ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\r\n    \
         + CategoryInfo          : PermissionDenied: (HKEY_LOCAL_MACHINE\\...\\Baseline{i}:String) [Set-ItemProperty], SecurityException\r\n    \
         + FullyQualifiedErrorId : System.Security.SecurityException,Microsoft.PowerShell.Commands.SetItemPropertyCommand\r\n \r\n",
        i % 3 + 1,
        i * 7919,
        i % 400
    )
}

fn repeat_to(unit: &str, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + unit.len());
    while s.len() < bytes {
        s.push_str(unit);
    }
    s
}

fn main() {
    let bytes: usize = env_or("BENCH_BYTES", 1 << 20);
    let runs: usize = env_or("BENCH_RUNS", 200).max(1);
    let mut records = String::with_capacity(bytes);
    let mut i = 0;
    while records.len() < bytes {
        records.push_str(&record(i));
        i += 1;
    }
    let output = repeat_to("Checking 42 settings on ws-0001\n", bytes) + "Disk C: 97% full\n";
    let shapes: Vec<(&str, String, String, i64)> = vec![
        ("PowerShell records", records, String::new(), 1),
        (
            "one line, no break",
            repeat_to("abc123 ", bytes),
            String::new(),
            1,
        ),
        (
            "quotes never closed",
            repeat_to("'a \"b ‘c “d ", bytes),
            String::new(),
            1,
        ),
        (
            "control characters",
            repeat_to("\u{0}\u{7}x\u{1b}[0m ", bytes),
            String::new(),
            1,
        ),
        (
            "blank errors, output tail",
            repeat_to(" \r\n", bytes),
            output,
            3,
        ),
    ];
    println!(
        "failure signature per transcript, {} KiB streams, {runs} runs each",
        bytes / 1024
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>9}",
        "shape", "p50 µs", "p99 µs", "max µs", "template"
    );
    for (name, errors, output, exit) in &shapes {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let mut len = 0;
        for _ in 0..runs {
            let start = Instant::now();
            let s = Signature::of(
                black_box(errors),
                black_box(output),
                *exit,
                "ws-0001.contoso.com",
            );
            times.push(start.elapsed());
            len = s.map_or(0, |s| s.template.len());
        }
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        println!(
            "{name:<28} {:>10.1} {:>10.1} {:>10.1} {:>7} B",
            at(0.5),
            at(0.99),
            at(1.0),
            len
        );
    }
}
