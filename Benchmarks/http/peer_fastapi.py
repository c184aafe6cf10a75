"""FastAPI peer for the HTTP benchmark: the same two bodies Keel serves, returned as fixed JSON."""
import json
import os

from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI()
STATUS = os.environ["BENCH_STATUS_BODY"].encode()
HEALTH = b'{"status":"ok"}'


@app.get("/healthz")
def healthz():
    return Response(HEALTH, media_type="application/json")


@app.get("/api/v1/status")
def status():
    return Response(STATUS, media_type="application/json")
