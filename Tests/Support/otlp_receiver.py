"""A real OTLP/HTTP trace receiver for Keel's tests.

Accepts POST /v1/traces with an application/x-protobuf ExportTraceServiceRequest, decodes it with the
OpenTelemetry protobuf definitions and prints one JSON line per span to stdout:
{"trace_id": hex, "span_id": hex, "parent_span_id": hex, "name": ..., "service": ..., "attributes": {...}}
Usage: python3 otlp_receiver.py PORT  (PORT 0: any free port; prints "listening PORT")
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def attribute_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(404 if self.path != "/v1/traces" else 415)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: attribute_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    print(json.dumps({
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "service": resource.get("service.name"),
                        "attributes": {a.key: attribute_value(a.value) for a in span.attributes},
                    }), flush=True)
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
