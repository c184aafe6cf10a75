"""A fake model server for the AI gateway's tests, speaking three APIs on loopback with fixed answers.

usage: fake_llm.py PORT NAME  (PORT 0: any free port)
  OpenAI:    POST /v1/chat/completions  a chat.completion (or, with "stream": true, chunks then a usage chunk when
                                        stream_options.include_usage) saying "hello from NAME"; 11 prompt / 7 completion tokens
             POST /v1/embeddings        one 3-number vector per input; 5 prompt tokens per input
  Ollama:    POST /api/chat             the same answer, natively (NDJSON lines when streaming); POST /api/embed likewise
  Anthropic: POST /v1/messages          the same answer as a message (typed SSE events when streaming); needs
                                        x-api-key and anthropic-version, max_tokens, no system role in messages
  GET  /v1/models, /api/tags      a model list (the gateway's health probes)
  POST /control/mode?status=CODE   answer every API call with CODE (0: normal again); 429 carries Retry-After: 1
  GET  /control/seen         the API requests received so far: [{path, model, authorization, stream_options}]
Prints "listening PORT" once it accepts connections.
"""
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT, NAME = int(sys.argv[1]), sys.argv[2]
state = {"forced": 0, "seen": []}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/control/seen":
            self.reply(200, state["seen"])
        elif state["forced"]:
            self.reply(state["forced"], {"error": {"message": f"forced {state['forced']}"}})
        elif self.path in ("/v1/models", "/api/tags"):
            self.reply(200, {"object": "list", "data": [{"id": "m", "object": "model"}], "models": [{"name": "m"}]})
        else:
            self.reply(404, {"error": {"message": "not found"}})

    def do_POST(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/control/mode":
            state["forced"] = int(parse_qs(url.query).get("status", ["0"])[0])
            self.reply(200, {"forced": state["forced"]})
            return
        request = json.loads(body or b"{}")
        state["seen"].append({"path": url.path, "model": request.get("model"), "authorization": self.headers.get("Authorization"),
                              "x_api_key": self.headers.get("x-api-key"), "stream_options": request.get("stream_options"),
                              "system": request.get("system"), "options": request.get("options"), "max_tokens": request.get("max_tokens")})
        if state["forced"]:
            headers = [("Retry-After", "1")] if state["forced"] == 429 else []
            self.reply(state["forced"], {"error": {"message": f"forced {state['forced']}", "type": "server_error"}}, headers)
            return
        text = f"hello from {NAME}"
        if url.path == "/api/chat":
            if request.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for index, word in enumerate(text.split(" ")):
                    self.write_chunk(json.dumps({"model": request["model"], "message": {"role": "assistant", "content": (" " if index else "") + word},
                                                 "done": False}).encode() + b"\n")
                    time.sleep(0.2)
                self.write_chunk(json.dumps({"model": request["model"], "message": {"role": "assistant", "content": ""}, "done": True,
                                             "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 7}).encode() + b"\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, {"model": request["model"], "message": {"role": "assistant", "content": text}, "done": True,
                                 "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 7})
            return
        if url.path == "/api/embed":
            inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
            self.reply(200, {"model": request["model"], "embeddings": [[0.1, 0.2, 0.3] for _ in inputs], "prompt_eval_count": 5 * len(inputs)})
            return
        if url.path == "/v1/messages":
            if not self.headers.get("x-api-key") or self.headers.get("anthropic-version") != "2023-06-01" or "max_tokens" not in request \
                    or any(message["role"] not in ("user", "assistant") for message in request["messages"]):
                self.reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "malformed Messages request"}})
                return
            if request.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                def event(kind, data):
                    self.write_chunk(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())
                event("message_start", {"message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": 11, "output_tokens": 1}}})
                event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
                for index, word in enumerate(text.split(" ")):
                    event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": (" " if index else "") + word}})
                    time.sleep(0.2)
                event("content_block_stop", {"index": 0})
                event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}})
                event("message_stop", {})
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, {"id": "msg_1", "type": "message", "role": "assistant", "model": request["model"],
                                 "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                                 "usage": {"input_tokens": 11, "output_tokens": 7}})
            return
        if url.path == "/v1/embeddings":
            inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
            self.reply(200, {"object": "list", "model": request["model"],
                             "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
                             "usage": {"prompt_tokens": 5 * len(inputs), "total_tokens": 5 * len(inputs)}})
        elif url.path == "/v1/chat/completions":
            if request.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": request["model"]}
                words = text.split(" ")
                for index, word in enumerate(words):
                    delta = {"content": (" " if index else "") + word}
                    self.chunk({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                    time.sleep(0.2)
                self.chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if (request.get("stream_options") or {}).get("include_usage"):
                    self.chunk({**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
                self.write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": request["model"],
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
        else:
            self.reply(404, {"error": {"message": "not found"}})

    def chunk(self, value):
        self.write_chunk(b"data: " + json.dumps(value).encode() + b"\n\n")

    def write_chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", PORT), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
