#!/usr/bin/env python3
"""hero_client: call a hero supervisor from Python, signed and asynchronous (standard
library only).

A caller is a secp256k1 key. It signs what it asks for, and the supervisor signs what it
answers, so an answer POSTed back later can be checked by whoever receives it:

    from hero_client import Client, PrivateKey, verify_rpc_return

    key = PrivateKey.generate()               # or PrivateKey.from_hex("...64 hex digits...")
    client = Client("http://127.0.0.1:3030", token="secret")
    client.call("fetch_nonce", [key.public_key_hex()])        # any method, plain JSON-RPC

    # Submit work and go away: the answer is POSTed to return_url later.
    client.rpc_in(key, "build-42", "run_job", {"script": "print(1)", "script_type": "Python"},
                  return_url="http://127.0.0.1:8099/returns", return_topic="builds")
    client.rpc_check(key, "build-42")   # {"status": "pending" | "running" | "done" | "error", ...}
    client.rpc_kill(key, "build-42")

    # At the receiver (see return_receiver.py), with the supervisor's public key:
    ok = verify_rpc_return(body, server_pubkey_hex)

What is signed (see COORDINATION.md, section 2). Every signature is ECDSA over secp256k1
of the SHA-256 digest of the UTF-8 bytes of a plain concatenation (no separators), sent as
the hex of the 64-byte compact form `r || s` (big-endian, 32 bytes each):

    rpc_in            rpc_id + method_name + params + return_url + return_topic
    rpc_check/kill    rpc_id
    rpc_return        rpc_id + method_name + params + result      (signed by the server)

Absent fields count as empty strings. `params` is the called method's params as JSON text,
a string, so that the signed bytes are exactly the bytes sent: give a string and it is
used as is, give a list or dict and it becomes `json.dumps(params, separators=(",", ":"))`.
`result` in an rpc_return is a string too: the JSON text of the method's result, or of
`{"error": {"code": .., "message": .., "data": ..}}` when it failed. The rpc_return's
`topic` and `status` fields are not covered by the signature: read the outcome from
`result`. Its signature covers the `params` the caller sent; the server echoes them in the
body, and `verify_rpc_return` checks against the text the caller kept when it is given
(`Client` keeps it per rpc_id: `client.verify_return(body, server_pubkey_hex)`).

Keys: a private key is 32 bytes (64 hex digits). A public key is the hex of its SEC1
encoding, compressed by default (33 bytes, `02`/`03` then x); the uncompressed form (65
bytes, `04` then x and y) is accepted everywhere one is read. Signatures made here are
deterministic (RFC 6979 nonces with HMAC-SHA256, the same as the Rust `k256` crate, so
both produce the same bytes) and low-S; verification accepts high-S ones too.

The curve arithmetic is pure Python and NOT constant-time: the time a signature takes can
depend on the private key. That is fine for tests, tools and keys on a machine nobody
else measures; for production signing where timing matters, sign with `coincurve`
(libsecp256k1) and keep the rest of this module, whose envelopes only need a signature
function.

Command line (what the Rust tests drive):

    python3 hero_client.py keygen                    # private hex, then public hex
    python3 hero_client.py pubkey PRIVHEX [--uncompressed]
    python3 hero_client.py sign PRIVHEX MESSAGE      # signature hex
    python3 hero_client.py verify PUBHEX MESSAGE SIGHEX          # exit 0 valid, 1 not
    python3 hero_client.py rpc-in PRIVHEX RPC_ID METHOD PARAMS [--return-url U]
                                  [--return-topic T] [--sync]   # the signed params object
    python3 hero_client.py verify-return SERVER_PUBHEX BODY_JSON [--params TEXT]
"""

import hashlib
import hmac
import itertools
import json
import os
import secrets
import sys

__all__ = [
    "PrivateKey",
    "verify",
    "normalize_pubkey",
    "to_params_text",
    "rpc_in_message",
    "rpc_return_message",
    "signed_rpc_in",
    "signed_rpc_check",
    "signed_rpc_kill",
    "verify_rpc_return",
    "Client",
    "RpcError",
]

# --- secp256k1 ------------------------------------------------------------------------
# y^2 = x^3 + 7 over the field of P; G generates a group of prime order N.
P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8
G = (GX, GY)
_HALF_N = N // 2

