//! The real binary as a process: started with its flags and environment, its address read
//! from its JSON log line, killed when dropped; the flags the tests start it with again and
//! again, and a configuration it starts on without polling anything. The in-process exporter
//! is the parent module's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The exporter's executable, built by cargo for the tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_mde-liveresponse-exporter");

/// The real binary, running: its address comes from its JSON log line "exporter listening".
/// Killed when dropped, whatever happens in the test.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// The flags of the demo the binary tests run: the built-in simulator, 60 times faster, on a
/// free loopback port.
pub const DEMO_ARGS: [&str; 5] = [
    "--demo",
    "--demo.time-scale",
    "60",
    "--web.listen-address",
    "127.0.0.1:0",
];

impl Binary {
    /// Start the demo ([`DEMO_ARGS`]) with `env`.
    pub fn demo(env: &[(&str, &str)]) -> Binary {
        Binary::spawn(&DEMO_ARGS, env)
    }

    /// Start `mde-liveresponse-exporter` with `args` and `env`, logging JSON on stderr.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Binary {
        use std::io::{BufRead, BufReader};
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .args(["--log.format", "json"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut head = Vec::new();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                // Flat JSON lines: `msg`, then the fields (see: #12).
                if v["msg"] == "exporter listening" {
                    addr = v["addr"].as_str().and_then(|a| a.parse().ok());
                }
            }
            head.push(line);
            if addr.is_some() {
                break;
            }
        }
        let addr = addr.unwrap_or_else(|| panic!("the exporter did not start: {head:?}"));
        // Keep draining stderr so the child never blocks on a full pipe.
        let logs = std::thread::spawn(move || {
            head.into_iter()
                .chain(lines.map_while(Result::ok))
                .collect()
        });
        Binary {
            child,
            addr,
            logs: Some(logs),
        }
    }

    /// Start on the configuration file `config` and the state file `state`, on a free loopback
    /// port, with `extra` flags and `env`.
    pub fn on_state(config: &Path, state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut args = vec![
            "--config.file",
            path_str(config),
            "--state.path",
            path_str(state),
            "--web.listen-address",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Binary::spawn(&args, env)
    }

    /// Start on the configuration file `config` with no state file, on a free loopback port,
    /// with `extra` flags and `env`.
    pub fn on_config(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut args = vec![
            "--config.file",
            path_str(config),
            "--web.listen-address",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Binary::spawn(&args, env)
    }

    /// SIGTERM, then the exit code once it has stopped (None if it did not within 10 s).
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Every log line, once the process has stopped.
    pub fn logs(&mut self) -> Vec<String> {
        self.logs
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Run the exporter on `config` and `state` with `extra` flags until it exits (a refused start
/// does): its exit code and standard error.
pub fn run_to_end(config: &Path, state: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(config)
        .arg("--state.path")
        .arg(state)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dir/config.yml` with `extra` at the top and one tenant on a closed port: the exporter
/// starts, holds its state file and polls nothing.
pub fn closed_port_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "{extra}tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    client_secret: s\n    api_url: http://127.0.0.1:9\n    login_url: http://127.0.0.1:9\n"
        ),
    )
    .unwrap();
    path
}
