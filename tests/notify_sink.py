"""A local SMTP server (aiosmtpd) and webhook receiver that record what organizers would get, with arrival times.

Webhook paths: ``/ok`` answers 200, ``/flaky`` 500 twice then 200, ``/slow`` 200 after 2 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port


@dataclass
class Sink:
    """What the local SMTP server and webhook receiver got, with arrival times."""

    mails: list[tuple[float, object]] = field(default_factory=list)
    hooks: list[tuple[float, str, dict]] = field(default_factory=list)
    flaky_calls: int = 0


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int, int]]:
    got = Sink()

    class Smtp:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            got.mails.append((time.monotonic(), message_from_bytes(envelope.content, policy=policy.default)))
            return "250 OK"

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            code = 200
            if self.path == "/flaky":
                got.flaky_calls += 1
                code = 500 if got.flaky_calls <= 2 else 200
            elif self.path == "/slow":
                time.sleep(2.0)
            if code == 200:
                got.hooks.append((time.monotonic(), self.path, body))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    smtp_port = free_port()
    smtp = Controller(Smtp(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield got, smtp_port, http.server_address[1]
    http.shutdown()
    smtp.stop()
