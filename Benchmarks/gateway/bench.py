"""Gateway benchmark: Keel's gateway against Debian nginx as a keep-alive reverse proxy, same machine, same run.

One upstream (nginx answering a fixed JSON body) serves three ways: direct, through an nginx reverse proxy
(1 worker, upstream keepalive 64), and through `keel serve --roles gateway` (a public route, no access log on
either proxy). Each proxy is pinned to CPU 0; the upstream and wrk (1 thread, 64 keep-alive connections) share
CPU 1. Reports requests/s and p99 as medians over the rounds, Keel/nginx ratios and Keel's added p99 over
direct; then, with --soak SECONDS, drives Keel for that long and samples its resident memory.
Usage: python3 bench.py KEEL_BINARY [--duration SECONDS] [--rounds N] [--soak SECONDS]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
from bench import free_port, rss_mb, start, stop, wait_ok, wrk  # noqa: E402  (shared with the HTTP benchmark)

BODY = json.dumps({"id": 42, "name": "keel", "tags": ["gateway", "benchmark"], "ok": True})


def nginx_config(scratch, name, server_block):
    directory = os.path.join(scratch, name)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    {server_block}
}}
""")
    return path


def start_nginx(config, cpu):
    return subprocess.Popen(["taskset", "-c", cpu, "nginx", "-c", config, "-p", os.path.dirname(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("keel")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak", type=int, default=0, help="seconds of load on Keel while sampling its memory")
    args = parser.parse_args()
    keel = os.path.abspath(args.keel)
    scratch = tempfile.mkdtemp(prefix="keel-gateway-bench-")
    upstream_port, nginx_port = free_port(), free_port()
    upstream = start_nginx(nginx_config(scratch, "upstream", f"""
    server {{
        listen 127.0.0.1:{upstream_port};
        location / {{ default_type application/json; return 200 '{BODY}'; }}
    }}"""), "1")
    proxy = start_nginx(nginx_config(scratch, "proxy", f"""
    upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location /app/ {{
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-ID $request_id;
        }}
    }}"""), "0")
    keel_port = free_port()
    routes = {"app": {"match": {"prefix": "/app"}, "upstreams": [{"url": f"http://127.0.0.1:{upstream_port}"}],
                      "auth": "public", "strip_prefix": True}}
    env = {"KEEL_ADMIN_EMAIL": "bench@example.com", "KEEL_ADMIN_PASSWORD": "bench-admin-passphrase-1",
           "KEEL_ACCESS_LOG": "false", "KEEL_LOG_LEVEL": "warning", "KEEL_GATEWAY_ROUTES": json.dumps(routes)}
    gateway = start([keel, "serve", "--roles", "gateway", "--port", str(keel_port), "--data-dir", os.path.join(scratch, "keel")], env)
    results = {}
    try:
        targets = {
            "direct": f"http://127.0.0.1:{upstream_port}/item",
            "nginx": f"http://127.0.0.1:{nginx_port}/app/item",
            "keel": f"http://127.0.0.1:{keel_port}/app/item",
        }
        for url in targets.values():
            assert json.loads(wait_ok(url)) == json.loads(BODY), url
        for name, url in targets.items():
            wrk(url, 2)  # warm-up: connections, caches, the JIT-less but lazy first paths
        for _ in range(args.rounds):
            for name, url in targets.items():
                results.setdefault(name, []).append(wrk(url, args.duration))
        idle_rss = rss_mb(gateway.pid)

        soak = []
        if args.soak:
            done = threading.Event()

            def sample():
                started = time.monotonic()
                while not done.wait(15):
                    soak.append((round(time.monotonic() - started), rss_mb(gateway.pid)))

            sampler = threading.Thread(target=sample)
            sampler.start()
            soak_rps, _ = wrk(targets["keel"], args.soak)
            done.set()
            sampler.join()
    finally:
        for process in (gateway, proxy, upstream):
            stop(process)
        shutil.rmtree(scratch, ignore_errors=True)

    def median(name, index):
        return statistics.median(run[index] for run in results[name])

    cpu = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip()
    print(f"Machine: {cpu}, {os.cpu_count()} cores. wrk -t1 -c64, {args.duration} s x {args.rounds} rounds, medians.\n")
    print("| path | req/s | p99 ms | req/s vs nginx proxy |")
    print("|---|---:|---:|---:|")
    for name, label in [("direct", "direct to the upstream"), ("nginx", "through nginx (proxy, keepalive)"), ("keel", "through Keel's gateway")]:
        print(f"| {label} | {median(name, 0):,.0f} | {median(name, 1):.2f} | {median(name, 0) / median('nginx', 0):.2f}x |")
    print()
    print(f"Keel: {median('keel', 0) / median('nginx', 0):.2f}x nginx's requests/s; added p99 over direct "
          f"{median('keel', 1) - median('direct', 1):.2f} ms (nginx: {median('nginx', 1) - median('direct', 1):.2f} ms); "
          f"RSS after the rounds {idle_rss:.1f} MB.")
    if soak:
        rss = [value for _, value in soak]
        print(f"Soak: {args.soak} s at {soak_rps:,.0f} req/s; RSS every 15 s from {rss[0]:.1f} to {rss[-1]:.1f} MB "
              f"(min {min(rss):.1f}, max {max(rss):.1f}).")
        print("Soak samples (s, MB):", json.dumps(soak))
    print("Raw:", json.dumps(results))


if __name__ == "__main__":
    main()
