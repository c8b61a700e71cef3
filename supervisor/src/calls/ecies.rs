//! ECIES over secp256k1 with AES-256-GCM: a message only the holder of a secret key can
//! read, sealed with nothing but its public key.
//!
//! # Wire format
//!
//! The format of `eciespy` and `ecies-rs` in their default configuration, so either can
//! decrypt what [`encrypt`] produces and [`decrypt`] reads theirs:
//!
//! ```text
//! ephemeral public key   65 bytes  uncompressed SEC1 (0x04 || X || Y) of a fresh key e
//! nonce                  16 bytes  random
//! tag                    16 bytes  AES-GCM authentication tag
//! ciphertext             n bytes   as long as the plaintext
//! ```
//!
//! - Shared point `S = e * R` (`R` the recipient's public key), uncompressed SEC1, 65
//!   bytes: the full point, not only its x coordinate.
//! - Key: `HKDF-SHA256(salt = none, ikm = ephemeral_public || S, info = empty)`, 32 bytes.
//! - AES-256-GCM with the 16-byte nonce (GHASH-derived counter, as GCM specifies for
//!   nonces other than 12 bytes) and no associated data.
//!
//! So a message is always [`OVERHEAD`] (97) bytes longer than its plaintext. The
//! recipient's public key may be given compressed (33 bytes) or uncompressed (65).
//! [`encrypt_hex`] and [`decrypt_hex`] carry the same bytes as lowercase hex, for JSON.
//!
//! Decryption fails the same way ([`EciesError::Decrypt`]) for a wrong key and for a
//! tampered message: GCM's tag cannot tell them apart, and saying which would help an
//! attacker. `tools/ecies_vector.py` computes this module's known-answer vector with
//! Python's `cryptography` package, and checks ecies-rs's published answers.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use hkdf::Hkdf;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{ProjectivePoint, PublicKey, SecretKey};
use rand::RngCore;
use sha2::Sha256;

/// Length of the ephemeral public key at the start of a message (uncompressed SEC1).
pub const EPHEMERAL_KEY_LEN: usize = 65;
/// Length of the AES-GCM nonce.
pub const NONCE_LEN: usize = 16;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// How many bytes a message is longer than its plaintext.
pub const OVERHEAD: usize = EPHEMERAL_KEY_LEN + NONCE_LEN + TAG_LEN;

/// AES-256-GCM with a 16-byte nonce, as eciespy and ecies-rs use it.
type Cipher = AesGcm<Aes256, U16>;

/// Why a message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EciesError {
    /// The recipient's public key is not a secp256k1 point in SEC1 form.
    #[error(
        "invalid recipient public key ({len} bytes): expected SEC1, \
         33 bytes compressed or 65 uncompressed, on secp256k1"
    )]
    InvalidPublicKey {
        /// Its length.
        len: usize,
    },
    /// The message is shorter than its fixed parts.
    #[error("message too short: {len} bytes, an ECIES message has at least {OVERHEAD}")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The message does not start with an uncompressed secp256k1 point.
    #[error("invalid message: it does not start with an uncompressed secp256k1 public key")]
    InvalidEphemeralKey,
    /// The tag does not match: the wrong key, or the message was changed.
    #[error("cannot decrypt: wrong key or tampered message")]
    Decrypt,
    /// The plaintext is beyond what AES-GCM can seal under one nonce (64 GiB).
    #[error("plaintext too long to encrypt: {len} bytes")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Text that should be hex is not.
    #[error("invalid hex in {what}: {reason}")]
    Hex {
        /// `public key` or `message`.
        what: &'static str,
        /// The hex decoder's reason.
        reason: String,
    },
}

