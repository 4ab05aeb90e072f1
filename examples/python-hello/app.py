"""python-hello: a tiny Strata example app using only the Python standard library.

Listens on 127.0.0.1:$PORT.
  GET /          -> 200 "hello from python-hello (release $STRATA_RELEASE)\n"
  GET /env/NAME  -> 200 with the value of env var NAME, or 404 if unset
  GET /healthz   -> 200 "ok"
Logs one line per request to stdout and shuts down cleanly on SIGTERM/SIGINT.
"""

import os
import signal
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

APP = "python-hello"
RELEASE = os.environ.get("STRATA_RELEASE", "dev")


def log(line):
    print(line, flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = APP

    def send_text(self, status, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/":
            self.send_text(200, f"hello from {APP} (release {RELEASE})\n")
        elif path == "/healthz":
            self.send_text(200, "ok")
        elif path.startswith("/env/") and len(path) > len("/env/"):
            name = unquote(path[len("/env/"):])
            value = os.environ.get(name)
            if value is None:
                self.send_text(404, f"env var {name} is not set\n")
            else:
                self.send_text(200, value)
        else:
            self.send_text(404, "not found\n")

    def log_message(self, format, *args):
        log(f"{APP}: {self.address_string()} {format % args}")



class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse DNS lookup of its own address
    that HTTPServer.server_bind does (it stalls on a machine with no resolver)."""

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

def main():
    port = int(os.environ["PORT"])
    httpd = Server(("127.0.0.1", port), Handler)

    def on_signal(signum, _frame):
        log(f"{APP}: received {signal.Signals(signum).name}, shutting down")
        # shutdown() blocks until serve_forever() returns, so call it from another thread.
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"{APP}: release {RELEASE} listening on 127.0.0.1:{port}")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    log(f"{APP}: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
