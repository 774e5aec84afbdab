"""A fake OpenAI-compatible completions server whose token timings are scripted, so TTFT and ITL are known.

In-process (`Scripted`, for the client's tests) or as a server process (`python -m tests.fake_server
--port P --ttft-ms T --gap-ms G`, started by the fault engine's `server()` for the whole serve path).
`/health` answers 200; a request asking for more than 100 tokens is refused with HTTP 400.
"""
from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Scripted(BaseHTTPRequestHandler):
    ttft_s = 0.15
    gap_s = 0.05
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("max_tokens", 0) > 100:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"too long")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(self.ttft_s)
        for i in range(body["max_tokens"]):
            if i:
                time.sleep(self.gap_s)
            self.wfile.write(f"data: {json.dumps({'choices': [{'text': f't{i}'}]})}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"completion_tokens": body["max_tokens"], "prompt_tokens": 7}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=150.0)
    ap.add_argument("--gap-ms", type=float, default=50.0)
    args = ap.parse_args()
    handler = type("Handler", (Scripted,), {"ttft_s": args.ttft_ms / 1e3, "gap_s": args.gap_ms / 1e3})
    print(f"fake server on 127.0.0.1:{args.port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
