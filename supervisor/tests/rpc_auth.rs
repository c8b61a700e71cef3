//! Bearer token (off, on, wrong, non-loopback refused) and secp256k1 signature auth
//! (success, replayed nonce, expired nonce, forged signature, per WS connection).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rpc_support;

use std::sync::Arc;

use hero_supervisor::clock::ManualClock;
use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::rpc::types::CreateJobParams;
use hero_supervisor::rpc::{HeroApiClient, RpcConfig, StartError};
use hero_supervisor::server::{self, ServerError};
use k256::ecdsa::signature::Signer;
use k256::ecdsa::{Signature, SigningKey};
use rpc_support::{TestServer, expect_code, post, serve_config};
use serde_json::json;

const TOKEN: &str = "s3cret-token";

fn with_token() -> RpcConfig {
    RpcConfig {
        auth_token: Some(TOKEN.into()),
        ..RpcConfig::default()
    }
}

fn whoami_body() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"whoami","params":[]}).to_string()
}

#[tokio::test]
async fn auth_off_accepts_anyone() {
    let server = TestServer::start().await;
    let (status, body) = post(server.addr, &whoami_body(), &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("anonymous"), "{body}");
    assert_eq!(server.ws().await.whoami().await.unwrap(), "anonymous");
}

#[tokio::test]
async fn auth_on_requires_the_bearer_token() {
    let server = TestServer::with_config(with_token()).await;
    // HTTP: missing or wrong token is a 401; the right one passes.
    assert_eq!(post(server.addr, &whoami_body(), &[]).await.0, 401);
    let wrong = format!("Bearer {TOKEN}x");
    assert_eq!(
        post(server.addr, &whoami_body(), &[("Authorization", &wrong)])
            .await
            .0,
        401
    );
    assert_eq!(
        post(
            server.addr,
            &whoami_body(),
            &[("Authorization", "Basic abc")]
        )
        .await
        .0,
        401
    );
    let right = format!("Bearer {TOKEN}");
    assert_eq!(
        post(server.addr, &whoami_body(), &[("Authorization", &right)])
            .await
            .0,
        200
    );
    // Typed clients.
    assert_eq!(server.http().whoami().await.unwrap(), "anonymous");
    assert_eq!(server.ws().await.whoami().await.unwrap(), "anonymous");
    let no_token = http_client(&server.url, None).unwrap();
    assert!(no_token.whoami().await.is_err());
    let bad = http_client(&server.url, Some("nope")).unwrap();
    assert!(bad.whoami().await.is_err());
    // WebSocket upgrade refused without / with a wrong token.
    assert!(ws_client(&server.url, None).await.is_err());
    assert!(ws_client(&server.url, Some("nope")).await.is_err());
}

