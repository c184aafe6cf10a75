"""A Keel worker in Python, with nothing but the standard library.

It claims jobs from Keel over HTTP (the same leases, retries and dead letters as Keel's own workers),
runs the handler registered for each job's task, and reports the result or the error.

    KEEL_URL=http://127.0.0.1:8080 KEEL_API_KEY=keel_... KEEL_QUEUES=py python3 worker.py

Create the key with `keel apikeys create --name py-worker --owner <account> --permission jobs:write`, and mark the
queue as worked externally (PATCH /api/v1/queues/py {"external": true}) so Keel accepts task names it does not know.
Set KEEL_EXIT_WHEN_IDLE=1 to stop once a claim comes back empty (the test suite does).
"""
import json
import os
import socket
import sys
import threading
import urllib.error
import urllib.request

KEEL_URL = os.environ.get("KEEL_URL", "http://127.0.0.1:8080").rstrip("/")
API_KEY = os.environ["KEEL_API_KEY"]
QUEUES = os.environ.get("KEEL_QUEUES", "default").split(",")
WORKER_ID = os.environ.get("KEEL_WORKER_ID", f"py-{socket.gethostname()}-{os.getpid()}")
LEASE_SECONDS = 30


def call(path, body):
    request = urllib.request.Request(KEEL_URL + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


# Handlers: task name -> function(args) -> JSON result. Raising fails the attempt (Keel retries with backoff).
def add(args):
    return {"sum": args["a"] + args["b"]}


def always_fails(args):
    raise ValueError(f"cannot process {args!r}")


HANDLERS = {"py.add": add, "py.fail": always_fails}


def run(job):
    token = job["lease_token"]
    stop_heartbeat = threading.Event()

    def heartbeat():
        # Keep the lease while a long handler runs; Keel rescues the job if this process dies.
        while not stop_heartbeat.wait(LEASE_SECONDS / 3):
            call(f"/api/v1/jobs/{job['id']}/heartbeat", {"lease_token": token, "lease_seconds": LEASE_SECONDS})

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        handler = HANDLERS.get(job["task"])
        if handler is None:
            call(f"/api/v1/jobs/{job['id']}/fail", {"lease_token": token, "error": f"no handler for {job['task']}", "retryable": False})
            return
        result = handler(job["args"])
        call(f"/api/v1/jobs/{job['id']}/complete", {"lease_token": token, "result": result})
    except Exception as error:  # the attempt failed; report it and let Keel decide about retries
        call(f"/api/v1/jobs/{job['id']}/fail", {"lease_token": token, "error": f"{type(error).__name__}: {error}"})
    finally:
        stop_heartbeat.set()


def main():
    print(f"worker {WORKER_ID} working {','.join(QUEUES)} at {KEEL_URL}", flush=True)
    while True:
        try:
            jobs = call("/api/v1/workers/claim", {"queues": QUEUES, "max": 10, "lease_seconds": LEASE_SECONDS,
                                                  "wait_seconds": 2, "worker_id": WORKER_ID})["jobs"]
        except urllib.error.URLError as error:
            print(f"claim failed: {error}", file=sys.stderr, flush=True)
            continue
        if not jobs and os.environ.get("KEEL_EXIT_WHEN_IDLE"):
            return
        for job in jobs:
            run(job)


if __name__ == "__main__":
    main()
