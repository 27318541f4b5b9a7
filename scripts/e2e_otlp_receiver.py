#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace receiver for scripts/e2e-prometheus.sh.

Listens on 127.0.0.1 (a free port, written to PORT_FILE once it listens), accepts
`POST /v1/traces` with an `application/x-protobuf` ExportTraceServiceRequest (gzip or not),
decodes it with the `opentelemetry-proto` package (the OpenTelemetry project's generated
classes, not a parser of ours) and appends one JSON line per span to SPANS_FILE:
{"trace_id", "span_id", "parent_span_id", "name", "attributes"} with ids in lower-case hex, as
in W3C trace context and the exporter's exemplars. Runs until killed.

Usage: e2e_otlp_receiver.py PORT_FILE SPANS_FILE   (the venv of target/ci-tools/venv)
"""
import gzip
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

lock = threading.Lock()


def value(v):
    """The Python value of an OTLP AnyValue (scalars only; others as their text form)."""
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "int_value", "bool_value", "double_value") else str(v)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except Exception as e:  # a malformed request is a test failure: answer 400, log it
            self.send_error(400, f"not an ExportTraceServiceRequest: {e}")
            return
        lines = []
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(json.dumps({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(), "name": s.name,
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                    }))
        with lock, open(self.server.spans_file, "a") as f:
            f.write("".join(line + "\n" for line in lines))
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):  # quiet: thousands of requests
        pass


def main() -> int:
    port_file, spans_file = sys.argv[1:3]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.spans_file = spans_file
    open(spans_file, "w").close()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)  # the shell waits for the file: write it whole
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
