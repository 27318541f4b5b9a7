//! Download links and the blob container, against the truth and as Azure Storage refuses.

use super::*;

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
