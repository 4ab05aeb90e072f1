"""A tiny app that answers from its database: each GET / counts a visit.

It reads DATABASE_URL (set by `strata db bind`) and talks to PostgreSQL
through the `psql` client, so it needs nothing beyond the standard library.
"""

import http.server
import os
import signal
import socketserver
import subprocess
import sys

QUERY = (
    "CREATE TABLE IF NOT EXISTS visits (id serial PRIMARY KEY, at timestamptz DEFAULT now());"
    "INSERT INTO visits DEFAULT VALUES;"
    "SELECT count(*) FROM visits;"
)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = os.environ.get("DATABASE_URL")
        if self.path == "/healthz":
            return self.reply(200, "ok")
        if not url:
            return self.reply(503, "no database bound: strata db bind DB APP\n")
        result = subprocess.run(
            ["psql", url, "-tAqc", QUERY], capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0:
            return self.reply(500, f"database error: {result.stderr.strip()}\n")
        self.reply(200, f"visits: {result.stdout.strip().splitlines()[-1]}\n")

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)



class Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse DNS lookup of its own address
    that HTTPServer.server_bind does (it stalls on a machine with no resolver)."""

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

def main():
    server = Server(("127.0.0.1", int(os.environ["PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
