//! The simulator driven over loopback with reqwest, as a client would see it: the shared
//! set-up (a simulator on port 0, one answer read whole) here, the tests by subject beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod actions;
mod blob;
mod faults;
mod identity;
mod quota;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::time::Duration;

use serde_json::Value;

use super::*;

struct Sim {
    sim: Simulator,
    base: String,
    http: reqwest::Client,
}

async fn start(cfg: SimConfig) -> Sim {
    let sim = Simulator::new(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener, std::future::pending()));
    Sim {
        sim,
        base,
        http: reqwest::Client::new(),
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn answer(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

impl Sim {
    async fn token_v2(&self, secret: &str) -> Answer {
        let (tenant, client, _) = self.sim.credentials();
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.base);
        answer(self.http.post(url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ]))
        .await
    }

    async fn token(&self) -> String {
        let secret = self.sim.config().client_secret.clone();
        let a = self.token_v2(&secret).await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["access_token"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path_or_url: &str) -> Answer {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        answer(self.http.get(url).bearer_auth(token)).await
    }

    /// Follow `@odata.nextLink` from `first`; every action served, in order, and the pages.
    async fn list_all(&self, token: &str, first: &str) -> (Vec<Value>, usize) {
        let mut url = first.to_string();
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let a = self.get(token, &url).await;
            assert_eq!(a.status, 200, "{url}: {}", a.text());
            let v = a.json();
            pages += 1;
            out.extend(v["value"].as_array().unwrap().iter().cloned());
            match v["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return (out, pages),
            }
        }
    }

    /// Wait (real time) until every action is final.
    async fn all_final(&self) {
        let want = self.sim.config().actions;
        for _ in 0..500 {
            if self.sim.truth().actions.len() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("actions never became final");
    }

    async fn link(&self, token: &str, id: &str, index: u32) -> Answer {
        let path =
            format!("/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})");
        self.get(token, &path).await
    }

    async fn download(&self, url: &str) -> Answer {
        answer(self.http.get(url)).await
    }
}

/// Actions final within 200 ms, and a quota that tests walking every result do not hit.
fn quick(cfg: SimConfig) -> SimConfig {
    SimConfig {
        finish_within: Duration::from_millis(200),
        per_minute: 100_000,
        per_hour: 100_000,
        ..cfg
    }
}

fn assert_storage_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/xml"));
    assert_eq!(a.header("x-ms-error-code"), Some(code));
    let text = a.text();
    assert!(
        text.starts_with(&format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>"
        )),
        "{text}"
    );
    assert!(
        text.contains("\nRequestId:") && text.contains("\nTime:"),
        "{text}"
    );
}
