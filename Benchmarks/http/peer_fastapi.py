"""FastAPI peer for the HTTP benchmark: the same two bodies Keel serves, returned as fixed JSON, and
`/api/v1/permissions` behind the usual FastAPI + PyJWT bearer check (ES256, issuer, audience, expiry), as the
seed stacks' auth services do it. `/token` hands the benchmark a token signed by this peer's key."""
import json
import os
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI, HTTPException, Request
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


PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = PRIVATE_KEY.public_key()


def current_claims(request: Request):
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="missing bearer token")
    try:
        return jwt.decode(header[7:], PUBLIC_KEY, algorithms=["ES256"], audience="keel", issuer="http://bench.test")
    except jwt.PyJWTError as error:
        raise HTTPException(status_code=401, detail=str(error))


@app.get("/token")
def token():
    now = int(time.time())
    claims = {"iss": "http://bench.test", "aud": "keel", "sub": "usr_bench", "roles": ["admin"], "iat": now, "exp": now + 3600}
    return Response(jwt.encode(claims, PRIVATE_KEY, algorithm="ES256", headers={"kid": "bench"}), media_type="text/plain")


PERMISSIONS = os.environ["BENCH_PERMISSIONS_BODY"].encode()


@app.get("/api/v1/permissions")
def permissions(claims=Depends(current_claims)):
    if "admin" not in claims.get("roles", []):
        raise HTTPException(status_code=403, detail="needs roles:read")
    return Response(PERMISSIONS, media_type="application/json")
