//! Authentication: a bearer token checked in front of the RPC service, and secp256k1
//! signature authentication of a WebSocket connection.
//!
//! # Bearer token
//! With a token configured, every HTTP request and every WebSocket upgrade must carry
//! `Authorization: Bearer <token>` (compared in constant time); otherwise HTTP 401 and
//! the upgrade is refused. [`BearerAuthLayer`] does this before jsonrpsee sees the request.
//!
//! A browser cannot set a header on a WebSocket, so an upgrade may carry the token as a
//! subprotocol instead: `Sec-WebSocket-Protocol: hero, hero-bearer.<hex of the token's
//! UTF-8 bytes>` (JavaScript: `new WebSocket(url, ["hero", "hero-bearer." + hex])`).
//! The layer takes the `hero-bearer.` entry out of the header before anything else sees
//! it (as it removes `Authorization`), and an upgrade that offered `hero` is answered
//! with that subprotocol (browsers refuse a handshake that selects none of the offered
//! ones). The token never goes into a URL, where logs and the browser history keep it.
//!
//! # Signature authentication (`fetch_nonce` / `authenticate` / `whoami`)
//! 1. `fetch_nonce(pubkey)` returns a fresh nonce, e.g.
//!    `"hero-auth:4f1c...e9"` (`hero-auth:` then 64 lowercase hex digits). It is bound
//!    to `pubkey`, single use, and expires after [`DEFAULT_NONCE_TTL`].
//! 2. The client signs **the nonce's UTF-8 bytes, exactly as returned** (no prefix, no
//!    trailing newline) with ECDSA over secp256k1, message digest SHA-256: the signed
//!    32 bytes are `SHA-256(nonce.as_bytes())`. The signature is sent as the hex of its
//!    64-byte compact form `r || s` (big-endian, 32 bytes each); high-S signatures are
//!    accepted (normalised). `pubkey` is the hex of a SEC1 public key, compressed
//!    (33 bytes, `02`/`03` prefix) or uncompressed (65 bytes, `04` prefix).
//! 3. `authenticate(pubkey, signature, nonce)` returns `true`; from then on the
//!    connection acts as the key: `whoami` returns it (hex of the compressed SEC1 form),
//!    and jobs created on that connection carry it as `caller_id`.
//!
//! ```
//! use k256::ecdsa::{Signature, SigningKey, signature::Signer};
//! let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
//! let pubkey = hex::encode(key.verifying_key().to_sec1_bytes()); // "02..." or "03..."
//! let nonce = "hero-auth:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
//! // k256 hashes the message with SHA-256 before signing.
//! let signature: Signature = key.sign(nonce.as_bytes());
//! let signature_hex = hex::encode(signature.to_bytes()); // 128 hex digits
//! assert_eq!(signature_hex.len(), 128);
//! # let _ = pubkey;
//! ```
//!
//! Identity lives in the connection's [`Session`]: a WebSocket connection keeps it until it
//! closes; over plain HTTP every request is its own session, so signature authentication is
//! only useful over WebSocket.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::header::{
    AUTHORIZATION, HeaderMap, HeaderValue, SEC_WEBSOCKET_PROTOCOL, UPGRADE, WWW_AUTHENTICATE,
};
use http::{Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use jsonrpsee::types::ErrorObjectOwned;
use k256::ecdsa::signature::Verifier;
use k256::ecdsa::{Signature, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::error::{invalid_params, unauthorized};
use crate::clock::Clock;
use crate::trace::TraceParent;

/// How long a nonce stays valid. Default 5 minutes: enough for a human-driven wallet.
pub const DEFAULT_NONCE_TTL: Duration = Duration::from_secs(5 * 60);
/// Nonces pending at once; beyond it the oldest is dropped, so a flood of `fetch_nonce`
/// costs bounded memory. Default 10,000.
pub const DEFAULT_MAX_PENDING_NONCES: usize = 10_000;
/// Prefix of every nonce: a signature over a nonce can't be replayed as anything else.
pub const NONCE_PREFIX: &str = "hero-auth:";

/// Prefix of the WebSocket subprotocol that carries a bearer token (module docs):
/// `hero-bearer.` then the hex of the token's UTF-8 bytes.
pub const BEARER_PROTOCOL_PREFIX: &str = "hero-bearer.";
/// The subprotocol an upgrade that offers it is answered with (it names this server's
/// WebSocket, whatever the path; it changes nothing in what is sent).
pub const WS_PROTOCOL: &str = "hero";

/// The W3C trace-context request header.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The identity of one connection (WebSocket) or one request (HTTP).
///
/// [`BearerAuthLayer`] puts a fresh one into every HTTP request's extensions; jsonrpsee
/// hands a WebSocket upgrade request's extensions to every call on that connection, so
/// the session lives exactly as long as the connection.
#[derive(Debug, Clone, Default)]
pub struct Session {
    // A std Mutex: nothing awaits while it is held.
    identity: Arc<Mutex<Option<String>>>,
}

impl Session {
    /// The authenticated public key, if any.
    pub fn identity(&self) -> Option<String> {
        self.identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_identity(&self, pubkey: String) {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(pubkey);
    }
}

/// What a bearer token lets its holder act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A server admin: every operation (the global `--auth-token` grants this).
    Admin,
    /// The actor with this id: its roles in each context apply.
    Actor(u32),
}

/// One accepted bearer token, kept as its SHA-256 digest (the token itself is never
/// stored, logged or compared in the clear), and what it grants.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    digest: [u8; 32],
    /// What the token's holder acts as.
    pub grant: Grant,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl TokenGrant {
    /// Accepts `token` (not empty: an empty token would be anyone's).
    pub fn from_token(token: &str, grant: Grant) -> Option<TokenGrant> {
        (!token.is_empty()).then(|| TokenGrant {
            digest: Sha256::digest(token.as_bytes()).into(),
            grant,
        })
    }

    /// Accepts the token whose SHA-256 is `hex` (64 hex digits), so a config file need
    /// not hold the token itself.
    pub fn from_sha256_hex(hex: &str, grant: Grant) -> Option<TokenGrant> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex.trim(), &mut digest).ok()?;
        Some(TokenGrant { digest, grant })
    }
}

