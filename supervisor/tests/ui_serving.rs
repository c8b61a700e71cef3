//! The dashboard's files over a real socket (`rpc/ui.rs`): public even with a token
//! configured, with their security headers, the `/ui` redirect, 404 and 405, refused to
//! other sites' pages; and the browser's way to present the token on a WebSocket (the
//! `hero-bearer.<hex>` subprotocol, `rpc/auth.rs`) on the REST event stream and on
//! JSON-RPC. (The pages themselves are tested in a browser: `tests/tests/ui_dashboard.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rest_support;
mod rpc_support;

use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::ui::{ASSETS, CONTENT_SECURITY_POLICY_VALUE};
use rest_support::{post, request_with, websocket_with_protocols};
use rpc_support::TestServer;
use serde_json::{Value, json};

const TOKEN: &str = "ui-serving-token";

async fn guarded() -> TestServer {
    TestServer::with_config(RpcConfig {
        auth_token: Some(TOKEN.to_owned()),
        ..RpcConfig::default()
    })
    .await
}

#[tokio::test]
async fn the_files_are_public_with_their_headers() {
    let server = guarded().await;
    let addr = server.addr;
    for (name, content_type, body) in ASSETS {
        let answer = request_with(addr, "GET", &format!("/ui/{name}"), None, None, &[]).await;
        assert_eq!(answer.status, 200, "{name}");
        assert_eq!(answer.header("content-type").unwrap(), content_type);
        assert_eq!(answer.text, body, "{name}");
        assert_eq!(
            answer.header("content-security-policy").unwrap(),
            CONTENT_SECURITY_POLICY_VALUE
        );
        assert_eq!(answer.header("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(answer.header("x-frame-options").unwrap(), "DENY");
    }
    let index = request_with(addr, "GET", "/ui/", None, None, &[]).await;
    assert!(
        index
            .text
            .contains("<script type=\"module\" src=\"app.js\">")
    );
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{addr}/ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/ui/");
    let head = request_with(addr, "HEAD", "/ui/app.js", None, None, &[]).await;
    assert_eq!((head.status, head.text.as_str()), (200, ""));
    assert_eq!(
        request_with(addr, "GET", "/ui/secrets.json", None, None, &[])
            .await
            .status,
        404
    );
    assert_eq!(
        request_with(addr, "POST", "/ui/", None, Some("{}".into()), &[])
            .await
            .status,
        405
    );
    // The page is public; the API behind it is not.
    request_with(addr, "GET", "/v1/runtime", None, None, &[])
        .await
        .expect_error(401, "unauthorized");
    // A page of another site gets nothing, the server's own origin gets the files.
    let own = format!("http://{addr}");
    let from = |origin: &str| {
        let origin = origin.to_owned();
        async move {
            request_with(
                addr,
                "GET",
                "/ui/app.js",
                None,
                None,
                &[("origin", &origin)],
            )
            .await
            .status
        }
    };
    assert_eq!(from("http://evil.example").await, 403);
    assert_eq!(from(&own).await, 200);
}

#[tokio::test]
async fn websockets_take_the_token_as_a_subprotocol() {
    let server = guarded().await;
    let addr = server.addr;
    let created = post(
        addr,
        "/v1/jobs",
        Some(TOKEN),
        json!({"script": "1", "script_type": "SAL", "start": false}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/jobs/{id}/events/ws");
    let bearer = |t: &str| format!("hero-bearer.{}", hex::encode(t));

    // The right token: accepted, the `hero` subprotocol selected, the stream flows.
    let good = bearer(TOKEN);
    let (mut events, protocol) = websocket_with_protocols(addr, &path, &["hero", &good])
        .await
        .expect("accepted");
    assert_eq!(protocol.as_deref(), Some("hero"));
    let snapshot = events.frame().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["job"]["id"], json!(id));
    events.close().await;

    // A wrong token, no token, a token that is not hex: 401, as without the header.
    let wrong = bearer("not-it");
    for offered in [
        vec!["hero", wrong.as_str()],
        vec!["hero"],
        vec!["hero", "hero-bearer.zz"],
    ] {
        assert_eq!(
            websocket_with_protocols(addr, &path, &offered).await.err(),
            Some(401),
            "{offered:?}"
        );
    }

    // Without `hero` offered, nothing is selected (and the token is never echoed).
    let (events, protocol) = websocket_with_protocols(addr, &path, &[&good])
        .await
        .expect("accepted");
    assert_eq!(protocol, None);
    events.close().await;

    // JSON-RPC over WebSocket, as a browser would open it.
    let (mut rpc, protocol) = websocket_with_protocols(addr, "/", &["hero", &good])
        .await
        .expect("accepted");
    assert_eq!(protocol.as_deref(), Some("hero"));
    rpc.send_text(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "get_job_status", "params": [id]}).to_string(),
    )
    .await;
    let answer: Value = rpc.frame().await;
    assert_eq!(answer["result"], "Created", "{answer}");
    rpc.close().await;
}
