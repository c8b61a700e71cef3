//! The signed-call methods (`rpc_in`, `rpc_check`, `rpc_kill`, `server_info`; module
//! [`crate::calls`]) as a second trait beside [`super::api`]: they run the first
//! trait's methods, so they are served by a module built around it.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::calls::{Attempt, CallRecord, CallStatus, Delivery};

/// `rpc_in`'s one params object (COORDINATION.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcInParams {
    /// The caller's id for the call, unique per caller key (1 to 128 characters).
    pub rpc_id: String,
    /// The served method to call.
    pub method_name: String,
    /// Its params as JSON text (hex ciphertext when `encryption` is set).
    pub params: String,
    /// The caller's secp256k1 public key (hex SEC1).
    pub pubkey: String,
    /// The caller's signature of `rpc_id + method_name + params + return_url +
    /// return_topic` (absent fields as empty strings): ECDSA over SHA-256, compact
    /// `r||s` hex.
    pub signature: String,
    /// `false` (default): answer the method's result; `true`: answer `{rpc_id, status}`
    /// at once and deliver the result later.
    #[serde(default, rename = "async")]
    pub is_async: bool,
    /// Where the signed result is POSTed (must be allowed by the server's list).
    #[serde(default)]
    pub return_url: Option<String>,
    /// A label sent back with the result.
    #[serde(default)]
    pub return_topic: Option<String>,
    /// `ecies-secp256k1-aes256gcm`: `params` is encrypted to the server's key and the
    /// result is encrypted to the caller's.
    #[serde(default)]
    pub encryption: Option<String>,
}

/// `rpc_check`'s and `rpc_kill`'s one params object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcRefParams {
    /// The call.
    pub rpc_id: String,
    /// The caller's key (the one that signed the `rpc_in`).
    pub pubkey: String,
    /// The caller's signature of `rpc_id`.
    pub signature: String,
}

/// `rpc_in`'s answer for an asynchronous call (or a replay of an unfinished one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcAccepted {
    /// The call.
    pub rpc_id: String,
    /// Where it is.
    pub status: CallStatus,
}

/// A call as `rpc_check` and `rpc_kill` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    /// The call.
    pub rpc_id: String,
    /// The method called.
    pub method_name: String,
    /// `pending`, `running`, `done` or `error`.
    pub status: CallStatus,
    /// Once ended: the method's result, or `{"error": {code, message, data}}`.
    #[serde(default)]
    pub result: Option<Value>,
    /// The supervisor job the call runs, if any.
    #[serde(default)]
    pub job_id: Option<String>,
    /// `none`, `pending`, `delivered` or `undeliverable`.
    pub delivery: Delivery,
    /// The newest delivery attempts.
    pub attempts: Vec<Attempt>,
    /// Every delivery attempt made.
    pub attempt_count: u32,
    /// When the call was accepted (RFC 3339).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<CallRecord> for CallState {
    fn from(r: CallRecord) -> Self {
        CallState {
            result: r
                .result
                .as_deref()
                .map(|text| serde_json::from_str(text).unwrap_or(Value::String(text.into()))),
            rpc_id: r.rpc_id,
            method_name: r.method_name,
            status: r.status,
            job_id: r.job_id,
            delivery: r.delivery,
            attempts: r.attempts,
            attempt_count: r.attempt_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `server_info`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The key that signs every `rpc_return` (hex, compressed SEC1).
    pub pubkey: String,
    /// The supervisor's version.
    pub version: String,
    /// The encryption schemes `rpc_in` accepts.
    pub encryption: Vec<String>,
}

/// Signed asynchronous calls.
#[rpc(server, client)]
pub trait CallsApi {
    /// Runs `method_name` with `params` as the actor of `pubkey`, once per
    /// `(pubkey, rpc_id)`: `{params: RpcInParams}`.
    #[method(name = "rpc_in", with_extensions)]
    async fn rpc_in(&self, params: RpcInParams) -> RpcResult<Box<RawValue>>;

    /// The state of the caller's call: `{params: {rpc_id, pubkey, signature}}`.
    #[method(name = "rpc_check")]
    async fn rpc_check(&self, params: RpcRefParams) -> RpcResult<CallState>;

    /// Stops the caller's running call; answers its state.
    #[method(name = "rpc_kill")]
    async fn rpc_kill(&self, params: RpcRefParams) -> RpcResult<CallState>;

    /// The server's public key (what signs results) and version.
    #[method(name = "server_info")]
    async fn server_info(&self) -> RpcResult<ServerInfo>;
}
