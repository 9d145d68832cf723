// What a Pyodide interpreter needs inside a bare V8 isolate, and nothing more. The isolate has no
// Node APIs (no fs, net, process, require, import), so Python's `js` module and `run_js` reach only
// these shims. Pyodide's loader runs in its "shell" mode (a `read`/`load` pair marks it), reading
// its three files from bytes handed in by the host.

/** Globals the host sets before this script: `__files` (path → bytes, or parts of them to join),
 * `__lock` (the lock file's text), `__random(n)` (n random bytes) and `__print(text)` (Pyodide's
 * own diagnostics). `readbuffer` answers an ArrayBuffer, as a shell's does. */
export const ISOLATE_SHIMS = `
globalThis.read = (p) => { throw new Error("no file access: " + p); };
globalThis.load = (p) => { throw new Error("no script loading: " + p); };
globalThis.readbuffer = (p) => {
  const b = __files[p];
  if (b === undefined) throw new Error("no file access: " + p);
  if (!Array.isArray(b)) return b.byteLength === b.buffer.byteLength ? b.buffer : b.slice().buffer;
  const out = new Uint8Array(b.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of b) { out.set(part, at); at += part.length; }
  return out.buffer;
};
const quiet = () => {};
globalThis.console = { log: (...a) => __print(a.join(" ")), warn: (...a) => __print(a.join(" ")),
  error: (...a) => __print(a.join(" ")), info: quiet, debug: quiet, trace: quiet };
// Timers run as soon as the current job ends: tools run synchronously, and the run's wall-clock
// limit bounds whatever a tool schedules.
globalThis.setTimeout = (f, _ms, ...args) => { Promise.resolve().then(() => f(...args)); return 1; };
globalThis.clearTimeout = quiet;
globalThis.setInterval = () => { throw new Error("setInterval is not available in the wasm sandbox"); };
globalThis.performance = { now: () => Date.now(), timeOrigin: Date.now() };
globalThis.crypto = { getRandomValues: (a) => {
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength).set(new Uint8Array(__random(a.byteLength)));
  return a;
} };
class TextEncoder {
  get encoding() { return "utf-8"; }
  encode(s = "") {
    const out = [];
    for (const ch of String(s)) {
      const c = ch.codePointAt(0);
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return new Uint8Array(out);
  }
  encodeInto(s, into) {
    const b = this.encode(s);
    const n = Math.min(b.length, into.length);
    into.set(b.subarray(0, n));
    return { read: s.length, written: n };
  }
}
class TextDecoder {
  constructor(label = "utf-8") { this.encoding = label; }
  decode(b) {
    if (b === undefined) return "";
    const u = b instanceof Uint8Array ? b : ArrayBuffer.isView(b)
      ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : new Uint8Array(b);
    const parts = [];
    const units = new Uint16Array(8192);
    let n = 0;
    let i = 0;
    while (i < u.length) {
      let c = u[i++];
      if (c >= 0xf0) c = ((c & 7) << 18) | ((u[i++] & 63) << 12) | ((u[i++] & 63) << 6) | (u[i++] & 63);
      else if (c >= 0xe0) c = ((c & 15) << 12) | ((u[i++] & 63) << 6) | (u[i++] & 63);
      else if (c >= 0xc0) c = ((c & 31) << 6) | (u[i++] & 63);
      if (c > 0x10ffff) c = 0xfffd;
      if (c > 0xffff) {
        c -= 0x10000;
        units[n++] = 0xd800 | (c >> 10);
        units[n++] = 0xdc00 | (c & 1023);
      } else units[n++] = c;
      if (n >= 8190) {
        parts.push(String.fromCharCode.apply(null, units.subarray(0, n)));
        n = 0;
      }
    }
    parts.push(String.fromCharCode.apply(null, units.subarray(0, n)));
    return parts.join("");
  }
}
globalThis.TextEncoder = TextEncoder;
globalThis.TextDecoder = TextDecoder;
// isolated-vm does not run V8's asynchronous WebAssembly compilation; compile synchronously (the
// isolate runs on its own thread, so the server's event loop does not wait for it).
{
  const W = WebAssembly;
  W.instantiate = async (source, imports) => {
    if (source instanceof W.Module) return new W.Instance(source, imports);
    const module = new W.Module(source);
    return { module, instance: new W.Instance(module, imports) };
  };
  W.compile = async (bytes) => new W.Module(bytes);
  delete W.instantiateStreaming;
  delete W.compileStreaming;
}
`;

/** Defines `__kelpie_run(request_json)` in the interpreter: runs one tool function with keyword
 * arguments and the tool's env vars, captures what it prints up to a bound, and answers one JSON
 * text. `{OUTPUT_MAX}` is replaced by the byte bound. */
export const PY_RUNNER = String.raw`
import io, json, os, sys, contextlib, traceback

class _KelpieCappedWriter(io.TextIOBase):
    def __init__(self, limit):
        self.parts, self.size, self.limit, self.cut = [], 0, limit, False
    def writable(self):
        return True
    def write(self, s):
        room = self.limit - self.size
        if len(s) > room:
            self.cut = True
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        return len(s)
    def text(self):
        body = "".join(self.parts)
        return body + ("\n[output cut by Kelpie at %d characters]" % self.limit if self.cut else "")

def __kelpie_run(request_json):
    req = json.loads(request_json)
    os.environ.update(req["env"])
    out, err = _KelpieCappedWriter({OUTPUT_MAX}), _KelpieCappedWriter({OUTPUT_MAX})
    try:
        ns = {"__name__": "__tool__"}
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(req["source"], "<tool>", "exec"), ns)
            value = ns[req["function"]](**req["args"])
            if hasattr(value, "__await__"):
                raise TypeError("async Python tools are not supported at the wasm level (use namespace)")
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > {OUTPUT_MAX}:
            text = text[:{OUTPUT_MAX}] + "\n[cut by Kelpie: the tool returned more than %d characters]" % {OUTPUT_MAX}
        result = {"ok": True, "value": text}
    except MemoryError:
        result = {"ok": False, "value": "MemoryError: the tool exceeded its memory limit"}
    except BaseException as e:
        result = {"ok": False, "value": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=5)}
    result["stdout"] = out.text()
    result["stderr"] = err.text()
    return json.dumps(result)
`;