# Points in Jacobian coordinates (X, Y, Z) stand for (X/Z^2, Y/Z^3); Z == 0 is the point at
# infinity. Affine points are (x, y) tuples, None for infinity.
_INFINITY = (0, 1, 0)


def _jacobian_double(p):
    x, y, z = p
    if z == 0 or y == 0:
        return _INFINITY
    yy = y * y % P
    s = 4 * x * yy % P
    m = 3 * x * x % P  # the curve's a is 0
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * yy * yy) % P
    z3 = 2 * y * z % P
    return (x3, y3, z3)


def _jacobian_add(p, q):
    x1, y1, z1 = p
    x2, y2, z2 = q
    if z1 == 0:
        return q
    if z2 == 0:
        return p
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    if u1 == u2:
        return _jacobian_double(p) if s1 == s2 else _INFINITY
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    z3 = h * z1 * z2 % P
    return (x3, y3, z3)


def _to_affine(p):
    x, y, z = p
    if z == 0:
        return None
    zinv = pow(z, -1, P)
    zinv2 = zinv * zinv % P
    return (x * zinv2 % P, y * zinv2 * zinv % P)


def _mul(k, point):
    """k * point (affine in, affine out), by double-and-add: not constant-time."""
    k %= N
    result = _INFINITY
    addend = (point[0], point[1], 1)
    while k:
        if k & 1:
            result = _jacobian_add(result, addend)
        addend = _jacobian_double(addend)
        k >>= 1
    return _to_affine(result)


def _mul_add(a, b, point):
    """a * G + b * point, in one pass over the bits of both scalars."""
    g = (GX, GY, 1)
    q = (point[0], point[1], 1)
    gq = _jacobian_add(g, q)
    result = _INFINITY
    for i in range(max(a.bit_length(), b.bit_length()) - 1, -1, -1):
        result = _jacobian_double(result)
        bits = ((a >> i) & 1, (b >> i) & 1)
        if bits == (1, 1):
            result = _jacobian_add(result, gq)
        elif bits == (1, 0):
            result = _jacobian_add(result, g)
        elif bits == (0, 1):
            result = _jacobian_add(result, q)
    return _to_affine(result)


def _on_curve(x, y):
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x - 7) % P == 0


