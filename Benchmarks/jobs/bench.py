"""Jobs benchmark: Keel against Celery 5 on Redis, same machine, same run, no-op jobs, durable settings.

Keel on PostgreSQL (a fresh cluster with fsync and synchronous_commit on): one api process and two worker processes
(the latency phase also runs one api process with one worker process, as Celery runs one worker, and one process with
both roles, as `keel up` on PostgreSQL runs).
Keel on SQLite: one process with every role. Celery: one worker, prefork concurrency 2, acks_late, Redis broker.
Keel runs as `keel-bench-jobs` (Benchmarks/jobs/stamp-server): `keel serve` plus a task that returns the moment its
handler started. For each it measures, as medians over the rounds:
  drain      N jobs enqueued while nothing runs them, then started: jobs/s from the first start to the last finish
  enqueue    one HTTP call per job, no worker running: wrk with 32 connections, and one sequential client
             (Celery: one client calling delay(), no worker running)
  latency    client send to handler start (each handler's own clock), p50/p99, for jobs sent one at a time to idle
             workers; Keel on PostgreSQL with one worker process (as Celery's one worker), with two, and with the api
             and the worker in one process, Keel on SQLite and Celery run side by side and take turns job by job (in a new random order each turn), so a change in
             the machine's speed during the run reaches them alike
  RSS        worker process resident memory after the drain (Celery: the worker and its pool processes), and after
             the latency run once idle
Prints a Markdown report. Usage: python3 bench.py KEEL_BENCH_BINARY [--jobs N] [--rounds N]
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
from bench import free_port, rss_mb, wait_ok  # noqa: E402  (shared with the HTTP benchmark)

ADMIN = {"KEEL_ADMIN_EMAIL": "bench@example.com", "KEEL_ADMIN_PASSWORD": "bench-admin-passphrase-1",
         "KEEL_ACCESS_LOG": "false", "KEEL_LOG_LEVEL": "warning", "KEEL_SECRET_KEY": "bench-secret-key-0123456789abcdef0123"}
WORKER_CONCURRENCY = 256
# The latency phase's PostgreSQL topologies besides "pg" (an api process and one worker process).
OTHER_POSTGRES_TOPOLOGIES = [("pg2", "2 worker processes"), ("pg1", "the api and the worker in one process")]


def launch_keel(binary, roles, port, env, data_dir=None):
    """The benchmark's Keel, configured by variables as `keel serve --roles ROLES --port PORT` would be."""
    settings = {**env, "KEEL_ROLES": roles, "KEEL_PORT": str(port)}
    if data_dir:
        settings["KEEL_DATA_DIR"] = data_dir
    return launch([binary], settings)


