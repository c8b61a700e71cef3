//! The Python client SDK (`sdk/python/hero_client.py`) against an implementation nobody
//! here wrote: the `k256` crate the supervisor verifies signatures with. Python signs and
//! k256 verifies, k256 signs and Python verifies, both derive the same public keys, and
//! the signed envelopes of `rpc_in` / `rpc_return` check out on the other side the way
//! the server and a receiver check them. Then the SDK's own unit tests run.
//!
//! Needs `python3` (3.8 or later) on the PATH; without it these tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use k256::Scalar;
use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .join("sdk")
        .join("python")
}

/// `python3 ARGS...` in sdk/python, waited for.
fn python(args: &[&str]) -> Output {
    let output = Command::new("python3")
        .args(args)
        .current_dir(sdk_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output();
    match output {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "python3 not found: the Python SDK tests need it; install python3 (3.8 or later, \
             e.g. `apt-get install python3`) and run again"
        ),
        Err(err) => panic!("could not run python3: {err}"),
    }
}

/// `python3 hero_client.py ARGS...`: (exit code, stdout trimmed).
fn cli(args: &[&str]) -> (i32, String) {
    let mut all = vec!["hero_client.py"];
    all.extend_from_slice(args);
    let output = python(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().expect("python3 exited by a signal");
    assert!(
        code <= 1,
        "hero_client.py {args:?} failed ({code}): {stderr}"
    );
    (
        code,
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

/// `cli`, expecting exit 0 and one line of output.
fn cli_ok(args: &[&str]) -> String {
    let (code, out) = cli(args);
    assert_eq!(code, 0, "hero_client.py {args:?} exited 1");
    out
}

/// `hero_client.py verify`: exit 0 (valid) or 1 (not).
fn python_verifies(pubkey: &str, message: &str, signature: &str) -> bool {
    cli(&["verify", pubkey, message, signature]).0 == 0
}

fn key(bytes: [u8; 32]) -> SigningKey {
    SigningKey::from_slice(&bytes).expect("a valid private key")
}

fn pub_hex(key: &VerifyingKey, compressed: bool) -> String {
    hex::encode(key.to_encoded_point(compressed).as_bytes())
}

fn sign_hex(key: &SigningKey, message: &str) -> String {
    let signature: Signature = key.sign(message.as_bytes());
    hex::encode(signature.to_bytes())
}

/// Fixed keys: 1 (the generator), N-1 (its negation), a repeated byte, a mixed one.
fn fixed_keys() -> Vec<SigningKey> {
    let mut one = [0u8; 32];
    one[31] = 1;
    let n_minus_1: [u8; 32] =
        hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140")
            .unwrap()
            .try_into()
            .unwrap();
    let mut mixed = [0u8; 32];
    for (i, b) in mixed.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    vec![key(one), key(n_minus_1), key([7u8; 32]), key(mixed)]
}

const MESSAGES: &[&str] = &[
    "",
    "hero-auth:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    "héllo ✓ 🔑",
    "r-1run_job{\"script\":\"print(1)\",\"script_type\":\"Python\"}http://127.0.0.1:8099/returnsbuilds",
];

#[test]
fn python_public_keys_equal_k256s() {
    for key in fixed_keys() {
        let private = hex::encode(key.to_bytes());
        let vk = key.verifying_key();
        assert_eq!(cli_ok(&["pubkey", &private]), pub_hex(vk, true));
        assert_eq!(
            cli_ok(&["pubkey", &private, "--uncompressed"]),
            pub_hex(vk, false)
        );
    }
}

#[test]
fn python_keygen_gives_a_key_pair_k256_agrees_with() {
    let out = cli_ok(&["keygen"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "keygen prints the private key, then the public key: {out}"
    );
    let key = SigningKey::from_slice(&hex::decode(lines[0]).unwrap()).expect("a valid private key");
    assert_eq!(lines[1], pub_hex(key.verifying_key(), true));
}

#[test]
fn python_signs_k256_verifies_and_both_sign_alike() {
    // Each key with two of the messages: every key and every message, in 8 runs.
    for (i, key) in fixed_keys().into_iter().enumerate() {
        for message in [MESSAGES[i], MESSAGES[(i + 1) % MESSAGES.len()]] {
            let sig_hex = cli_ok(&["sign", &hex::encode(key.to_bytes()), message]);
            let signature =
                Signature::from_slice(&hex::decode(&sig_hex).unwrap()).expect("64 bytes r||s");
            assert!(
                signature.normalize_s().is_none(),
                "Python made a high-S signature"
            );
            key.verifying_key()
                .verify(message.as_bytes(), &signature)
                .unwrap_or_else(|_| panic!("k256 refuses Python's signature of {message:?}"));
            // RFC 6979 with HMAC-SHA256 on both sides: the very same bytes.
            assert_eq!(sig_hex, sign_hex(&key, message), "{message:?}");
        }
    }
}

#[test]
fn k256_signs_python_verifies() {
    let keys = fixed_keys();
    for (key, message) in keys.iter().zip(MESSAGES.iter()) {
        let sig_hex = sign_hex(key, message);
        assert!(
            python_verifies(&pub_hex(key.verifying_key(), true), message, &sig_hex),
            "{message:?}"
        );
    }
    let (key, message) = (&keys[2], MESSAGES[2]);
    let sig_hex = sign_hex(key, message);
    let uncompressed = pub_hex(key.verifying_key(), false);
    assert!(python_verifies(&uncompressed, message, &sig_hex));
    assert!(!python_verifies(
        &uncompressed,
        &format!("{message}."),
        &sig_hex
    ));
    // High-S (what raw ECDSA gives half of the time) is accepted, as the supervisor does.
    let key = &keys[3];
    let signature: Signature = key.sign(b"high");
    let s: Scalar = *signature.s().as_ref();
    let high = Signature::from_scalars(signature.r().to_bytes(), (-s).to_bytes()).unwrap();
    assert!(
        high.normalize_s().is_some(),
        "the negated s is the high one"
    );
    let pubkey = pub_hex(key.verifying_key(), true);
    assert!(python_verifies(
        &pubkey,
        "high",
        &hex::encode(high.to_bytes())
    ));
    // Another key's signature is refused.
    assert!(!python_verifies(
        &pubkey,
        "high",
        &sign_hex(&keys[0], "high")
    ));
}

/// Checks an rpc_in params object as the server does: the signature of the plain
/// concatenation rpc_id + method_name + params + return_url + return_topic.
fn server_verifies_rpc_in(body: &Value) {
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let signed = format!(
        "{}{}{}{}{}",
        field("rpc_id"),
        field("method_name"),
        field("params"),
        field("return_url"),
        field("return_topic")
    );
    let vk = VerifyingKey::from_sec1_bytes(&hex::decode(field("pubkey")).unwrap()).unwrap();
    let signature = Signature::from_slice(&hex::decode(field("signature")).unwrap()).unwrap();
    vk.verify(signed.as_bytes(), &signature)
        .unwrap_or_else(|_| panic!("the rpc_in signature does not cover {signed:?}"));
}

#[test]
fn python_rpc_in_verifies_as_the_server_checks_it() {
    let key = key([7u8; 32]);
    let private = hex::encode(key.to_bytes());
    let params = r#"{"script": "print('é')", "script_type": "Python"}"#;
    let out = cli_ok(&[
        "rpc-in",
        &private,
        "r-1",
        "run_job",
        params,
        "--return-url",
        "http://127.0.0.1:8099/returns",
        "--return-topic",
        "builds",
    ]);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        body["params"], params,
        "params are sent as the JSON text given"
    );
    assert_eq!(body["async"], true);
    assert_eq!(body["pubkey"], pub_hex(key.verifying_key(), true));
    assert_eq!(body["return_topic"], "builds");
    server_verifies_rpc_in(&body);

    let out = cli_ok(&["rpc-in", &private, "r-2", "job.load", "[1]", "--sync"]);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["async"], false);
    assert!(
        body.get("return_url").is_none() && body.get("return_topic").is_none(),
        "{body}"
    );
    server_verifies_rpc_in(&body);
}

#[test]
fn k256_signed_rpc_return_verifies_in_python() {
    let server = key([0x11; 32]);
    let server_pub = pub_hex(server.verifying_key(), true);
    let params = r#"{"script":"print(1)","script_type":"Python"}"#;
    let result = r#"{"job_id":"j-1","output":"1\n"}"#;
    // As the server builds it: the signature covers rpc_id + method_name + params + result.
    let signature = sign_hex(&server, &format!("r-1run_job{params}{result}"));
    let body = json!({
        "rpc_id": "r-1",
        "method_name": "run_job",
        "pubkey": server_pub,
        "signature": signature,
        "topic": "builds",
        "status": "done",
        "result": result,
        "params": params,
    });
    let text = body.to_string();
    assert_eq!(cli(&["verify-return", &server_pub, &text]).0, 0);
    assert_eq!(
        cli(&["verify-return", &server_pub, &text, "--params", params]).0,
        0
    );
    // The uncompressed form of the same server key is the same key.
    let uncompressed = pub_hex(server.verifying_key(), false);
    assert_eq!(cli(&["verify-return", &uncompressed, &text]).0, 0);

    let mut changed = body.clone();
    changed["result"] = json!(result.replace("j-1", "j-2"));
    assert_eq!(
        cli(&["verify-return", &server_pub, &changed.to_string()]).0,
        1
    );
    let mut changed = body.clone();
    changed["params"] = json!(params.replace("print(1)", "print(2)"));
    assert_eq!(
        cli(&["verify-return", &server_pub, &changed.to_string()]).0,
        1
    );
    // The caller kept other params than the body says: refused.
    assert_eq!(
        cli(&["verify-return", &server_pub, &text, "--params", "[]"]).0,
        1
    );
    // Another server's key.
    let other = pub_hex(key([0x22; 32]).verifying_key(), true);
    assert_eq!(cli(&["verify-return", &other, &text]).0, 1);
}

#[test]
fn python_unit_tests_pass() {
    let output = python(&["-m", "unittest", "test_hero_client"]);
    assert!(
        output.status.success(),
        "python3 -m unittest test_hero_client failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The SDK against a real server: Python signs an `rpc_in`, the server runs it and
/// POSTs the signed result to the SDK's example receiver, which verifies it with the
/// server's public key and keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_and_receiver_round_trip_through_a_real_server() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use hero_supervisor::config::ServeConfig;
    use hero_supervisor::server;
    use hero_supervisor::service::SupervisorConfig;

    // No runner pools: `create_job` and `whoami` need none.
    let mut supervisor = SupervisorConfig::with_builtin_runners();
    supervisor.pools.clear();
    let server = server::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        supervisor,
        ..ServeConfig::default()
    })
    .await
    .expect("start the server");
    let url = format!("http://{}", server.addr());
    let driver = |script: String| {
        let sdk = sdk_dir();
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let code = format!(
                    "import json, sys\nsys.path.insert(0, {sdk:?})\nfrom hero_client import *\n\
                     client = Client({url:?})\nkey = PrivateKey.from_hex('11' * 32)\n{script}"
                );
                python(&["-c", &code])
            })
            .await
            .unwrap()
        }
    };
    let info = driver("print(json.dumps(client.call('server_info', [])))".into()).await;
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let server_pubkey = info["pubkey"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("returns.jsonl");
    let mut receiver = Command::new("python3")
        .arg(sdk_dir().join("return_receiver.py"))
        .arg(&server_pubkey)
        .arg(&out_file)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the receiver");
    let mut first = String::new();
    BufReader::new(receiver.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = first
        .trim()
        .strip_prefix("listening on ")
        .expect("the port line");
    let return_url = format!("http://127.0.0.1:{port}/returns");

    // Synchronous: the call acts as the Python key.
    let who =
        driver("print(json.dumps(client.rpc_in(key, 'py-1', 'whoami', [], async_=False)))".into())
            .await;
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    let expected_key =
        String::from_utf8(python(&["hero_client.py", "pubkey", &"11".repeat(32)]).stdout).unwrap();
    assert_eq!(who, json!(expected_key.trim()));

    // Asynchronous, delivered to the receiver.
    let submit = format!(
        "print(json.dumps(client.rpc_in(key, 'py-2', 'create_job', \
         [{{'script': '1', 'script_type': 'SAL'}}], return_url={return_url:?}, return_topic='t')))"
    );
    let accepted = driver(submit).await;
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let accepted: Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!(accepted["rpc_id"], json!("py-2"));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        if let Ok(text) = std::fs::read_to_string(&out_file)
            && let Some(line) = text.lines().next()
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver kept no result"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = receiver.kill();
    let _ = receiver.wait();
    let body: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(body["rpc_id"], json!("py-2"));
    assert_eq!(body["topic"], json!("t"));
    // The result is the job id create_job answered, as JSON text; the job exists.
    let job_id: String = serde_json::from_str(body["result"].as_str().unwrap()).unwrap();
    let job = server
        .supervisor()
        .get_job(job_id.parse().unwrap())
        .await
        .expect("the job the call created");
    assert_eq!(
        job.caller_id,
        expected_key.trim(),
        "created as the Python key"
    );
    server.stop().await;
}
