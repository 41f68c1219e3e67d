"""A tiny release under test: answers its version and a health check.

Used by the integration tests (as a local process on loopback) and by the
Molecule app containers, so both prove the same behaviour. Standard library
only, because the containers carry nothing but python3.

  GET /release, GET /   -> 200 "version=<answer>"
  GET /healthz          -> 200 "ok", or 503 while --unhealthy-file exists
"""

import argparse
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def build_handler(answer, unhealthy_file):
    class ReleaseHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bluegreen-app"

        def _reply(self, status, body):
            payload = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Release", answer)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                # A flag file lets a test make one server fail its checks
                # without stopping the process (DOWN by check, not by refusal).
                if unhealthy_file and os.path.exists(unhealthy_file):
                    self._reply(503, "unhealthy\n")
                else:
                    self._reply(200, "ok\n")
            elif path in ("/", "/release"):
                self._reply(200, "version=%s\n" % answer)
            else:
                self._reply(404, "not found\n")

        do_HEAD = do_GET

        def log_message(self, fmt, *args):
            if os.environ.get("BLUEGREEN_APP_LOG"):
                sys.stderr.write("%s %s\n" % (answer, fmt % args))

    return ReleaseHandler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--color", required=True, help="the version this release answers")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--unhealthy-file", default=None,
                        help="while this file exists, /healthz answers 503")
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer((args.bind, args.port), build_handler(args.color, args.unhealthy_file))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
