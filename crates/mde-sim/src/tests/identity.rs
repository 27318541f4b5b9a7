//! Token endpoints (v1, v2, AAD errors) and the bearer check on API calls.

use super::*;

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
