#!/usr/bin/env python3
"""grpcio (Python) client for the grpc-bridge end-to-end suite.

Runs the same cases as the tonic client in tests/src/cases.rs against bridge.test.BridgeTest at
--target, printing one JSON object per line: {"case", "ok", "detail", "ms"}. Exit status 0 when
every case passed, 1 otherwise.

Stubs are generated at run time with grpc_tools.protoc (from the repo's .venv) into --gen-dir
(default tests/py/gen/, which is git-ignored).

  .venv/bin/python tests/py/client.py --target 127.0.0.1:10000 [--cases unary,bidi_ping_pong]
"""
import argparse
import importlib
import json
import os
import queue
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(os.path.dirname(HERE), "proto")

TRICKY_MESSAGE = "bad input: 100% ünïcødé ✓ 😀 %41 %zz 50%% done, tab\tend"
BIN_HDR = bytes([0xFF, 0x00, 0x80, 0x7F, 0x01])
BIN_TRL = bytes([0x0D, 0x0A, 0x00, 0x3A, 0xC3, 0x28])
BIN_REQ = bytes([0, 1, 2, 0xFE, 0xFF, 0x25])
MIB4 = 4 << 20


def generate(gen_dir):
    from grpc_tools import protoc

    os.makedirs(gen_dir, exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={gen_dir}",
        f"--grpc_python_out={gen_dir}",
        os.path.join(PROTO_DIR, "bridge_test.proto"),
    ])
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, gen_dir)
    return importlib.import_module("bridge_test_pb2"), importlib.import_module("bridge_test_pb2_grpc")


