#!/usr/bin/env python3
"""An example receiver of rpc_return deliveries (standard library only).

    python3 return_receiver.py SERVER_PUBKEY OUT_FILE [--host 127.0.0.1] [--port 8099]
                               [--fail-first N]

A supervisor POSTs the answer of an asynchronous `rpc_in` call to the call's
`return_url` as a JSON object `{rpc_id, method_name, pubkey, signature, topic, status,
result, params}` (see hero_client.py). This receiver, on any path:

- verifies it against SERVER_PUBKEY, the supervisor's secp256k1 public key (hex SEC1);
  invalid (bad JSON, wrong key, bad signature): 400, and nothing is kept;
- drops duplicates by `rpc_id`: delivery is at least once, so the same return can come
  again after a lost answer; a valid duplicate is answered 200 (so it is not retried) and
  not kept twice;
- appends each first-time return, as one JSON line, to OUT_FILE, and prints that line.

For tests: the first line on stdout is `listening on PORT` (with `--port 0` the system
picks the port), and `--fail-first N` answers 503 to the first N POSTs, without looking
at them, to exercise the sender's retries. Duplicates are tracked in memory: a restarted
receiver starts over (a real one would keep the seen rpc_ids with its data).
"""

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hero_client import normalize_pubkey, verify_rpc_return  # noqa: E402

MAX_BODY = 16 * 1024 * 1024


class Receiver:
    """What the handler threads share: the key, the output file, seen rpc_ids, failures to go."""

    def __init__(self, server_pubkey, out_path, fail_first=0):
        self.server_pubkey = server_pubkey
        self.out_path = out_path
        self.fail_first = fail_first
        self.seen = set()
        self.lock = threading.Lock()

    def take_failure(self):
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return True
            return False

    def accept(self, body):
        """The HTTP status for one POSTed body (already parsed, or None when it was not JSON)."""
        if not verify_rpc_return(body, self.server_pubkey):
            return 400
        line = json.dumps(body, separators=(",", ":"))
        with self.lock:
            if body["rpc_id"] in self.seen:
                return 200
            with open(self.out_path, "a", encoding="utf-8") as out:
                out.write(line + "\n")
            self.seen.add(body["rpc_id"])
            print(line, flush=True)
        return 200


class Handler(BaseHTTPRequestHandler):
    receiver = None  # set on the subclass made by serve()

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, "Content-Length required")
            return
        if length < 0 or length > MAX_BODY:
            self._answer(413, "body too large")
            return
        # Read the body even to refuse it: closing on unread data would reset the
        # connection, and the sender would see an error instead of the status.
        raw = self.rfile.read(length)
        if self.receiver.take_failure():
            self._answer(503, "failing on purpose (--fail-first)")
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        status = self.receiver.accept(body)
        self._answer(status, "ok" if status == 200 else "invalid rpc_return")

    def _answer(self, status, text):
        data = (text + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        sys.stderr.write("return_receiver: %s - %s\n" % (self.address_string(), format % args))


def serve(receiver, host="127.0.0.1", port=0):
    """A ThreadingHTTPServer bound to (host, port) answering with `receiver` (not yet serving)."""
    handler = type("BoundHandler", (Handler,), {"receiver": receiver})
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="return_receiver.py", description=__doc__.splitlines()[0])
    parser.add_argument("server_pubkey", help="the supervisor's public key, hex SEC1")
    parser.add_argument("out_file", help="accepted returns are appended here, one JSON line each")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--fail-first", type=int, default=0, metavar="N", help="answer 503 to the first N POSTs")
    args = parser.parse_args(argv)
    try:
        server_pubkey = normalize_pubkey(args.server_pubkey)
    except ValueError as err:
        parser.error(f"server_pubkey: {err}")
    server = serve(Receiver(server_pubkey, args.out_file, args.fail_first), args.host, args.port)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