def launch(command, env=None, cwd=None):
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(process):
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def as_postgres(command):
    """initdb and pg_ctl refuse root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--"] + command if os.geteuid() == 0 else command


class Postgres:
    """A throwaway PostgreSQL cluster with durable settings (the defaults: fsync, synchronous_commit, full_page_writes)."""

    def __init__(self, scratch, name="pg"):
        self.bin = sorted(f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql"))[-1]
        self.dir = os.path.join(scratch, name)
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        subprocess.run(as_postgres([f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "keel", "-A", "trust"]),
                       check=True, capture_output=True)
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-o",
                                    f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200"
                                    " -c shared_buffers=256MB", "start"]), check=True, capture_output=True)

    def url(self, database):
        return f"postgres://keel@127.0.0.1:{self.port}/{database}"

    def psql(self, database, sql):
        return subprocess.run([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "keel", "-d", database,
                               "-At", "-c", sql], check=True, capture_output=True, text=True).stdout.strip()

    def create(self, database):
        self.psql("postgres", f"CREATE DATABASE {database}")

    def stop(self):
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "stop"]), capture_output=True)


class KeelAPI:
    def __init__(self, port):
        self.port = port
        body = json.dumps({"email": ADMIN["KEEL_ADMIN_EMAIL"], "password": ADMIN["KEEL_ADMIN_PASSWORD"]}).encode()
        self.token = self.call("POST", "/api/v1/auth/login", body, auth=False)["access_token"]

    def call(self, method, path, body=None, auth=True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def enqueue_paused(self, queue, count):
        self.call("POST", f"/api/v1/queues/{queue}/pause", b"")
        for start in range(0, count, 1000):
            jobs = [{"task": "keel.noop", "queue": queue} for _ in range(min(1000, count - start))]
            self.call("POST", "/api/v1/jobs", json.dumps({"jobs": jobs}).encode())

    def counts(self, queue):
        return self.call("GET", f"/api/v1/queues/{queue}")["counts"]


def keel_drain(api, queue, count, window):
    """Enqueues `count` jobs on a paused queue, resumes it and waits for them; `window(queue)` gives (first start, last
    finish) from the store."""
    api.enqueue_paused(queue, count)
    api.call("POST", f"/api/v1/queues/{queue}/resume", b"")
    deadline = time.monotonic() + 600
    while api.counts(queue)["succeeded"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"drain of {queue} did not finish: {api.counts(queue)}")
        time.sleep(0.2)
    first, last = window(queue)
    return count / (last - first)


def keel_enqueue_wrk(api, queue, duration):
    env = {**os.environ, "BENCH_TOKEN": api.token, "BENCH_QUEUE": queue}
    output = subprocess.run(["wrk", "-t2", "-c32", f"-d{duration}s", "-s", os.path.join(HERE, "enqueue.lua"),
                             f"http://127.0.0.1:{api.port}/api/v1/jobs"], capture_output=True, text=True, check=True, env=env).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise RuntimeError(f"enqueue failures:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def keel_enqueue_sequential(api, queue, count):
    connection = http.client.HTTPConnection("127.0.0.1", api.port)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api.token}"}
    body = json.dumps({"task": "keel.noop", "queue": queue})
    began = time.monotonic()
    for _ in range(count):
        connection.request("POST", "/api/v1/jobs", body, headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 201, response.status
    return count / (time.monotonic() - began)


class StampSender:
    """Sends `bench.stamp` jobs to one Keel over a kept-alive connection; each job's result is its handler's start."""
    def __init__(self, api):
        self.api = api
        self.connection = http.client.HTTPConnection("127.0.0.1", api.port)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api.token}"}
        self.sent = {}

    def send(self, queue="latency"):
        t0 = time.time()
        self.connection.request("POST", "/api/v1/jobs", json.dumps({"task": "bench.stamp", "queue": queue}), self.headers)
        response = self.connection.getresponse()
        self.sent[json.loads(response.read())["id"]] = t0

    def latencies(self, queue="latency"):
        deadline = time.monotonic() + 120
        while self.api.counts(queue)["succeeded"] < len(self.sent):
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency jobs did not finish: {self.api.counts(queue)}")
            time.sleep(0.1)
        return sorted(self.api.call("GET", f"/api/v1/jobs/{job}")["result"] - t0 for job, t0 in self.sent.items())


def percentile(values, fraction):
    return values[min(len(values) - 1, int(len(values) * fraction))]


def run_keel_postgres(keel, scratch, args, results):
    pg = Postgres(scratch)
    try:
        for round_number in range(args.rounds):
            database = f"keel{round_number}"
            pg.create(database)
            env = {**ADMIN, "KEEL_DATABASE_URL": pg.url(database), "KEEL_DATABASE_TLS": "disable",
                   "KEEL_WORKER_QUEUES": f"*={WORKER_CONCURRENCY}", "KEEL_DATABASE_MAX_CONNECTIONS": "20"}
            port = free_port()
            api_process = launch_keel(keel, "api", port, env)
            wait_ok(f"http://127.0.0.1:{port}/readyz")
            workers = [launch_keel(keel, "worker", 0, env) for _ in range(2)]
            try:
                time.sleep(1)
                api = KeelAPI(port)

                def window(queue):
                    row = pg.psql(database, "SELECT EXTRACT(EPOCH FROM MIN(started_at)), EXTRACT(EPOCH FROM MAX(finished_at)) "
                                            f"FROM keel_jobs WHERE queue = '{queue}'")
                    return tuple(float(v) for v in row.split("|"))

                keel_drain(api, "warmup", 2000, window)
                results.setdefault("pg drain", []).append(keel_drain(api, "drain", args.jobs, window))
                results.setdefault("pg rss", []).append(max(rss_mb(w.pid) for w in workers))
                # Enqueue alone, as Celery's is measured: no worker running.
                for worker in workers:
                    stop(worker)
                results.setdefault("pg enqueue wrk", []).append(keel_enqueue_wrk(api, "enq", args.duration))
                results.setdefault("pg enqueue seq", []).append(keel_enqueue_sequential(api, "enq", 3000))
            finally:
                for process in [api_process] + workers:
                    stop(process)
    finally:
        pg.stop()


def run_keel_sqlite(keel, scratch, args, results):
    for round_number in range(args.rounds):
        data_dir = os.path.join(scratch, f"sqlite{round_number}")
        port = free_port()
        process = launch_keel(keel, "all", port, {**ADMIN, "KEEL_WORKER_QUEUES": f"*={WORKER_CONCURRENCY}"}, data_dir)
        try:
            wait_ok(f"http://127.0.0.1:{port}/readyz")
            api = KeelAPI(port)
            database = os.path.join(data_dir, "keel.db")

            def query(sql):
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
                    return connection.execute(sql).fetchall()

            def window(queue):
                first, last = query(f"SELECT MIN(started_at), MAX(finished_at) FROM keel_jobs WHERE queue = '{queue}'")[0]
                return first / 1e6, last / 1e6

            keel_drain(api, "warmup", 2000, window)
            results.setdefault("sqlite drain", []).append(keel_drain(api, "drain", args.jobs, window))
            results.setdefault("sqlite rss", []).append(rss_mb(process.pid))
        finally:
            stop(process)
        # Enqueue alone, as Celery's is measured: the same store served by the api role only.
        port = free_port()
        process = launch_keel(keel, "api", port, ADMIN, data_dir)
        try:
            wait_ok(f"http://127.0.0.1:{port}/readyz")
            api = KeelAPI(port)
            results.setdefault("sqlite enqueue wrk", []).append(keel_enqueue_wrk(api, "enq", args.duration))
            results.setdefault("sqlite enqueue seq", []).append(keel_enqueue_sequential(api, "enq", 3000))
        finally:
            stop(process)


def process_tree(pid):
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in children for p in process_tree(int(child))]


def process_tree_rss(pid):
    return sum(rss_mb(p) for p in process_tree(pid))


def private_mb(pid):
    """Anonymous memory (heap, stacks, written data) shared proportionally among the processes that map it: what a
    process costs beyond the code pages every process of the same program shares."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(r"Pss_Anon:\s+(\d+)", f.read()).group(1)) / 1024


