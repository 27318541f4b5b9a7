//! `serve_with` under hostile load, over real sockets on 127.0.0.1:0: connections that never
//! send a byte or send their request head a byte at a time, more connections than the cap,
//! and floods of wrong passwords (from one address, while another scrapes). Regression tests for
//! #13 and #24.
//!
//! The timeouts are made short through `ServeOptions` so each test takes a few seconds; no test
//! asserts how long anything took, only that it happened within a generous outer bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use exporter_web::{ServeOptions, ServeStats, WebConfig, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything that should happen "promptly" or "after the timeout" may take before the
/// test fails; far above what it needs, so a loaded machine does not make tests flaky.
const OUTER: Duration = Duration::from_secs(20);

/// A running `serve_with`.
struct Server {
    addr: SocketAddr,
    stats: Arc<ServeStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(web: Option<WebConfig>, options: ServeOptions) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/metrics", get(|| async { "ok" }));
        let stats = options.stats.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_with(
            listener,
            router,
            web.map(Arc::new),
            shutdown,
            options,
        ));
        Server {
            addr,
            stats,
            stop,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(OUTER, self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

fn options(header_read: Duration, idle: Duration) -> ServeOptions {
    let mut options = ServeOptions::default();
    options.header_read_timeout = header_read;
    options.idle_timeout = idle;
    options
}

/// Sends one `GET /metrics` on `stream` and reads the response: the status and body.
async fn raw_get(stream: &mut TcpStream) -> (u16, String) {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(OUTER, stream.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")?
                    .parse()
                    .ok()
            })
            .unwrap();
        if body.len() >= length {
            let status = head[9..12].parse().unwrap();
            return (status, body.to_string());
        }
    }
}

/// Whether the server closes `stream` (EOF or reset) within [`OUTER`], reading and discarding
/// anything it sends.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(OUTER, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// See: #13. About 1,100 connections that never sent a byte used to exhaust the file
/// descriptors, and every scrape timed out. Now the pending ones are capped (the oldest is
/// closed to make room) and the rest time out, so a scrape is answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_that_never_send_a_byte_do_not_block_a_scrape() {
    const IDLE: usize = 1_100;
    let mut options = options(Duration::from_secs(1), Duration::from_secs(60));
    // A small cap keeps this process's own descriptors (both ends of every connection) far
    // below the usual limit of 1,024.
    options.max_connections = 64;
    options.max_pending_connections = 48;
    let server = Server::start(None, options).await;

    // Each idle client waits for the server to hang up, then closes its end; the test's own
    // descriptors stay bounded by what the server keeps open.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        idle.push(tokio::spawn(
            async move { closed_by_server(&mut stream).await },
        ));
    }
    // A scraper connecting afresh while every pending slot is held is served.
    let scraper = reqwest::Client::builder()
        .timeout(OUTER)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..5 {
        let response = scraper.get(server.url()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    // Every idle connection is closed: evicted to make room, or by the header-read timeout.
    for (i, closed) in idle.into_iter().enumerate() {
        assert!(closed.await.unwrap(), "idle connection {i} still open");
    }
    let stats = &server.stats;
    assert!(stats.evicted_connections() > 0, "{stats:?}");
    assert!(stats.timed_out_connections() > 0, "{stats:?}");
    let closed =
        stats.evicted_connections() + stats.timed_out_connections() + stats.rejected_connections();
    assert!(closed >= IDLE as u64, "{stats:?}");
    server.stop().await;
}

/// See: #13. A request head must be complete within the header-read timeout, even when bytes
/// keep trickling in; an established keep-alive connection may idle longer, up to the idle
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_time_out_and_established_connections_idle_longer() {
    let server = Server::start(
        None,
        options(Duration::from_millis(500), Duration::from_secs(5)),
    )
    .await;

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        // One header byte every 100 ms, for longer than the outer bound if need be.
        for _ in 0..(OUTER.as_millis() / 100) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
        }
        false
    });

    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(raw_get(&mut kept).await, (200, "ok".to_string()));
    // Idle for longer than the header-read timeout: still served on the same connection.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(raw_get(&mut kept).await, (200, "ok".to_string()));

    assert!(closed_by_server(&mut silent).await, "silent connection");
    assert!(
        tokio::time::timeout(OUTER, trickle).await.unwrap().unwrap(),
        "trickling connection"
    );
    assert!(closed_by_server(&mut kept).await, "idle keep-alive");
    assert!(server.stats.timed_out_connections() >= 3);
    server.stop().await;
}