/// Tower layer: when tokens are configured, every HTTP request and WebSocket upgrade
/// needs `Authorization: Bearer <token>` of one of them (HTTP 401 otherwise); the
/// request then carries the token's [`Grant`] in its extensions, and the header is
/// removed so that nothing later (jsonrpsee's request trace included) can log it. Every
/// request also gets a fresh [`Session`], and its W3C `traceparent`, if valid.
#[derive(Clone)]
pub struct BearerAuthLayer {
    tokens: Arc<[TokenGrant]>,
}

impl std::fmt::Debug for BearerAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl BearerAuthLayer {
    /// Requires `token` (a server admin's) when it is `Some`.
    pub fn new(token: Option<&str>) -> Self {
        let tokens: Vec<_> = token
            .and_then(|t| TokenGrant::from_token(t, Grant::Admin))
            .into_iter()
            .collect();
        BearerAuthLayer::with_grants(tokens)
    }

    /// Requires one of `tokens` when there is any; open when empty.
    pub fn with_grants(tokens: Vec<TokenGrant>) -> Self {
        BearerAuthLayer {
            tokens: tokens.into(),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`BearerAuthLayer`].
#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    tokens: Arc<[TokenGrant]>,
}

impl<S> std::fmt::Debug for BearerAuth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// The grant of the token in `header` (`Bearer <token>`, scheme case-insensitive).
fn bearer_grant(header: Option<&HeaderValue>, tokens: &[TokenGrant]) -> Option<Grant> {
    let value = header?.as_bytes();
    let (scheme, given) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    token_grant(given, tokens)
}

/// The grant of token `given`. Its digest is compared with every configured one in
/// constant time, and all of them are compared, so the time taken says nothing about
/// which token nearly matched.
fn token_grant(given: &[u8], tokens: &[TokenGrant]) -> Option<Grant> {
    if given.is_empty() {
        return None;
    }
    let digest: [u8; 32] = Sha256::digest(given).into();
    let mut found = None;
    for t in tokens {
        if bool::from(t.digest.ct_eq(&digest)) && found.is_none() {
            found = Some(t.grant);
        }
    }
    found
}

/// What the subprotocols of a request offered: the token of its first
/// `hero-bearer.<hex>` entry (`Some(empty)` when that is not hex), and whether it
/// offered [`WS_PROTOCOL`]. Every `hero-bearer.` entry is removed from the headers.
fn take_protocol_token(headers: &mut HeaderMap) -> (Option<Vec<u8>>, bool) {
    if !headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
        return (None, false);
    }
    let mut token = None;
    let mut kept: Vec<String> = Vec::new();
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.strip_prefix(BEARER_PROTOCOL_PREFIX) {
                Some(hex_token) => {
                    if token.is_none() {
                        token = Some(hex::decode(hex_token).unwrap_or_default());
                    }
                }
                None => kept.push(entry.to_owned()),
            }
        }
    }
    let offered_hero = kept.iter().any(|p| p == WS_PROTOCOL);
    headers.remove(SEC_WEBSOCKET_PROTOCOL);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join(", "))
    {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    (token, offered_hero)
}

