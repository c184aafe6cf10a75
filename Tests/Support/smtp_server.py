"""A real SMTP server for the mail tests (aiosmtpd from PyPI), with a throwaway self-signed certificate.

usage: smtp_server.py PORT CERT_DIR MODE [USER:PASSWORD]  (PORT 0: any free port)
  MODE starttls   offers STARTTLS and requires it before MAIL; AUTH only after it
  MODE tls        TLS from the first byte (SMTPS)
  MODE plain      no TLS at all (a server Keel must refuse to use for credentials or with smtp_tls starttls)
  USER:PASSWORD   require AUTH (PLAIN or LOGIN) with these credentials
Writes CERT_DIR/cert.pem (the CA a client should trust) and prints "listening PORT"; then one JSON line per
message received: {"mail_from", "rcpt_tos", "data", "tls", "login"}. RCPT to any address at refused.example
gets 550.
"""
import asyncio
import datetime
import json
import os
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress

PORT, CERT_DIR, MODE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
CREDENTIALS = sys.argv[4].split(":", 1) if len(sys.argv) > 4 else None


def make_certificate():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(CERT_DIR, "cert.pem"), os.path.join(CERT_DIR, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data
        print(json.dumps({
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None, "login": login,
        }), flush=True)
        return "250 2.0.0 queued as K33L"


def authenticate(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and CREDENTIALS and \
            auth_data.login.decode() == CREDENTIALS[0] and auth_data.password.decode() == CREDENTIALS[1]:
        return AuthResult(success=True, auth_data=auth_data.login.decode())
    return AuthResult(success=False, handled=False)



class BoundController(Controller):
    """Serves on a socket bound up front, so PORT 0 works (aiosmtpd binds by number and connects back to it)."""

    def __init__(self, handler, **kwargs):
        self.listener = socket.create_server(("127.0.0.1", PORT))
        super().__init__(handler, port=self.listener.getsockname()[1], **kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self.listener, ssl=self.ssl_context)


context = make_certificate()
kwargs = dict(hostname="127.0.0.1", authenticator=authenticate, auth_required=CREDENTIALS is not None,
              auth_require_tls=MODE != "plain")
if MODE == "starttls":
    kwargs.update(tls_context=context, require_starttls=True)
elif MODE == "tls":
    kwargs.update(ssl_context=context)
controller = BoundController(Handler(), **kwargs)
controller.start()
print(f"listening {controller.port}", flush=True)
try:
    asyncio.new_event_loop().run_forever()
finally:
    controller.stop()
