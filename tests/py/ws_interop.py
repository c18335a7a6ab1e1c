#!/usr/bin/env python3
"""Interoperability of the tunnel's WebSocket framing with the `websockets` library (PyPI), a
WebSocket implementation this project did not write, against the filter running in Envoy.

  ws_interop.py client --url ws://HOST:PORT/grpc-bridge/tunnel
      A websockets client talks to our tunnel_server Envoy: handshake with the subprotocol, an
      HTTP/2 client preface + empty SETTINGS as one binary message, the backend's HTTP/2 frames
      back, a WebSocket ping, and a close with 1000. Prints one JSON object.

  ws_interop.py refusals --port PORT [--host 127.0.0.1] [--delay-ms 100]
      Upgrades our tunnel_server must refuse (wrong path, wrong subprotocol), each sent a little
      after the TCP connection opened: the HTTP status the library sees, and how long it took.
      Prints one JSON object.

  ws_interop.py server [--hold-ms 700]
      A websockets server our tunnel_client Envoy connects to. Prints {"event": "listening",
      "port": N} once listening, then, after one connection: what the upgrade request carried,
      the first message, the keepalive pings received, a ping it sent (pong awaited) and a close
      with 1000. Prints {"event": "result", ...}.

Every timing is a generous bound; the Rust tests (tests/tests/tunnel_interop.rs) assert on the
JSON.
"""
import argparse
import asyncio
import json
import struct
import sys
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

SUBPROTOCOL = "grpc-bridge.tunnel.v1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"interop!"

FRAME_NAMES = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE"}


def ms(t0):
    return round((time.monotonic() - t0) * 1000, 1)


async def ms_until(awaitable, timeout, t0):
    """Milliseconds from `t0` until `awaitable` is done, or None if it is not within `timeout` s."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        return None
    return ms(t0)


async def timed_close(ws, reason):
    """Closes `ws` with 1000 `reason`: how long the close took, and the codes of the close frames
    sent and received (None where there was none)."""
    t0 = time.monotonic()
    await ws.close(1000, reason)
    proto = ws.protocol
    return {
        "close_ms": ms(t0),
        "close_sent_code": proto.close_sent.code if proto.close_sent else None,
        "close_received_code": proto.close_rcvd.code if proto.close_rcvd else None,
    }


def h2_frames(buf):
    """Complete HTTP/2 frames in buf: ([(type, flags, stream, length)], rest)."""
    out = []
    while len(buf) >= 9:
        length = int.from_bytes(buf[0:3], "big")
        if len(buf) < 9 + length:
            break
        ftype, flags = buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        out.append((ftype, flags, stream, length))
        buf = buf[9 + length:]
    return out, buf


HEADERS = []  # (name, value) pairs from --header, sent on every upgrade request


def client_kwargs(**extra):
    kw = dict(compression=None, proxy=None, ping_interval=None, open_timeout=5, close_timeout=3)
    if HEADERS:
        kw["additional_headers"] = list(HEADERS)
    kw.update(extra)
    return kw


class TimedClientConnection(ClientConnection):
    """Records when the peer's close frame arrived and when the TCP connection ended."""

    close_frame_at = None
    lost_at = None

    def process_event(self, event):
        opcode = getattr(event, "opcode", None)  # the handshake response is an event too
        if opcode is not None and opcode.name == "CLOSE" and self.close_frame_at is None:
            self.close_frame_at = time.monotonic()
        return super().process_event(event)

    def connection_lost(self, exc):
        self.lost_at = time.monotonic()
        return super().connection_lost(exc)


async def run_client(url):
    res = {"mode": "client", "url": url}
    t_open = time.monotonic()
    async with connect(
        url, subprotocols=[SUBPROTOCOL], create_connection=TimedClientConnection, **client_kwargs()
    ) as ws:
        res["open_ms"] = ms(t_open)
        res["response_status"] = ws.response.status_code
        res["subprotocol"] = ws.subprotocol
        res["response_headers"] = {k.lower(): v for k, v in ws.response.headers.raw_items()}
        await ws.send(PREFACE + EMPTY_SETTINGS)
        frames, buf, kinds = [], b"", []
        t0 = time.monotonic()
        # Until the backend's SETTINGS and its ACK of ours arrived (or 3 s).
        while time.monotonic() - t0 < 3:
            have_settings = any(f[0] == 4 and not f[1] & 1 for f in frames)
            have_ack = any(f[0] == 4 and f[1] & 1 for f in frames)
            if have_settings and have_ack:
                break
            try:
                msg = await asyncio.wait_for(ws.recv(), 3 - (time.monotonic() - t0))
            except asyncio.TimeoutError:
                break
            kinds.append("binary" if isinstance(msg, bytes) else "text")
            if isinstance(msg, bytes):
                got, buf = h2_frames(buf + msg)
                frames.extend(got)
        res["message_kinds"] = kinds
        res["h2_frames"] = [
            {"type": FRAME_NAMES.get(f[0], f[0]), "flags": f[1], "stream": f[2], "len": f[3]} for f in frames
        ]
        res["first_frame"] = res["h2_frames"][0] if frames else None
        res["settings_ack_received"] = any(f[0] == 4 and f[1] & 1 for f in frames)
        # Let the connection settle: whatever else the backend sends arrives now, so that the
        # ping below happens while the backend has nothing to send.
        late = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.3:
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.3 - (time.monotonic() - t0))
            except asyncio.TimeoutError:
                break
            if isinstance(msg, bytes):
                got, buf = h2_frames(buf + msg)
                late.extend(got)
        res["h2_frames_late"] = [
            {"type": FRAME_NAMES.get(f[0], f[0]), "flags": f[1], "stream": f[2], "len": f[3]} for f in late
        ]
        # A WebSocket ping, with nothing else going on: the backend has nothing to send.
        t0 = time.monotonic()
        waiter = await ws.ping(b"interop-ping")
        res["pong_ms"] = await ms_until(asyncio.shield(waiter), 2.0, t0)
        if res["pong_ms"] is None:
            # Diagnostic: does the pong come once the backend sends bytes (an HTTP/2 PING)?
            await ws.send(H2_PING)
            res["pong_after_backend_bytes_ms"] = await ms_until(waiter, 2.0, t0)
        # Close with 1000: the close reply must come back. The library then waits (up to
        # close_timeout, 3 s) for the server to close the TCP connection, as RFC 6455 7.1.1 says
        # the server should; close_reply_ms and tcp_closed_ms separate the two.
        t0 = time.monotonic()
        res.update(await timed_close(ws, "interop done"))
        res["close_reply_ms"] = round((ws.close_frame_at - t0) * 1000, 1) if ws.close_frame_at else None
        res["tcp_closed_ms"] = round((ws.lost_at - t0) * 1000, 1) if ws.lost_at else None
        res["close_code"] = ws.close_code
    return res


