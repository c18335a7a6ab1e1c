"""A bare WebSocket upgrade through an HTTP forward proxy, TLS inside the CONNECT tunnel, that
sends nothing after the upgrade request and waits for the 101 (what standard WebSocket clients do,
and what a TLS-intercepting proxy forces anyway: it holds client bytes until it has seen the 101).

  upgrade_through_proxy.py --proxy HOST:PORT --connect NAME:PORT --cafile CA.pem
      [--path /grpc-bridge/tunnel] [--protocol grpc-bridge.tunnel.v1] [--wait 5]

Prints one JSON line: {"ok", "status", "accept_ok", "protocol", "ms", "detail"}.
"""
import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--connect", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--path", default="/grpc-bridge/tunnel")
    ap.add_argument("--protocol", default="grpc-bridge.tunnel.v1")
    ap.add_argument("--wait", type=float, default=5.0)
    ap.add_argument("--header", action="append", default=[], help="NAME: VALUE on the upgrade request")
    a = ap.parse_args()
    out = {"ok": False, "status": None, "accept_ok": False, "protocol": None, "ms": None, "detail": ""}
    try:
        host, port = a.proxy.rsplit(":", 1)
        name = a.connect.rsplit(":", 1)[0]
        s = socket.create_connection((host, int(port)), timeout=a.wait)
        s.sendall(f"CONNECT {a.connect} HTTP/1.1\r\nHost: {a.connect}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(4096)
            if not d:
                raise RuntimeError(f"proxy closed during CONNECT: {head!r}")
            head += d
        status_line = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status_line:
            raise RuntimeError(f"CONNECT refused: {status_line!r}")
        ctx = ssl.create_default_context(cafile=a.cafile)
        t = ctx.wrap_socket(s, server_hostname=name)
        key = base64.b64encode(os.urandom(16))
        t.sendall(
            (
                f"GET {a.path} HTTP/1.1\r\nHost: {a.connect}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {a.protocol}\r\n"
                + "".join(f"{h}\r\n" for h in a.header)
                + "\r\n"
            ).encode()
        )
        t0 = time.monotonic()
        t.settimeout(a.wait)
        resp = b""
        try:
            while b"\r\n\r\n" not in resp:
                d = t.recv(4096)
                if not d:
                    break
                resp += d
        except socket.timeout:
            out["detail"] = f"no response head within {a.wait} s (got {resp!r})"
        out["ms"] = round((time.monotonic() - t0) * 1000)
        if b"\r\n\r\n" in resp:
            lines = resp.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            out["status"] = int(lines[0].split()[1])
            hdrs = {}
            for l in lines[1:]:
                k, _, v = l.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
            out["accept_ok"] = hdrs.get("sec-websocket-accept") == want
            out["protocol"] = hdrs.get("sec-websocket-protocol")
            out["ok"] = out["status"] == 101 and out["accept_ok"]
            out["detail"] = lines[0]
        t.close()
    except Exception as e:  # reported, not raised: the test prints it
        out["detail"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