/// Whether `headers` ask for a WebSocket upgrade.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// The JSON 401 (`{"error": {"code": "unauthorized", ..}}`), with `WWW-Authenticate`.
fn unauthorized_response() -> Response<HttpBody> {
    let mut resp = super::rest::unauthorized_response();
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl<S, B> Service<Request<B>> for BearerAuth<S>
where
    S: Service<Request<B>, Response = Response<HttpBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let upgrade = is_websocket_upgrade(req.headers());
        // Taken out whatever happens next: no later layer or log line sees the token.
        let (protocol_token, offered_hero) = take_protocol_token(req.headers_mut());
        if !self.tokens.is_empty() {
            let header = req.headers().get(AUTHORIZATION);
            let grant = if header.is_none() && upgrade {
                protocol_token
                    .as_deref()
                    .and_then(|t| token_grant(t, &self.tokens))
            } else {
                bearer_grant(header, &self.tokens)
            };
            let Some(grant) = grant else {
                tracing::debug!(uri = %req.uri(), "request refused: missing or wrong bearer token");
                return Box::pin(async { Ok(unauthorized_response()) });
            };
            req.extensions_mut().insert(grant);
        }
        // Checked: no later layer or log line gets to see the secret.
        req.headers_mut().remove(AUTHORIZATION);
        req.extensions_mut().insert(Session::default());
        // W3C trace context: the jobs this request (or, for a WebSocket upgrade, this
        // connection) creates join the caller's trace. An invalid header is ignored.
        if let Some(trace) = req
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
        {
            req.extensions_mut().insert(trace);
        }
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut resp = answer.await?;
            if upgrade
                && offered_hero
                && resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && !resp.headers().contains_key(SEC_WEBSOCKET_PROTOCOL)
            {
                resp.headers_mut().insert(
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(WS_PROTOCOL),
                );
            }
            Ok(resp)
        })
    }
}

/// The canonical text of a public key (hex of the compressed SEC1 form), or -32602.
pub(crate) fn canonical_pubkey(pubkey: &str) -> Result<String, ErrorObjectOwned> {
    parse_pubkey(pubkey).map(|(_, canonical)| canonical)
}

/// A parsed public key and its canonical text (hex of the compressed SEC1 form).
fn parse_pubkey(pubkey: &str) -> Result<(VerifyingKey, String), ErrorObjectOwned> {
    let bytes = hex::decode(pubkey.trim())
        .map_err(|_| invalid_params("pubkey must be hex of a SEC1 public key"))?;
    let key = VerifyingKey::from_sec1_bytes(&bytes)
        .map_err(|_| invalid_params("pubkey is not a valid secp256k1 public key"))?;
    let canonical = hex::encode(key.to_encoded_point(true).as_bytes());
    Ok((key, canonical))
}