def pattern(n):
    return bytes(((i * 31 + i // 251) % 251) for i in range(n))


class Fail(Exception):
    pass


def ensure(cond, msg):
    if not cond:
        raise Fail(msg)


def md_dict(md):
    return {k: v for k, v in (md or ())}


def token(prefix):
    return f"{prefix}-py-{uuid.uuid4().hex[:12]}"


class Cases:
    def __init__(self, grpc, pb, pb_grpc, target):
        self.grpc = grpc
        self.pb = pb
        opts = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ]
        self.channel = grpc.insecure_channel(target, options=opts)
        self.stub = pb_grpc.BridgeTestStub(self.channel)

    def call_info(self, tok, within, pred):
        deadline = time.monotonic() + within
        while True:
            info = self.stub.GetCallInfo(self.pb.CallInfoRequest(token=tok), timeout=5)
            if pred(info):
                return info, True
            if time.monotonic() >= deadline:
                return info, False
            time.sleep(0.025)

    def unary(self):
        r = self.stub.Unary(self.pb.UnaryRequest(payload=b"hello bridge"), timeout=10)
        ensure(r.payload == b"hello bridge", f"payload {r.payload!r}")
        ensure(r.request_payload_size == 12, f"backend saw {r.request_payload_size} bytes")
        return "echo ok"

    def server_stream_gated(self):
        gate = token("gate")
        it = self.stub.ServerStream(self.pb.StreamRequest(count=3, payload_size=10, gate_token=gate), timeout=20)
        got = queue.Queue()

        def reader():
            try:
                for m in it:
                    got.put(("msg", m))
                got.put(("end", None))
            except Exception as e:  # noqa: BLE001
                got.put(("err", e))

        threading.Thread(target=reader, daemon=True).start()
        try:
            first = got.get(timeout=5)
        except queue.Empty:
            first = None
        released = self.stub.ReleaseGate(self.pb.GateRequest(token=gate), timeout=5)
        ensure(first is not None, "message 0 did not arrive within 5 s while the backend held the stream open")
        ensure(first[0] == "msg" and first[1].index == 0, f"first event {first}")
        ensure(released.had_waiter, "backend had not registered the gate")
        n = 1
        while True:
            kind, m = got.get(timeout=10)
            if kind == "end":
                break
            ensure(kind == "msg", f"after {n} messages: {m}")
            ensure(m.index == n, f"message {n} has index {m.index}")
            n += 1
        ensure(n == 3, f"{n} messages")
        return "message 0 arrived while the backend was blocked"

    def server_stream_timing(self):
        t0 = time.monotonic()
        times = []
        for m in self.stub.ServerStream(self.pb.StreamRequest(count=5, interval_ms=150, payload_size=100), timeout=10):
            ensure(m.index == len(times), f"index {m.index} at {len(times)}")
            times.append(time.monotonic() - t0)
        ensure(len(times) == 5, f"{len(times)} messages")
        ms = [int(t * 1000) for t in times]
        ensure(times[4] - times[0] >= 0.45, f"arrivals {ms} ms: not streamed")
        return f"arrivals {ms} ms"

    def client_stream(self):
        sizes = [0, 1, 100, 70000, 3]
        reqs = [self.pb.ClientStreamRequest(value=i + 1, payload=pattern(n)) for i, n in enumerate(sizes)]
        r = self.stub.ClientStream(iter(reqs), timeout=10)
        ensure(r.count == 5 and r.sum == 15, f"count {r.count} sum {r.sum}")
        ensure(list(r.sizes) == sizes, f"sizes {list(r.sizes)}")
        return "5 messages counted and sized"

    def bidi_ping_pong(self):
        q = queue.Queue()
        done = object()

        def requests():
            while True:
                item = q.get()
                if item is done:
                    return
                yield item

        q.put(self.pb.BidiRequest(seq=0))
        it = self.stub.Bidi(requests(), timeout=20)
        rtts = []
        for i in range(6):
            t = time.monotonic()
            if i > 0:
                q.put(self.pb.BidiRequest(seq=i, payload=pattern(i * 1000)))
            m = next(it)
            ensure(m.seq == i, f"pong seq {m.seq} for ping {i}")
            ensure(m.payload == pattern(i * 1000), f"pong {i} payload")
            rtts.append(int((time.monotonic() - t) * 1000))
        q.put(done)
        rest = list(it)
        ensure(rest == [], f"unexpected messages after half-close: {rest}")
        return f"6 round trips, ms {rtts}"

    def _expect_error(self, fn, code):
        try:
            fn()
        except self.grpc.RpcError as e:
            ensure(e.code() == code, f"got {e.code()} {e.details()!r}")
            return e
        raise Fail(f"call succeeded, want {code}")

    def error_message_unicode(self):
        e = self._expect_error(
            lambda: self.stub.Unary(self.pb.UnaryRequest(status_code=3, status_message=TRICKY_MESSAGE), timeout=10),
            self.grpc.StatusCode.INVALID_ARGUMENT)
        ensure(e.details() == TRICKY_MESSAGE, f"message {e.details()!r}")
        return "code and exact message round-tripped"

    def stream_error_after_messages(self):
        req = self.pb.StreamRequest(
            count=2, payload_size=5, final_status_code=9, final_status_message=TRICKY_MESSAGE,
            response_trailers=[self.pb.Metadata(key="x-err-detail", value=b"detail value"),
                               self.pb.Metadata(key="x-err-bin", value=bytes([0, 1, 0xFF, 0x80, 13, 10]))])
        n = 0
        it = self.stub.ServerStream(req, timeout=10)
        try:
            for m in it:
                ensure(m.index == n, f"index {m.index} at {n}")
                n += 1
        except self.grpc.RpcError as e:
            ensure(n == 2, f"error after {n} messages")
            ensure(e.code() == self.grpc.StatusCode.FAILED_PRECONDITION, f"got {e.code()}")
            ensure(e.details() == TRICKY_MESSAGE, f"message {e.details()!r}")
            t = md_dict(e.trailing_metadata())
            ensure(t.get("x-err-detail") == "detail value", f"trailers {t}")
            ensure(t.get("x-err-bin") == bytes([0, 1, 0xFF, 0x80, 13, 10]), f"trailers {t}")
            return "2 messages then exact status, message and trailer metadata"
        raise Fail(f"stream ended OK after {n} messages")

    def stream_error_without_messages(self):
        it = self.stub.ServerStream(self.pb.StreamRequest(count=0, final_status_code=14,
                                                          final_status_message="no messages for you"), timeout=10)
        try:
            got = list(it)
        except self.grpc.RpcError as e:
            if e.code() == self.grpc.StatusCode.INTERNAL and "without a gRPC-web trailer frame" in (e.details() or ""):
                # documented limitation: the status rode HTTP/1.1 trailers, which the hop dropped
                return "INTERNAL from the agent: the hop dropped the HTTP trailers (documented)"
            ensure(e.code() == self.grpc.StatusCode.UNAVAILABLE, f"got {e.code()} {e.details()!r}")
            ensure(e.details() == "no messages for you", f"message {e.details()!r}")
            return "UNAVAILABLE with message, no messages"
        raise Fail(f"stream ended OK with {len(got)} messages, want UNAVAILABLE")

    def large_4mib_server_stream(self):
        ms = list(self.stub.ServerStream(self.pb.StreamRequest(count=2, payload_size=MIB4), timeout=20))
        ensure(len(ms) == 2, f"{len(ms)} messages")
        p = pattern(MIB4)
        ensure(all(m.payload == p for m in ms), "payload differs")
        return "2 x 4 MiB down"

    def trailers_only_error(self):
        req = self.pb.UnaryRequest(
            status_code=5, status_message="nothing here",
            response_trailers=[self.pb.Metadata(key="x-to", value=b"trailers-only"),
                               self.pb.Metadata(key="x-to-bin", value=bytes([0xDE, 0xAD, 0, 0xBE, 0xEF]))])
        e = self._expect_error(lambda: self.stub.Unary(req, timeout=10), self.grpc.StatusCode.NOT_FOUND)
        ensure(e.details() == "nothing here", f"message {e.details()!r}")
        t = md_dict(e.trailing_metadata())
        t.update(md_dict(e.initial_metadata()))
        ensure(t.get("x-to") == "trailers-only", f"metadata {t}")
        ensure(t.get("x-to-bin") == bytes([0xDE, 0xAD, 0, 0xBE, 0xEF]), f"metadata {t}")
        return "NOT_FOUND with metadata"

    def metadata(self):
        req = self.pb.UnaryRequest(
            payload=b"m", echo_metadata=True,
            response_headers=[self.pb.Metadata(key="x-hdr", value=b"header value"),
                              self.pb.Metadata(key="x-hdr-bin", value=BIN_HDR)],
            response_trailers=[self.pb.Metadata(key="x-trl", value=b"trailer value"),
                               self.pb.Metadata(key="x-trl-bin", value=BIN_TRL)])
        r, call = self.stub.Unary.with_call(
            req, timeout=10, metadata=[("x-req-ascii", "request value"), ("x-req-bin", BIN_REQ)])
        h = md_dict(call.initial_metadata())
        t = md_dict(call.trailing_metadata())
        ensure(h.get("x-hdr") == "header value", f"headers {h}")
        ensure(h.get("x-hdr-bin") == BIN_HDR, f"headers {h}")
        ensure("x-trl" not in h, f"x-trl in headers {h}")
        ensure(t.get("x-trl") == "trailer value", f"trailers {t}")
        ensure(t.get("x-trl-bin") == BIN_TRL, f"trailers {t}")
        ensure("x-hdr" not in t, f"x-hdr in trailers {t}")
        seen = {m.key: m.value for m in r.request_metadata}
        ensure(seen.get("x-req-ascii") == b"request value", f"backend saw {seen.get('x-req-ascii')!r}")
        ensure(seen.get("x-req-bin") == BIN_REQ, f"backend saw {seen.get('x-req-bin')!r}")
        return "request metadata reached the backend; header/trailer metadata in place"

    def large_4mib_unary(self):
        t0 = time.monotonic()
        p = pattern(MIB4)
        r = self.stub.Unary(self.pb.UnaryRequest(payload=p), timeout=20)
        ensure(r.request_payload_size == MIB4, f"backend saw {r.request_payload_size}")
        ensure(r.payload == p, f"echo differs ({len(r.payload)} bytes)")
        return f"4 MiB both ways in {int((time.monotonic() - t0) * 1000)} ms"

    def empty_messages(self):
        r = self.stub.Unary(self.pb.UnaryRequest(), timeout=10)
        ensure(r == self.pb.UnaryResponse(), f"unary {r}")
        ms = list(self.stub.ServerStream(self.pb.StreamRequest(count=3), timeout=10))
        ensure([m.index for m in ms] == [0, 1, 2] and all(m.payload == b"" for m in ms), f"stream {ms}")
        pongs = list(self.stub.Bidi(iter([self.pb.BidiRequest()]), timeout=10))
        ensure(len(pongs) == 1 and pongs[0] == self.pb.BidiResponse(), f"bidi {pongs}")
        return "0-byte messages both ways"

    def deadline(self):
        tok = token("deadline")
        t0 = time.monotonic()
        e = self._expect_error(lambda: self.stub.Sleep(self.pb.SleepRequest(sleep_ms=5000, token=tok), timeout=0.3),
                               self.grpc.StatusCode.DEADLINE_EXCEEDED)
        el = time.monotonic() - t0
        ensure(el < 2.0, f"DEADLINE_EXCEEDED only after {el:.3f} s")
        info, _ = self.call_info(tok, 2, lambda i: i.known)
        ensure(info.known, "the call never reached the backend")
        ensure(info.grpc_timeout != "", "backend saw no grpc-timeout")
        info, ok = self.call_info(tok, 3, lambda i: i.cancelled or i.finished or i.deadline_exceeded)
        ensure(ok and (info.cancelled or info.deadline_exceeded) and not info.finished,
               f"backend call neither cancelled nor timed out: {info}")
        return f"DEADLINE_EXCEEDED after {int(el * 1000)} ms; backend saw grpc-timeout {info.grpc_timeout}"

    def cancel_stream(self):
        tok = token("cancel-stream")
        it = self.stub.Hold(self.pb.HoldRequest(token=tok, hold_ms=20000), timeout=20)
        next(it)
        it.cancel()
        info, ok = self.call_info(tok, 5, lambda i: i.cancelled or i.finished)
        ensure(ok and info.cancelled and not info.finished, f"backend did not observe the cancellation: {info}")
        return "backend observed the cancellation"

    def cancel_unary(self):
        tok = token("cancel-unary")
        fut = self.stub.Sleep.future(self.pb.SleepRequest(sleep_ms=5000, token=tok))
        time.sleep(0.4)
        ensure(not fut.done(), "call finished early")
        info, _ = self.call_info(tok, 2, lambda i: i.known)
        ensure(info.known, "the call never reached the backend")
        fut.cancel()
        info, ok = self.call_info(tok, 4, lambda i: i.cancelled or i.finished)
        ensure(ok and info.cancelled and not info.finished, f"backend did not observe the cancellation: {info}")
        return "backend observed the cancellation"

    def concurrent_unary(self):
        futs = [(i, self.stub.Unary.future(self.pb.UnaryRequest(payload=pattern(i * 997), delay_ms=(i % 5) * 20),
                                           timeout=10)) for i in range(20)]
        for i, f in futs:
            ensure(f.result().payload == pattern(i * 997), f"call {i}")
        return "20 concurrent calls"


ALL_CASES = [
    "unary", "server_stream_gated", "server_stream_timing", "client_stream", "bidi_ping_pong",
    "error_message_unicode", "stream_error_after_messages", "stream_error_without_messages",
    "trailers_only_error", "metadata", "large_4mib_unary", "large_4mib_server_stream", "empty_messages", "deadline", "cancel_stream", "cancel_unary", "concurrent_unary",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="host:port of the agent Envoy (or any gRPC endpoint)")
    ap.add_argument("--gen-dir", default=os.path.join(HERE, "gen"))
    ap.add_argument("--cases", default="", help="comma-separated subset of: " + ",".join(ALL_CASES))
    args = ap.parse_args()
    pb, pb_grpc = generate(args.gen_dir)
    import grpc

    cases = Cases(grpc, pb, pb_grpc, args.target)
    selected = [c for c in args.cases.split(",") if c] or ALL_CASES
    failed = 0
    for name in selected:
        t0 = time.monotonic()
        try:
            detail = getattr(cases, name)()
            ok = True
        except Fail as e:
            ok, detail = False, str(e)
        except grpc.RpcError as e:
            ok, detail = False, f"RpcError {e.code()} {e.details()!r}"
        except Exception as e:  # noqa: BLE001
            ok, detail = False, f"{type(e).__name__}: {e}"
        failed += not ok
        print(json.dumps({"case": name, "ok": ok, "detail": detail, "ms": int((time.monotonic() - t0) * 1000)}),
              flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
