//! The simulator driven over loopback with reqwest, as a client would see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

#[tokio::test]
async fn tokens_v1_v2_and_the_aad_errors() {
    let s = start(SimConfig::default()).await;
    let (tenant, client, secret) = s.sim.credentials();

    let v2 = s.token_v2(secret).await;
    assert_eq!(v2.status, 200);
    let v = v2.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert!(v["ext_expires_in"].is_u64());

    let v1 = answer(
        s.http
            .post(format!("{}/{tenant}/oauth2/token", s.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", secret),
                ("resource", "https://api.securitycenter.microsoft.com"),
            ]),
    )
    .await;
    assert_eq!(v1.status, 200);
    let v = v1.json();
    assert_eq!(v["expires_in"], "3599");
    assert_eq!(v["resource"], "https://api.securitycenter.microsoft.com");
    let on: i64 = v["expires_on"].as_str().unwrap().parse().unwrap();
    let nb: i64 = v["not_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(on - nb, 3599);
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(s.get(token, "/api/machineactions?$top=1").await.status, 200);

    // HTTP Basic client authentication works too.
    let basic = answer(
        s.http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", s.base))
            .basic_auth(client, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "https://api.securitycenter.microsoft.com/.default"),
            ]),
    )
    .await;
    assert_eq!(basic.status, 200, "{}", basic.text());

    let bad = s.token_v2("wrong").await;
    assert_eq!(bad.status, 401);
    let v = bad.json();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_codes"], serde_json::json!([7000215]));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
    assert_eq!(
        v["error_uri"],
        "https://login.microsoftonline.com/error?code=7000215"
    );
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(v[k].is_string(), "{k}");
    }

    let form = |client_id: &'static str, grant: &'static str| {
        vec![
            ("grant_type", grant),
            ("client_id", client_id),
            ("client_secret", "x"),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ]
    };
    let unknown = answer(
        s.http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", s.base))
            .form(&form(
                "22222222-0000-4000-8000-000000000000",
                "client_credentials",
            )),
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"], "unauthorized_client");
    assert_eq!(unknown.json()["error_codes"][0], 700016);

    let tenantless = answer(
        s.http
            .post(format!("{}/no-such-tenant/oauth2/v2.0/token", s.base))
            .form(&form("x", "client_credentials")),
    )
    .await;
    assert_eq!(
        (
            tenantless.status,
            tenantless.json()["error_codes"][0].as_u64()
        ),
        (400, Some(90002))
    );
    assert_eq!(tenantless.json()["error"], "invalid_request");

    let grantless = answer(
        s.http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", s.base))
            .form(&form("x", "password")),
    )
    .await;
    assert_eq!(
        (grantless.status, grantless.json()["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    assert_eq!(s.sim.stats().requests["token"], 7);
}

#[tokio::test]
async fn api_calls_need_a_valid_unexpired_token() {
    let s = start(SimConfig {
        token_ttl: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    for auth in [None, Some("Bearer nope")] {
        let mut req = s.http.get(format!("{}/api/machineactions", s.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let a = answer(req).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.json()["error"]["code"], "Unauthorized");
        assert!(a.json()["error"]["target"].as_str().unwrap().len() == 36);
    }
    let token = s.token().await;
    assert_eq!(s.get(&token, "/api/v1.0/machineactions").await.status, 200);
    s.sim.faults().revoke_tokens();
    assert_eq!(s.get(&token, "/api/machineactions").await.status, 401);
    let token = s.token().await;
    assert_eq!(s.get(&token, "/api/machineactions").await.status, 200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.get(&token, "/api/machineactions").await.status, 401);
    // Rejected calls still count as requests.
    assert_eq!(s.sim.stats().requests["list_machine_actions"], 6);
}

#[tokio::test]
async fn paging_with_a_filter_serves_every_live_response_action_once() {
    let s = start(quick(SimConfig {
        page_size: 7,
        ..SimConfig::default()
    }))
    .await;
    let token = s.token().await;
    s.all_final().await;
    let first = format!(
        "{}/api/machineactions?$filter=type+eq+%27LiveResponse%27&$count=true",
        s.base
    );
    let a = s.get(&token, &first).await;
    let v = a.json();
    assert_eq!(v["@odata.count"], 80);
    assert_eq!(
        v["@odata.context"],
        format!("{}/api/$metadata#MachineActions", s.base)
    );
    let next = v["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}/api/machineactions?", s.base)),
        "{next}"
    );
    assert!(
        next.contains("%24filter=type+eq+%27LiveResponse%27") && next.contains("%24skip=7"),
        "{next}"
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");

    let (all, pages) = s.list_all(&token, &first).await;
    assert_eq!(pages, 80usize.div_ceil(7));
    let ids: BTreeSet<&str> = all.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 80, "no action twice");
    let truth = s.sim.truth();
    let want: BTreeSet<&str> = truth.actions.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, want);
    assert!(all.iter().all(|a| a["type"] == "LiveResponse"));
    // Default order: creation ascending; `desc` reverses it.
    let created: Vec<&str> = all
        .iter()
        .map(|a| a["creationDateTimeUtc"].as_str().unwrap())
        .collect();
    assert!(created.is_sorted());
    let (desc, _) = s
        .list_all(&token, "/api/machineactions?$orderby=creationDateTimeUtc%20desc&$filter=type%20eq%20'LiveResponse'")
        .await;
    let rev: Vec<&str> = desc
        .iter()
        .rev()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rev,
        all.iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect::<Vec<_>>()
    );

    // $top smaller than a page: no nextLink; $top larger: pages up to $top in total.
    let v = s.get(&token, "/api/machineactions?$top=3").await.json();
    assert_eq!(v["value"].as_array().unwrap().len(), 3);
    assert!(v.get("@odata.nextLink").is_none());
    let (some, _) = s
        .list_all(&token, "/api/machineactions?$top=20&$skip=5")
        .await;
    assert_eq!(some.len(), 20);
    let (everything, _) = s.list_all(&token, "/api/machineactions").await;
    assert_eq!(everything.len(), 88);
    assert_eq!(some[0]["id"], everything[5]["id"]);
}

#[tokio::test]
async fn filters_and_bad_queries() {
    let s = start(quick(SimConfig::default())).await;
    let token = s.token().await;
    s.all_final().await;
    let (all, _) = s.list_all(&token, "/api/machineactions").await;
    let pick = &all[all.len() / 2];
    let (by_machine, _) = s
        .list_all(
            &token,
            &format!(
                "/api/machineactions?$filter=machineId eq '{}'",
                pick["machineId"].as_str().unwrap()
            ),
        )
        .await;
    assert!(by_machine.iter().any(|a| a["id"] == pick["id"]));
    assert!(
        by_machine
            .iter()
            .all(|a| a["machineId"] == pick["machineId"])
    );

    let since = pick["creationDateTimeUtc"].as_str().unwrap();
    let (newer, _) = s
        .list_all(
            &token,
            &format!("/api/machineactions?$filter=creationDateTimeUtc ge {since}"),
        )
        .await;
    assert_eq!(newer.len(), all.len() - all.len() / 2);

    let (failed_or_to, _) = s
        .list_all(
            &token,
            "/api/machineactions?$filter=type eq 'LiveResponse' and status in ('Failed','TimeOut')",
        )
        .await;
    let truth = s.sim.truth().actions_by_status();
    assert_eq!(
        failed_or_to.len() as u64,
        truth["Failed"] + truth["TimeOut"]
    );

    for bad in [
        "$filter=title eq 'x'",
        "$filter=status eq",
        "$filter=status eq Succeeded",
        "$top=10001",
        "$top=-1",
        "$skip=x",
        "$orderby=status",
        "$count=maybe",
    ] {
        let a = s.get(&token, &format!("/api/machineactions?{bad}")).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(a.json()["error"]["code"], "ODataError", "{bad}");
    }
    assert_eq!(
        s.get(&token, "/api/machineactions?$top=10000").await.status,
        200
    );
}

#[tokio::test]
async fn actions_become_final_while_it_runs() {
    let s = start(SimConfig {
        finish_within: Duration::from_millis(1500),
        ..SimConfig::default()
    })
    .await;
    let token = s.token().await;
    let (before, _) = s
        .list_all(&token, "/api/machineactions?$filter=type eq 'LiveResponse'")
        .await;
    let statuses: BTreeSet<&str> = before
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 6, "{statuses:?}");
    let running: Vec<&Value> = before
        .iter()
        .filter(|a| ["Pending", "InProgress"].contains(&a["status"].as_str().unwrap()))
        .collect();
    assert!(s.sim.truth().actions.len() >= 80 - running.len());
    for a in &running {
        let c = &a["commands"];
        assert!(
            c.as_array()
                .unwrap()
                .iter()
                .all(|c| c["commandStatus"] == "Created" && c["endTime"].is_null())
        );
    }
    s.all_final().await;
    for a in running {
        let id = a["id"].as_str().unwrap();
        let now = s
            .get(&token, &format!("/api/machineactions/{id}"))
            .await
            .json();
        assert!(!["Pending", "InProgress"].contains(&now["status"].as_str().unwrap()));
        let t = s
            .sim
            .truth()
            .actions
            .into_iter()
            .find(|t| t.id == id)
            .unwrap();
        assert_eq!(now["status"], t.status.as_str());
    }
}

#[tokio::test]
async fn the_entity_shape_and_404s() {
    let s = start(quick(SimConfig::default())).await;
    let token = s.token().await;
    s.all_final().await;
    let truth = s.sim.truth();
    let t = &truth.actions[0];
    let a = s
        .get(&token, &format!("/api/machineactions/{}", t.id))
        .await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let text = a.text();
    assert!(text.starts_with(&format!(
        "{{\"@odata.context\":\"{}/api/$metadata#MachineActions/$entity\",\"id\":\"{}\",\"type\":\"LiveResponse\",\"title\":null,\"requestor\":",
        s.base, t.id
    )), "{text}");
    assert!(text.ends_with("],\"troubleshootInfo\":null}"), "{text}");
    let v = a.json();
    assert_eq!(v["status"], t.status.as_str());
    assert_eq!(v["computerDnsName"], t.computer_dns_name.as_str());
    assert_eq!(v["requestSource"], "PublicApi");
    let created = v["creationDateTimeUtc"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2025-03-18T21:02:00.3538594Z".len(),
        "{created}"
    );
    let cmds: Vec<(String, String)> = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i);
            let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 6);
            (
                c["command"]["type"].as_str().unwrap().to_string(),
                c["commandStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(cmds, t.commands);

    let missing = s
        .get(
            &token,
            "/api/machineactions/00000000-0000-4000-8000-000000000000",
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "ResourceNotFound");
}

#[tokio::test]
async fn links_download_transcripts_and_files_that_match_the_truth() {
    let s = start(quick(SimConfig::default())).await;
    let token = s.token().await;
    s.all_final().await;
    let truth = s.sim.truth();
    assert!(truth.transcripts.iter().any(|t| t.malformed));
    let mut runs: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut odd_output = false;
    for t in &truth.transcripts {
        let a = s.link(&token, &t.action_id, t.index).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let v = a.json();
        assert_eq!(
            v["@odata.context"],
            format!("{}/api/$metadata#Edm.String", s.base)
        );
        let url = v["value"].as_str().unwrap();
        let prefix = format!(
            "{}/blob/investigation-actions-data/{}/CustomPlaybookCommandOutput/{}-",
            s.base, t.action_id, t.index
        );
        assert!(url.starts_with(&prefix), "{url}");
        let q = url::Url::parse(url).unwrap();
        let pairs: BTreeMap<String, String> = q.query_pairs().into_owned().collect();
        assert_eq!(
            pairs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["se", "sig", "sp", "sr", "sv"]
        );
        assert_eq!(
            (
                pairs["sp"].as_str(),
                pairs["sr"].as_str(),
                pairs["sv"].as_str()
            ),
            ("r", "b", "2019-07-07")
        );
        assert!(
            url.contains("se=20") && url.contains("%3A"),
            "se is URL-encoded: {url}"
        );
        let se = chrono::DateTime::parse_from_rfc3339(&pairs["se"])
            .unwrap()
            .with_timezone(&Utc);
        let ttl = se - s.sim.now_wall();
        assert!(
            ttl > chrono::Duration::minutes(29) && ttl <= chrono::Duration::minutes(31),
            "{ttl}"
        );

        let d = s.download(url).await;
        assert_eq!(d.status, 200);
        let parsed = serde_json::from_slice::<Value>(&d.body);
        assert_eq!(parsed.is_err(), t.malformed);
        if let Ok(v) = parsed {
            assert_eq!(v["script_name"], t.script.as_str());
            assert_eq!(v["exit_code"], t.exit_code);
            assert_eq!(
                !v["script_errors"].as_str().unwrap().is_empty(),
                t.errors_present
            );
            let out = v["script_output"].as_str().unwrap();
            assert!(out.starts_with("Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_"));
            odd_output |= out.contains('\0') && out.contains("日本語") && out.contains('é');
            *runs.entry(t.script.clone()).or_default() += 1;
            *failures.entry(t.script.clone()).or_default() += u64::from(t.exit_code != 0);
            *errors.entry(t.script.clone()).or_default() += u64::from(t.errors_present);
        }
    }
    assert!(odd_output, "some output has NUL and non-ASCII characters");
    assert_eq!(runs, truth.runs_by_script());
    failures.retain(|_, n| *n > 0);
    errors.retain(|_, n| *n > 0);
    assert_eq!(failures, truth.failures_by_script());
    assert_eq!(errors, truth.errors_by_script());
    assert!(
        truth
            .transcripts
            .iter()
            .any(|t| t.errors_present && t.exit_code == 0)
    );

    for f in &truth.files {
        let v = s.link(&token, &f.action_id, f.index).await.json();
        let d = s.download(v["value"].as_str().unwrap()).await;
        assert_eq!(d.body.len() as u64, f.compressed_bytes);
        assert_eq!(&d.body[..2], &[0x1f, 0x8b]);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&d.body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.starts_with("TimeCreated,"));
    }
    let stats = s.sim.stats();
    assert_eq!(
        stats.link_requests.len(),
        truth.transcripts.len() + truth.files.len()
    );
    assert!(stats.downloads.values().all(|n| *n == 1));
    assert_eq!(stats.downloads.len(), stats.link_requests.len());

    // Never a result: PutFile, commands that are not Completed, out-of-range indexes.
    for t in &truth.actions {
        for (i, (kind, status)) in t.commands.iter().enumerate() {
            if kind == "PutFile" || status != "Completed" {
                let a = s.link(&token, &t.id, i as u32).await;
                assert_eq!(a.status, 404, "{kind} {status}");
                assert_eq!(a.json()["error"]["code"], "ResourceNotFound");
            }
        }
    }
    let t = &truth.transcripts[0];
    assert_eq!(s.link(&token, &t.action_id, 7).await.status, 404);
    assert_eq!(s.link(&token, "nope", 0).await.status, 404);
    let bad = s
        .get(
            &token,
            &format!(
                "/api/machineactions/{}/GetLiveResponseResultDownloadLink(index=x)",
                t.action_id
            ),
        )
        .await;
    assert_eq!(bad.status, 400);
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

#[tokio::test]
async fn expired_tampered_and_unknown_links_are_refused_like_azure_storage() {
    let s = start(quick(SimConfig {
        link_ttl: Duration::from_millis(100),
        ..SimConfig::default()
    }))
    .await;
    let token = s.token().await;
    s.all_final().await;
    let t = s.sim.truth().transcripts[0].clone();
    let url = s.link(&token, &t.action_id, t.index).await.json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    // `se` has whole seconds, rounded up: the link lives between 1 and 2 s here.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let a = s.download(&url).await;
    assert_storage_error(&a, 403, "AuthenticationFailed");
    assert!(
        a.text()
            .contains("<AuthenticationErrorDetail>Signed expiry time ["),
        "{}",
        a.text()
    );
    assert!(a.text().contains(" GMT] must be after signed start time ["));
    assert_eq!(s.sim.stats().expired_downloads, 1);

    // A fresh link works again; a tampered one does not.
    let url = s.link(&token, &t.action_id, t.index).await.json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let tampered = url.replace("sig=", "sig=AAAA");
    assert_storage_error(&s.download(&tampered).await, 403, "AuthenticationFailed");
    assert_eq!(s.download(&url).await.status, 200);
    let unknown = format!(
        "{}/blob/investigation-actions-data/x/CustomPlaybookCommandOutput/0-00",
        s.base
    );
    assert_storage_error(&s.download(&unknown).await, 403, "AuthenticationFailed");

    s.sim.faults().expire_links(true);
    let url = s.link(&token, &t.action_id, t.index).await.json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_storage_error(&s.download(&url).await, 403, "AuthenticationFailed");
    s.sim.faults().expire_links(false);
    assert_eq!(s.sim.stats().expired_downloads, 4);
    assert_eq!(s.sim.stats().downloads[&(t.action_id.clone(), t.index)], 1);
}

#[tokio::test]
async fn the_quota_answers_429_with_retry_after_per_endpoint() {
    let s = start(SimConfig {
        per_minute: 5,
        ..SimConfig::default()
    })
    .await;
    let token = s.token().await;
    for _ in 0..5 {
        assert_eq!(
            s.get(&token, "/api/machineactions?$top=1").await.status,
            200
        );
    }
    let a = s.get(&token, "/api/machineactions?$top=1").await;
    assert_eq!(a.status, 429);
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    let e = &a.json()["error"];
    assert_eq!(e["code"], "429");
    assert_eq!(
        e["message"],
        "API calls quota exceeded! maximum allowed 5 per 00:01:00"
    );
    assert_eq!(e["target"].as_str().unwrap().len(), 36);
    // Each endpoint has its own windows.
    let id = s.sim.truth().actions[0].id.clone();
    assert_eq!(
        s.get(&token, &format!("/api/machineactions/{id}"))
            .await
            .status,
        200
    );
    let stats = s.sim.stats();
    assert_eq!(stats.throttled["list_machine_actions"], 1);
    assert_eq!(stats.requests["list_machine_actions"], 6);
    assert!(!stats.throttled.contains_key("get_machine_action"));

    // A neighbour on the same app registration spends the get window.
    s.sim.faults().spend_quota("get_machine_action", 10);
    assert_eq!(
        s.get(&token, &format!("/api/machineactions/{id}"))
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn the_hourly_window_and_a_scaled_minute() {
    let s = start(SimConfig {
        per_minute: 100,
        per_hour: 3,
        ..SimConfig::default().time_scaled(60.0)
    })
    .await;
    assert_eq!(s.sim.config().minute, Duration::from_secs(1));
    let token = s.token().await;
    for _ in 0..3 {
        assert_eq!(
            s.get(&token, "/api/machineactions?$top=1").await.status,
            200
        );
    }
    let a = s.get(&token, "/api/machineactions?$top=1").await;
    assert_eq!(a.status, 429);
    assert_eq!(
        a.json()["error"]["message"],
        "API calls quota exceeded! maximum allowed 3 per 00:01:00"
    );
    assert_eq!(a.header("retry-after"), Some("60"));
}

#[tokio::test]
async fn injected_faults_answer_with_each_services_error_shape() {
    let s = start(quick(SimConfig::default())).await;
    let f = s.sim.faults();
    f.fail_next("token", 503, 1);
    let a = s.token_v2(&s.sim.config().client_secret.clone()).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"], "temporarily_unavailable");
    let token = s.token().await;
    s.all_final().await;

    f.fail_next("list_machine_actions", 500, 1);
    f.throttle_next("list_machine_actions", 1, None);
    f.throttle_next("list_machine_actions", 1, Some(7));
    f.malformed_api("list_machine_actions", 1);
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!(
        (a.status, a.json()["error"]["code"].as_str()),
        (500, Some("InternalServerError"))
    );
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!((a.status, a.header("retry-after")), (429, None));
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!((a.status, a.header("retry-after")), (429, Some("7")));
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!(a.status, 200);
    assert!(serde_json::from_slice::<Value>(&a.body).is_err());
    assert_eq!(s.get(&token, "/api/machineactions").await.status, 200);
    assert_eq!(s.sim.stats().throttled["list_machine_actions"], 2);

    let truth = s.sim.truth();
    let t = truth.transcripts.iter().find(|t| !t.malformed).unwrap();
    let url = s.link(&token, &t.action_id, t.index).await.json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    f.fail_next("download", 500, 1);
    f.blob_fault(BlobFault::NotFound, 1);
    f.blob_fault(BlobFault::Garbage, 1);
    f.blob_fault(BlobFault::Huge(300_000), 1);
    f.blob_fault(BlobFault::GzipBomb, 1);
    f.blob_fault(BlobFault::Truncated, 1);
    assert_storage_error(&s.download(&url).await, 500, "InternalError");
    assert_storage_error(&s.download(&url).await, 404, "BlobNotFound");
    let garbage = s.download(&url).await;
    assert_eq!(garbage.status, 200);
    assert!(serde_json::from_slice::<Value>(&garbage.body).is_err());
    let huge = s.download(&url).await;
    assert_eq!(huge.body.len(), 300_000);
    assert_eq!(huge.header("content-length"), Some("300000"));
    let v: Value = serde_json::from_slice(&huge.body).unwrap();
    assert_eq!(v["exit_code"], 0);
    let bomb = s.download(&url).await;
    assert!(bomb.body.len() < 2 << 20, "{}", bomb.body.len());
    let mut head = vec![0u8; 1 << 20];
    flate2::read::GzDecoder::new(&bomb.body[..])
        .read_exact(&mut head)
        .unwrap();
    let truncated = s.http.get(&url).send().await.unwrap();
    assert_eq!(truncated.status(), 200);
    assert!(truncated.bytes().await.is_err(), "the body breaks off");
    // Faulted answers are not downloads; the next one is the real blob.
    assert!(
        !s.sim
            .stats()
            .downloads
            .contains_key(&(t.action_id.clone(), t.index))
    );
    let real = s.download(&url).await;
    assert_eq!(real.json()["script_name"], t.script.as_str());
    assert_eq!(s.sim.stats().downloads[&(t.action_id.clone(), t.index)], 1);
    assert_eq!(s.sim.stats().requests["download"], 7);
}

#[tokio::test]
async fn truth_helpers_agree_with_each_other() {
    let s = start(quick(SimConfig::default())).await;
    s.all_final().await;
    let truth = s.sim.truth();
    assert_eq!(truth.actions_by_status().values().sum::<u64>(), 80);
    assert!(
        truth
            .actions_by_status()
            .keys()
            .all(|k| ["Succeeded", "Failed", "TimeOut", "Cancelled"].contains(&k.as_str()))
    );
    let completed_runs = truth
        .actions
        .iter()
        .flat_map(|a| a.commands.iter())
        .filter(|(k, st)| k == "RunScript" && st == "Completed")
        .count();
    assert_eq!(completed_runs, truth.transcripts.len());
    let ok = truth.transcripts.iter().filter(|t| !t.malformed).count() as u64;
    assert_eq!(truth.runs_by_script().values().sum::<u64>(), ok);
    assert!(
        !truth
            .runs_by_script()
            .contains_key(scenario::MALFORMED_SCRIPT)
    );
    let last = truth.last_by_machine_script();
    for ((machine, script), t) in &last {
        assert!(
            truth
                .transcripts
                .iter()
                .filter(|o| !o.malformed && &o.machine == machine && &o.script == script)
                .all(|o| o.end_time <= t.end_time)
        );
    }
    let pairs: BTreeSet<(&str, &str)> = truth
        .transcripts
        .iter()
        .filter(|t| !t.malformed)
        .map(|t| (t.machine.as_str(), t.script.as_str()))
        .collect();
    assert_eq!(pairs.len(), last.len());
}

#[test]
fn time_scaling_shrinks_every_clock_driven_duration() {
    let c = SimConfig::default().time_scaled(60.0);
    assert_eq!(c.minute, Duration::from_secs(1));
    assert_eq!(c.hour, Duration::from_secs(60));
    assert_eq!(c.link_ttl, Duration::from_secs(30));
    assert_eq!(c.token_ttl, Duration::from_secs_f64(3599.0 / 60.0));
    assert_eq!(c.finish_within, Duration::from_secs(1));
    // The scenario's past is not clock-driven.
    assert_eq!(c.history, SimConfig::default().history);
    assert_eq!(
        SimConfig::default().time_scaled(0.0).minute,
        Duration::from_secs(60)
    );
}

#[tokio::test(start_paused = true)]
async fn a_noisy_neighbour_spends_each_quota_steadily_but_never_beyond_it() {
    let sim = Simulator::new(SimConfig {
        per_minute: 20,
        ..SimConfig::default()
    });
    sim.faults().noisy_neighbour(30);
    let used = |ep: &'static str| {
        let key = (sim.config().client_id.clone(), ep);
        let mut st = sim.inner.lock();
        st.throttles
            .get_mut(&key)
            .map_or((0, 0), |t| t.used(Instant::now()))
    };
    // One call at once, then one every two seconds.
    tokio::time::sleep(Duration::from_millis(20_500)).await;
    for ep in endpoints::QUOTA_ENDPOINTS {
        assert_eq!(used(ep), (11, 11), "{ep}");
    }
    // Refused calls spend nothing: the calls at 40..58 s are refused, the one at 60 s gets
    // the slot the call at 0 s freed.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(used(endpoints::LIST), (20, 21));
    drop(sim);
}

#[tokio::test(start_paused = true)]
async fn delays_hold_the_answer_on_the_simulator_clock() {
    let s = start(SimConfig::default()).await;
    let token = s.token().await;
    s.sim
        .faults()
        .delay("get_machine_action", Duration::from_secs(30));
    let id = s.sim.inner.actions[0].id.clone();
    let t0 = Instant::now();
    let a = s.get(&token, &format!("/api/machineactions/{id}")).await;
    assert_eq!(a.status, 200);
    assert!(Instant::now() - t0 >= Duration::from_secs(30));
    s.sim.faults().delay("get_machine_action", Duration::ZERO);
}
