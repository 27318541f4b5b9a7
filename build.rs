//! Records the compiler version and git revision for `mde_exporter_build_info`, and packs the
//! binaries' relative relocations on Linux/glibc.
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    // A build without .git (a container image) can pass the revision in.
    println!("cargo:rerun-if-env-changed=MDE_EXPORTER_REVISION");
    let from_env = std::env::var("MDE_EXPORTER_REVISION")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let revision = from_env.unwrap_or_else(git_revision);
    println!("cargo:rustc-env=MDE_EXPORTER_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=MDE_EXPORTER_REVISION={revision}");
    // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): the dynamic linker
    // reads a few KiB at start instead of a 580 KiB table, which stayed resident. A linker
    // without it ignores the option with a warning; GNU ld only uses it when the C library
    // has it. See: #11
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

fn git_revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