/// A compact `r||s` signature from its hex, high-S normalised, or -32602.
fn parse_signature(signature: &str) -> Result<Signature, ErrorObjectOwned> {
    let bytes = hex::decode(signature.trim())
        .map_err(|_| invalid_params("signature must be hex of a 64-byte r||s signature"))?;
    let sig = Signature::from_slice(&bytes)
        .map_err(|_| invalid_params("signature must be hex of a 64-byte r||s signature"))?;
    Ok(sig.normalize_s().unwrap_or(sig))
}

/// Checks `signature` (hex of compact `r||s`) over `message` (SHA-256 of its bytes, as
/// for `authenticate`) by `pubkey`. Returns the key's canonical text; -32602 for a
/// malformed key or signature, -32005 when the signature does not verify.
pub(crate) fn verify_signed(
    pubkey: &str,
    message: &[u8],
    signature: &str,
) -> Result<String, ErrorObjectOwned> {
    let (key, canonical) = parse_pubkey(pubkey)?;
    let sig = parse_signature(signature)?;
    key.verify(message, &sig)
        .map_err(|_| unauthorized("signature does not verify"))?;
    Ok(canonical)
}

/// A nonce waiting for its `authenticate`.
#[derive(Debug)]
struct PendingNonce {
    /// Issue order: the smallest is dropped first when the store is full.
    seq: u64,
    pubkey: String,
    expires_at: DateTime<Utc>,
}

/// Issued nonces: single use, bound to a public key, expiring, bounded in number.
#[derive(Debug)]
pub struct NonceStore {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    max_pending: usize,
    // A std Mutex: nothing awaits while it is held.
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    next_seq: u64,
    by_nonce: HashMap<String, PendingNonce>,
}

