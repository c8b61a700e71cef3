//! The server's own secp256k1 key: it signs every `rpc_return`, so a receiver can check
//! that a result came from this server.
//!
//! Where the key comes from, first match wins: the hex of a 32-byte secret given
//! directly (`HERO_SERVER_KEY`), a key file (`--server-key PATH`: the hex secret on one
//! line; created with mode 0600 on first start when absent), or, for a library caller
//! that names neither, a fresh key held in memory only. Every instance on one Redis
//! should be given the same key, so receivers verify against one public key.

use std::io::Write;
use std::path::Path;

use k256::ecdsa::signature::Signer;
use k256::ecdsa::{Signature, SigningKey};

/// Why the server key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("server key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The text is not the hex of a valid 32-byte secp256k1 secret.
    #[error("server key {origin}: not the hex of a 32-byte secp256k1 secret key")]
    Invalid {
        /// Where the text came from (a file path, or the variable's name).
        origin: String,
    },
}

/// The server's signing key. Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct ServerKey {
    signing: SigningKey,
    public_hex: String,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("public", &self.public_hex)
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// A fresh random key.
    pub fn generate() -> ServerKey {
        loop {
            // The OS generator through `rand`; a 32-byte string is a valid secret unless
            // it is zero or above the group order (odds about 2^-128).
            let bytes: [u8; 32] = rand::random();
            if let Ok(signing) = SigningKey::from_slice(&bytes) {
                return ServerKey::from_signing(signing);
            }
        }
    }

    /// The key whose secret is the hex `text` (64 hex digits; whitespace around ignored).
    /// `origin` names where it came from, for the error.
    pub fn from_hex(text: &str, origin: &str) -> Result<ServerKey, KeyError> {
        let invalid = || KeyError::Invalid {
            origin: origin.to_string(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| invalid())?;
        let signing = SigningKey::from_slice(&bytes).map_err(|_| invalid())?;
        Ok(ServerKey::from_signing(signing))
    }

    /// The key in file `path`, created (random, mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<ServerKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => ServerKey::from_hex(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ServerKey::generate();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                // Written whole beside it, then linked into place: a reader never sees
                // a half-written file, and of two servers starting at once on one path,
                // the first link wins and the other reads its key.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let written = options.open(&tmp).and_then(|mut file| {
                    writeln!(file, "{}", hex::encode(key.signing.to_bytes()))?;
                    file.sync_all()
                });
                let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "created a new server key");
                        Ok(key)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        ServerKey::load_or_create(path)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_signing(signing: SigningKey) -> ServerKey {
        let public_hex = hex::encode(signing.verifying_key().to_encoded_point(true).as_bytes());
        ServerKey {
            signing,
            public_hex,
        }
    }

    /// The public key: hex of the compressed SEC1 form.
    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    /// The hex of the compact `r||s` signature (low S) of SHA-256(`message`).
    pub fn sign_hex(&self, message: &[u8]) -> String {
        let signature: Signature = self.signing.sign(message);
        hex::encode(signature.to_bytes())
    }

    /// The secret scalar: what decrypts params callers encrypted to this server.
    pub(crate) fn secret(&self) -> k256::SecretKey {
        k256::SecretKey::from(&self.signing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::VerifyingKey;
    use k256::ecdsa::signature::Verifier;

    #[test]
    fn a_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("server.key");
        let first = ServerKey::load_or_create(&path).unwrap();
        let again = ServerKey::load_or_create(&path).unwrap();
        assert_eq!(first.public_hex(), again.public_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key file is private");
        }
        let sig = first.sign_hex(b"hello");
        let key = VerifyingKey::from_sec1_bytes(&hex::decode(first.public_hex()).unwrap()).unwrap();
        let sig = Signature::from_slice(&hex::decode(sig).unwrap()).unwrap();
        key.verify(b"hello", &sig).unwrap();
        assert!(key.verify(b"hellO", &sig).is_err());
    }

    #[test]
    fn garbage_is_a_clear_error_and_debug_hides_the_secret() {
        let err = ServerKey::from_hex("nothex", "HERO_SERVER_KEY").unwrap_err();
        assert!(err.to_string().contains("HERO_SERVER_KEY"), "{err}");
        assert!(
            ServerKey::from_hex(&"00".repeat(32), "x").is_err(),
            "zero is no key"
        );
        let key = ServerKey::from_hex(&"11".repeat(32), "x").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&"11".repeat(32)), "{shown}");
        assert!(shown.contains(key.public_hex()));
    }
}
