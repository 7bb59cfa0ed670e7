"""A fault-injecting HTTP proxy in front of moto: answers a share of the
requests for chosen AWS actions with throttling errors or 500s, the way real
AWS does under load, and forwards everything else. With --delay it slows
the chosen actions down instead, so a test can act while a build is in the
middle of them.

Usage:
  python fault_proxy.py PORT UPSTREAM_URL [--actions A,B] [--error KIND]
                        [--first N | --rate R | --delay SECONDS] [--seed S]
                        [--after] [--agent S] [--log FILE]

  --actions  EC2/IAM query actions (Action=...) or JSON targets
             (X-Amz-Target suffix, e.g. GetParameter); default: every action
  --error    throttle (RequestLimitExceeded for query protocols,
             ThrottlingException for JSON ones), or 500 (InternalError)
  --first N  fail the first N requests of each matching action, then pass
             (a bounded outage: retries within N+1 attempts succeed)
  --rate R   fail each matching request with probability R (seeded)
  --max-streak N  with --rate: never fail more than N requests of one action
             in a row (throttling a retrying client rides out, as AWS's
             token buckets refill between its backed-off attempts)
  --delay S  fail nothing: hold each matching request S seconds, then forward it
  --after    forward a faulted request all the same and answer the error
             after AWS acted on it: a lost answer, which only a client
             token makes safe to send again
  --agent S  fault only requests whose User-Agent contains S (aws-sdk-go/
             is Packer's, aws-sdk-rust/ imagectl's)
  --log      append one line per request as it arrives: "<action> <fault|pass>",
             and " token=<ClientToken>" when the request carries one

The proxy prints "ready" on stdout once it listens.
"""

import argparse
import collections
import http.server
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("upstream")
ap.add_argument("--actions", default="")
ap.add_argument("--error", choices=["throttle", "500"], default="throttle")
ap.add_argument("--first", type=int, default=None)
ap.add_argument("--rate", type=float, default=None)
ap.add_argument("--delay", type=float, default=None)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--max-streak", type=int, default=None)
ap.add_argument("--after", action="store_true")
ap.add_argument("--agent", default=None)
ap.add_argument("--log", default=None)
args = ap.parse_args()

actions = {a for a in args.actions.split(",") if a}
rng = random.Random(args.seed)
seen = collections.Counter()
streak = collections.Counter()
lock = threading.Lock()


def action_of(headers, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1], "json"
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return (form.get("Action") or ["?"])[0], "query"


def client_token(body):
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return (form.get("ClientToken") or [""])[0]


def chosen(action, agent):
    return (not actions or action in actions) and (not args.agent or args.agent in agent)


def fault_for(action, agent):
    if args.delay is not None or not chosen(action, agent):
        return False
    with lock:
        seen[action] += 1
        if args.first is not None:
            return seen[action] <= args.first
        if args.rate is not None:
            fail = rng.random() < args.rate
            if fail and args.max_streak is not None and streak[action] >= args.max_streak:
                fail = False
            streak[action] = streak[action] + 1 if fail else 0
            return fail
        return True


def error_response(protocol):
    if args.error == "500":
        code, status, msg = "InternalError", 500, "We encountered an internal error. Please try again."
    elif protocol == "json":
        code, status, msg = "ThrottlingException", 400, "Rate exceeded"
    else:
        code, status, msg = "RequestLimitExceeded", 503, "Request limit exceeded."
    if protocol == "json":
        body = ('{"__type":"%s","message":"%s"}' % (code, msg)).encode()
        return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)], body
    body = (
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>%s</Code>"
        "<Message>%s</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>" % (code, msg)
    ).encode()
    return status, [("Content-Type", "text/xml")], body


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        action, protocol = action_of(self.headers, body)
        agent = self.headers.get("User-Agent", "")
        faulted = fault_for(action, agent)
        if args.log:
            token = client_token(body) if protocol == "query" else ""
            line = f"{action} {'fault' if faulted else 'pass'}" + (f" token={token}" if token else "")
            with lock, open(args.log, "a") as f:
                f.write(line + "\n")
        if args.delay is not None and chosen(action, agent):
            time.sleep(args.delay)
        if faulted and not args.after:
            status, headers, data = error_response(protocol)
        else:
            req = urllib.request.Request(args.upstream + self.path, data=body or None, method=self.command)
            for k, v in self.headers.items():
                if k.lower() not in ("host", "content-length", "connection"):
                    req.add_header(k, v)
            req.add_header("Host", self.headers.get("Host", ""))
            try:
                resp = urllib.request.urlopen(req, timeout=60)
                status, headers, data = resp.status, resp.headers.items(), resp.read()
            except urllib.error.HTTPError as e:
                status, headers, data = e.code, e.headers.items(), e.read()
            if faulted:
                status, headers, data = error_response(protocol)
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    def log_message(self, *a):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Proxy)
print("ready", flush=True)
server.serve_forever()
