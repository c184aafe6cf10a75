"""Console benchmark: server time per page with 100,000 jobs in the store (the console issue's target: < 100 ms).

Fills a fresh store through the API: N jobs in batches (most succeed, some fail until dead, some wait a day), a few
schedules, a gateway route, an AI provider and model; the workers drain them. Then signs in through the console's form
and requests every page R times in a row over one keep-alive connection, reporting the median and p95 as the client
sees them on loopback (an upper bound of the server's time) and the server's own mean from keel_console_page_seconds.
Stores: SQLite (`keel up`) and PostgreSQL (a fresh durable cluster, `keel up` on it).
Usage: python3 bench.py KEEL_BINARY [--jobs N] [--requests R] [--only sqlite|postgres]
"""
import argparse
import http.client
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


http_bench = load("http_bench", "../http/bench.py")
jobs_bench = load("jobs_bench", "../jobs/bench.py")

EMAIL, PASSWORD = "bench@example.com", "bench-admin-passphrase-1"
ENV = {"KEEL_ADMIN_EMAIL": EMAIL, "KEEL_ADMIN_PASSWORD": PASSWORD, "KEEL_ACCESS_LOG": "false", "KEEL_LOG_LEVEL": "warning",
       "KEEL_SECRET_KEY": "bench-secret-key-0123456789abcdef0123", "KEEL_WORKER_QUEUES": "*=64"}


class Client:
    def __init__(self, port):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = None
        self.cookie = None

    def request(self, method, path, body=None, headers=None):
        self.connection.request(method, path, body, headers or {})
        response = self.connection.getresponse()
        return response, response.read()

    def api(self, method, path, body=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        response, data = self.request(method, path, json.dumps(body) if body is not None else None, headers)
        return response.status, json.loads(data) if data else None


def fill(client, count):
    status, login = client.api("POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert status == 200, login
    client.token = login["access_token"]
    base = f"http://127.0.0.1:{client.port}"
    for start in range(0, count, 1000):
        jobs = []
        for i in range(start, min(count, start + 1000)):
            if i % 20 == 0:
                jobs.append({"task": "http.request", "args": {"url": base + "/no-such-page"}, "max_attempts": 1, "tags": ["bench", f"t{i % 10}"]})
            elif i % 20 == 1:
                jobs.append({"task": "keel.noop", "delay_seconds": 86400, "queue": "later", "tags": ["bench"]})
            else:
                jobs.append({"task": "keel.noop", "queue": ["default", "email", "reports"][i % 3], "tags": ["bench", f"t{i % 10}"]})
        status, body = client.api("POST", "/api/v1/jobs", {"jobs": jobs})
        assert status == 201, (status, body)
    for name, cron in [("nightly", "0 2 * * *"), ("hourly-report", "0 * * * *"), ("weekdays", "30 9 * * 1-5")]:
        client.api("POST", "/api/v1/schedules", {"name": name, "cron": cron, "timezone": "Europe/Berlin", "task": "keel.noop"})
    client.api("POST", "/api/v1/gateway/routes", {"name": "status", "match": {"prefix": "/status"}, "upstreams": [{"url": base + "/healthz"}]})
    client.api("POST", "/api/v1/ai/providers", {"name": "local", "kind": "openai", "base_url": base + "/v1"})
    client.api("POST", "/api/v1/ai/models", {"name": "chat", "deployments": [{"provider": "local", "model": "tiny"}]})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status, queues = client.api("GET", "/api/v1/queues")
        busy = sum(q["counts"].get(state, 0) for q in queues["items"] for state in ("available", "running", "retrying"))
        if busy == 0:
            break
        time.sleep(0.5)
    status, queues = client.api("GET", "/api/v1/queues")
    return {state: sum(q["counts"].get(state, 0) for q in queues["items"]) for state in ("succeeded", "dead", "scheduled")}


def sign_in(client):
    response, page = client.request("GET", "/console/login")
    signin_cookie = re.search(r"keel_signin=([^;]+)", response.getheader("Set-Cookie")).group(1)
    token = re.search(rb'name="_signin" value="([^"]+)"', page).group(1).decode()
    form = urllib.parse.urlencode({"_signin": token, "email": EMAIL, "password": PASSWORD, "next": "/console/"})
    response, _ = client.request("POST", "/console/login", form, {"Content-Type": "application/x-www-form-urlencoded",
                                                                  "Cookie": f"keel_signin={signin_cookie}"})
    assert response.status == 303, response.status
    client.cookie = "keel_session=" + re.search(r"keel_session=([^;]+)", response.getheader("Set-Cookie")).group(1)


def measure(client, pages, requests):
    results = {}
    for label, path in pages:
        times = []
        for attempt in range(requests + 3):
            began = time.perf_counter()
            response, body = client.request("GET", path, headers={"Cookie": client.cookie})
            elapsed = (time.perf_counter() - began) * 1000
            assert response.status == 200, (path, response.status, body[:300])
            if attempt >= 3:
                times.append(elapsed)
        times.sort()
        results[label] = (statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))])
    return results


