//! Outbound proxy: token, API and result-download requests all go through the configured
//! proxy (`proxy_url`, or `HTTPS_PROXY`), `NO_PROXY` exceptions bypass it, and HTTPS targets
//! are tunnelled with CONNECT. The proxy is a tiny tokio one in this test that records every
//! request line; it forwards plain-HTTP requests to the simulator and refuses every tunnel
//! (nothing here leaves the machine). The proxy is set explicitly per client, so the machine's
//! own proxy variables cannot change the result. See: #10

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::config::{Config, ProxyConfig};
use mde_sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Seen = Arc<Mutex<Vec<String>>>;

/// One request per connection: the head is read, `Connection: close` is forced so the next
/// request opens a new connection (and is seen), then bytes are relayed both ways.
async fn handle(mut client: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = client.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let first = head.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(first.clone());
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        // A tunnel to the outside world: refused, it only has to be asked for.
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let url = url::Url::parse(target).unwrap();
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let Ok(mut upstream) = TcpStream::connect(addr).await else {
        return;
    };
    let rewritten: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        + "connection: close\r\n\r\n";
    if upstream.write_all(rewritten.as_bytes()).await.is_err()
        || upstream.write_all(&buf[head_end..]).await.is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

async fn start_proxy() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(handle(conn, s.clone()));
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_api_and_downloads_go_through_the_proxy() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 131,
        machines: 3,
        actions: 8,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let (proxy, seen) = start_proxy().await;
    let text = config_yaml(&sim, addr, "sim-client-secret", "", "");
    // As from the environment of a real run: HTTPS_PROXY (lower case works too).
    let env = move |name: &str| (name == "HTTPS_PROXY").then(|| format!("http://{proxy}"));
    let config = Config::parse(&text, std::path::Path::new("test.yml"), &env).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually("transcripts retrieved through the proxy", || async move {
        sum(&scrape(at).await, "mde_liveresponse_script_runs_total", &[]) > 0.0
    })
    .await;
    let lines = seen.lock().unwrap().clone();
    for (what, path) in [
        ("token", "/oauth2/v2.0/token"),
        ("API", "/api/machineactions"),
        ("result download", "/blob/"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("http://{addr}")) && l.contains(path)),
            "no {what} request through the proxy: {lines:?}"
        );
    }
    exporter.shutdown().await.unwrap();

    // NO_PROXY: the simulator's address bypasses the proxy entirely.
    let before = seen.lock().unwrap().len();
    let env = move |name: &str| match name {
        "HTTPS_PROXY" => Some(format!("http://{proxy}")),
        "NO_PROXY" => Some("127.0.0.1".to_string()),
        _ => None,
    };
    let config = Config::parse(&text, std::path::Path::new("test.yml"), &env).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually("ready without the proxy", || async move {
        get(at, "/-/ready", None).await.0 == 200
    })
    .await;
    assert_eq!(seen.lock().unwrap().len(), before);
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_tunnelled_with_connect() {
    let (proxy, seen) = start_proxy().await;
    let cfg = ProxyConfig {
        url: url::Url::parse(&format!("http://{proxy}")).unwrap(),
        no_proxy: None,
    };
    let http =
        mde_liveresponse_exporter::app::http_client_with_proxy(Duration::from_secs(5), Some(&cfg))
            .unwrap();
    // Never resolved: the proxy is asked for the tunnel and refuses it.
    let err = http
        .get("https://login.example.invalid/tenant/oauth2/v2.0/token")
        .send()
        .await;
    assert!(err.is_err());
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["CONNECT login.example.invalid:443 HTTP/1.1"]
    );
}
