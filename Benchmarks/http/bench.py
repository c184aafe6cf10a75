"""HTTP benchmark: Keel against FastAPI/uvicorn (1 worker) and Node.js `http`, same machine, same run.

Each server is pinned to CPU 0 and wrk (1 thread, 64 keep-alive connections) to CPU 1. For every server
and endpoint it reports requests/s and p99 latency as medians over the rounds, plus Keel's idle
resident memory and its start-to-ready time on an empty SQLite store. Prints a Markdown report.
Usage: python3 bench.py KEEL_BINARY [--duration SECONDS] [--rounds N]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return response.read()
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} not ready within {timeout}s")


def start(command, env=None, cwd=None):
    return subprocess.Popen(["taskset", "-c", "0"] + command, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def wrk(url, duration, headers=()):
    flags = [flag for header in headers for flag in ("-H", header)]
    output = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration}s", "--latency", *flags, url],
                            capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", output).groups()
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses")
    return rps, p99_ms


def keel_command(binary, port, data_dir):
    return [binary, "up", "--port", str(port), "--data-dir", data_dir]


BENCH_ADMIN = {"KEEL_ADMIN_EMAIL": "bench@example.com", "KEEL_ADMIN_PASSWORD": "bench-admin-passphrase-1"}


def bearer_token(name, port):
    """A valid access token for the server's protected endpoint: Keel's login, or the peer's /token."""
    if name.startswith("keel"):
        body = json.dumps({"email": BENCH_ADMIN["KEEL_ADMIN_EMAIL"], "password": BENCH_ADMIN["KEEL_ADMIN_PASSWORD"]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/login", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["access_token"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/token", timeout=10) as response:
        return response.read().decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("keel")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keel = os.path.abspath(args.keel)
    scratch = tempfile.mkdtemp(prefix="keel-bench-")

    # Start-to-ready on an empty SQLite store, and idle memory once ready.
    startups, idle = [], []
    for round_number in range(5):
        port = free_port()
        began = time.monotonic()
        process = start(keel_command(keel, port, f"{scratch}/startup{round_number}"))
        wait_ok(f"http://127.0.0.1:{port}/readyz")
        startups.append((time.monotonic() - began) * 1000)
        time.sleep(2)
        idle.append(rss_mb(process.pid))
        stop(process)

    # The peers serve Keel's own bodies, so every server sends the same bytes.
    port = free_port()
    process = start(keel_command(keel, port, f"{scratch}/body"), env=BENCH_ADMIN)
    status_body = wait_ok(f"http://127.0.0.1:{port}/api/v1/status")
    wait_ok(f"http://127.0.0.1:{port}/readyz")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/permissions",
                                     headers={"Authorization": f"Bearer {bearer_token('keel', port)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        permissions_body = response.read()
    stop(process)
    peer_env = {"BENCH_STATUS_BODY": status_body.decode(), "BENCH_PERMISSIONS_BODY": permissions_body.decode()}

    servers = {
        "keel": lambda p: start(keel_command(keel, p, f"{scratch}/keel{p}"), env=BENCH_ADMIN),
        "keel (access log off)": lambda p: start(keel_command(keel, p, f"{scratch}/keel{p}"), env={"KEEL_ACCESS_LOG": "false", **BENCH_ADMIN}),
        "fastapi": lambda p: start([sys.executable, "-m", "uvicorn", "peer_fastapi:app", "--host", "127.0.0.1", "--port", str(p),
                                    "--workers", "1", "--no-access-log", "--log-level", "warning"],
                                   env=peer_env, cwd=HERE),
        "node": lambda p: start(["node", os.path.join(HERE, "peer_node.js")], env={**peer_env, "PORT": str(p)}),
    }
    results = {}
    # /api/v1/permissions needs a bearer token (roles:read) and sends a fixed body, as public /api/v1/status does:
    # the difference between the two is the cost of authentication.
    AUTHENTICATED = "/api/v1/permissions"
    PATHS = ["/healthz", "/api/v1/status", AUTHENTICATED]
    for round_number in range(args.rounds):
        for name, launch in servers.items():
            port = free_port()
            process = launch(port)
            wait_ok(f"http://127.0.0.1:{port}/readyz" if name.startswith("keel") else f"http://127.0.0.1:{port}/healthz")
            for path in PATHS:
                headers = ()
                if path == AUTHENTICATED:
                    if name == "node":
                        continue
                    headers = (f"Authorization: Bearer {bearer_token(name, port)}",)
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, 2, headers)  # warm-up
                results.setdefault((name, path), []).append(wrk(url, args.duration, headers))
            stop(process)
    shutil.rmtree(scratch, ignore_errors=True)

    def median(name, path, index):
        return statistics.median(r[index] for r in results[(name, path)])

    cpu = re.search(r"model name\s+:\s+(.*)", open("/proc/cpuinfo").read()).group(1)
    print(f"Machine: {cpu}, {os.cpu_count()} cores; server on CPU 0, wrk on CPU 1 (-t1 -c64, {args.duration}s x {args.rounds} rounds, medians).")
    print(f"Bodies: /api/v1/status {len(status_body)} bytes, /api/v1/permissions {len(permissions_body)} bytes.\n")
    print("| server | endpoint | req/s | p99 ms | vs FastAPI | vs Node |")
    print("|---|---|---:|---:|---:|---:|")
    for name in servers:
        for path in PATHS:
            if (name, path) not in results:
                continue
            rps, p99 = median(name, path, 0), median(name, path, 1)
            vs_node = f"{rps / median('node', path, 0):.2f}x" if ("node", path) in results else "-"
            print(f"| {name} | {path} | {rps:,.0f} | {p99:.2f} | {rps / median('fastapi', path, 0):.1f}x | {vs_node} |")
    print()
    for name in ["keel", "keel (access log off)"]:
        kept = median(name, AUTHENTICATED, 0) / median(name, "/api/v1/status", 0)
        print(f"{name}: authenticated {AUTHENTICATED} keeps {kept:.0%} of public /api/v1/status req/s; "
              f"{median(name, AUTHENTICATED, 0) / median('fastapi', AUTHENTICATED, 0):.1f}x FastAPI + PyJWT.")
    print(f"Keel start to /readyz 200 on an empty SQLite store: median {statistics.median(startups):.0f} ms (runs: {', '.join(f'{s:.0f}' for s in startups)}).")
    print(f"Keel idle resident memory after start: median {statistics.median(idle):.1f} MB (runs: {', '.join(f'{m:.1f}' for m in idle)}).")


if __name__ == "__main__":
    main()