/// See: #13. With every slot held by an established connection, a new connection is closed at
/// once (not left in the backlog), and the established ones keep their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_is_closed() {
    let mut options = options(Duration::from_secs(60), Duration::from_secs(60));
    options.max_connections = 3;
    options.max_pending_connections = 1;
    let server = Server::start(None, options).await;

    let mut established = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(raw_get(&mut stream).await, (200, "ok".to_string()));
        established.push(stream);
    }
    let mut beyond = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut beyond).await);
    assert_eq!(server.stats.rejected_connections(), 1);
    for stream in &mut established {
        assert_eq!(raw_get(stream).await, (200, "ok".to_string()));
    }
    assert_eq!(server.stats.evicted_connections(), 0);
    server.stop().await;
}

/// When the pending slots are full, a new connection takes the place of the oldest idle one,
/// so a scraper connecting afresh is served while idle clients hold every pending slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_evicts_the_oldest_idle_pending_one() {
    let mut options = options(Duration::from_secs(60), Duration::from_secs(60));
    options.max_connections = 10;
    options.max_pending_connections = 2;
    let server = Server::start(None, options).await;

    let mut oldest = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::timeout(OUTER, async {
        while server.stats.open_connections() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let mut scraper = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut oldest).await);
    assert_eq!(raw_get(&mut scraper).await, (200, "ok".to_string()));
    assert_eq!(raw_get(&mut second).await, (200, "ok".to_string()));
    assert_eq!(server.stats.evicted_connections(), 1);
    assert_eq!(server.stats.rejected_connections(), 0);
    server.stop().await;
}

/// A web config with basic auth for `alice` and `bob` (password `s3cr3t` for both) at `cost`.
fn basic_auth_config(cost: u32) -> WebConfig {
    let hash = bcrypt::hash("s3cr3t", cost).unwrap();
    let text = format!("basic_auth_users:\n  alice: {hash}\n  bob: {hash}\n");
    WebConfig::parse(&text, std::path::Path::new("/x/web.yml")).unwrap()
}

/// See: #13. 200 concurrent requests with wrong passwords used to delay a scrape to 10 s:
/// bcrypt ran one check at a time. A scraper whose credentials verified before never waits
/// behind bcrypt, the flood beyond the queue is answered 429 at once, and a scraper not seen
/// before gets in as soon as the queue has room (retrying on 429, as Prometheus would on its
/// next scrape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_does_not_starve_a_right_one() {
    const FLOOD: usize = 200;
    // This test is about bcrypt's cost, so a realistic one (10, as `htpasswd -B` uses).
    let mut options = options(Duration::from_secs(10), Duration::from_secs(60));
    options.max_queued_auth_checks = 16;
    let server = Server::start(Some(basic_auth_config(10)), options).await;
    let url = server.url();
    let client = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    };

    let known = client();
    let warm_up = known
        .get(&url)
        .basic_auth("alice", Some("s3cr3t"))
        .send()
        .await
        .unwrap();
    assert_eq!(warm_up.status(), 200);

    let attacker = client();
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let request = attacker
                .get(&url)
                .basic_auth("alice", Some(format!("wrong{i}")));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // Wait until the flood has filled the queue, so the requests below really compete with it.
    tokio::time::timeout(OUTER, async {
        while server.stats.auth_overloaded_requests() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the flood never filled the bcrypt queue");

    let scrape = tokio::time::timeout(
        OUTER,
        known.get(&url).basic_auth("alice", Some("s3cr3t")).send(),
    )
    .await
    .expect("a known scraper waited behind the flood")
    .unwrap();
    assert_eq!(scrape.status(), 200);

    let newcomer = client();
    let got_in = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let response = newcomer
                .get(&url)
                .basic_auth("bob", Some("s3cr3t"))
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => return,
                429 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("unexpected status {other}"),
            }
        }
    })
    .await;
    assert!(got_in.is_ok(), "a new scraper never got through");

    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for request in flood {
        *statuses.entry(request.await.unwrap().unwrap()).or_default() += 1;
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [401, 429],
        "{statuses:?}"
    );
    server.stop().await;
}

