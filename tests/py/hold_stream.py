#!/usr/bin/env python3
"""grpcio client that opens one Hold stream and reports how it ends (fault tests).

Prints JSON lines: {"event": "open", "t": unix_time} once the stream's first message arrived,
then {"event": "end", "t": unix_time, "code": "UNAVAILABLE", "details": "...", "ok": false}
when the stream ends (or {"event": "timeout"} if it is still open after --wait seconds).

  .venv/bin/python tests/py/hold_stream.py --target 127.0.0.1:10001 --gen-dir DIR [--wait 10]
"""
import argparse
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import generate  # noqa: E402


def say(**kw):
    print(json.dumps(kw), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--gen-dir", required=True)
    ap.add_argument("--wait", type=float, default=10.0)
    a = ap.parse_args()
    import grpc

    pb, pb_grpc = generate(a.gen_dir)
    channel = grpc.insecure_channel(a.target)
    stub = pb_grpc.BridgeTestStub(channel)
    tok = f"hold-py-{uuid.uuid4().hex[:12]}"
    it = stub.Hold(pb.HoldRequest(token=tok, hold_ms=30000), timeout=a.wait + 5)
    try:
        next(it)
    except grpc.RpcError as e:
        say(event="error_before_open", code=e.code().name, details=e.details())
        return 1
    say(event="open", t=time.time(), token=tok)
    try:
        for _ in it:
            pass
        say(event="end", t=time.time(), ok=True, code="OK", details="")
    except grpc.RpcError as e:
        say(event="end", t=time.time(), ok=False, code=e.code().name, details=e.details() or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
