//! TLS on the JSON-RPC port (`--tls-cert`/`--tls-key`): a self-signed certificate made
//! here, a real server, real clients. A client trusting the certificate calls over
//! `https://` and calls and subscribes over `wss://` (bearer token and body limit still
//! enforced); one trusting another certificate fails; plain HTTP to the port fails and
//! harms nothing; a connection that never says hello is closed after the handshake
//! timeout; unusable files are start errors naming the file; TLS does not lift the token
//! rule for non-loopback addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rpc_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::tls::{TlsError, TlsFiles};
use hero_supervisor::rpc::types::{CreateJobParams, JobEvent};
use hero_supervisor::rpc::{HeroApiClient, RpcConfig, StartError};
use hero_supervisor::server::{self, RunningServer, ServerError};
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use rcgen::{CertifiedKey, KeyPair};
use rpc_support::serve_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

const TOKEN: &str = "tls-test-token";

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    certified: CertifiedKey<KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".into()])
                .expect("self-signed certificate");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        Pki { dir, certified }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path("cert.pem"),
            key: self.path("key.pem"),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.certified.cert.der().clone()
    }
}

/// A rustls client configuration trusting only `root`.
fn trusting(root: CertificateDer<'static>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(root).expect("a valid root");
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn bearer(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    headers
}

fn https_client(server: &RunningServer, tls: ClientConfig, token: Option<&str>) -> HttpClient {
    HttpClientBuilder::default()
        .with_custom_cert_store(tls)
        .set_headers(bearer(token))
        .request_timeout(Duration::from_secs(10))
        .build(format!("https://127.0.0.1:{}", server.addr().port()))
        .expect("https client")
}

async fn wss_client(
    server: &RunningServer,
    tls: ClientConfig,
    token: Option<&str>,
) -> Result<WsClient, jsonrpsee::core::ClientError> {
    WsClientBuilder::default()
        .with_custom_cert_store(tls)
        .set_headers(bearer(token))
        .request_timeout(Duration::from_secs(10))
        .connection_timeout(Duration::from_secs(10))
        .build(format!("wss://127.0.0.1:{}", server.addr().port()))
        .await
}

fn tls_config(pki: &Pki, edit: impl FnOnce(&mut RpcConfig)) -> ServeConfig {
    let mut rpc = RpcConfig {
        auth_token: Some(TOKEN.into()),
        tls: Some(pki.files()),
        ..RpcConfig::default()
    };
    edit(&mut rpc);
    serve_config(rpc, None)
}

async fn start_tls(pki: &Pki, edit: impl FnOnce(&mut RpcConfig)) -> RunningServer {
    server::start(tls_config(pki, edit))
        .await
        .expect("start the TLS server")
}

#[tokio::test]
async fn https_and_wss_with_a_trusted_certificate() {
    let pki = Pki::new();
    let server = start_tls(&pki, |rpc| rpc.max_request_body_bytes = 64 * 1024).await;

    // HTTPS: calls with the token; the token is still required.
    let https = https_client(&server, trusting(pki.der()), Some(TOKEN));
    assert_eq!(https.whoami().await.unwrap(), "anonymous");
    let id = https
        .create_job(CreateJobParams::new("40 + 2", "SAL"))
        .await
        .unwrap();
    assert_eq!(
        https.list_jobs(None).await.unwrap().into_ids(),
        vec![id.clone()]
    );
    let anonymous = https_client(&server, trusting(pki.der()), None);
    let refused = anonymous.whoami().await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");
    // The body limit holds over TLS too.
    let too_big = https
        .create_job(CreateJobParams::new("x".repeat(128 * 1024), "SAL"))
        .await;
    assert!(too_big.is_err(), "{too_big:?}");

    // WSS: a call and a subscription on the same connection.
    let wss = wss_client(&server, trusting(pki.der()), Some(TOKEN))
        .await
        .expect("wss client");
    assert_eq!(
        wss.list_jobs(None).await.unwrap().into_ids(),
        vec![id.clone()]
    );
    let mut events = wss.subscribe_job_events(id.clone(), None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the subscription is open")
        .expect("a job event");
    assert!(
        matches!(first, JobEvent::Status { job_id, .. } if job_id.to_string() == id),
        "{first:?}"
    );
    // Live: starting the job is seen over the subscription.
    https.start_job(id.clone()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the subscription is open")
        .expect("a job event");
    assert!(matches!(next, JobEvent::Status { .. }), "{next:?}");
    assert!(
        wss_client(&server, trusting(pki.der()), None)
            .await
            .is_err(),
        "a WSS upgrade without the token is refused"
    );

    // Stop in order with a WSS connection open: it ends, and so does the server.
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("the TLS server stops with connections open");
    assert!(https.whoami().await.is_err(), "stopped");
    assert!(wss.whoami().await.is_err(), "the WSS connection ended");
}

/// The REST face is served over HTTPS by the same middleware: the same token, the same
/// JSON 401.
#[tokio::test]
async fn rest_over_https_with_the_same_token() {
    let pki = Pki::new();
    let server = start_tls(&pki, |_| {}).await;
    let base = format!("https://127.0.0.1:{}", server.addr().port());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&pki.der()).unwrap())
        .build()
        .unwrap();
    let runtime = client
        .get(format!("{base}/v1/runtime"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(runtime.status().as_u16(), 200);
    let body: serde_json::Value = runtime.json().await.unwrap();
    assert_eq!(body["server_admin"], true);
    let created = client
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"script": "1", "script_type": "SAL", "start": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let refused = client
        .get(format!("{base}/v1/runtime"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    server.stop().await;
}

#[tokio::test]
async fn a_client_not_trusting_the_certificate_fails() {
    let pki = Pki::new();
    let server = start_tls(&pki, |_| {}).await;
    let stranger = Pki::new();
    let https = https_client(&server, trusting(stranger.der()), Some(TOKEN));
    let err = https.whoami().await.unwrap_err().to_string();
    assert!(!err.is_empty());
    assert!(
        wss_client(&server, trusting(stranger.der()), Some(TOKEN))
            .await
            .is_err(),
        "wss with an untrusted certificate"
    );
    // The server is unharmed: a trusting client still gets through.
    let trusted = https_client(&server, trusting(pki.der()), Some(TOKEN));
    assert_eq!(trusted.whoami().await.unwrap(), "anonymous");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_without_harming_the_server() {
    let pki = Pki::new();
    let server = start_tls(&pki, |_| {}).await;
    let addr = server.addr();

    // A connection that never speaks holds no one else up.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    // Plain HTTP: the handshake fails, no HTTP answer comes back, the connection closes.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"whoami","params":[]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    plain.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // The server closes it; a reset is as good as an end.
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut raw))
        .await
        .expect("the server closes a plain connection");
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&raw)
    );
    // jsonrpsee's own plain clients fail too.
    let http = HttpClientBuilder::default()
        .set_headers(bearer(Some(TOKEN)))
        .request_timeout(Duration::from_secs(10))
        .build(format!("http://{addr}"))
        .unwrap();
    assert!(http.whoami().await.is_err());
    let ws = WsClientBuilder::default()
        .set_headers(bearer(Some(TOKEN)))
        .connection_timeout(Duration::from_secs(10))
        .build(format!("ws://{addr}"))
        .await;
    assert!(ws.is_err(), "ws:// to a TLS port");

    // Unharmed.
    let https = https_client(&server, trusting(pki.der()), Some(TOKEN));
    assert_eq!(https.whoami().await.unwrap(), "anonymous");
    server.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    use hero_supervisor::rpc::tls::HANDSHAKE_TIMEOUT;
    let pki = Pki::new();
    let server = start_tls(&pki, |_| {}).await;
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(
        HANDSHAKE_TIMEOUT + Duration::from_secs(5),
        silent.read_to_end(&mut raw),
    )
    .await
    .expect("the server closes a connection that never says hello");
    let waited = started.elapsed();
    assert!(raw.is_empty(), "{raw:?}");
    assert!(
        waited >= HANDSHAKE_TIMEOUT - Duration::from_millis(500),
        "closed after {waited:?}, before the timeout"
    );
    server.stop().await;
}

/// The start error for `config`, which must not start.
async fn start_error(config: ServeConfig) -> ServerError {
    match server::start(config).await {
        Ok(running) => {
            running.stop().await;
            panic!("the server started");
        }
        Err(e) => e,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn unusable_tls_files_are_start_errors_naming_the_file() {
    let pki = Pki::new();
    let with_files = |cert: PathBuf, key: PathBuf| {
        tls_config(&pki, |rpc| rpc.tls = Some(TlsFiles { cert, key }))
    };

    // Missing certificate file.
    let missing = pki.path("absent.pem");
    let err = start_error(with_files(missing.clone(), pki.path("key.pem"))).await;
    assert!(
        matches!(
            err,
            ServerError::Rpc(StartError::Tls(TlsError::Read { .. }))
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );

    // Not PEM; PEM without a certificate (the key file given as the certificate).
    let garbage = pki.path("garbage.pem");
    write(&garbage, "this is not a certificate\n");
    let key = pki.path("key.pem");
    for not_a_cert in [&garbage, &key] {
        let err = start_error(with_files(not_a_cert.clone(), key.clone())).await;
        assert!(
            matches!(
                err,
                ServerError::Rpc(StartError::Tls(TlsError::Certificate { .. }))
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&*not_a_cert.to_string_lossy()),
            "{err}"
        );
    }

    // A broken key: the error names the file and repeats none of it.
    let broken_key = pki.path("broken-key.pem");
    let secret_looking =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz!!\n-----END PRIVATE KEY-----\n";
    write(&broken_key, secret_looking);
    let err = start_error(with_files(pki.path("cert.pem"), broken_key.clone())).await;
    assert!(
        matches!(err, ServerError::Rpc(StartError::Tls(TlsError::Key { .. }))),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&*broken_key.to_string_lossy()), "{text}");
    assert!(
        !text.contains("c2VjcmV0") && !text.contains("secret"),
        "{text}"
    );
    // A certificate given as the key.
    let err = start_error(with_files(pki.path("cert.pem"), pki.path("cert.pem"))).await;
    assert!(
        matches!(err, ServerError::Rpc(StartError::Tls(TlsError::Key { .. }))),
        "{err:?}"
    );

    // A valid key that is not the certificate's.
    let other = Pki::new();
    let err = start_error(with_files(pki.path("cert.pem"), other.path("key.pem"))).await;
    assert!(
        matches!(
            err,
            ServerError::Rpc(StartError::Tls(TlsError::Pair { .. }))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn tls_does_not_lift_the_token_rule_off_loopback() {
    let pki = Pki::new();
    let mut config = tls_config(&pki, |rpc| rpc.auth_token = None);
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = start_error(config).await;
    assert!(
        matches!(
            err,
            ServerError::Rpc(StartError::NonLoopbackWithoutToken { .. })
        ),
        "{err:?}"
    );
    // On loopback without a token it starts, open, over TLS.
    let server = start_tls(&pki, |rpc| rpc.auth_token = None).await;
    let https = https_client(&server, trusting(pki.der()), None);
    assert_eq!(https.whoami().await.unwrap(), "anonymous");
    server.stop().await;
}
