#!/usr/bin/env python3
"""An ECIES test vector for `supervisor/src/calls/ecies.rs`, computed independently of it
with Python's `cryptography` package, in the format of eciespy / ecies-rs (defaults):

    ephemeral public key (65 bytes, uncompressed SEC1) || nonce (16) || tag (16) || ciphertext
    key = HKDF-SHA256(salt = none, ikm = ephemeral_pub_uncompressed || shared_point_uncompressed,
                      info = empty, length 32)
    AES-256-GCM with the 16-byte nonce, no associated data.

`cryptography` does not expose point multiplication, so the shared point e*R = (e*r)G is
taken as the public key of the scalar e*r mod n. Also checks the two known answers
published in ecies-rs's own tests, so the construction here is theirs.

Run: python3 tools/ecies_vector.py
"""

from hashlib import sha256

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def point(scalar: int) -> bytes:
    key = ec.derive_private_key(scalar % N, ec.SECP256K1())
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def derive(ephemeral: int, recipient: int) -> bytes:
    master = point(ephemeral) + point(ephemeral * recipient)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"").derive(master)


def seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)  # ciphertext || tag
    return nonce + sealed[-16:] + sealed[:-16]


# ecies-rs known answers: the key of sk 2 (sender) and pk 3; AES with the zero key.
assert derive(2, 3).hex() == "6f982d63e8590c9d9b5b4c1959ff80315d772edd8f60287c9361d548d5200f82"
assert (
    seal(bytes(32), bytes.fromhex("f3e1ba810d2c8900b11312b7c725565f"), b"helloworld").hex()
    == "f3e1ba810d2c8900b11312b7c725565f" "ec3b71e17c11dbe31484da9450edcf6c" "02d2ffed93b856f148b9"
)

recipient = int.from_bytes(sha256(b"hero ecies vector: recipient").digest(), "big") % N
ephemeral = int.from_bytes(sha256(b"hero ecies vector: ephemeral").digest(), "big") % N
nonce = bytes(range(16))
plaintext = b"hero supervisor: ecies over secp256k1 with aes-256-gcm"

print("recipient secret ", recipient.to_bytes(32, "big").hex())
print("recipient public ", point(recipient).hex())
print("ephemeral secret ", ephemeral.to_bytes(32, "big").hex())
print("nonce            ", nonce.hex())
print("plaintext        ", plaintext.decode())
print("message          ", (point(ephemeral) + seal(derive(ephemeral, recipient), nonce, plaintext)).hex())
