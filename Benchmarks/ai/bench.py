"""AI gateway benchmark: Keel's OpenAI-compatible endpoint against LiteLLM's proxy, same machine, same run.

The upstream is Debian nginx answering every POST with a fixed chat.completion body (instant), pinned to CPU 1 with wrk.
Keel (`keel serve --roles api`, SQLite, an API key with ai:use, usage recorded) and LiteLLM (`litellm --config`, one
worker, one model pointed at the same upstream, a master key, no database) are each pinned to CPU 0 in turn. wrk posts the same chat
request with 64 (and 16) keep-alive connections. Reports requests/s and latency percentiles, Keel's added latency over
the upstream alone, the Keel/LiteLLM ratio; then streaming time-to-first-byte through Keel against the SSE upstream alone
(one client, sequential), and with --soak SECONDS Keel's resident memory under load.
Usage: python3 bench.py KEEL_BINARY [--duration SECONDS] [--rounds N] [--soak SECONDS] [--skip-litellm]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
from bench import free_port, rss_mb, start, stop, wait_ok  # noqa: E402  (shared with the HTTP benchmark)

COMPLETION = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "upstream-model",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})
REQUEST = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16})
ADMIN = {"KEEL_ADMIN_EMAIL": "bench@example.com", "KEEL_ADMIN_PASSWORD": "bench-admin-passphrase-1",
         "KEEL_ACCESS_LOG": "false", "KEEL_LOG_LEVEL": "warning", "KEEL_SECRET_KEY": "bench-secret-key-0123456789abcdef0123"}


def wrk_post(url, duration, connections, token=None):
    script = os.path.join(tempfile.gettempdir(), f"keel-ai-bench-{os.getpid()}.lua")
    with open(script, "w") as f:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        f.write('wrk.method = "POST"\nwrk.body = ' + json.dumps(REQUEST) + "\n")
        for name, value in headers.items():
            f.write(f'wrk.headers["{name}"] = "{value}"\n')
    output = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
                            capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise RuntimeError(f"{url}: non-2xx answers\n{output}")

    def percentile(label):
        value, unit = re.search(label + r"\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), "p50": percentile("50%"), "p99": percentile("99%")}


def call(port, method, path, body=None, token=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:300]}")
    return json.loads(data) if data else None


def first_byte_seconds(port, path, body, token=None, count=200):
    """Median seconds from sending a streamed request to its first body byte, over `count` sequential requests."""
    samples = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    for _ in range(count):
        began = time.perf_counter()
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        response.read(1)
        samples.append(time.perf_counter() - began)
        response.read()
    return statistics.median(samples)


SSE_SERVER = r'''
import json, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup(); self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Type", "text/event-stream"); self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        for i in range(3):
            data = b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data)); self.wfile.flush(); time.sleep(0.01)
        usage = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}\n\ndata: [DONE]\n\n'
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(usage), usage))
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("keel")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak", type=int, default=0)
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    keel = os.path.abspath(args.keel)
    scratch = tempfile.mkdtemp(prefix="keel-ai-bench-")
    upstream_port, sse_port, keel_port, litellm_port = free_port(), free_port(), free_port(), free_port()
    conf = os.path.join(scratch, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1; daemon off; pid {scratch}/nginx.pid; error_log {scratch}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off; client_body_temp_path {scratch}/body; proxy_temp_path {scratch}/proxy; fastcgi_temp_path {scratch}/f;
    uwsgi_temp_path {scratch}/u; scgi_temp_path {scratch}/s; keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{upstream_port}; location / {{ default_type application/json; return 200 '{COMPLETION}'; }} }}
}}""")
    processes = []
    upstream = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", conf, "-p", scratch], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    processes.append(upstream)
    sse = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", SSE_SERVER, str(sse_port)], start_new_session=True)
    processes.append(sse)
    results = {}
    try:
        keel_process = start([keel, "serve", "--roles", "api", "--port", str(keel_port), "--data-dir", os.path.join(scratch, "keel")], ADMIN)
        processes.append(keel_process)
        wait_ok(f"http://127.0.0.1:{keel_port}/readyz")
        admin = call(keel_port, "POST", "/api/v1/auth/login", {"email": ADMIN["KEEL_ADMIN_EMAIL"], "password": ADMIN["KEEL_ADMIN_PASSWORD"]})["access_token"]
        call(keel_port, "POST", "/api/v1/ai/providers", {"name": "nginx", "kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1"}, admin)
        call(keel_port, "POST", "/api/v1/ai/providers", {"name": "sse", "kind": "openai", "base_url": f"http://127.0.0.1:{sse_port}/v1"}, admin)
        call(keel_port, "POST", "/api/v1/ai/models", {"name": "bench", "deployments": [{"provider": "nginx", "model": "upstream-model"}],
                                                      "price": {"input_per_million": 1, "output_per_million": 2}}, admin)
        call(keel_port, "POST", "/api/v1/ai/models", {"name": "stream", "deployments": [{"provider": "sse", "model": "m"}]}, admin)
        key = call(keel_port, "POST", "/api/v1/apikeys", {"name": "bench", "permissions": ["ai:use"]}, admin)["key"]
        assert call(keel_port, "POST", "/v1/chat/completions", json.loads(REQUEST), key)["choices"][0]["message"]["content"]

        targets = {"direct": (f"http://127.0.0.1:{upstream_port}/v1/chat/completions", None),
                   "keel": (f"http://127.0.0.1:{keel_port}/v1/chat/completions", key)}
        if not args.skip_litellm:
            config = os.path.join(scratch, "litellm.yaml")
            with open(config, "w") as f:
                f.write(f"model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/upstream-model\n"
                        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n      api_key: unused\n")
            master = "sk-bench-" + os.urandom(16).hex()
            litellm = start(["litellm", "--config", config, "--port", str(litellm_port), "--num_workers", "1"],
                            {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": master})
            processes.append(litellm)
            deadline = time.monotonic() + 180
            while True:
                try:
                    call(litellm_port, "POST", "/v1/chat/completions", json.loads(REQUEST), master)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            targets["litellm"] = (f"http://127.0.0.1:{litellm_port}/v1/chat/completions", master)
        for name, (url, token) in targets.items():
            wrk_post(url, 2, 64, token)
        for _ in range(args.rounds):
            for name, (url, token) in targets.items():
                for connections in (64, 16):
                    results.setdefault(f"{name} c{connections}", []).append(wrk_post(url, args.duration, connections, token))
        stream_request = {"model": "stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        direct_ttfb = first_byte_seconds(sse_port, "/v1/chat/completions", {**stream_request, "model": "m"})
        keel_ttfb = first_byte_seconds(keel_port, "/v1/chat/completions", stream_request, key)
        rss_after = rss_mb(keel_process.pid)
        soak = []
        if args.soak:
            done = threading.Event()

            def sample():
                began = time.monotonic()
                while not done.wait(15):
                    soak.append((round(time.monotonic() - began), rss_mb(keel_process.pid)))

            sampler = threading.Thread(target=sample)
            sampler.start()
            soak_result = wrk_post(targets["keel"][0], args.soak, 64, key)
            done.set()
            sampler.join()
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(scratch, ignore_errors=True)

    def median(name, field):
        return statistics.median(run[field] for run in results[name])

    cpu = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip()
    print(f"Machine: {cpu}, {os.cpu_count()} cores. wrk -t1, {args.duration} s x {args.rounds} rounds, medians.\n")
    print("| path | connections | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name in results:
        target, connections = name.split(" c")
        print(f"| {target} | {connections} | {median(name, 'rps'):,.0f} | {median(name, 'p50'):.2f} | {median(name, 'p99'):.2f} |")
    print()
    for connections in (64, 16):
        line = (f"{connections} connections: Keel adds p50 {median(f'keel c{connections}', 'p50') - median(f'direct c{connections}', 'p50'):.2f} ms, "
                f"p99 {median(f'keel c{connections}', 'p99') - median(f'direct c{connections}', 'p99'):.2f} ms over the upstream alone")
        if f"litellm c{connections}" in results:
            line += f"; {median(f'keel c{connections}', 'rps') / median(f'litellm c{connections}', 'rps'):.0f}x LiteLLM's requests/s"
        print(line + ".")
    print(f"Streaming time to first byte (one client, median of 200): upstream alone {direct_ttfb * 1000:.2f} ms, through Keel "
          f"{keel_ttfb * 1000:.2f} ms (+{(keel_ttfb - direct_ttfb) * 1000:.2f} ms). Keel RSS after the rounds {rss_after:.1f} MB.")
    if soak:
        values = [value for _, value in soak]
        print(f"Soak: {args.soak} s at {soak_result['rps']:,.0f} req/s; RSS every 15 s from {values[0]:.1f} to {values[-1]:.1f} MB "
              f"(min {min(values):.1f}, max {max(values):.1f}).")
        print("Soak samples (s, MB):", json.dumps(soak))
    print("Raw:", json.dumps(results))


if __name__ == "__main__":
    main()
