"""Tests of hero_client.py and return_receiver.py (standard library only).

    cd sdk/python && python3 -m unittest -v test_hero_client

The Rust test tests/tests/python_sdk.rs runs these too, and cross-checks keys and
signatures against the k256 crate the supervisor uses.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import hero_client as hc  # noqa: E402
from hero_client import (  # noqa: E402
    Client,
    PrivateKey,
    RpcError,
    normalize_pubkey,
    rpc_in_message,
    signed_rpc_check,
    signed_rpc_in,
    signed_rpc_kill,
    verify,
    verify_rpc_return,
)

# Deterministic ECDSA over secp256k1 with SHA-256 and RFC 6979 nonces: the vectors first
# published on bitcointalk (topic 285142) and used by many libraries since (bitcoinj,
# python-ecdsa, trezor-crypto...): (private key, message, nonce k, low-S signature r||s).
VECTORS = [
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "Satoshi Nakamoto",
        0x8F8A276C19F4149656B280621E358CCE24F5F52542772691EE69063B74F15D15,
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8"
        "2442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "All those moments will be lost in time, like tears in rain. Time to die...",
        0x38AA22D72376B4DBC472E06C3BA403EE0A394DA63FC58D88686C611ABA98D6B3,
        "8600dbd41e348fe5c9465ab92d23e3db8b98b873beecd930736488696438cb6b"
        "547fe64427496db33bf66019dacbf0039c04199abb0122918601db38a72cfc21",
    ),
    (
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
        "Satoshi Nakamoto",
        0x33A19B60E25FB6F4435AF53A3D42D493644827367E6453928554F43E49AA6F90,
        "fd567d121db66e382991534ada77a6bd3106f0a1098c231e47993447cd6af2d0"
        "6b39cd0eb1bc8603e159ef5c20a5c8ad685a45b06ce9bebed3f153d10d93bed5",
    ),
    (
        "f8b8af8ce3c7cca5e300d33939540c10d45ce001b8f252bfbc57ba0342904181",
        "Alan Turing",
        0x525A82B70E67874398067543FD84C83D30C175FDC45FDEEE082FE13B1D7CFDF1,
        "7063ae83e7f62bbb171798131b4a0564b956930092b33b07b395615d9ec7e15c"
        "58dfcc1e00a35e1572f366ffe34ba0fc47db1e7189759b9fb233c5b05ab388ea",
    ),
    (
        "e91671c46231f833a6406ccbea0e3e392c76c167bac1cb013f6f1013980455c2",
        "There is a computer disease that anybody who works with computers knows about."
        " It's a very serious disease and it interferes completely with the work."
        " The trouble with computers is that you 'play' with them!",
        0x1F4B84C23A86A221D233F2521BE018D9318639D5B8BBD6374A8A59232D16AD3D,
        "b552edd27580141f3b2a5463048cb7cd3e047b97c9f98076c32dbdf85a68718b"
        "279fa72dd19bfae05577e06c7c0c1900c371fcd5893f7e1d56a37d30174671f6",
    ),
]

GENERATOR_COMPRESSED = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
GENERATOR_UNCOMPRESSED = (
    "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
)


def high_s(signature_hex):
    """The same signature with s replaced by N - s (equally valid, not canonical)."""
    raw = bytes.fromhex(signature_hex)
    s = int.from_bytes(raw[32:], "big")
    return (raw[:32] + (hc.N - s).to_bytes(32, "big")).hex()


class Keys(unittest.TestCase):
    def test_private_key_one_is_the_generator(self):
        key = PrivateKey.from_hex("00" * 31 + "01")
        self.assertEqual(key.public_key_hex(), GENERATOR_COMPRESSED)
        self.assertEqual(key.public_key_hex(compressed=False), GENERATOR_UNCOMPRESSED)

    def test_small_multiples_and_negation(self):
        # 2G and 3G, and N-1 = -G (same x, odd y: prefix 03).
        self.assertEqual(
            PrivateKey(2).public_key_hex(False),
            "04c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
            "1ae168fea63dc339a3c58419466ceaeef7f632653266d0e1236431a950cfe52a",
        )
        self.assertEqual(
            PrivateKey(3).public_key_hex(False),
            "04f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
            "388f7b0f632de8140fe337e62a37f3566500a99934c2231b6cb9fd7584b8e672",
        )
        self.assertEqual(PrivateKey(hc.N - 1).public_key_hex(), "03" + GENERATOR_COMPRESSED[2:])

    def test_compressed_and_uncompressed_parse_to_the_same_key(self):
        key = PrivateKey.generate()
        self.assertEqual(normalize_pubkey(key.public_key_hex(False)), key.public_key_hex())
        self.assertEqual(normalize_pubkey(key.public_key_hex(), compressed=False), key.public_key_hex(False))
        self.assertEqual(normalize_pubkey(key.public_key_hex().upper()), key.public_key_hex())

    def test_invalid_keys_are_refused(self):
        for text in ["", "00" * 32, hc.N.to_bytes(32, "big").hex(), "zz" * 32, "01" * 31]:
            with self.assertRaises(ValueError, msg=text):
                PrivateKey.from_hex(text)
        not_on_curve = "04" + "00" * 31 + "01" + "00" * 31 + "01"
        for text in ["", "05" + "11" * 32, not_on_curve, "02" + "ff" * 32, GENERATOR_COMPRESSED[:-2]]:
            with self.assertRaises(ValueError, msg=text):
                normalize_pubkey(text)

    def test_hex_round_trip_and_repr_hides_the_secret(self):
        key = PrivateKey.generate()
        self.assertEqual(PrivateKey.from_hex(key.to_hex()).to_hex(), key.to_hex())
        self.assertNotIn(key.to_hex(), repr(key))


class Signatures(unittest.TestCase):
    def test_rfc6979_nonces(self):
        for private_hex, message, k, _ in VECTORS:
            digest = hashlib.sha256(message.encode()).digest()
            nonce = next(hc._rfc6979_nonces(int(private_hex, 16), digest))
            self.assertEqual(nonce, k, message)

    def test_published_signatures(self):
        for private_hex, message, _, signature in VECTORS:
            key = PrivateKey.from_hex(private_hex)
            self.assertEqual(key.sign(message), signature, message)
            self.assertTrue(verify(key.public_key_hex(), message, signature))
            self.assertTrue(verify(key.public_key_hex(False), message, signature))

    def test_round_trip_str_and_bytes(self):
        key = PrivateKey.generate()
        for message in ["", "hello", "héllo ✓ 🔑", "x" * 10_000]:
            signature = key.sign(message)
            self.assertEqual(len(signature), 128)
            self.assertEqual(signature, key.sign(message.encode("utf-8")))  # str is its UTF-8
            self.assertTrue(verify(key.public_key_hex(), message, signature))
            self.assertTrue(verify(key.public_key_hex(), message.encode("utf-8"), signature))

    def test_tampering_fails(self):
        key = PrivateKey.generate()
        other = PrivateKey.generate()
        signature = key.sign("pay 10 to alice")
        self.assertFalse(verify(key.public_key_hex(), "pay 10 to alicf", signature))
        self.assertFalse(verify(other.public_key_hex(), "pay 10 to alice", signature))
        for i in (0, 40, 64, 127):
            flipped = signature[:i] + ("0" if signature[i] != "0" else "1") + signature[i + 1 :]
            self.assertFalse(verify(key.public_key_hex(), "pay 10 to alice", flipped), i)

    def test_malformed_input_is_false_not_an_error(self):
        key = PrivateKey.generate()
        signature = key.sign("m")
        zero_r = "00" * 32 + signature[64:]
        big_s = signature[:64] + hc.N.to_bytes(32, "big").hex()
        for pubkey, sig in [
            ("nothex", signature),
            (key.public_key_hex(), signature[:-2]),
            (key.public_key_hex(), "zz" * 64),
            (key.public_key_hex(), zero_r),
            (key.public_key_hex(), big_s),
            (None, signature),
            (key.public_key_hex(), None),
        ]:
            self.assertFalse(verify(pubkey, "m", sig))

    def test_low_s_made_and_high_s_accepted(self):
        saw_high = False
        for i in range(24):
            key = PrivateKey.generate()
            message = f"message {i}"
            signature = key.sign(message)
            s = int(signature[64:], 16)
            self.assertLessEqual(s, hc.N // 2)
            # What raw ECDSA would have given half of the time; verification takes it too.
            other = high_s(signature)
            saw_high = saw_high or int(other[64:], 16) > hc.N // 2
            self.assertTrue(verify(key.public_key_hex(), message, other))
        self.assertTrue(saw_high)

    def test_deterministic(self):
        key = PrivateKey.from_hex("07" * 32)
        self.assertEqual(key.sign("same"), key.sign("same"))
        self.assertNotEqual(key.sign("same"), key.sign("other"))


class Envelopes(unittest.TestCase):
    def setUp(self):
        self.key = PrivateKey.from_hex("07" * 32)

    def test_rpc_in_signs_the_plain_concatenation(self):
        params = {"script": "print(1)", "script_type": "Python"}
        body = signed_rpc_in(
            self.key,
            "r-1",
            "run_job",
            params,
            return_url="http://127.0.0.1:9/returns",
            return_topic="builds",
        )
        text = '{"script":"print(1)","script_type":"Python"}'
        self.assertEqual(body["params"], text)
        self.assertEqual(
            set(body), {"rpc_id", "method_name", "params", "pubkey", "signature", "async", "return_url", "return_topic"}
        )
        self.assertIs(body["async"], True)
        self.assertEqual(body["pubkey"], self.key.public_key_hex())
        signed = "r-1" + "run_job" + text + "http://127.0.0.1:9/returns" + "builds"
        self.assertEqual(rpc_in_message("r-1", "run_job", params, "http://127.0.0.1:9/returns", "builds"), signed)
        self.assertEqual(body["signature"], self.key.sign(signed))
        self.assertTrue(verify(body["pubkey"], signed, body["signature"]))
        # The same fields in another split sign the same text: that is the contract.
        joined = "r-1run_job" + text + "http://127.0.0.1:9/returnsbuilds"
        self.assertTrue(verify(body["pubkey"], joined, body["signature"]))
        self.assertFalse(verify(body["pubkey"], "r-1" + "run_job" + text, body["signature"]))

    def test_rpc_in_absent_fields_are_empty_and_left_out(self):
        body = signed_rpc_in(self.key, "r-2", "job.load", "[1, 2]", async_=False)
        self.assertNotIn("return_url", body)
        self.assertNotIn("return_topic", body)
        self.assertIs(body["async"], False)
        self.assertEqual(body["params"], "[1, 2]")  # a str is JSON text, sent and signed as is
        self.assertTrue(verify(body["pubkey"], "r-2job.load[1, 2]", body["signature"]))

    def test_params_are_compact_json(self):
        body = signed_rpc_in(self.key, "r-3", "m", [1, {"a": "é"}])
        self.assertEqual(body["params"], json.dumps([1, {"a": "é"}], separators=(",", ":")))
        self.assertEqual(body["params"], '[1,{"a":"\\u00e9"}]')

    def test_check_and_kill_sign_the_rpc_id(self):
        for make in (signed_rpc_check, signed_rpc_kill):
            body = make(self.key, "r-4")
            self.assertEqual(set(body), {"rpc_id", "pubkey", "signature"})
            self.assertEqual(body["signature"], self.key.sign("r-4"))

    def test_non_string_fields_are_refused(self):
        with self.assertRaises(TypeError):
            signed_rpc_in(self.key, 7, "m", [])
        with self.assertRaises(TypeError):
            signed_rpc_in(self.key, "r", "m", [], return_url=5)


def make_return(server_key, rpc_id="r-1", method_name="run_job", params='{"script":"1"}', result='"ok"', **extra):
    body = {
        "rpc_id": rpc_id,
        "method_name": method_name,
        "pubkey": server_key.public_key_hex(),
        "topic": "builds",
        "status": "done",
        "result": result,
        "params": params,
    }
    body["signature"] = server_key.sign(rpc_id + method_name + params + result)
    body.update(extra)
    return body


class Returns(unittest.TestCase):
    def setUp(self):
        self.server = PrivateKey.from_hex("11" * 32)
        self.server_pub = self.server.public_key_hex()

    def test_a_correct_return_verifies(self):
        body = make_return(self.server)
        self.assertTrue(verify_rpc_return(body, self.server_pub))
        self.assertTrue(verify_rpc_return(body, self.server.public_key_hex(False)))
        self.assertTrue(verify_rpc_return(body, self.server_pub, '{"script":"1"}'))
        self.assertTrue(verify_rpc_return(body, self.server_pub, {"script": "1"}))  # as given to signed_rpc_in
        error = make_return(self.server, result='{"error":{"code":-32001,"message":"not found","data":null}}')
        self.assertTrue(verify_rpc_return(error, self.server_pub))

    def test_kept_params_are_enough_without_the_body_params(self):
        body = make_return(self.server)
        del body["params"]
        self.assertFalse(verify_rpc_return(body, self.server_pub))
        self.assertTrue(verify_rpc_return(body, self.server_pub, '{"script":"1"}'))

    def test_a_changed_byte_of_result_or_params_fails(self):
        body = make_return(self.server)
        for field in ("result", "params", "rpc_id", "method_name"):
            changed = dict(body)
            value = changed[field]
            changed[field] = value[:-1] + ("X" if value[-1] != "X" else "Y")
            self.assertFalse(verify_rpc_return(changed, self.server_pub), field)
        # The body's params differ from the ones the caller kept: refused even if signed.
        other = make_return(self.server, params='{"script":"2"}')
        self.assertTrue(verify_rpc_return(other, self.server_pub))
        self.assertFalse(verify_rpc_return(other, self.server_pub, '{"script":"1"}'))

    def test_wrong_key_or_malformed_fails(self):
        impostor = PrivateKey.from_hex("22" * 32)
        self.assertFalse(verify_rpc_return(make_return(impostor), self.server_pub))
        # Signed by the server but claiming another key, or no key.
        self.assertFalse(verify_rpc_return(make_return(self.server, pubkey=impostor.public_key_hex()), self.server_pub))
        body = make_return(self.server)
        del body["pubkey"]
        self.assertFalse(verify_rpc_return(body, self.server_pub))
        self.assertFalse(verify_rpc_return(make_return(self.server, result="x", signature="00"), self.server_pub))
        as_object = make_return(self.server)
        as_object["result"] = "ok"  # not the signed text any more
        self.assertFalse(verify_rpc_return(as_object, self.server_pub))
        as_object["result"] = {"ok": True}  # result must be a string of JSON text
        self.assertFalse(verify_rpc_return(as_object, self.server_pub))
        for junk in (None, [], "body", {}):
            self.assertFalse(verify_rpc_return(junk, self.server_pub))
        self.assertFalse(verify_rpc_return(make_return(self.server), "not a key"))


class FakeServer:
    """A JSON-RPC server in a thread: records requests, answers from `answer(request)`."""

    def __init__(self, answer):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(raw)
                outer.requests.append((dict(self.headers), request))
                status, body = answer(request)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class ClientTests(unittest.TestCase):
    def answer(self, request):
        if request["method"] == "fail":
            error = {"code": -32001, "message": "nope", "data": {"x": 1}}
            return 200, {"jsonrpc": "2.0", "id": request["id"], "error": error}
        if request["method"] == "denied":
            return 401, {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "unauthorized"}}
        return 200, {"jsonrpc": "2.0", "id": request["id"], "result": {"echo": request.get("params")}}

    def setUp(self):
        self.server = FakeServer(self.answer)
        self.addCleanup(self.server.close)
        self.key = PrivateKey.from_hex("07" * 32)

    def test_call_sends_json_rpc_with_the_token(self):
        client = Client(self.server.url, token="t0ken")
        self.assertEqual(client.call("ping", [1]), {"echo": [1]})
        self.assertEqual(client.call("ping"), {"echo": None})
        headers, request = self.server.requests[0]
        self.assertEqual(request["jsonrpc"], "2.0")
        self.assertEqual(request["method"], "ping")
        self.assertEqual(headers.get("Authorization"), "Bearer t0ken")
        self.assertNotIn("params", self.server.requests[1][1])
        self.assertNotEqual(request["id"], self.server.requests[1][1]["id"])

    def test_errors_carry_code_message_data(self):
        client = Client(self.server.url)
        with self.assertRaises(RpcError) as caught:
            client.call("fail", {})
        self.assertEqual((caught.exception.code, caught.exception.message), (-32001, "nope"))
        self.assertEqual(caught.exception.data, {"x": 1})
        with self.assertRaises(RpcError) as caught:
            client.call("denied")
        self.assertEqual(caught.exception.code, -32000)
        self.assertNotIn("Authorization", self.server.requests[0][0])

    def test_signed_calls_send_one_params_object_by_position(self):
        client = Client(self.server.url)
        client.rpc_in(self.key, "r-9", "run_job", {"a": 1}, return_url="http://x/r")
        client.rpc_check(self.key, "r-9")
        client.rpc_kill(self.key, "r-9")
        methods = [request["method"] for _, request in self.server.requests]
        self.assertEqual(methods, ["rpc_in", "rpc_check", "rpc_kill"])
        (rpc_in,) = self.server.requests[0][1]["params"]
        self.assertEqual(rpc_in["params"], '{"a":1}')
        self.assertTrue(verify(rpc_in["pubkey"], 'r-9run_job{"a":1}http://x/r', rpc_in["signature"]))
        (check,) = self.server.requests[1][1]["params"]
        self.assertTrue(verify(check["pubkey"], "r-9", check["signature"]))
        # The client kept the params text, so a return is checked against what was sent.
        server_key = PrivateKey.from_hex("11" * 32)
        good = make_return(server_key, rpc_id="r-9", params='{"a":1}')
        self.assertTrue(client.verify_return(good, server_key.public_key_hex()))
        swapped = make_return(server_key, rpc_id="r-9", params='{"a":2}')
        self.assertFalse(client.verify_return(swapped, server_key.public_key_hex()))
        self.assertFalse(client.verify_return({"rpc_id": []}, server_key.public_key_hex()))


class Cli(unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run(
            [sys.executable, os.path.join(HERE, "hero_client.py"), *args], capture_output=True, text=True, timeout=30
        )

    def test_keygen_sign_verify(self):
        out = self.run_cli("keygen")
        self.assertEqual(out.returncode, 0, out.stderr)
        private_hex, public_hex = out.stdout.split()
        self.assertEqual(PrivateKey.from_hex(private_hex).public_key_hex(), public_hex)
        signature = self.run_cli("sign", private_hex, "héllo").stdout.strip()
        self.assertEqual(signature, PrivateKey.from_hex(private_hex).sign("héllo"))
        self.assertEqual(self.run_cli("verify", public_hex, "héllo", signature).returncode, 0)
        self.assertEqual(self.run_cli("verify", public_hex, "hello", signature).returncode, 1)
        self.assertEqual(self.run_cli("sign", "00", "m").returncode, 2)


class ReceiverTests(unittest.TestCase):
    def setUp(self):
        self.server = PrivateKey.from_hex("11" * 32)
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.out = os.path.join(self.dir.name, "returns.jsonl")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "return_receiver.py"),
                self.server.public_key_hex(False),
                self.out,
                "--port",
                "0",
                "--fail-first",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(self.stop)
        first = self.proc.stdout.readline()
        self.assertTrue(first.startswith("listening on "), first)
        self.url = f"http://127.0.0.1:{int(first.split()[-1])}/returns"

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def post(self, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    def test_fail_first_then_accept_once_and_refuse_invalid(self):
        good = make_return(self.server, rpc_id="r-1")
        big = make_return(self.server, rpc_id="r-big", result=json.dumps("x" * 300_000))
        self.assertEqual(self.post(big), 503)  # read, then refused: a status, not a reset
        self.assertEqual(self.post(good), 503)
        self.assertEqual(self.post(good), 200)
        self.assertEqual(self.post(good), 200)  # a duplicate: answered, not kept twice
        forged = dict(good, rpc_id="r-2")  # signature over another rpc_id
        self.assertEqual(self.post(forged), 400)
        self.assertEqual(self.post(b"not json"), 400)
        other = make_return(self.server, rpc_id="r-3", result='{"error":{"code":1,"message":"m","data":null}}')
        self.assertEqual(self.post(other), 200)
        with open(self.out, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([line["rpc_id"] for line in lines], ["r-1", "r-3"])
        self.assertEqual(lines[0], good)
        printed = [self.proc.stdout.readline(), self.proc.stdout.readline()]
        self.assertEqual([json.loads(line)["rpc_id"] for line in printed], ["r-1", "r-3"])


if __name__ == "__main__":
    unittest.main()