/// Encrypts `plaintext` for the holder of the secret key of `recipient_pubkey_sec1`
/// (SEC1, compressed or uncompressed), with a fresh ephemeral key and nonce. The result
/// is in the format of the module docs.
pub fn encrypt(recipient_pubkey_sec1: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EciesError> {
    let invalid = || EciesError::InvalidPublicKey {
        len: recipient_pubkey_sec1.len(),
    };
    // Only the two forms eciespy and ecies-rs read (k256 would also take 0x05 "compact").
    match recipient_pubkey_sec1 {
        [0x02 | 0x03, rest @ ..] if rest.len() == 32 => {}
        [0x04, rest @ ..] if rest.len() == 64 => {}
        _ => return Err(invalid()),
    }
    let recipient = PublicKey::from_sec1_bytes(recipient_pubkey_sec1).map_err(|_| invalid())?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    encrypt_with(&random_secret(), nonce, &recipient, plaintext)
}

/// Decrypts a message sealed for `secret_key`'s public key.
pub fn decrypt(secret_key: &SecretKey, ciphertext: &[u8]) -> Result<Vec<u8>, EciesError> {
    let too_short = || EciesError::TooShort {
        len: ciphertext.len(),
    };
    // Checked splits: a short message is an error, never a panic.
    let (ephemeral_bytes, rest) = ciphertext
        .split_at_checked(EPHEMERAL_KEY_LEN)
        .ok_or_else(too_short)?;
    let (nonce, rest) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or_else(too_short)?;
    let (tag, sealed) = rest.split_first_chunk::<TAG_LEN>().ok_or_else(too_short)?;
    // The uncompressed form only (0x04), checked to be on the curve.
    if ephemeral_bytes.first() != Some(&0x04) {
        return Err(EciesError::InvalidEphemeralKey);
    }
    let ephemeral =
        PublicKey::from_sec1_bytes(ephemeral_bytes).map_err(|_| EciesError::InvalidEphemeralKey)?;
    let shared = shared_point(secret_key, &ephemeral).ok_or(EciesError::InvalidEphemeralKey)?;
    let key = derive_key(ephemeral_bytes, &shared);
    let cipher = Cipher::new(&key.into());
    let mut plaintext = sealed.to_vec();
    cipher
        .decrypt_in_place_detached(
            &Nonce::<U16>::from(*nonce),
            b"",
            &mut plaintext,
            &Tag::<U16>::from(*tag),
        )
        .map_err(|_| EciesError::Decrypt)?;
    Ok(plaintext)
}

/// [`encrypt`] with the public key and the result as hex.
pub fn encrypt_hex(recipient_pubkey_hex: &str, plaintext: &[u8]) -> Result<String, EciesError> {
    let pubkey = from_hex("public key", recipient_pubkey_hex)?;
    encrypt(&pubkey, plaintext).map(hex::encode)
}

/// [`decrypt`] of a message given as hex.
pub fn decrypt_hex(secret_key: &SecretKey, ciphertext_hex: &str) -> Result<Vec<u8>, EciesError> {
    decrypt(secret_key, &from_hex("message", ciphertext_hex)?)
}

fn from_hex(what: &'static str, text: &str) -> Result<Vec<u8>, EciesError> {
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    hex::decode(text).map_err(|e| EciesError::Hex {
        what,
        reason: e.to_string(),
    })
}

/// A uniformly random secret key (rejection sampling: zero and values >= n are retried).
fn random_secret() -> SecretKey {
    let mut rng = rand::rng();
    loop {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        if let Ok(key) = SecretKey::from_slice(&bytes) {
            return key;
        }
    }
}

/// The sealing itself, with the ephemeral key and nonce given (the tests fix them).
fn encrypt_with(
    ephemeral: &SecretKey,
    nonce: [u8; NONCE_LEN],
    recipient: &PublicKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, EciesError> {
    let ephemeral_public = ephemeral.public_key().to_encoded_point(false);
    let shared = shared_point(ephemeral, recipient).ok_or(EciesError::InvalidPublicKey {
        len: EPHEMERAL_KEY_LEN,
    })?;
    let key = derive_key(ephemeral_public.as_bytes(), &shared);
    let cipher = Cipher::new(&key.into());
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(ephemeral_public.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&[0u8; TAG_LEN]);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::<U16>::from(nonce), b"", &mut out[OVERHEAD..])
        .map_err(|_| EciesError::TooLong {
            len: plaintext.len(),
        })?;
    out[EPHEMERAL_KEY_LEN + NONCE_LEN..OVERHEAD].copy_from_slice(&tag);
    Ok(out)
}

/// `secret * public`, uncompressed SEC1 (65 bytes). `None` only for the identity, which
/// a non-zero scalar times a valid public key (a prime-order group) never gives.
fn shared_point(secret: &SecretKey, public: &PublicKey) -> Option<[u8; 65]> {
    let point = (ProjectivePoint::from(*public.as_affine()) * *secret.to_nonzero_scalar())
        .to_affine()
        .to_encoded_point(false);
    <[u8; 65]>::try_from(point.as_bytes()).ok()
}

/// `HKDF-SHA256(salt = none, ikm = ephemeral_public || shared_point, info = empty)`.
fn derive_key(ephemeral_public: &[u8], shared_point: &[u8]) -> [u8; 32] {
    let mut ikm = Vec::with_capacity(ephemeral_public.len() + shared_point.len());
    ikm.extend_from_slice(ephemeral_public);
    ikm.extend_from_slice(shared_point);
    let mut key = [0u8; 32];
    // 32 bytes are far below HKDF-SHA256's limit of 255 * 32.
    let _ = Hkdf::<Sha256>::new(None, &ikm).expand(&[], &mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(seed: u8) -> SecretKey {
        let mut bytes = [0u8; 32];
        bytes[31] = seed;
        bytes[0] = 0x11;
        SecretKey::from_slice(&bytes).unwrap()
    }

    fn scalar(n: u8) -> SecretKey {
        let mut bytes = [0u8; 32];
        bytes[31] = n;
        SecretKey::from_slice(&bytes).unwrap()
    }

    fn pubkey(key: &SecretKey, compressed: bool) -> Vec<u8> {
        key.public_key()
            .to_encoded_point(compressed)
            .as_bytes()
            .to_vec()
    }

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    // From `python3 tools/ecies_vector.py` (Python `cryptography`, not this module).
    const VECTOR_SECRET: &str = "07a3313fcc613ac53df2253c39804f3d5d120291f142cd37f9dbbd4ec8274254";
    const VECTOR_PUBLIC: &str = "04723f7c83ae60c82bd0e57c0a452a2588a2a2309ce7e0c609b1e73a2eec4cec\
                                 ffcfa0ff3c7b7bd6a4a651c6faaf4b915a59b39ada1a368046f37bd5a6b21779c3";
    const VECTOR_EPHEMERAL: &str =
        "e9a5dc6c7722d1d0287c4f998ba3d8b693fc1c129ad1d2bc583828fcf1e5ab43";
    const VECTOR_PLAINTEXT: &[u8] = b"hero supervisor: ecies over secp256k1 with aes-256-gcm";
    const VECTOR_MESSAGE: &str = "04ce79072b9c6c964e6aff34172cf942903af54cb9ed9f7a8203ce9cb6556cda\
         b1de7cdf075269bedb45be835e24974afafa41aab8885bc28055fb848774579c1b\
         000102030405060708090a0b0c0d0e0f\
         98db687df2ff050b939aee22afb4903e\
         030a60649e7efc758fd0cbb79f079982e384a6385b25492bb7eeada39ba6324fbdc786a546283cbfad23fc4fd77fcb73b7135c7a82d9";

    #[test]
    fn round_trip_with_compressed_and_uncompressed_keys() {
        let key = secret(1);
        for compressed in [true, false] {
            let recipient = pubkey(&key, compressed);
            for plaintext in [&b""[..], b"x", b"hello recipient", &[0xa5; 70_000][..]] {
                let sealed = encrypt(&recipient, plaintext).unwrap();
                assert_eq!(sealed.len(), OVERHEAD + plaintext.len());
                assert_eq!(sealed[0], 0x04, "uncompressed ephemeral key");
                assert_eq!(decrypt(&key, &sealed).unwrap(), plaintext);
            }
        }
        // Fresh ephemeral key and nonce each time.
        let a = encrypt(&pubkey(&key, true), b"same").unwrap();
        let b = encrypt(&pubkey(&key, true), b"same").unwrap();
        assert_ne!(a[..EPHEMERAL_KEY_LEN], b[..EPHEMERAL_KEY_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn round_trip_both_ways_between_two_parties() {
        let (alice, bob) = (secret(2), secret(3));
        let to_bob = encrypt(&pubkey(&bob, true), b"for bob").unwrap();
        let to_alice = encrypt(&pubkey(&alice, false), b"for alice").unwrap();
        assert_eq!(decrypt(&bob, &to_bob).unwrap(), b"for bob");
        assert_eq!(decrypt(&alice, &to_alice).unwrap(), b"for alice");
        assert_eq!(decrypt(&alice, &to_bob), Err(EciesError::Decrypt));
        assert_eq!(decrypt(&bob, &to_alice), Err(EciesError::Decrypt));
    }

    #[test]
    fn hex_helpers_round_trip() {
        let key = secret(4);
        let sealed = encrypt_hex(&hex::encode(pubkey(&key, true)), b"text").unwrap();
        assert!(sealed.starts_with("04"));
        assert_eq!(decrypt_hex(&key, &sealed).unwrap(), b"text");
        assert_eq!(
            decrypt_hex(&key, &format!("0x{sealed}\n")).unwrap(),
            b"text"
        );
        assert!(matches!(
            decrypt_hex(&key, "zz"),
            Err(EciesError::Hex {
                what: "message",
                ..
            })
        ));
        assert!(matches!(
            encrypt_hex("02ab", b"x"),
            Err(EciesError::InvalidPublicKey { len: 2 })
        ));
    }

    #[test]
    fn known_answer_from_an_independent_implementation() {
        let recipient = SecretKey::from_slice(&unhex(VECTOR_SECRET)).unwrap();
        assert_eq!(hex::encode(pubkey(&recipient, false)), VECTOR_PUBLIC);
        let message = unhex(VECTOR_MESSAGE);
        assert_eq!(decrypt(&recipient, &message).unwrap(), VECTOR_PLAINTEXT);
        // And sealing with the same ephemeral key and nonce gives the same bytes.
        let ephemeral = SecretKey::from_slice(&unhex(VECTOR_EPHEMERAL)).unwrap();
        let nonce: [u8; NONCE_LEN] = core::array::from_fn(|i| i as u8);
        let sealed =
            encrypt_with(&ephemeral, nonce, &recipient.public_key(), VECTOR_PLAINTEXT).unwrap();
        assert_eq!(hex::encode(sealed), VECTOR_MESSAGE);
    }

    #[test]
    fn known_answers_of_ecies_rs() {
        // ecies-rs `test_known_shared_secret`: sender key 2, recipient public key 3G.
        let (two, three) = (scalar(2), scalar(3));
        let sender_public = two.public_key().to_encoded_point(false);
        let key = derive_key(
            sender_public.as_bytes(),
            &shared_point(&two, &three.public_key()).unwrap(),
        );
        assert_eq!(
            hex::encode(key),
            "6f982d63e8590c9d9b5b4c1959ff80315d772edd8f60287c9361d548d5200f82"
        );
        // ecies-rs `test_aes_known_key`: the zero key, their nonce, "helloworld".
        let cipher = Cipher::new(&[0u8; 32].into());
        let nonce: [u8; NONCE_LEN] = unhex("f3e1ba810d2c8900b11312b7c725565f")
            .try_into()
            .unwrap();
        let mut text = b"helloworld".to_vec();
        let tag = cipher
            .encrypt_in_place_detached(&Nonce::<U16>::from(nonce), b"", &mut text)
            .unwrap();
        assert_eq!(hex::encode(tag), "ec3b71e17c11dbe31484da9450edcf6c");
        assert_eq!(hex::encode(text), "02d2ffed93b856f148b9");
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let key = secret(5);
        let sealed = encrypt(&pubkey(&key, true), b"do not touch").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = decrypt(&key, &bad).unwrap_err();
            if i < EPHEMERAL_KEY_LEN {
                // Another point (or none): either not on the curve, or the wrong key.
                assert!(
                    matches!(err, EciesError::InvalidEphemeralKey | EciesError::Decrypt),
                    "byte {i}: {err}"
                );
            } else {
                assert_eq!(err, EciesError::Decrypt, "byte {i}");
            }
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(decrypt(&key, &longer), Err(EciesError::Decrypt));
    }

    #[test]
    fn wrong_key_is_refused() {
        let sealed = encrypt(&pubkey(&secret(6), true), b"secret").unwrap();
        assert_eq!(decrypt(&secret(7), &sealed), Err(EciesError::Decrypt));
        assert_eq!(
            decrypt(&secret(7), &sealed).unwrap_err().to_string(),
            "cannot decrypt: wrong key or tampered message"
        );
    }

    #[test]
    fn truncated_input_is_refused() {
        let key = secret(8);
        let sealed = encrypt(&pubkey(&key, false), b"twelve bytes").unwrap();
        for len in 0..sealed.len() {
            let err = decrypt(&key, &sealed[..len]).unwrap_err();
            if len < OVERHEAD {
                assert_eq!(err, EciesError::TooShort { len });
            } else {
                assert_eq!(err, EciesError::Decrypt, "{len} bytes");
            }
        }
    }

    #[test]
    fn invalid_public_keys_are_refused() {
        let good = pubkey(&secret(9), true);
        let mut off_curve = pubkey(&secret(9), false);
        off_curve[64] ^= 1;
        let mut compact = good.clone();
        compact[0] = 0x05;
        let mut hybrid = pubkey(&secret(9), false);
        hybrid[0] = 0x06;
        for bad in [
            vec![],
            vec![0u8],
            vec![0u8; 33],
            off_curve,
            compact,
            hybrid,
            good[..32].to_vec(),
        ] {
            assert_eq!(
                encrypt(&bad, b"x"),
                Err(EciesError::InvalidPublicKey { len: bad.len() })
            );
        }
        // A compressed ephemeral key inside a message is not this format.
        let key = secret(9);
        let mut message = vec![0u8; OVERHEAD];
        message[..33].copy_from_slice(&good);
        assert_eq!(
            decrypt(&key, &message),
            Err(EciesError::InvalidEphemeralKey)
        );
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..512)) {
            let key = secret(10);
            let sealed = encrypt(&pubkey(&key, true), &plaintext).unwrap();
            prop_assert_eq!(decrypt(&key, &sealed).unwrap(), plaintext);
        }

        #[test]
        fn any_bytes_decrypt_to_an_error_not_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            prop_assert!(decrypt(&secret(11), &bytes).is_err());
        }
    }
}