IDLE_SECONDS = 25  # a worker gives memory back after one quiet lease interval (10 s by default)


def record_idle_memory(results, system, pids):
    """RSS and private memory of workers idle for a while (a Keel worker returns a burst's free heap at its next lease
    renewal); `pids` are one worker's processes, or each Keel worker process (the largest counts)."""
    if system == "celery":
        results.setdefault("celery rss idle", []).append(process_tree_rss(pids[0]))
        results.setdefault("celery private idle", []).append(sum(private_mb(p) for p in process_tree(pids[0])))
    else:
        results.setdefault(f"{system} rss idle", []).append(max(rss_mb(p) for p in pids))
        results.setdefault(f"{system} private idle", []).append(max(private_mb(p) for p in pids))


def start_celery_worker(env):
    return launch([sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--concurrency", "2", "--pool", "prefork",
                   "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "warning"], env, cwd=HERE)


def start_redis(scratch):
    """A Redis without persistence, and the Celery app of this directory pointed at it."""
    port = free_port()
    server = launch(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", scratch])
    env = {"BENCH_REDIS_URL": f"redis://127.0.0.1:{port}/0", "PYTHONPATH": HERE}
    os.environ.update(env)
    time.sleep(0.5)
    sys.path.insert(0, HERE)
    import celery_app  # noqa: E402
    return server, env, celery_app


def run_latency(keel, scratch, args, results, redis):
    """Keel on PostgreSQL (an api process and one worker process, as Celery runs one worker; again with two worker
    processes, as in the drain; and one process with both roles), Keel on SQLite and Celery, all idle and running side by side; one job to each in turn,
    5 ms apart, 500 each per round. Then, once idle, each one's worker memory."""
    pg = Postgres(scratch, "pg-latency")
    _, celery_env, celery_app = redis
    try:
        for round_number in range(args.rounds):
            processes = {"pg workers": [], "pg2 workers": []}
            ports = {}
            for system, workers in [("pg", 1), ("pg2", 2), ("pg1", 0)]:
                database = f"latency{system}_{round_number}"
                pg.create(database)
                env = {**ADMIN, "KEEL_DATABASE_URL": pg.url(database), "KEEL_DATABASE_TLS": "disable",
                       "KEEL_WORKER_QUEUES": f"*={WORKER_CONCURRENCY}", "KEEL_DATABASE_MAX_CONNECTIONS": "20"}
                ports[system] = free_port()
                # No worker processes: the api process works the jobs itself.
                processes[f"{system} api"] = launch_keel(keel, "api" if workers else "api,worker", ports[system], env)
                processes[f"{system} workers"] = [launch_keel(keel, "worker", 0, env) for _ in range(workers)]
            ports["sqlite"] = free_port()
            processes["sqlite"] = launch_keel(keel, "all", ports["sqlite"], {**ADMIN, "KEEL_WORKER_QUEUES": f"*={WORKER_CONCURRENCY}"},
                                              os.path.join(scratch, f"latency-sqlite{round_number}"))
            celery_app.stats.flushdb()
            processes["celery"] = start_celery_worker(celery_env)
            try:
                for port in ports.values():
                    wait_ok(f"http://127.0.0.1:{port}/readyz")
                time.sleep(2)
                senders = {system: StampSender(KeelAPI(port)) for system, port in ports.items()}
                for sender in senders.values():  # warm-up, not counted
                    for _ in range(50):
                        sender.send("warmup")
                        time.sleep(0.005)
                    sender.sent.clear()
                for _ in range(50):
                    celery_app.noop.delay()
                time.sleep(1)
                celery_app.stats.delete("latency")
                # Each turn in a new order, so no system always follows the same one (and whatever it leaves running).
                turns = list(senders.values()) + [None]
                order = random.Random(round_number)
                for _ in range(500):
                    order.shuffle(turns)
                    for sender in turns:
                        if sender is None:
                            celery_app.noop.delay(time.time())
                        else:
                            sender.send()
                        time.sleep(0.005)
                for system, sender in senders.items():
                    results.setdefault(f"{system} latency", []).append(sender.latencies())
                deadline = time.monotonic() + 60
                while celery_app.stats.llen("latency") < 500 and time.monotonic() < deadline:
                    time.sleep(0.05)
                results.setdefault("celery latency", []).append(sorted(float(v) for v in celery_app.stats.lrange("latency", 0, -1)))
                time.sleep(IDLE_SECONDS)
                record_idle_memory(results, "pg", [w.pid for w in processes["pg workers"] + processes["pg2 workers"]])
                record_idle_memory(results, "sqlite", [processes["sqlite"].pid])
                record_idle_memory(results, "celery", [processes["celery"].pid])
            finally:
                for name, process in processes.items():
                    for each in (process if isinstance(process, list) else [process]):
                        stop(each)
    finally:
        pg.stop()


def run_celery(args, results, redis):
    _, env, celery_app = redis

    def start_worker():
        return start_celery_worker(env)

    def wait_done(count, timeout=600):
        deadline = time.monotonic() + timeout
        while int(celery_app.stats.get("done") or 0) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("celery did not finish")
            time.sleep(0.01)

    for _ in range(args.rounds):
        celery_app.stats.flushdb()
        celery_app.app.connection_for_write().default_channel.client.flushdb()
        # Enqueue from one client with no worker running; then drain what is queued.
        began = time.monotonic()
        for _ in range(args.jobs):
            celery_app.noop.delay()
        results.setdefault("celery enqueue seq", []).append(args.jobs / (time.monotonic() - began))
        worker = start_worker()
        try:
            while int(celery_app.stats.get("done") or 0) == 0:
                time.sleep(0.005)
            first = time.monotonic()
            wait_done(args.jobs)
            results.setdefault("celery drain", []).append((args.jobs - 1) / (time.monotonic() - first))
            results.setdefault("celery rss", []).append(process_tree_rss(worker.pid))
        finally:
            stop(worker)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("keel")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--only", choices=["postgres", "sqlite", "celery", "latency"], action="append")
    args = parser.parse_args()
    keel = os.path.abspath(args.keel)
    scratch = tempfile.mkdtemp(prefix="keel-jobs-bench-")
    os.chmod(scratch, 0o777)
    results = {}
    only = args.only or ["postgres", "sqlite", "celery", "latency"]
    redis = start_redis(scratch) if {"celery", "latency"} & set(only) else None
    try:
        if "postgres" in only:
            run_keel_postgres(keel, scratch, args, results)
        if "sqlite" in only:
            run_keel_sqlite(keel, scratch, args, results)
        if "celery" in only:
            run_celery(args, results, redis)
        if "latency" in only:
            run_latency(keel, scratch, args, results, redis)
    finally:
        if redis:
            stop(redis[0])
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, results)


def report(args, results):
    def median(key):
        return statistics.median(results[key]) if key in results else None

    def latency(key, fraction):
        return statistics.median(percentile(run, fraction) * 1000 for run in results[key]) if key in results else None

    def show(value, unit=""):
        return "-" if value is None else f"{value:,.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"

    cpu = re.search(r"model name\s+:\s+(.*)", open("/proc/cpuinfo").read()).group(1)
    print(f"Machine: {cpu}, {os.cpu_count()} cores. {args.jobs:,} no-op jobs per drain, {args.rounds} rounds, medians.")
    print(f"Keel workers: concurrency {WORKER_CONCURRENCY} each; Celery: 1 worker, prefork concurrency 2, acks_late, Redis.\n")
    print("| | Keel, PostgreSQL (2 workers) | Keel, SQLite (1 process) | Celery 5 + Redis |")
    print("|---|---:|---:|---:|")
    rows = [
        ("drain, jobs/s", "drain", ""),
        ("enqueue, jobs/s, wrk 32 connections", "enqueue wrk", ""),
        ("enqueue, jobs/s, one sequential client", "enqueue seq", ""),
        ("worker RSS after drain, MB", "rss", ""),
        (f"worker RSS idle ({IDLE_SECONDS} s after the latency run), MB", "rss idle", ""),
        ("worker private memory idle (Pss_Anon), MB", "private idle", ""),
    ]
    for label, key, unit in rows:
        print(f"| {label} | {show(median('pg ' + key), unit)} | {show(median('sqlite ' + key), unit)} | {show(median('celery ' + key), unit)} |")
    for label, fraction in [("enqueue→start p50, ms (PostgreSQL: api + 1 worker process)", 0.5), ("enqueue→start p99, ms (same)", 0.99)]:
        values = [latency(f"{system} latency", fraction) for system in ["pg", "sqlite", "celery"]]
        print(f"| {label} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in values) + " |")
    for system, topology in OTHER_POSTGRES_TOPOLOGIES:
        for label, fraction in [(f"enqueue→start p50, ms, PostgreSQL with {topology}", 0.5), ("enqueue→start p99, ms (same)", 0.99)]:
            value = latency(f"{system} latency", fraction)
            print(f"| {label} | {'-' if value is None else f'{value:.2f}'} | - | - |")
    print()
    celery_drain, celery_enqueue = median("celery drain"), median("celery enqueue seq")
    if celery_drain:
        for system, name in [("pg", "PostgreSQL"), ("sqlite", "SQLite")]:
            if median(f"{system} drain"):
                print(f"Keel on {name}: drain {median(f'{system} drain') / celery_drain:.1f}x Celery; enqueue "
                      f"{median(f'{system} enqueue wrk') / celery_enqueue:.1f}x (wrk) / {median(f'{system} enqueue seq') / celery_enqueue:.1f}x "
                      f"(one client) Celery's one client; p50 latency {latency(f'{system} latency', 0.5) / latency('celery latency', 0.5):.2f}x, "
                      f"p99 {latency(f'{system} latency', 0.99) / latency('celery latency', 0.99):.2f}x Celery's.")
    for system, topology in OTHER_POSTGRES_TOPOLOGIES:
        if latency(f"{system} latency", 0.5) and latency("celery latency", 0.5):
            print(f"Keel on PostgreSQL with {topology}: p50 latency {latency(f'{system} latency', 0.5) / latency('celery latency', 0.5):.2f}x, "
                  f"p99 {latency(f'{system} latency', 0.99) / latency('celery latency', 0.99):.2f}x Celery's.")
    print("Raw (latency rounds as [p50, p99] ms):", json.dumps({
        k: v if "latency" not in k else [[round(percentile(r, q) * 1000, 2) for q in (0.5, 0.99)] for r in v] for k, v in results.items()}))


if __name__ == "__main__":
    main()
