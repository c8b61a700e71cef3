//! Calling a served method in-process: through jsonrpsee's [`Methods`], with the
//! caller's [`Extensions`] (grant, session, trace), exactly as a request on the wire
//! would run it, so that every check and every rule of the method applies.
//!
//! The signed calls (`calls/`, `rpc_in`) and the REST face (`rpc/rest.rs`) both call
//! methods this way; neither has a second copy of any method's logic.

use jsonrpsee::Extensions;
use jsonrpsee::core::server::{MethodCallback, Methods};
use jsonrpsee::types::{ErrorObjectOwned, Id, Params};
use serde::Deserialize;
use serde_json::value::RawValue;

/// How a method answered: its result as JSON text, or its error.
pub(crate) type Answer = Result<String, ErrorObjectOwned>;

#[derive(Deserialize)]
struct ResponseParts {
    result: Option<Box<RawValue>>,
    error: Option<ErrorObjectOwned>,
}

/// Calls served method `method` of `methods` with `params` (JSON text: an array, an
/// object, or empty for none) as the caller `ext` describes; an answer larger than
/// `max_response_bytes` is jsonrpsee's "response too big" error. `None` when `method` is
/// not a plain method call (unknown, a subscription or an unsubscription).
pub(crate) async fn call_method(
    methods: &Methods,
    method: &str,
    params: &str,
    ext: Extensions,
    max_response_bytes: usize,
) -> Option<Answer> {
    let params = params.trim();
    let params = Params::new((!params.is_empty()).then_some(params)).into_owned();
    let id = Id::Number(0);
    let response = match methods.method(method) {
        Some(MethodCallback::Async(cb)) => {
            (cb)(id, params, Default::default(), max_response_bytes, ext).await
        }
        Some(MethodCallback::Sync(cb)) => (cb)(id, params, max_response_bytes, ext),
        _ => return None,
    };
    let parts: ResponseParts = match serde_json::from_str(response.to_json().get()) {
        Ok(parts) => parts,
        Err(e) => {
            return Some(Err(super::error::internal(format!(
                "unreadable answer: {e}"
            ))));
        }
    };
    Some(match (parts.result, parts.error) {
        (_, Some(e)) => Err(e),
        (Some(result), None) => Ok(result.get().to_string()),
        (None, None) => Ok("null".into()),
    })
}

/// Whether `method` is a plain method call of `methods` (what [`call_method`] runs).
pub(crate) fn is_callable(methods: &Methods, method: &str) -> bool {
    matches!(
        methods.method(method),
        Some(MethodCallback::Async(_) | MethodCallback::Sync(_))
    )
}