def _encode_point(point, compressed=True):
    x, y = point
    if compressed:
        return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _decode_point(data):
    """The affine point of a SEC1 encoding; ValueError when it is not one on the curve."""
    if len(data) == 33 and data[0] in (2, 3):
        x = int.from_bytes(data[1:], "big")
        if x >= P:
            raise ValueError("x is not a field element")
        y = pow((x * x * x + 7) % P, (P + 1) // 4, P)  # P = 3 mod 4: a square root
        if (y * y - x * x * x - 7) % P != 0:
            raise ValueError("x is not on the curve")
        if (y & 1) != (data[0] & 1):
            y = P - y
        return (x, y)
    if len(data) == 65 and data[0] == 4:
        x = int.from_bytes(data[1:33], "big")
        y = int.from_bytes(data[33:], "big")
        if not _on_curve(x, y):
            raise ValueError("the point is not on the curve")
        return (x, y)
    raise ValueError("not a SEC1 public key (33 bytes 02/03.. or 65 bytes 04..)")


def _parse_pubkey(pubkey_hex):
    if not isinstance(pubkey_hex, str):
        raise ValueError("a public key is given as a hex string")
    try:
        data = bytes.fromhex(pubkey_hex.strip())
    except ValueError:
        raise ValueError("a public key is hex of a SEC1 encoding") from None
    return _decode_point(data)


def normalize_pubkey(pubkey_hex, compressed=True):
    """The same public key in lowercase hex, compressed (the supervisor's canonical form) or not.

    Raises ValueError when `pubkey_hex` is not a secp256k1 public key."""
    return _encode_point(_parse_pubkey(pubkey_hex), compressed).hex()


def _message_bytes(message):
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError("a message is bytes or str (signed as its UTF-8 bytes)")


def _rfc6979_nonces(secret, digest):
    """The candidate nonces of RFC 6979, section 3.2, with HMAC-SHA256 (qlen = hlen = 256)."""
    x = secret.to_bytes(32, "big")
    h1 = (int.from_bytes(digest, "big") % N).to_bytes(32, "big")  # bits2octets
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + h1, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + h1, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        candidate = int.from_bytes(v, "big")  # bits2int: 256 bits, nothing to cut
        if 1 <= candidate < N:
            yield candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


class PrivateKey:
    """A secp256k1 private key: an integer in [1, N-1], written as 32 bytes (64 hex digits)."""

    __slots__ = ("_secret", "_public")

    def __init__(self, secret):
        if not isinstance(secret, int) or not 1 <= secret < N:
            raise ValueError("a private key is an integer in [1, N-1]")
        self._secret = secret
        self._public = _mul(secret, G)

    @classmethod
    def generate(cls):
        """A fresh key from the operating system's random source (`secrets`)."""
        return cls(secrets.randbelow(N - 1) + 1)

    @classmethod
    def from_bytes(cls, data):
        if len(data) != 32:
            raise ValueError("a private key is 32 bytes")
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def from_hex(cls, text):
        text = text.strip()
        if len(text) != 64:
            raise ValueError("a private key is 64 hex digits")
        try:
            return cls.from_bytes(bytes.fromhex(text))
        except ValueError:
            raise ValueError("a private key is 64 hex digits in [1, N-1]") from None

    def to_bytes(self):
        return self._secret.to_bytes(32, "big")

    def to_hex(self):
        return self.to_bytes().hex()

    def public_key_hex(self, compressed=True):
        """Hex of the SEC1 public key: 66 digits `02`/`03`.. or, uncompressed, 130 `04`.."""
        return _encode_point(self._public, compressed).hex()

    def sign(self, message):
        """Hex of the 64-byte `r || s` signature of SHA-256(message); str is signed as UTF-8."""
        return self.sign_digest(hashlib.sha256(_message_bytes(message)).digest())

    def sign_digest(self, digest):
        """Like `sign`, of a 32-byte digest already computed."""
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        z = int.from_bytes(digest, "big")
        for k in _rfc6979_nonces(self._secret, digest):
            r = _mul(k, G)[0] % N
            if r == 0:
                continue
            s = pow(k, -1, N) * (z + r * self._secret) % N
            if s == 0:
                continue
            if s > _HALF_N:
                s = N - s  # low-S: the form the supervisor and k256 produce
            return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()

    def __repr__(self):
        return f"PrivateKey(public={self.public_key_hex()})"


def verify(pubkey_hex, message, signature_hex):
    """True when `signature_hex` (hex of `r || s`, high-S accepted) is a signature of
    SHA-256(message) by `pubkey_hex`. Anything malformed is False, never an exception."""
    try:
        point = _parse_pubkey(pubkey_hex)
        sig = bytes.fromhex(signature_hex.strip())
        digest = hashlib.sha256(_message_bytes(message)).digest()
    except (ValueError, TypeError, AttributeError):
        return False
    if len(sig) != 64:
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        return False
    z = int.from_bytes(digest, "big")
    w = pow(s, -1, N)
    total = _mul_add(z * w % N, r * w % N, point)
    return total is not None and total[0] % N == r


# --- signed envelopes ----------------------------------------------------------------


def to_params_text(params):
    """A method's params as the JSON text that is sent and signed: a str as is, anything
    else as `json.dumps(params, separators=(",", ":"))`."""
    if isinstance(params, str):
        return params
    return json.dumps(params, separators=(",", ":"))


def _text(name, value):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def rpc_in_message(rpc_id, method_name, params, return_url=None, return_topic=None):
    """The text an rpc_in signature covers: rpc_id + method_name + params + return_url +
    return_topic (params as JSON text; absent fields as empty strings)."""
    return (
        _text("rpc_id", rpc_id)
        + _text("method_name", method_name)
        + to_params_text(params)
        + _text("return_url", return_url)
        + _text("return_topic", return_topic)
    )


def rpc_return_message(rpc_id, method_name, params, result):
    """The text an rpc_return signature covers: rpc_id + method_name + params + result."""
    return (
        _text("rpc_id", rpc_id)
        + _text("method_name", method_name)
        + to_params_text(params)
        + _text("result", result)
    )


def signed_rpc_in(key, rpc_id, method_name, params, *, async_=True, return_url=None, return_topic=None):
    """The params object of `rpc_in`, signed by `key`:
    `{rpc_id, method_name, params, pubkey, signature, async, return_url?, return_topic?}`.

    `params` is the called method's params: a str of JSON text, or a list/dict turned into
    compact JSON text. `return_url` / `return_topic` are left out when None."""
    text = to_params_text(params)
    message = rpc_in_message(rpc_id, method_name, text, return_url, return_topic)
    body = {
        "rpc_id": rpc_id,
        "method_name": method_name,
        "params": text,
        "pubkey": key.public_key_hex(),
        "signature": key.sign(message),
        "async": bool(async_),
    }
    if return_url is not None:
        body["return_url"] = return_url
    if return_topic is not None:
        body["return_topic"] = return_topic
    return body


def _signed_rpc_id(key, rpc_id):
    return {"rpc_id": rpc_id, "pubkey": key.public_key_hex(), "signature": key.sign(_text("rpc_id", rpc_id))}


def signed_rpc_check(key, rpc_id):
    """The params object of `rpc_check`: `{rpc_id, pubkey, signature}`, signing rpc_id."""
    return _signed_rpc_id(key, rpc_id)


def signed_rpc_kill(key, rpc_id):
    """The params object of `rpc_kill`: `{rpc_id, pubkey, signature}`, signing rpc_id."""
    return _signed_rpc_id(key, rpc_id)


def verify_rpc_return(body, server_pubkey_hex, params_text=None):
    """True when `body`, an rpc_return `{rpc_id, method_name, pubkey, signature, topic,
    status, result, params}`, is signed by the server key `server_pubkey_hex`.

    The signature covers rpc_id + method_name + params + result. `params` is the JSON text
    the caller sent in rpc_in: pass it (str, or the list/dict given to `signed_rpc_in`) when
    you kept it, and the body's `params`, if present, must then be exactly that; otherwise
    the body's `params` is used. The body's `pubkey` must be the server's key (in either SEC1
    form), and `result` must be a string (JSON text). Anything malformed is False."""
    if not isinstance(body, dict):
        return False
    try:
        server_point = _parse_pubkey(server_pubkey_hex)
        if _parse_pubkey(body.get("pubkey")) != server_point:
            return False
        if params_text is not None:
            expected = to_params_text(params_text)
            if "params" in body and body["params"] != expected:
                return False
        else:
            expected = body.get("params")
            if not isinstance(expected, str):
                return False
        fields = [body.get(name) for name in ("rpc_id", "method_name", "result", "signature")]
        if not all(isinstance(value, str) for value in fields):
            return False
        rpc_id, method_name, result, signature = fields
        message = rpc_return_message(rpc_id, method_name, expected, result)
    except (ValueError, TypeError):
        return False
    return verify(server_pubkey_hex, message, signature)


# --- JSON-RPC 2.0 over HTTP ------------------------------------------------------------


class RpcError(Exception):
    """A JSON-RPC error answer: `code`, `message` and `data` (None when absent)."""

    def __init__(self, code, message, data=None):
        super().__init__(f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class Client:
    """JSON-RPC 2.0 over HTTP POST (urllib), with `Authorization: Bearer <token>` when
    given. A JSON-RPC error raises `RpcError`; an HTTP error without a JSON-RPC body
    raises `urllib.error.HTTPError`, a network failure `urllib.error.URLError`.

    `rpc_in` / `rpc_check` / `rpc_kill` send their one params object by position
    (`"params": [{...}]`). The client remembers the params text of each rpc_in it sent, by
    rpc_id, for `verify_return`."""

    def __init__(self, url, token=None, timeout=30.0):
        self.url = url
        self.token = token
        self.timeout = timeout
        self.sent_params = {}  # rpc_id -> the params JSON text sent in rpc_in
        self._ids = itertools.count(1)

    def call(self, method, params=None):
        """The result of `method`; params a list (by position), a dict (by name) or None."""
        import urllib.error  # here, not at the top: the command line starts faster without
        import urllib.request

        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        http_request = urllib.request.Request(
            self.url, data=json.dumps(request).encode("utf-8"), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            answer = _json_or_none(raw)
            if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
                raise _rpc_error(answer["error"]) from None
            raise
        answer = _json_or_none(raw)
        if not isinstance(answer, dict):
            raise RpcError(-32700, "the server's answer is not a JSON-RPC object", raw[:200].decode("utf-8", "replace"))
        if isinstance(answer.get("error"), dict):
            raise _rpc_error(answer["error"])
        if "result" not in answer:
            raise RpcError(-32603, "the server's answer has neither result nor error", answer)
        return answer["result"]

    def rpc_in(self, key, rpc_id, method_name, params, *, async_=True, return_url=None, return_topic=None):
        """Calls `method_name` through the signed envelope. async_=True: the answer is
        `{rpc_id, status}` at once and the result is delivered later (to return_url);
        async_=False: the method's result, as a plain call would answer."""
        body = signed_rpc_in(
            key, rpc_id, method_name, params, async_=async_, return_url=return_url, return_topic=return_topic
        )
        self.sent_params[rpc_id] = body["params"]
        return self.call("rpc_in", [body])

    def rpc_check(self, key, rpc_id):
        """The state of our call: `pending | running | done | error` (plus the result once done)."""
        return self.call("rpc_check", [signed_rpc_check(key, rpc_id)])

    def rpc_kill(self, key, rpc_id):
        """Stops our running call."""
        return self.call("rpc_kill", [signed_rpc_kill(key, rpc_id)])

    def verify_return(self, body, server_pubkey_hex):
        """`verify_rpc_return` with the params this client sent for the body's rpc_id, when it
        sent that call (else with the body's own `params`)."""
        rpc_id = body.get("rpc_id") if isinstance(body, dict) else None
        kept = self.sent_params.get(rpc_id) if isinstance(rpc_id, str) else None
        return verify_rpc_return(body, server_pubkey_hex, kept)


def _json_or_none(raw):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _rpc_error(error):
    return RpcError(error.get("code"), error.get("message"), error.get("data"))


# --- command line ----------------------------------------------------------------------


def _arg_bytes(arg):
    """A command-line argument as the bytes it was given as (os.fsencode undoes the decoding)."""
    return os.fsencode(arg)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="hero_client.py", description="secp256k1 keys and signed hero calls")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="print a new private key (hex), then its public key (hex)")
    pubkey = commands.add_parser("pubkey", help="print the public key of a private key")
    pubkey.add_argument("private")
    pubkey.add_argument("--uncompressed", action="store_true")
    sign = commands.add_parser("sign", help="print the signature (hex r||s) of MESSAGE's bytes")
    sign.add_argument("private")
    sign.add_argument("message")
    check = commands.add_parser("verify", help="exit 0 when the signature is valid, else 1")
    check.add_argument("pubkey")
    check.add_argument("message")
    check.add_argument("signature")
    rpc_in = commands.add_parser("rpc-in", help="print the signed params object of rpc_in (JSON)")
    rpc_in.add_argument("private")
    rpc_in.add_argument("rpc_id")
    rpc_in.add_argument("method_name")
    rpc_in.add_argument("params", help="the method's params as JSON text, signed as given")
    rpc_in.add_argument("--return-url")
    rpc_in.add_argument("--return-topic")
    rpc_in.add_argument("--sync", action="store_true", help="async: false")
    check_return = commands.add_parser("verify-return", help="exit 0 when an rpc_return body is valid, else 1")
    check_return.add_argument("server_pubkey")
    check_return.add_argument("body", help="the rpc_return as JSON text")
    check_return.add_argument("--params", help="the params text the caller sent (else the body's)")
    args = parser.parse_args(argv)

    try:
        if args.command == "keygen":
            key = PrivateKey.generate()
            print(key.to_hex())
            print(key.public_key_hex())
        elif args.command == "pubkey":
            print(PrivateKey.from_hex(args.private).public_key_hex(compressed=not args.uncompressed))
        elif args.command == "sign":
            print(PrivateKey.from_hex(args.private).sign(_arg_bytes(args.message)))
        elif args.command == "verify":
            return 0 if verify(args.pubkey, _arg_bytes(args.message), args.signature) else 1
        elif args.command == "rpc-in":
            key = PrivateKey.from_hex(args.private)
            body = signed_rpc_in(
                key,
                args.rpc_id,
                args.method_name,
                args.params,
                async_=not args.sync,
                return_url=args.return_url,
                return_topic=args.return_topic,
            )
            print(json.dumps(body))
        elif args.command == "verify-return":
            body = _json_or_none(_arg_bytes(args.body))
            return 0 if verify_rpc_return(body, args.server_pubkey, args.params) else 1
    except ValueError as err:
        print(f"hero_client.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