/// A web config with basic auth for `user0`..`user{n-1}` (password `s3cr3t`) at `cost`.
fn many_users_config(n: usize, cost: u32) -> WebConfig {
    let hash = bcrypt::hash("s3cr3t", cost).unwrap();
    let users: String = (0..n).map(|i| format!("  user{i}: {hash}\n")).collect();
    WebConfig::parse(
        &format!("basic_auth_users:\n{users}"),
        std::path::Path::new("/x/web.yml"),
    )
    .unwrap()
}

/// See: #24 (item 2). One address flooding wrong passwords used to fill the single bcrypt
/// queue, so a scraper whose credentials were not remembered yet (after a restart, a new
/// Prometheus replica) got 429 on 4-8 of 8 scrapes. The flood now comes from 127.0.0.2 and is
/// throttled on its own (`max_auth_checks_per_peer`), while 8 new scrapers from 127.0.0.1, each
/// with credentials never seen before, all get in on their first try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_does_not_lock_out_a_new_scraper_from_another() {
    const FLOODERS: usize = 48;
    const SCRAPES: usize = 8;
    let mut options = options(Duration::from_secs(10), Duration::from_secs(60));
    options.max_queued_auth_checks = 16;
    let server = Server::start(Some(many_users_config(SCRAPES, 10)), options).await;
    let url = server.url();
    let client_from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    };

    let attacker = client_from([127, 0, 0, 2]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let (attacker, url, stop) = (attacker.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = attacker
                        .get(&url)
                        .basic_auth("user0", Some(format!("wrong{i}")))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    *statuses.entry(status).or_default() += 1;
                    if status == 429 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                statuses
            })
        })
        .collect();
    // Wait until the flood is throttled, so the scrapes below really compete with it.
    tokio::time::timeout(OUTER, async {
        while server.stats.auth_overloaded_requests() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the flood was never throttled");

    let scraper = client_from([127, 0, 0, 1]);
    let mut scrapes = Vec::new();
    for i in 0..SCRAPES {
        let response = tokio::time::timeout(
            OUTER,
            scraper
                .get(&url)
                .basic_auth(format!("user{i}"), Some("s3cr3t"))
                .send(),
        )
        .await
        .expect("a new scraper waited too long behind the flood")
        .unwrap();
        scrapes.push(response.status().as_u16());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for task in flood {
        for (status, n) in task.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    assert_eq!(scrapes, [200; SCRAPES], "flood: {statuses:?}");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [401, 429],
        "the flood is answered 401 (checked) or 429 (throttled): {statuses:?}"
    );
    server.stop().await;
}

/// Sets its flag when dropped: tells the test the server let go of a response body.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// See: #24 (item 1). A client that sends a request and never reads the answer used to hold
/// the response (and its memory) for as long as it kept the connection: there was no limit
/// once the handler had answered. Now a response not written within `send_timeout` is dropped,
/// its connection closed and counted; a client that reads gets the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_nobody_reads_is_dropped_after_the_send_timeout() {
    const BODY: usize = 32 << 20;
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = dropped.clone();
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let guard = DropFlag(flag.clone());
            async move {
                let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
                let chunks = (0..BODY >> 20).map(move |_| {
                    let _keep = &guard;
                    Ok::<_, std::convert::Infallible>(chunk.clone())
                });
                axum::body::Body::from_stream(futures_util::stream::iter(
                    chunks.collect::<Vec<_>>(),
                ))
            }
        }),
    );
    // Set in the web config file, which overrides `ServeOptions::send_timeout` (30 s).
    let options = options(Duration::from_secs(10), Duration::from_secs(60));
    let web = WebConfig::parse(
        "http_server_config:\n  send_timeout: 1s\n",
        std::path::Path::new("/x/web.yml"),
    )
    .unwrap();
    let stats = options.stats.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        router,
        Some(Arc::new(web)),
        async move {
            let _ = stopped.await;
        },
        options,
    ));

    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(OUTER, async {
        while stats.timed_out_responses() == 0 || !dropped.load(std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the unread response was never dropped");
    assert!(
        closed_by_server(&mut stalled).await,
        "the stalled connection stays open"
    );
    assert_eq!(
        stats.timed_out_connections(),
        0,
        "a send timeout is counted apart"
    );

    // A reader that keeps up gets everything, and nothing more is counted.
    let mut reader = TcpStream::connect(addr).await.unwrap();
    reader
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(OUTER, reader.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.len() > BODY, "{}", response.len());
    assert_eq!(stats.timed_out_responses(), 1);
    let _ = stop.send(());
    tokio::time::timeout(OUTER, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