def server_means(client):
    _, text = client.request("GET", "/metrics")
    sums, counts = {}, {}
    for line in text.decode().splitlines():
        match = re.match(r'keel_console_page_seconds_(sum|count)\{page="([^"]+)"\} ([0-9.e+-]+)', line)
        if match:
            (sums if match.group(1) == "sum" else counts)[match.group(2)] = float(match.group(3))
    return {page: sums[page] / counts[page] * 1000 for page in sums if counts.get(page)}


def run(keel, store, args, scratch):
    env = dict(ENV)
    pg = None
    if store == "postgres":
        pg = jobs_bench.Postgres(scratch)
        pg.create("console")
        env.update({"KEEL_DATABASE_URL": pg.url("console"), "KEEL_DATABASE_TLS": "disable"})
    port = http_bench.free_port()
    data = tempfile.mkdtemp(dir=scratch)
    process = jobs_bench.launch([keel, "up", "--port", str(port), "--data-dir", data], env)
    try:
        http_bench.wait_ok(f"http://127.0.0.1:{port}/readyz")
        client = Client(port)
        began = time.monotonic()
        counts = fill(client, args.jobs)
        print(f"{store}: filled {args.jobs:,} jobs in {time.monotonic() - began:.0f} s: {counts}", file=sys.stderr)
        sign_in(client)
        _, listing = client.api("GET", "/api/v1/jobs?state=succeeded&limit=100")
        job_id = listing["items"][-1]["id"]
        pages = [
            ("overview", "/console/"),
            ("jobs (newest)", "/console/jobs"),
            ("jobs, state=dead", "/console/jobs?state=dead"),
            ("jobs, queue+state, page 2", f"/console/jobs?queue=email&state=succeeded&after={job_id}"),
            ("jobs, tag", "/console/jobs?tag=t3"),
            ("job detail", f"/console/jobs/{job_id}"),
            ("workers", "/console/workers"),
            ("schedules", "/console/schedules"),
            ("users", "/console/users"),
            ("API keys", "/console/keys"),
            ("audit log", "/console/audit"),
            ("gateway", "/console/gateway"),
            ("AI", "/console/ai"),
        ]
        return measure(client, pages, args.requests), server_means(client), counts
    finally:
        jobs_bench.stop(process)
        if pg:
            pg.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("keel")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--only", choices=["sqlite", "postgres"], action="append")
    args = parser.parse_args()
    stores = args.only or ["sqlite", "postgres"]
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o777)
        results = {store: run(os.path.abspath(args.keel), store, args, scratch) for store in stores}
    cpu = re.search(r"model name\s+:\s+(.*)", open("/proc/cpuinfo").read()).group(1)
    print(f"Machine: {cpu}, {os.cpu_count()} cores. {args.jobs:,} jobs in the store; {args.requests} requests per page, medians and p95 in ms.\n")
    print("| page | " + " | ".join(f"{s} median | {s} p95" for s in stores) + " |")
    print("|---|" + "---:|---:|" * len(stores))
    for label in results[stores[0]][0]:
        print(f"| {label} | " + " | ".join(f"{results[s][0][label][0]:.1f} | {results[s][0][label][1]:.1f}" for s in stores) + " |")
    for store in stores:
        worst = max(p95 for _, p95 in results[store][0].values())
        print(f"\n{store}: jobs by state {results[store][2]}; slowest page p95 {worst:.1f} ms; server means (ms): "
              + ", ".join(f"{page} {mean:.1f}" for page, mean in sorted(results[store][1].items())))


if __name__ == "__main__":
    main()
