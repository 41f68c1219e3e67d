"""A tiny release under test: answers its version and a health check.

Used by the integration tests (as a local process on loopback) and by the
Molecule app containers, so both prove the same behaviour. Standard library
only, because the containers carry nothing but python3.

  GET /release, GET /   -> 200 "version=<answer>"
  GET /healthz          -> 200 "ok", or 503 while --unhealthy-file exists
  GET /stream?seconds=N -> 200, chunked: "version=<answer> <i>" every 0.2 s for N seconds (default
                           5, at most 600), then the last chunk: a long-lived response the drain
                           tests hold open on one version while the switch moves new requests
  every answer carries the headers X-Release (the version) and X-App-Pid (this process)
  while --fail-file exists, holding "SHARE [PATH]": that share (0..1) of the requests for
  PATH (exact, without the query; every path but /healthz when absent) -> 500 "failed",
  spread evenly (with 0.25, every 4th request), so a test knows the rate it causes
"""

import argparse
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FailureRule:
    """Reads --fail-file on every request, so a test can start and stop failures live."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.counted = 0

    def fails(self, request_path):
        if not self.path or request_path == "/healthz":
            return False
        try:
            with open(self.path) as handle:
                fields = handle.read().split()
        except OSError:
            return False
        share = float(fields[0]) if fields else 1.0
        if len(fields) > 1 and fields[1] != request_path:
            return False
        with self.lock:
            self.counted += 1
            # The n-th matching request fails when floor(n * share) steps up: exact and even.
            return int(self.counted * share) > int((self.counted - 1) * share)


def build_handler(answer, unhealthy_file, fail_file=None):
    failures = FailureRule(fail_file)

    class ReleaseHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bluegreen-app"

        def _reply(self, status, body):
            payload = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Release", answer)
            # Which process answered: the test lab checks that a port answers from the app it
            # started, not from another process that holds the port.
            self.send_header("X-App-Pid", str(os.getpid()))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if failures.fails(path):
                self._reply(500, "failed\n")
            elif path == "/healthz":
                # A flag file lets a test make one server fail its checks
                # without stopping the process (DOWN by check, not by refusal).
                if unhealthy_file and os.path.exists(unhealthy_file):
                    self._reply(503, "unhealthy\n")
                else:
                    self._reply(200, "ok\n")
            elif path == "/stream":
                self._stream()
            elif path in ("/", "/release"):
                self._reply(200, "version=%s\n" % answer)
            else:
                self._reply(404, "not found\n")

        def _stream(self):
            query = dict(item.partition("=")[::2] for item in self.path.partition("?")[2].split("&") if item)
            try:
                seconds = min(600.0, max(0.0, float(query.get("seconds", "5"))))
            except ValueError:
                self._reply(400, "seconds must be a number\n")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Release", answer)
            self.send_header("X-App-Pid", str(os.getpid()))
            self.end_headers()
            if self.command == "HEAD":
                return
            ends = time.monotonic() + seconds
            index = 0
            try:
                while True:
                    payload = ("version=%s %d\n" % (answer, index)).encode("utf-8")
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                    self.wfile.flush()
                    index += 1
                    if time.monotonic() >= ends:
                        break
                    time.sleep(0.2)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                # The peer (HAProxy shutting the session down, or the client) closed: nothing to answer.
                self.close_connection = True

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
    parser.add_argument("--fail-file", default=None,
                        help='while this file exists ("SHARE [PATH]"), that share of requests answers 500')
    parser.add_argument("--tls-cert", default=None,
                        help="serve HTTPS with this PEM certificate (needs --tls-key)")
    parser.add_argument("--tls-key", default=None, help="the PEM private key of --tls-cert")
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer((args.bind, args.port), build_handler(args.color, args.unhealthy_file, args.fail_file))
    server.daemon_threads = True
    if args.tls_cert:
        # A TLS server behind HAProxy (`server ... ssl`), for the per-server preflight tests.
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
