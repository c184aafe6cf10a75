"""Checks that Keel serves HTTPS and reloads its certificate on SIGHUP without dropping connections.

usage: tls_client.py PORT KEEL_PID CERT_PATH KEY_PATH NEW_CERT NEW_KEY
  1. opens a keep-alive HTTPS connection trusting the current certificate, GET /healthz;
  2. puts the new certificate and key in place of the configured files and sends SIGHUP to Keel;
  3. sends another GET on the same connection, then opens a new connection that trusts only the new certificate.
Prints one JSON object: the statuses, whether the first connection stayed the same, and both serial numbers.
"""
import http.client
import json
import os
import shutil
import signal
import ssl
import sys
import time

port, pid = int(sys.argv[1]), int(sys.argv[2])
cert_path, key_path, new_cert, new_key = sys.argv[3:7]


def connect(cafile):
    context = ssl.create_default_context(cafile=cafile)
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)


def get(connection):
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


old_copy = cert_path + ".before"
shutil.copy(cert_path, old_copy)
first = connect(old_copy)
result = {"before": get(first)}
socket_before = first.sock
result["serial_before"] = first.sock.getpeercert()["serialNumber"]

shutil.copy(new_key, key_path)
shutil.copy(new_cert, cert_path)
os.kill(pid, signal.SIGHUP)
time.sleep(1)

result["same_connection"] = get(first)
result["kept_socket"] = first.sock is socket_before
second = connect(new_cert)
result["new_connection"] = get(second)
result["serial_after"] = second.sock.getpeercert()["serialNumber"]
print(json.dumps(result), flush=True)
