"""Verifies a Keel access token the way a FastAPI service would: PyJWT with the JWKS endpoint.

usage: verify_jwt.py JWKS_URL TOKEN ISSUER AUDIENCE
Prints the verified claims as JSON and exits 0, or prints the error and exits 1.
"""
import json
import sys

import jwt

jwks_url, token, issuer, audience = sys.argv[1:5]
try:
    signing_key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["ES256", "EdDSA"], audience=audience, issuer=issuer,
                        options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]})
except Exception as error:  # report any refusal to the test
    print(f"refused: {type(error).__name__}: {error}")
    sys.exit(1)
print(json.dumps(claims))
