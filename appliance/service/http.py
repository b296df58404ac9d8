"""The metrics and health endpoints: a small threaded HTTP server.

* ``/metrics``: the Prometheus text exposition of a ``CollectorRegistry`` (``prometheus_client``'s own encoder,
  so a scraper asking for OpenMetrics gets it);
* ``/healthz`` and ``/readyz``: each calls a check the service supplies, ``() -> (ok, reasons)``, and answers
  200 or 503 with the JSON ``{"ok": ..., "reasons": {...}}``; a check that raises is a 503 saying so.

``MetricsServer("127.0.0.1:9108", registry, healthz=..., readyz=...)`` binds at once (a port in use is one
sentence, ``UserError``), ``start()`` serves from a daemon thread, ``close()`` stops and releases the port.
"""
from __future__ import annotations

import errno
import json
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from appliance.errors import UserError

Check = Callable[[], tuple[bool, dict]]
DEFAULT_LISTEN = "127.0.0.1:9108"


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT" (IPv4 or a name) or "[IPv6]:PORT" -> (host, port); ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets, [ADDRESS]:PORT")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets, [ADDRESS]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port is not a number from 0 to 65535")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)           # not HTTPServer's: it asks DNS for the host's name
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    server_version = "appliance"

    def do_GET(self):                                       # noqa: N802 (http.server's name)
        owner: MetricsServer = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept"))
            self._answer(200, content_type, encoder(owner.registry))
        elif path in owner.checks:
            ok, reasons = owner.run_check(path)
            body = json.dumps({"ok": ok, "reasons": reasons}, sort_keys=True).encode() + b"\n"
            self._answer(200 if ok else 503, "application/json", body)
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n")

    def _answer(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass                                                # a scrape every few seconds is not an event


class MetricsServer:
    def __init__(self, listen: str, registry: CollectorRegistry, healthz: Check, readyz: Check,
                 reuse_port: bool = False):
        """``reuse_port``: SO_REUSEPORT, so a successor taking over (serve's handover) listens on the same address
        while this one still runs (the kernel spreads connections over both until this one closes)."""
        try:
            host, port = parse_listen(listen)
        except ValueError as err:
            raise UserError(f"--listen {err}") from None
        self.registry = registry
        self.checks = {"/healthz": healthz, "/readyz": readyz}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family, "allow_reuse_port": reuse_port})
        try:
            self.httpd = server_class((host, port), _Handler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"cannot listen on {listen}: the port is in use (choose another with --listen)") from None
            raise UserError(f"cannot listen on {listen}: {err.strerror or err}") from None
        self.httpd.owner = self
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def run_check(self, path: str) -> tuple[bool, dict]:
        try:
            ok, reasons = self.checks[path]()
        except Exception as err:                           # noqa: BLE001 (a broken check is a 503, not a crash)
            return False, {"check_failed": f"{type(err).__name__}: {err}"}
        return bool(ok), reasons

    def start(self) -> "MetricsServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="metrics-http", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None
        self.httpd.server_close()

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