impl NonceStore {
    /// A store whose nonces live `ttl` on `clock`, at most `max_pending` at once.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration, max_pending: usize) -> Self {
        NonceStore {
            clock,
            ttl,
            max_pending: max_pending.max(1),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// A fresh nonce for `pubkey` (validated first).
    pub fn issue(&self, pubkey: &str) -> Result<String, ErrorObjectOwned> {
        let (_, canonical) = parse_pubkey(pubkey)?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let nonce = format!("{NONCE_PREFIX}{}", hex::encode(random));
        let now = self.clock.now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = now
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.by_nonce.retain(|_, p| p.expires_at > now);
        while pending.by_nonce.len() >= self.max_pending {
            let Some(oldest) = pending
                .by_nonce
                .iter()
                .min_by_key(|(_, p)| p.seq)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            pending.by_nonce.remove(&oldest);
        }
        let seq = pending.next_seq;
        pending.next_seq = seq.wrapping_add(1);
        pending.by_nonce.insert(
            nonce.clone(),
            PendingNonce {
                seq,
                pubkey: canonical,
                expires_at,
            },
        );
        Ok(nonce)
    }

    /// Checks `signature` over `nonce` by `pubkey` and consumes the nonce (whatever the
    /// outcome: a nonce gets one try). Returns the canonical public key.
    pub fn verify(
        &self,
        pubkey: &str,
        signature: &str,
        nonce: &str,
    ) -> Result<String, ErrorObjectOwned> {
        let (key, canonical) = parse_pubkey(pubkey)?;
        let sig = parse_signature(signature)?;
        let issued = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_nonce
            .remove(nonce);
        let Some(issued) = issued else {
            return Err(unauthorized("unknown or already used nonce"));
        };
        if issued.expires_at <= self.clock.now() {
            return Err(unauthorized("nonce expired"));
        }
        if issued.pubkey != canonical {
            return Err(unauthorized("nonce was issued for another key"));
        }
        key.verify(nonce.as_bytes(), &sig)
            .map_err(|_| unauthorized("signature does not verify"))?;
        Ok(canonical)
    }
}

/// Marks `session` as `pubkey`.
pub(crate) fn authenticate_session(session: &Session, pubkey: String) {
    session.set_identity(pubkey);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use k256::ecdsa::SigningKey;
    use k256::ecdsa::signature::Signer;

    fn store(clock: Arc<ManualClock>) -> NonceStore {
        NonceStore::new(clock, Duration::from_secs(60), 3)
    }

    #[test]
    fn bearer_header_forms_and_grants() {
        let tokens = [
            TokenGrant::from_token("s3cret", Grant::Admin).unwrap(),
            TokenGrant::from_sha256_hex(&hex::encode(Sha256::digest(b"actor-7")), Grant::Actor(7))
                .unwrap(),
        ];
        let check = |h: &str| bearer_grant(Some(&HeaderValue::from_str(h).unwrap()), &tokens);
        assert_eq!(check("Bearer s3cret"), Some(Grant::Admin));
        assert_eq!(check("bearer s3cret"), Some(Grant::Admin));
        assert_eq!(check("Bearer actor-7"), Some(Grant::Actor(7)));
        for refused in [
            "Bearer s3cre",
            "Bearer s3crett",
            "Basic s3cret",
            "Bearer",
            "Bearer ",
        ] {
            assert_eq!(check(refused), None, "{refused:?}");
        }
        assert_eq!(bearer_grant(None, &tokens), None);
        assert!(TokenGrant::from_token("", Grant::Admin).is_none());
        assert!(TokenGrant::from_sha256_hex("abc", Grant::Admin).is_none());
        assert!(!format!("{:?}", tokens[0]).contains("s3cret"));
    }

    #[test]
    fn the_bearer_subprotocol_is_taken_out_of_the_headers() {
        let tokens = [TokenGrant::from_token("s3cret", Grant::Admin).unwrap()];
        let mut headers = HeaderMap::new();
        let offered = format!("hero, {BEARER_PROTOCOL_PREFIX}{}", hex::encode("s3cret"));
        headers.insert(SEC_WEBSOCKET_PROTOCOL, offered.parse().unwrap());
        headers.append(SEC_WEBSOCKET_PROTOCOL, "other".parse().unwrap());
        let (token, hero) = take_protocol_token(&mut headers);
        assert!(hero);
        assert_eq!(token_grant(&token.unwrap(), &tokens), Some(Grant::Admin));
        assert_eq!(headers[SEC_WEBSOCKET_PROTOCOL], "hero, other");

        let mut headers = HeaderMap::new();
        let bad = format!("{BEARER_PROTOCOL_PREFIX}zz");
        headers.insert(SEC_WEBSOCKET_PROTOCOL, bad.parse().unwrap());
        let (token, hero) = take_protocol_token(&mut headers);
        assert!(!hero);
        assert_eq!(token_grant(&token.unwrap(), &tokens), None);
        assert!(!headers.contains_key(SEC_WEBSOCKET_PROTOCOL));
        assert_eq!(take_protocol_token(&mut HeaderMap::new()), (None, false));
    }

    #[test]
    fn nonce_round_trip_replay_expiry_and_bound() {
        let clock = Arc::new(ManualClock::default());
        let nonces = store(clock.clone());
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pubkey = hex::encode(key.verifying_key().to_encoded_point(false).as_bytes());
        let sign = |n: &str| {
            let s: Signature = key.sign(n.as_bytes());
            hex::encode(s.to_bytes())
        };
        let n = nonces.issue(&pubkey).unwrap();
        assert!(n.starts_with(NONCE_PREFIX));
        let who = nonces.verify(&pubkey, &sign(&n), &n).unwrap();
        assert_eq!(who.len(), 66);
        assert_eq!(
            nonces.verify(&pubkey, &sign(&n), &n).unwrap_err().code(),
            -32005
        );

        let n = nonces.issue(&pubkey).unwrap();
        clock.advance(chrono::Duration::seconds(61));
        assert_eq!(
            nonces.verify(&pubkey, &sign(&n), &n).unwrap_err().code(),
            -32005
        );

        let first = nonces.issue(&pubkey).unwrap();
        for _ in 0..3 {
            nonces.issue(&pubkey).unwrap();
        }
        assert_eq!(nonces.pending.lock().unwrap().by_nonce.len(), 3);
        assert!(nonces.verify(&pubkey, &sign(&first), &first).is_err());
        assert_eq!(nonces.issue("zz").unwrap_err().code(), -32602);
    }
}
