"""An upstream for the gateway's tests: one named instance on loopback, HTTP/1.1 keep-alive.

usage: upstream_server.py PORT NAME  (PORT 0: any free port)
  any  /echo...            200 JSON {instance, method, path, query, headers, body}
  any  /slow?ms=N          sleeps N ms, then echoes
  any  /status/CODE        answers CODE with {instance}
  any  /drop               reads the request, then closes the connection without answering
  GET  /sse?events=N&interval_ms=M   text/event-stream, one event every M ms, each flushed
  GET  /health             200, or 503 after POST /control/unhealthy (POST /control/healthy undoes it)
  POST /control/mode?status=CODE   answer every other request with CODE (0: back to normal)
  GET  /control/hits       {"METHOD PATH": count} of every request so far (control requests excluded)
Prints "listening PORT" once it accepts connections.
"""
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT, NAME = int(sys.argv[1]), sys.argv[2]
state = {"healthy": True, "hits": {}, "forced": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle and delayed ACKs stall each answer ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(length) if length else b""

        if url.path.startswith("/control/"):
            if url.path == "/control/unhealthy":
                state["healthy"] = False
            elif url.path == "/control/healthy":
                state["healthy"] = True
            elif url.path == "/control/mode":
                state["forced"] = int(query.get("status", ["0"])[0])
            with lock:
                self.reply(200, {"instance": NAME, "hits": dict(state["hits"])})
            return
        with lock:
            key = f"{self.command} {url.path}"
            state["hits"][key] = state["hits"].get(key, 0) + 1

        if state["forced"] and url.path != "/health":
            self.reply(state["forced"], {"instance": NAME, "forced": True})
        elif url.path == "/health":
            self.reply(200 if state["healthy"] else 503, {"instance": NAME, "healthy": state["healthy"]})
        elif url.path == "/drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif url.path.startswith("/status/"):
            self.reply(int(url.path.rsplit("/", 1)[1]), {"instance": NAME})
        elif url.path == "/sse":
            events = int(query.get("events", ["3"])[0])
            interval = int(query.get("interval_ms", ["200"])[0]) / 1000
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for number in range(events):
                chunk = f"id: {number}\ndata: {json.dumps({'n': number, 'at': time.time()})}\n\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
                time.sleep(interval)
            self.wfile.write(b"0\r\n\r\n")
        else:
            if url.path == "/slow":
                time.sleep(int(query.get("ms", ["1000"])[0]) / 1000)
            self.reply(200, {
                "instance": NAME,
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("utf-8", "replace"),
            })

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", PORT), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
