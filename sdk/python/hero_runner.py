"""hero_runner: write a hero runner in Python (standard library only).

A runner serves functions by name to a hero supervisor over the runner protocol v1
(see PROTOCOL.md): frames of a 4-byte big-endian length then UTF-8 JSON, over stdio
or TCP.

    from hero_runner import Runner, HandlerError

    runner = Runner(name="my-runner", max_in_flight=8)

    @runner.handler("greet")
    def greet(request, ctx):
        name = (request.get("args") or [None])[0]
        if not isinstance(name, str):
            raise HandlerError("greet takes a name", error_type="invalid_request")
        ctx.log(f"greeting {name}")
        return f"hello, {name}"

    runner.serve_stdio()          # or runner.serve_tcp("127.0.0.1", 9000)

A handler is `fn(request: dict, ctx: Context) -> result` (any JSON value). It runs on
its own thread. Raise `HandlerError` for an `error` outcome, `Retry` for `retry`; any
other exception is an `error` too. Python cannot stop a thread: on cancel or deadline
the request is answered at once (`cancelled` / `timeout`), `ctx.cancelled` is set, and
whatever the handler returns later is dropped; long handlers should check
`ctx.cancelled`.

Behaviour per connection, as the Rust SDK: many requests in flight (at most
`max_in_flight`, beyond it `runner_busy`), unknown function -> `handler_not_found`,
a malformed frame closes that connection only, `hello` is answered with the runner's
own and turns on `log` frames when the peer accepts them, and with an `auth_token` a
TCP connection must open with a `hello` carrying it. In stdio mode `print()` goes to
stderr: stdout is the wire.
"""

import datetime as _dt
import hmac
import json
import socket
import struct
import sys
import threading
import traceback

