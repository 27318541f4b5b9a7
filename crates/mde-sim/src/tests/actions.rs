//! The machine-action API: paging, `$filter`, the status timeline and the entity shape.

use super::*;

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
    // Every answer carries a Date header (hyper's, real time): the exporter reads the API's
    // clock from it (#24 item 7).
    let date = a.header("date").expect("a Date header");
    let date = chrono::DateTime::parse_from_rfc2822(date).expect("an HTTP date");
    assert!(
        (chrono::Utc::now() - date.to_utc()).num_seconds().abs() <= 2,
        "{date}"
    );
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