#[tokio::test]
async fn non_loopback_without_token_is_refused() {
    let on_all_interfaces = |rpc| ServeConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..serve_config(rpc, None)
    };
    let err = server::start(on_all_interfaces(RpcConfig::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::Rpc(StartError::NonLoopbackWithoutToken { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("not a loopback address") && msg.contains("--auth-token"),
        "{msg}"
    );
    // With a token it starts (bound on all interfaces, reached via loopback).
    let running = server::start(on_all_interfaces(with_token()))
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}", running.addr().port());
    let client = http_client(&url, Some(TOKEN)).unwrap();
    assert_eq!(client.whoami().await.unwrap(), "anonymous");
    running.stop().await;
    assert!(client.whoami().await.is_err(), "stopped");
}

struct Wallet {
    key: SigningKey,
}

impl Wallet {
    fn new(seed: u8) -> Wallet {
        Wallet {
            key: SigningKey::from_slice(&[seed; 32]).unwrap(),
        }
    }
    fn pubkey(&self) -> String {
        hex::encode(self.key.verifying_key().to_sec1_bytes())
    }
    fn pubkey_uncompressed(&self) -> String {
        hex::encode(self.key.verifying_key().to_encoded_point(false).as_bytes())
    }
    /// ECDSA over SHA-256 of the nonce's UTF-8 bytes, compact r||s, hex.
    fn sign(&self, nonce: &str) -> String {
        let sig: Signature = self.key.sign(nonce.as_bytes());
        hex::encode(sig.to_bytes())
    }
}

#[tokio::test]
async fn signature_auth_success_binds_the_ws_connection() {
    let server = TestServer::start().await;
    let ws = server.ws().await;
    let alice = Wallet::new(7);
    // An uncompressed key works; identity is the compressed form.
    let nonce = ws.fetch_nonce(alice.pubkey_uncompressed()).await.unwrap();
    assert!(
        ws.authenticate(alice.pubkey_uncompressed(), alice.sign(&nonce), nonce)
            .await
            .unwrap()
    );
    assert_eq!(ws.whoami().await.unwrap(), alice.pubkey());
    // Jobs created on this connection carry the key as caller_id, whatever is given.
    let mut params = CreateJobParams::new("x", "SAL");
    params.caller_id = Some("mallory".into());
    let id = ws.create_job(params).await.unwrap();
    assert_eq!(
        ws.get_job(id).await.unwrap().params.caller_id,
        alice.pubkey()
    );
    // Another connection is still anonymous.
    assert_eq!(server.ws().await.whoami().await.unwrap(), "anonymous");
    // Over HTTP every request is its own session.
    let http = server.http();
    let nonce = http.fetch_nonce(alice.pubkey()).await.unwrap();
    assert!(
        http.authenticate(alice.pubkey(), alice.sign(&nonce), nonce)
            .await
            .unwrap()
    );
    assert_eq!(http.whoami().await.unwrap(), "anonymous");
}

#[tokio::test]
async fn replayed_expired_and_forged_are_refused() {
    let clock = Arc::new(ManualClock::default());
    let config = RpcConfig {
        clock: clock.clone(),
        ..RpcConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let ws = server.ws().await;
    let alice = Wallet::new(7);
    let eve = Wallet::new(9);

    // Replayed nonce.
    let nonce = ws.fetch_nonce(alice.pubkey()).await.unwrap();
    let sig = alice.sign(&nonce);
    assert!(
        ws.authenticate(alice.pubkey(), sig.clone(), nonce.clone())
            .await
            .unwrap()
    );
    let other = server.ws().await;
    expect_code(
        other.authenticate(alice.pubkey(), sig, nonce).await,
        -32005,
        "unauthorized",
    );
    assert_eq!(other.whoami().await.unwrap(), "anonymous");

    // Expired nonce (default expiry 5 minutes).
    let nonce = other.fetch_nonce(alice.pubkey()).await.unwrap();
    clock.advance(chrono::Duration::minutes(5) + chrono::Duration::seconds(1));
    let sig = alice.sign(&nonce);
    expect_code(
        other.authenticate(alice.pubkey(), sig, nonce).await,
        -32005,
        "unauthorized",
    );

    // Forged: eve signs alice's nonce.
    let nonce = other.fetch_nonce(alice.pubkey()).await.unwrap();
    let forged = eve.sign(&nonce);
    expect_code(
        other.authenticate(alice.pubkey(), forged, nonce).await,
        -32005,
        "unauthorized",
    );
    // A nonce issued for alice can't authenticate eve, even signed by eve.
    let nonce = other.fetch_nonce(alice.pubkey()).await.unwrap();
    let sig = eve.sign(&nonce);
    expect_code(
        other.authenticate(eve.pubkey(), sig, nonce).await,
        -32005,
        "unauthorized",
    );
    // A made-up nonce.
    let sig = alice.sign("hero-auth:00");
    expect_code(
        other
            .authenticate(alice.pubkey(), sig, "hero-auth:00".into())
            .await,
        -32005,
        "unauthorized",
    );
    // Malformed signature.
    let nonce = other.fetch_nonce(alice.pubkey()).await.unwrap();
    expect_code(
        other.authenticate(alice.pubkey(), "zz".into(), nonce).await,
        -32602,
        "invalid_params",
    );
    assert_eq!(other.whoami().await.unwrap(), "anonymous");
}
