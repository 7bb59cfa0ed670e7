"""A small HTTP proxy in front of moto that delays chosen EC2 actions, so a
test can interrupt a build while Packer is in the middle of it.

Usage: python slow_proxy.py LISTEN_PORT UPSTREAM_URL ACTION[,ACTION...] SECONDS
"""

import http.server
import sys
import time
import urllib.error
import urllib.request

port, upstream, actions, delay = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])


class Proxy(http.server.BaseHTTPRequestHandler):
    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if any(f"Action={a}&".encode() in body + b"&" for a in actions):
            time.sleep(delay)
        req = urllib.request.Request(upstream + self.path, data=body or None, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in ("host", "content-length", "connection"):
                req.add_header(k, v)
        req.add_header("Host", self.headers.get("Host", ""))
        try:
            resp = urllib.request.urlopen(req, timeout=60)
            status, headers, data = resp.status, resp.headers.items(), resp.read()
        except urllib.error.HTTPError as e:
            status, headers, data = e.code, e.headers.items(), e.read()
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()
