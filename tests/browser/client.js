// gRPC-web browser client for tests/tests/e2e_browser.rs: the `grpc-web` npm package
// (GrpcWebClientBase, hand-written method descriptors, google-protobuf wire helpers: no protoc
// needed) calls bridge.test.BridgeTest on the server role from another origin, in binary and text
// mode, and posts what it saw to the page's own server (POST /result).
//
// Page URL: index.html?server=http://127.0.0.1:PORT[&formats=binary,text]
import { GrpcWebClientBase, MethodDescriptor, MethodType } from "grpc-web";
import { BinaryReader, BinaryWriter } from "google-protobuf";

const enc = new TextEncoder();
const dec = new TextDecoder();

// bridge.test.Metadata { string key = 1; bytes value = 2; }
function writeMetadata(w, field, entries) {
  for (const entry of entries) {
    w.writeMessage(field, entry, ([k, v], sub) => {
      sub.writeString(1, k);
      sub.writeBytes(2, enc.encode(v));
    });
  }
}

function readMetadata(bytes) {
  const r = new BinaryReader(bytes);
  let key = "", value = "";
  while (r.nextField() && !r.isEndGroup()) {
    if (r.getFieldNumber() === 1) key = r.readString();
    else if (r.getFieldNumber() === 2) value = dec.decode(r.readBytes());
    else r.skipField();
  }
  return [key, value];
}

// bridge.test.UnaryRequest
function serializeUnary(m) {
  const w = new BinaryWriter();
  if (m.payload) w.writeBytes(1, enc.encode(m.payload));
  if (m.statusCode) w.writeInt32(3, m.statusCode);
  if (m.statusMessage) w.writeString(4, m.statusMessage);
  writeMetadata(w, 5, m.responseHeaders || []);
  writeMetadata(w, 6, m.responseTrailers || []);
  if (m.echoMetadata) w.writeBool(9, true);
  return w.getResultBuffer();
}

// bridge.test.UnaryResponse
function deserializeUnary(bytes) {
  const r = new BinaryReader(bytes);
  const out = { payload: "", requestMetadata: {} };
  while (r.nextField() && !r.isEndGroup()) {
    if (r.getFieldNumber() === 1) out.payload = dec.decode(r.readBytes());
    else if (r.getFieldNumber() === 2) {
      const [k, v] = readMetadata(r.readBytes());
      out.requestMetadata[k] = v;
    } else r.skipField();
  }
  return out;
}

// bridge.test.StreamRequest
function serializeStream(m) {
  const w = new BinaryWriter();
  if (m.count) w.writeInt32(1, m.count);
  if (m.intervalMs) w.writeInt32(2, m.intervalMs);
  if (m.payloadSize) w.writeInt32(3, m.payloadSize);
  if (m.finalStatusCode) w.writeInt32(5, m.finalStatusCode);
  if (m.finalStatusMessage) w.writeString(6, m.finalStatusMessage);
  writeMetadata(w, 7, m.responseHeaders || []);
  writeMetadata(w, 8, m.responseTrailers || []);
  return w.getResultBuffer();
}

// bridge.test.StreamResponse
function deserializeStream(bytes) {
  const r = new BinaryReader(bytes);
  const out = { index: 0, payloadSize: 0 };
  while (r.nextField() && !r.isEndGroup()) {
    if (r.getFieldNumber() === 1) out.index = r.readInt32();
    else if (r.getFieldNumber() === 2) out.payloadSize = r.readBytes().length;
    else r.skipField();
  }
  return out;
}

class Req { constructor(m) { Object.assign(this, m); } }
class Resp {}

const unaryMethod = new MethodDescriptor(
  "/bridge.test.BridgeTest/Unary", MethodType.UNARY, Req, Resp, serializeUnary, deserializeUnary);
const streamMethod = new MethodDescriptor(
  "/bridge.test.BridgeTest/ServerStream", MethodType.SERVER_STREAMING, Req, Resp, serializeStream,
  deserializeStream);

// One call; resolves with everything the browser saw (never rejects).
function call(client, server, method, request, metadata) {
  return new Promise((resolve) => {
    const seen = { messages: [], headers: null, status: null, error: null };
    const url = server + method.getName();
    let stream;
    const finish = () => resolve(seen);
    if (method === unaryMethod) {
      stream = client.rpcCall(url, new Req(request), metadata, method, (err, resp) => {
        if (err) seen.error = { code: err.code, message: err.message, metadata: err.metadata || {} };
        else seen.messages.push(resp);
        // The status event comes after the callback on success; give it a moment.
        setTimeout(finish, 50);
      });
    } else {
      stream = client.serverStreaming(url, new Req(request), metadata, method);
      stream.on("data", (m) => seen.messages.push(m));
      stream.on("error", (err) => {
        seen.error = { code: err.code, message: err.message, metadata: err.metadata || {} };
        setTimeout(finish, 50);
      });
      stream.on("end", () => setTimeout(finish, 50));
    }
    stream.on("metadata", (md) => { seen.headers = md; });
    stream.on("status", (st) => { seen.status = { code: st.code, details: st.details, metadata: st.metadata || {} }; });
  });
}

async function run() {
  const params = new URLSearchParams(location.search);
  const server = params.get("server");
  const formats = (params.get("formats") || "binary,text").split(",");
  const results = {};
  for (const format of formats) {
    const client = new GrpcWebClientBase({ format });
    const r = {};
    r.unary = await call(client, server, unaryMethod, {
      payload: `hello from chromium (${format})`,
      responseHeaders: [["x-hdr", "hv"]],
      responseTrailers: [["x-trl", "tv"]],
      echoMetadata: true,
    }, { "x-client-md": "cm" });
    r.unary_error = await call(client, server, unaryMethod, {
      statusCode: 5,
      statusMessage: "no such thing",
    }, {});
    r.stream = await call(client, server, streamMethod, {
      count: 3,
      intervalMs: 20,
      payloadSize: 8,
      responseTrailers: [["x-trl", "st"]],
    }, {});
    r.stream_error = await call(client, server, streamMethod, {
      count: 2,
      finalStatusCode: 9,
      finalStatusMessage: "stop here",
    }, {});
    results[format] = r;
  }
  return results;
}

async function report(body) {
  document.getElementById("out").textContent = JSON.stringify(body);
  await fetch("/result", { method: "POST", body: JSON.stringify(body) });
}

run().then((results) => report({ ok: true, results }),
  (e) => report({ ok: false, error: String(e && e.stack || e) }));
