//! A signed call's stored state, and the `rpc_return` built from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::key::ServerKey;

/// How many delivery attempts a record keeps (the newest); `attempt_count` counts all.
pub const KEPT_ATTEMPTS: usize = 20;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Accepted, not started yet.
    Pending,
    /// Its method is running.
    Running,
    /// Its method answered a result.
    Done,
    /// Its method answered an error (or the call was killed or interrupted).
    Error,
}

impl CallStatus {
    /// `Done` or `Error`.
    pub fn is_terminal(self) -> bool {
        matches!(self, CallStatus::Done | CallStatus::Error)
    }
}

/// Where the call's result delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// No `return_url`: nothing to deliver.
    None,
    /// Waiting for the result, or in the outbox.
    Pending,
    /// A POST was answered 2xx.
    Delivered,
    /// Attempts failed for longer than the delivery window; no more are made.
    Undeliverable,
}

/// One POST of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The HTTP status it got, if any.
    pub http_status: Option<u16>,
    /// What went wrong (`null` on a 2xx).
    pub error: Option<String>,
}

/// A call as stored (one per `(pubkey, rpc_id)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The caller's id for the call.
    pub rpc_id: String,
    /// The caller's key, canonical (hex of the compressed SEC1 form).
    pub pubkey: String,
    /// The method called.
    pub method_name: String,
    /// Its params as the caller sent them (JSON text; ciphertext hex when encrypted).
    pub params: String,
    /// Where the result goes.
    pub return_url: Option<String>,
    /// The caller's label for the result.
    pub return_topic: Option<String>,
    /// `ecies-secp256k1-aes256gcm` when params and result are encrypted.
    pub encryption: Option<String>,
    /// Where the call is.
    pub status: CallStatus,
    /// The result as JSON text once terminal: the method's result, or
    /// `{"error":{"code","message","data"}}`.
    pub result: Option<String>,
    /// The supervisor job the call runs, when it runs one (`run_job`): what lets
    /// another instance finish the call after this one died.
    pub job_id: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Where delivery is.
    pub delivery: Delivery,
    /// The newest delivery attempts (at most [`KEPT_ATTEMPTS`]).
    pub attempts: Vec<Attempt>,
    /// Every delivery attempt made.
    pub attempt_count: u32,
}

impl CallRecord {
    /// A call just accepted: `pending`, nothing to deliver yet, no attempts.
    pub fn new(
        rpc_id: String,
        pubkey: String,
        method_name: String,
        params: String,
        now: DateTime<Utc>,
    ) -> Self {
        CallRecord {
            rpc_id,
            pubkey,
            method_name,
            params,
            return_url: None,
            return_topic: None,
            encryption: None,
            status: CallStatus::Pending,
            result: None,
            job_id: None,
            created_at: now,
            updated_at: now,
            delivery: Delivery::None,
            attempts: Vec::new(),
            attempt_count: 0,
        }
    }

    /// The record's store key: `<pubkey>:<rpc_id>` (the pubkey has a fixed length, so
    /// this cannot collide).
    pub fn key(&self) -> String {
        record_key(&self.pubkey, &self.rpc_id)
    }

    /// Records `attempt`, keeping the newest [`KEPT_ATTEMPTS`].
    pub fn push_attempt(&mut self, attempt: Attempt) {
        self.attempt_count = self.attempt_count.saturating_add(1);
        self.attempts.push(attempt);
        if self.attempts.len() > KEPT_ATTEMPTS {
            let extra = self.attempts.len() - KEPT_ATTEMPTS;
            self.attempts.drain(..extra);
        }
    }

    /// Ends the call with `result` (JSON text) and `status`.
    pub fn finish(&mut self, status: CallStatus, result: String, now: DateTime<Utc>) {
        self.status = status;
        self.result = Some(result);
        self.updated_at = now;
    }

    /// The `rpc_return` body, signed by `key`; `None` until the call ended.
    pub fn rpc_return(&self, key: &ServerKey) -> Option<RpcReturn> {
        let result = self.result.clone()?;
        let signed = format!(
            "{}{}{}{}",
            self.rpc_id, self.method_name, self.params, result
        );
        Some(RpcReturn {
            rpc_id: self.rpc_id.clone(),
            method_name: self.method_name.clone(),
            params: self.params.clone(),
            pubkey: key.public_hex().to_string(),
            signature: key.sign_hex(signed.as_bytes()),
            topic: self.return_topic.clone().unwrap_or_default(),
            status: self.status,
            result,
        })
    }
}

/// The key of call `rpc_id` by `pubkey`.
pub fn record_key(pubkey: &str, rpc_id: &str) -> String {
    format!("{pubkey}:{rpc_id}")
}

/// What is POSTed to `return_url`: the result, signed by the server's key over
/// `rpc_id + method_name + params + result` (UTF-8 bytes of the concatenation; SHA-256;
/// compact `r||s` hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcReturn {
    /// The caller's id for the call.
    pub rpc_id: String,
    /// The method called.
    pub method_name: String,
    /// The params as the caller sent them (part of what is signed).
    pub params: String,
    /// The **server's** public key.
    pub pubkey: String,
    /// The server's signature.
    pub signature: String,
    /// The caller's `return_topic` (empty when none).
    pub topic: String,
    /// `done` or `error`.
    pub status: CallStatus,
    /// The result as JSON text (see [`CallRecord::result`]).
    pub result: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::signature::Verifier;
    use k256::ecdsa::{Signature, VerifyingKey};

    fn record() -> CallRecord {
        let mut rec = CallRecord::new(
            "r1".into(),
            "02ab".into(),
            "run_job".into(),
            r#"["1+1","rhai"]"#.into(),
            Utc::now(),
        );
        rec.return_topic = Some("t".into());
        rec
    }

    #[test]
    fn the_return_is_signed_over_the_documented_concatenation() {
        let key = ServerKey::generate();
        let mut rec = record();
        assert!(rec.rpc_return(&key).is_none(), "nothing to return yet");
        rec.finish(CallStatus::Done, "\"2\"".into(), Utc::now());
        let ret = rec.rpc_return(&key).unwrap();
        let verifying = VerifyingKey::from_sec1_bytes(&hex::decode(&ret.pubkey).unwrap()).unwrap();
        let sig = Signature::from_slice(&hex::decode(&ret.signature).unwrap()).unwrap();
        let signed = format!("r1run_job{}\"2\"", r#"["1+1","rhai"]"#);
        verifying.verify(signed.as_bytes(), &sig).unwrap();
        assert!(verifying.verify(b"r1run_job", &sig).is_err());
        assert_eq!(ret.topic, "t");
    }

    #[test]
    fn attempts_are_bounded() {
        let mut rec = record();
        for i in 0..(KEPT_ATTEMPTS + 5) {
            rec.push_attempt(Attempt {
                at: Utc::now(),
                http_status: Some(500 + i as u16),
                error: None,
            });
        }
        assert_eq!(rec.attempts.len(), KEPT_ATTEMPTS);
        assert_eq!(rec.attempt_count as usize, KEPT_ATTEMPTS + 5);
        assert_eq!(
            rec.attempts[0].http_status,
            Some(505),
            "the oldest went first"
        );
    }
}
