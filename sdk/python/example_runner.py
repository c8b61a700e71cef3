#!/usr/bin/env python3
"""An example hero runner in Python.

    python3 example_runner.py --stdio
    python3 example_runner.py --tcp-socket 127.0.0.1:9000 [--auth-token T]

Functions:
  echo   -> returns args[0]; logs a line
  sleep  -> sleeps args[0] seconds (default 30), stopping early when cancelled
  fail   -> an `error` with type `example_failure`
  retry  -> a `retry` after 2 seconds
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hero_runner import HandlerError, Retry, Runner, main_args, serve_from_args  # noqa: E402


def build(max_in_flight):
    runner = Runner(name="python-example-runner", max_in_flight=max_in_flight)

    @runner.handler("echo")
    def echo(request, ctx):
        args = request.get("args") or []
        ctx.log(f"echoing for {ctx.job_id}")
        print("print() goes to stderr, never to the wire")
        return args[0] if args else None

    @runner.handler("sleep")
    def sleep(request, ctx):
        args = request.get("args") or []
        seconds = float(args[0]) if args else 30.0
        if ctx.cancelled.wait(seconds):
            return "interrupted"
        return f"slept {seconds}"

    @runner.handler("fail")
    def fail(request, ctx):
        raise HandlerError("this always fails", error_type="example_failure", code="E1")

    @runner.handler("retry")
    def retry(request, ctx):
        raise Retry("try again later", after=2)

    return runner


if __name__ == "__main__":
    args = main_args()
    serve_from_args(build(args.max_in_flight), args)
