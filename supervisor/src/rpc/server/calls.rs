//! `rpc_in`, `rpc_check`, `rpc_kill` and `server_info` on [`Calls`]: the checks a call
//! passes before anything runs (signature, sizes, method, `return_url`), the one claim
//! of its id, and the answers.

use chrono::Utc;
use jsonrpsee::Extensions;
use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::value::RawValue;

use super::super::auth::verify_signed;
use super::super::calls_api::{
    CallState, CallsApiServer, RpcAccepted, RpcInParams, RpcRefParams, ServerInfo,
};
use super::super::error::{internal, invalid_params, not_found_with_code};
use crate::calls::{
    CallRecord, CallStatus, CallStoreError, Calls, ENCRYPTION_SCHEME, caller_extensions,
    decrypt_params, record::record_key,
};
use crate::service::SupervisorError;

/// The longest `rpc_id`.
const MAX_RPC_ID_CHARS: usize = 128;
/// The longest `return_topic`.
const MAX_TOPIC_CHARS: usize = 256;
/// The longest `return_url`.
const MAX_URL_CHARS: usize = 2048;

/// The handler of the call methods.
#[derive(Debug, Clone)]
pub(crate) struct CallsHandler {
    pub(crate) calls: Calls,
}

fn storage(e: CallStoreError) -> ErrorObjectOwned {
    match e {
        CallStoreError::Full(n) => super::super::error::conflict(format!(
            "the server holds {n} calls, its limit; try again later"
        )),
        other => super::super::error::to_rpc_error(SupervisorError::Storage(other.to_string())),
    }
}

fn raw(text: String) -> RpcResult<Box<RawValue>> {
    RawValue::from_string(text).map_err(|e| internal(format!("result is not JSON: {e}")))
}

fn accepted(record: &CallRecord) -> RpcResult<Box<RawValue>> {
    let answer = RpcAccepted {
        rpc_id: record.rpc_id.clone(),
        status: record.status,
    };
    raw(serde_json::to_string(&answer).unwrap_or_default())
}

/// The answer of a synchronous call that ended: its result, or its error (an encrypted
/// call answers the ciphertext of either).
fn answer_of(record: &CallRecord) -> RpcResult<Box<RawValue>> {
    let Some(text) = record.result.clone() else {
        return accepted(record);
    };
    if record.status == CallStatus::Error && record.encryption.is_none() {
        #[derive(serde::Deserialize)]
        struct Wrapped {
            error: ErrorObjectOwned,
        }
        return match serde_json::from_str::<Wrapped>(&text) {
            Ok(w) => Err(w.error),
            Err(_) => Err(internal("the call failed")),
        };
    }
    raw(text)
}

fn check_text(name: &str, value: &str, max: usize) -> RpcResult<()> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(invalid_params(format!(
            "{name} must be 1 to {max} characters, without control characters"
        )));
    }
    Ok(())
}

impl CallsHandler {
    /// The caller's canonical key when `signature` signs `rpc_id` (rpc_check, rpc_kill).
    fn verify_ref(params: &RpcRefParams) -> RpcResult<String> {
        check_text("rpc_id", &params.rpc_id, MAX_RPC_ID_CHARS)?;
        verify_signed(&params.pubkey, params.rpc_id.as_bytes(), &params.signature)
    }

    async fn record_of(&self, params: &RpcRefParams) -> RpcResult<CallRecord> {
        let pubkey = Self::verify_ref(params)?;
        self.calls
            .store()
            .get(&record_key(&pubkey, &params.rpc_id))
            .await
            .map_err(storage)?
            .ok_or_else(|| {
                not_found_with_code(
                    "call_not_found",
                    format!("no call {} by this key", params.rpc_id),
                )
            })
    }

    /// Every check of `rpc_in` that needs no store: sizes, names, the URL, the
    /// signature. Returns the caller's canonical key.
    fn check(&self, p: &RpcInParams) -> RpcResult<String> {
        let config = self.calls.config();
        check_text("rpc_id", &p.rpc_id, MAX_RPC_ID_CHARS)?;
        if p.params.len() > config.max_params_bytes {
            return Err(invalid_params(format!(
                "params is {} bytes; the limit is {}",
                p.params.len(),
                config.max_params_bytes
            )));
        }
        if let Some(topic) = &p.return_topic {
            check_text("return_topic", topic, MAX_TOPIC_CHARS)?;
        }
        if let Some(url) = &p.return_url {
            check_text("return_url", url, MAX_URL_CHARS)?;
            config.return_hosts.check(url).map_err(invalid_params)?;
        }
        match p.encryption.as_deref() {
            None => {
                serde_json::from_str::<serde_json::Value>(&p.params)
                    .map_err(|e| invalid_params(format!("params is not JSON text: {e}")))?;
            }
            Some(ENCRYPTION_SCHEME) => {
                decrypt_params(self.calls.key(), &p.params)?;
            }
            Some(other) => {
                return Err(invalid_params(format!(
                    "encryption {other:?} is not supported by this server (server_info lists what is)"
                )));
            }
        }
        if !self.calls.callable(&p.method_name) {
            return Err(invalid_params(format!(
                "method {:?} is not served or cannot be called through rpc_in",
                p.method_name
            )));
        }
        let signed = format!(
            "{}{}{}{}{}",
            p.rpc_id,
            p.method_name,
            p.params,
            p.return_url.as_deref().unwrap_or_default(),
            p.return_topic.as_deref().unwrap_or_default()
        );
        verify_signed(&p.pubkey, signed.as_bytes(), &p.signature)
    }
}

#[async_trait]
impl CallsApiServer for CallsHandler {
    async fn rpc_in(&self, ext: &Extensions, p: RpcInParams) -> RpcResult<Box<RawValue>> {
        let pubkey = self.check(&p)?;
        let now = Utc::now();
        let mut record = CallRecord::new(p.rpc_id, pubkey.clone(), p.method_name, p.params, now);
        record.return_url = p.return_url;
        record.return_topic = p.return_topic;
        record.encryption = p.encryption;
        if let Some(existing) = self.calls.claim(&record).await.map_err(storage)? {
            // A replay: the first call's state, nothing run again.
            tracing::debug!(rpc_id = %existing.rpc_id, "rpc_in replayed");
            return if p.is_async || !existing.status.is_terminal() {
                accepted(&existing)
            } else {
                answer_of(&existing)
            };
        }
        let ext = caller_extensions(ext, &pubkey);
        if p.is_async {
            let answer = accepted(&record);
            self.calls.spawn(record, ext);
            answer
        } else {
            // On a task of its own: a caller that hangs up does not cut the call short
            // (it ends, is recorded and delivered as if the caller had waited).
            let calls = self.calls.clone();
            let done = tokio::spawn(async move { calls.run(record, ext).await })
                .await
                .map_err(|e| internal(format!("the call's task failed: {e}")))?;
            answer_of(&done)
        }
    }

    async fn rpc_check(&self, params: RpcRefParams) -> RpcResult<CallState> {
        Ok(self.record_of(&params).await?.into())
    }

    async fn rpc_kill(&self, params: RpcRefParams) -> RpcResult<CallState> {
        let record = self.record_of(&params).await?;
        let record = self.calls.kill(record).await.map_err(storage)?;
        Ok(record.into())
    }

    async fn server_info(&self) -> RpcResult<ServerInfo> {
        Ok(ServerInfo {
            pubkey: self.calls.key().public_hex().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            encryption: vec![ENCRYPTION_SCHEME.to_string()],
        })
    }
}
