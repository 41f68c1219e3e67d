"""A long-lived client for drain tests: GET /stream held open through a HAProxy listener.

The lab's app (tests/app/bluegreen_app.py) answers /stream?seconds=N with a chunked response, a
chunk every 0.2 s, then the last chunk. A HeldStream reads every byte of it in a thread: `ended`
is set when the connection closes, `complete` tells whether that was the stream's normal end (its
last chunk) or a close before it (a drain's `shutdown sessions`). Shared by the integration
tests (tests/integration) and the Molecule scenarios; the standard library only.
"""

from __future__ import annotations

import socket
import threading
import time

LAST_CHUNK = b"\r\n0\r\n\r\n"


class HeldStream(threading.Thread):
    """GET /stream?seconds=`seconds` with Host `host_header` through `address`:`port`, held open."""

    def __init__(self, address, port, host_header, seconds=120):
        super().__init__(daemon=True)
        self.seconds = seconds
        self.sock = socket.create_connection((address, port), timeout=seconds + 30)
        self.sock.sendall(("GET /stream?seconds=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                           % (seconds, host_header)).encode())
        self.data = b""
        self.started = time.monotonic()
        self.ended = threading.Event()
        self.ended_at = None

    def run(self):
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.data += chunk
        except OSError:
            pass
        self.ended_at = time.monotonic()
        self.ended.set()

    @property
    def ended_after(self):
        """Seconds from the request to the close, None while the stream is open."""
        return None if self.ended_at is None else self.ended_at - self.started

    @property
    def chunks(self):
        return self.data.count(b"version=")

    @property
    def complete(self):
        return self.data.endswith(LAST_CHUNK)

    def close(self):
        self.sock.close()