async def run_refusals(host, port, delay_ms):
    """Refused upgrades, each sent `delay_ms` after the TCP connection opened (as a proxy in
    between would: the backend has spoken by then)."""
    import socket

    res = {"mode": "refusals", "delay_ms": delay_ms}
    for name, path, protos in [
        ("wrong_path", "/not-the-tunnel", [SUBPROTOCOL]),
        ("wrong_subprotocol", "/grpc-bridge/tunnel", ["something.else"]),
    ]:
        out = {}
        sock = socket.create_connection((host, port))
        await asyncio.sleep(delay_ms / 1000)
        t0 = time.monotonic()
        try:
            async with connect(
                f"ws://{host}:{port}{path}", sock=sock, subprotocols=protos, **client_kwargs(open_timeout=3)
            ) as ws:
                out["accepted"] = True
                out["subprotocol"] = ws.subprotocol
        except InvalidStatus as e:
            out["status"] = e.response.status_code
        except Exception as e:  # noqa: BLE001 - report whatever the library raised
            out["error"] = f"{type(e).__name__}: {e}"
        out["ms"] = ms(t0)
        res[name] = out
    return res


class CountingConnection(ServerConnection):
    """Counts the frames the library received, by opcode (pings are answered by the library)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.received = {}
        self.ping_payloads = []

    def process_event(self, event):
        opcode = getattr(event, "opcode", None)  # the handshake request is an event too
        if opcode is None:
            return super().process_event(event)
        name = opcode.name
        self.received[name] = self.received.get(name, 0) + 1
        if name == "PING" and len(self.ping_payloads) < 5:
            self.ping_payloads.append(bytes(event.data).decode("latin-1"))
        return super().process_event(event)


async def run_server(hold_ms):
    info = {"event": "result", "mode": "server"}
    done = asyncio.Event()

    def process_request(connection, request):
        h = request.headers
        info["request"] = {
            "path": request.path,
            "host": h.get("Host"),
            "upgrade": h.get("Upgrade"),
            "connection": h.get("Connection"),
            "version": h.get("Sec-WebSocket-Version"),
            "protocols": h.get_all("Sec-WebSocket-Protocol"),
            "headers": [k for k, _ in h.raw_items()],
        }
        return None

    async def handler(ws):
        try:
            info["subprotocol"] = ws.subprotocol
            t0 = time.monotonic()
            msg = await asyncio.wait_for(ws.recv(), 5)
            info["first_message_ms"] = ms(t0)
            info["first_message_kind"] = "binary" if isinstance(msg, bytes) else "text"
            data = msg if isinstance(msg, bytes) else msg.encode()
            info["first_message_len"] = len(data)
            info["first_message_starts_with_preface"] = data.startswith(PREFACE)
            info["first_message_head"] = data[:33].hex()
            # Stay quiet a while: the tunnel client's keepalive pings (masked control frames)
            # arrive and the library answers them.
            await asyncio.sleep(hold_ms / 1000)
            t0 = time.monotonic()
            waiter = await ws.ping(b"server-ping")
            info["pong_ms"] = await ms_until(waiter, 3.0, t0)
            info.update(await timed_close(ws, "interop server done"))
            info["frames_received"] = dict(ws.received)
            info["ping_payloads"] = ws.ping_payloads
        except Exception as e:  # noqa: BLE001
            info["error"] = f"{type(e).__name__}: {e}"
        finally:
            done.set()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=[SUBPROTOCOL],
        process_request=process_request,
        compression=None,
        ping_interval=None,
        close_timeout=3,
        create_connection=CountingConnection,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"event": "listening", "port": port}), flush=True)
        try:
            await asyncio.wait_for(done.wait(), 30)
        except asyncio.TimeoutError:
            info["error"] = "no WebSocket connection within 30 s"
    return info


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    r = sub.add_parser("refusals")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--delay-ms", type=int, default=100)
    s = sub.add_parser("server")
    s.add_argument("--hold-ms", type=int, default=700)
    for p in (c, r):
        p.add_argument("--header", action="append", default=[], help="NAME:VALUE on the upgrade request")
    a = ap.parse_args()
    for h in getattr(a, "header", []):
        name, _, value = h.partition(":")
        HEADERS.append((name.strip(), value.strip()))
    try:
        if a.mode == "client":
            res = asyncio.run(run_client(a.url))
        elif a.mode == "refusals":
            res = asyncio.run(run_refusals(a.host, a.port, a.delay_ms))
        else:
            res = asyncio.run(run_server(a.hold_ms))
    except BaseException as e:  # noqa: BLE001 - report anything, including cancellations
        res = {"event": "result", "mode": a.mode, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
