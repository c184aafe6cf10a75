"""An HTTP upstream for the http.request task: it checks Keel's HMAC signature the way a webhook
receiver would, and answers by path.

usage: webhook_receiver.py PORT SECRET  (PORT 0: any free port)
  POST /hook   200 {"received": <body>} when X-Keel-Signature is sha256=HMAC(secret, timestamp + "." + body), else 401
  GET  /big    200 with 100 KB of "x"
  any  /fail   500
  GET  /count  {"hooks": N}: signed requests accepted so far
"""
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SECRET = int(sys.argv[1]), sys.argv[2].encode()
accepted = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/big":
            self.reply(200, b"x" * 100_000)
        elif self.path == "/count":
            self.reply(200, {"hooks": accepted})
        else:
            self.reply(500, {"error": "boom"})

    def do_POST(self):
        global accepted
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/hook":
            self.reply(500, {"error": "boom"})
            return
        timestamp = self.headers.get("X-Keel-Timestamp", "")
        expected = "sha256=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.headers.get("X-Keel-Signature", "")):
            self.reply(401, {"error": "bad signature"})
            return
        accepted += 1
        self.reply(200, {"received": json.loads(body)})


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