__all__ = ["Runner", "Context", "HandlerError", "Retry", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = "1"
DEFAULT_MAX_FRAME_LEN = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class HandlerError(Exception):
    """An `error` outcome with a message, and optionally a type, code and details."""

    def __init__(self, message, error_type=None, code=None, details=None):
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.code = code
        self.details = details


class Retry(Exception):
    """A `retry` outcome, optionally after `after` seconds."""

    def __init__(self, message, after=None):
        super().__init__(message)
        self.message = message
        self.after = after


class FrameError(Exception):
    """A malformed frame: the connection it came from is closed."""


def _log(message):
    sys.stderr.write(f"hero_runner: {message}\n")
    sys.stderr.flush()


def read_frame(rfile, max_frame_len=DEFAULT_MAX_FRAME_LEN):
    """The next message (a dict), or None at a clean end of stream."""
    header = rfile.read(4)
    if not header:
        return None
    if len(header) < 4:
        raise FrameError("connection closed mid-frame")
    (length,) = _HEADER.unpack(header)
    if length == 0:
        raise FrameError("invalid frame: zero length")
    if length > max_frame_len:
        raise FrameError(f"invalid frame: length {length} exceeds the limit of {max_frame_len} bytes")
    payload = rfile.read(length)
    if len(payload) != length:
        raise FrameError("connection closed mid-frame")
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise FrameError(f"invalid frame: {err}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("invalid frame: not a typed message")
    if message["type"] not in ("request", "response", "cancel", "hello", "log"):
        raise FrameError(f"invalid frame: unknown message type `{message['type']}`")
    if not isinstance(message.get("payload"), dict):
        raise FrameError("invalid frame: missing payload")
    return message


def encode_frame(message):
    payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(payload)) + payload


def _parse_time(text):
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class Context:
    """What a running handler gets besides its request."""

    def __init__(self, conn, job_id, request_id, deadline):
        self._conn = conn
        self.job_id = job_id
        self.request_id = request_id
        self.deadline = deadline  # an aware datetime, or None
        self.cancelled = threading.Event()

    def log(self, line, stream="stdout"):
        """One line of output: a `log` frame when the supervisor asked for them, else stderr."""
        if self._conn.log_enabled:
            self._conn.send(
                {
                    "type": "log",
                    "payload": {
                        "job_id": self.job_id,
                        "request_id": self.request_id,
                        "stream": stream,
                        "line": str(line),
                    },
                }
            )
        else:
            _log(f"[{self.job_id}/{self.request_id}] {stream}: {line}")


def _outcome(job_id, request_id, status, result=None, error=None, retry_after=None):
    body = {"job_id": job_id, "request_id": request_id, "status": status}
    if result is not None or status == "success":
        body["result"] = result
    if error is not None:
        body["error"] = error
    if retry_after is not None:
        body["retry_after_seconds"] = float(retry_after)
    return {"type": "response", "payload": body}


def _error(message, error_type=None):
    error = {"message": message}
    if error_type is not None:
        error["type"] = error_type
    return error


class _Request:
    def __init__(self, job_id, ctx):
        self.job_id = job_id
        self.ctx = ctx
        self.timer = None


class _Connection:
    def __init__(self, runner, rfile, wfile, require_auth):
        self.runner = runner
        self.rfile = rfile
        self.wfile = wfile
        self.require_auth = require_auth
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()  # guards in_flight
        self.in_flight = {}
        self.log_enabled = False
        self.closed = False

    def send(self, message):
        frame = encode_frame(message)
        with self.write_lock:
            if self.closed:
                return
            try:
                self.wfile.write(frame)
                self.wfile.flush()
            except (OSError, ValueError):
                self.closed = True

    def finish(self, request_id, outcome):
        """Answers a request once: the first of handler, cancel and deadline wins."""
        with self.lock:
            request = self.in_flight.pop(request_id, None)
        if request is None:
            return
        if request.timer is not None:
            request.timer.cancel()
        self.send(outcome)

    def serve(self):
        authenticated = not self.require_auth
        try:
            while True:
                message = read_frame(self.rfile, self.runner.max_frame_len)
                if message is None:
                    break
                kind, payload = message["type"], message["payload"]
                if not authenticated:
                    token = payload.get("auth_token") if kind == "hello" else None
                    if not isinstance(token, str) or not hmac.compare_digest(
                        token.encode(), self.runner.auth_token.encode()
                    ):
                        _log("connection did not open with an authenticating hello; closing it")
                        break
                    authenticated = True
                if kind == "request":
                    self.on_request(payload)
                elif kind == "cancel":
                    self.on_cancel(payload)
                elif kind == "hello":
                    self.log_enabled = "log" in (payload.get("extensions") or [])
                    self.send({"type": "hello", "payload": self.runner.hello()})
        except FrameError as err:
            _log(f"malformed frame; closing the connection: {err}")
        except (OSError, ValueError) as err:
            _log(f"reading the connection failed: {err}")
        finally:
            with self.lock:
                requests = list(self.in_flight.values())
                self.in_flight.clear()
            for request in requests:
                request.ctx.cancelled.set()
                if request.timer is not None:
                    request.timer.cancel()
            with self.write_lock:
                self.closed = True

    def on_request(self, req):
        job_id, request_id = req.get("job_id"), req.get("request_id")
        if not isinstance(job_id, str) or not isinstance(request_id, str):
            raise FrameError("invalid frame: request without job_id/request_id")
        function = req.get("function_name")
        handler = self.runner.lookup(function)
        if handler is None:
            error = _error(f"no handler for function `{function}`", "handler_not_found")
            self.send(_outcome(job_id, request_id, "error", error=error))
            return
        deadline = _parse_time((req.get("context") or {}).get("deadline"))
        now = _dt.datetime.now(_dt.timezone.utc)
        if deadline is not None and deadline <= now:
            error = _error("deadline passed before the request started", "timeout")
            self.send(_outcome(job_id, request_id, "timeout", error=error))
            return
        ctx = Context(self, job_id, request_id, deadline)
        with self.lock:
            if request_id in self.in_flight:
                answer = _error(f"request_id `{request_id}` is already in flight", "invalid_request")
            elif len(self.in_flight) >= self.runner.max_in_flight:
                answer = _error(
                    f"runner busy: {self.runner.max_in_flight} requests in flight", "runner_busy"
                )
            else:
                answer = None
                request = _Request(job_id, ctx)
                self.in_flight[request_id] = request
        if answer is not None:
            self.send(_outcome(job_id, request_id, "error", error=answer))
            return
        if deadline is not None:
            request.timer = threading.Timer(
                (deadline - now).total_seconds(), self.on_deadline, (job_id, request_id, ctx)
            )
            request.timer.daemon = True
            request.timer.start()
        threading.Thread(
            target=self.run, args=(handler, req, ctx), daemon=True, name=f"request-{request_id}"
        ).start()

    def on_deadline(self, job_id, request_id, ctx):
        ctx.cancelled.set()
        self.finish(request_id, _outcome(job_id, request_id, "timeout", error=_error("deadline exceeded", "timeout")))

    def run(self, handler, req, ctx):
        job_id, request_id = ctx.job_id, ctx.request_id
        try:
            result = handler(req, ctx)
            outcome = _outcome(job_id, request_id, "success", result=result)
        except Retry as retry:
            outcome = _outcome(job_id, request_id, "retry", error=_error(retry.message), retry_after=retry.after)
        except HandlerError as err:
            error = _error(err.message, err.error_type)
            if err.code is not None:
                error["code"] = err.code
            if err.details is not None:
                error["details"] = err.details
            outcome = _outcome(job_id, request_id, "error", error=error)
        except Exception as err:  # a failing handler never takes the runner down
            _log(f"handler {req.get('function_name')} raised:\n{traceback.format_exc()}")
            outcome = _outcome(job_id, request_id, "error", error=_error(f"{type(err).__name__}: {err}", "exception"))
        if ctx.cancelled.is_set():
            outcome = _outcome(job_id, request_id, "error", error=_error("request cancelled", "cancelled"))
        try:
            self.finish(request_id, outcome)
        except (TypeError, ValueError) as err:  # a result that is not JSON
            self.send(_outcome(job_id, request_id, "error", error=_error(f"result is not JSON: {err}")))

    def on_cancel(self, cancel):
        job_id, request_id = cancel.get("job_id"), cancel.get("request_id")
        with self.lock:
            targets = [
                (rid, r)
                for rid, r in self.in_flight.items()
                if r.job_id == job_id and (request_id is None or rid == request_id)
            ]
        for rid, request in targets:
            request.ctx.cancelled.set()
            self.finish(rid, _outcome(request.job_id, rid, "error", error=_error("request cancelled", "cancelled")))


class Runner:
    """Handlers by function name, served over stdio or TCP."""

    def __init__(self, name="python-runner", version="0.1.0", max_in_flight=16, auth_token=None,
                 max_frame_len=DEFAULT_MAX_FRAME_LEN):
        self.name = name
        self.version = version
        self.max_in_flight = max(1, int(max_in_flight))
        self.auth_token = auth_token
        self.max_frame_len = max_frame_len
        self._handlers = {}

    def register(self, function_name, fn):
        """Serves `fn(request, ctx)` as `function_name` (matched exactly, then ignoring case)."""
        self._handlers[function_name] = fn
        return fn

    def handler(self, function_name):
        """Decorator form of `register`."""
        return lambda fn: self.register(function_name, fn)

    def lookup(self, function_name):
        if not isinstance(function_name, str):
            return None
        if function_name in self._handlers:
            return self._handlers[function_name]
        for name, fn in self._handlers.items():
            if name.lower() == function_name.lower():
                return fn
        return None

    def hello(self):
        return {
            "protocol_version": PROTOCOL_VERSION,
            "name": self.name,
            "version": self.version,
            "functions": sorted(self._handlers),
            "max_in_flight": self.max_in_flight,
            "extensions": ["log"],
        }

    def serve_stream(self, rfile, wfile, require_auth=False):
        """Serves one connection on binary file objects until it closes."""
        _Connection(self, rfile, wfile, require_auth).serve()

    def serve_stdio(self):
        """Serves stdin/stdout until stdin closes. `print()` is redirected to stderr."""
        rfile, wfile = sys.stdin.buffer, sys.stdout.buffer
        sys.stdout = sys.stderr
        self.serve_stream(rfile, wfile)

    def serve_tcp(self, host, port, ready=None):
        """Listens on host:port and serves every connection on its own thread. A
        non-loopback host requires `auth_token`. `ready(address)` is called once bound."""
        if not _is_loopback(host) and not self.auth_token:
            raise ValueError(f"refusing to listen on non-loopback address {host} without an auth token")
        server = socket.create_server((host, port))
        address = server.getsockname()
        _log(f"listening on {address[0]}:{address[1]}")
        if ready is not None:
            ready(address)
        with server:
            while True:
                sock, _ = server.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._serve_socket, args=(sock,), daemon=True).start()

    def _serve_socket(self, sock):
        with sock, sock.makefile("rb") as rfile, sock.makefile("wb") as wfile:
            self.serve_stream(rfile, wfile, require_auth=bool(self.auth_token))


def _is_loopback(host):
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    import ipaddress

    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def main_args(argv=None):
    """Parses the conventional runner flags: --stdio | --tcp-socket HOST:PORT [--auth-token T]."""
    import argparse

    parser = argparse.ArgumentParser()
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true")
    mode.add_argument("--tcp-socket", metavar="HOST:PORT")
    parser.add_argument("--auth-token")
    parser.add_argument("--max-in-flight", type=int, default=16)
    return parser.parse_args(argv)


def serve_from_args(runner, args):
    """Serves `runner` as `main_args` asked."""
    if args.auth_token:
        runner.auth_token = args.auth_token
    if args.stdio:
        runner.serve_stdio()
    else:
        host, _, port = args.tcp_socket.rpartition(":")
        runner.serve_tcp(host.strip("[]"), int(port))
