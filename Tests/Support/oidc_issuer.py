"""A small OIDC-style issuer for tests, standing in for Keycloak: it publishes a JWKS (signing keys
plus an encryption key, as Keycloak does) and mints RS256 access tokens on request.

usage: oidc_issuer.py PORT  (PORT 0: any free port)
  GET  /realms/keel/.well-known/openid-configuration
  GET  /realms/keel/protocol/openid-connect/certs   the JWKS (each fetch is counted)
  GET  /fetches                                     {"count": N}
  POST /mint   {"claims": {...}, "kid"?: "...", "alg"?: "HS256", "secret"?: "..."}  -> {"token": "..."}
  POST /rotate                                      adds a new signing key and signs with it from now on
"""
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

# Bound before anything else, so the issuer URL can name the port (also when asked for any free one).
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), None)
PORT = server.server_address[1]
ISSUER = f"http://127.0.0.1:{PORT}/realms/keel"
keys = []  # (kid, private key), newest last
fetches = 0


def add_key():
    keys.append((f"kc-{uuid.uuid4().hex[:8]}", rsa.generate_private_key(public_exponent=65537, key_size=2048)))


def jwks():
    published = []
    for kid, key in keys:
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        published.append(jwk)
    encryption = json.loads(RSAAlgorithm.to_jwk(keys[0][1].public_key()))
    encryption.update({"kid": "kc-enc", "use": "enc", "alg": "RSA-OAEP"})
    return {"keys": published + [encryption]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global fetches
        if self.path == "/realms/keel/.well-known/openid-configuration":
            self.reply(200, {"issuer": ISSUER, "jwks_uri": ISSUER + "/protocol/openid-connect/certs"})
        elif self.path == "/realms/keel/protocol/openid-connect/certs":
            fetches += 1
            self.reply(200, jwks())
        elif self.path == "/fetches":
            self.reply(200, {"count": fetches})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/rotate":
            add_key()
            self.reply(200, {"kid": keys[-1][0]})
            return
        if self.path != "/mint":
            self.reply(404, {"error": "not found"})
            return
        now = int(time.time())
        claims = {"iss": ISSUER, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
        claims.update(body.get("claims", {}))
        kid, key = keys[-1]
        if body.get("alg") == "HS256":
            token = jwt.encode(claims, body["secret"], algorithm="HS256", headers={"kid": body.get("kid", kid)})
        else:
            token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": body.get("kid", kid)})
        self.reply(200, {"token": token})


add_key()
server.RequestHandlerClass = Handler
print(f"listening {PORT}", flush=True)
server.serve_forever()
