#!/usr/bin/env bash
# Measures imagectl-agent against its budgets: the stripped release binary's
# size, and the CPU time (user + system) and peak memory of a full
# `imagectl-agent boot` against local emulators (moto for SSM, a small
# IMDSv2 server) with 50 parameters and 10 templates. Not a test: prints
# the numbers and the budgets, and exits 1 when one is over.
#
#   agent/bench/boot.sh [RUNS]      (default 10 runs; median and max shown)
#
# Needs moto (scripts/setup) and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."

runs="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imagectl/target-agent}"
venv="${IMAGECTL_VENV:-$HOME/.cache/imagectl/venv}"
moto_server="$(command -v moto_server || true)"
[ -n "$moto_server" ] || moto_server="$venv/bin/moto_server"
[ -x "$moto_server" ] || { echo "error: moto_server not found; run scripts/setup" >&2; exit 1; }
python="$(dirname "$moto_server")/python3"

# The profile images are built with (root Cargo.toml); IMAGECTL_AGENT_PROFILE
# measures another (`release`).
profile="${IMAGECTL_AGENT_PROFILE:-release-agent}"
cargo build --profile "$profile" --locked -p imagectl-agent >&2
bin="$CARGO_TARGET_DIR/$profile/imagectl-agent"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# moto for SSM
moto_port="$(free_port)"
"$moto_server" -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
pids+=($!)
# a small IMDSv2 server: token PUT with TTL header, GETs need the token.
# Instance metadata tags answer 404 (not enabled), so the autoscaling step
# takes its dearer path: DescribeAutoScalingInstances against moto, which
# knows no group (nothing more to tell).
imds_port="$(free_port)"
python3 - "$imds_port" >/dev/null 2>&1 <<'PY' &
import http.server, json, sys
TOKEN = "bench-token"
DOC = json.dumps({"instanceId": "i-0bench000000000000", "region": "eu-west-1",
                  "availabilityZone": "eu-west-1a"})
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_PUT(self):
        ttl = self.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
        if self.path != "/latest/api/token" or not ttl: return self.reply(400)
        self.reply(200, TOKEN.encode(), [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
    def do_GET(self):
        if self.headers.get("x-aws-ec2-metadata-token") != TOKEN: return self.reply(401)
        if self.path == "/latest/dynamic/instance-identity/document": return self.reply(200, DOC.encode())
        if self.path == "/latest/user-data": return self.reply(200, b'env = "prod"\n')
        self.reply(404)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)

for _ in $(seq 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$moto_port/moto-api/')" 2>/dev/null && break
  sleep 0.1
done

# 50 parameters: 5 groups of 10 under /bench/prod/worker
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$python" - "$moto_port" <<'PY'
import boto3, sys
ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
for g in range(5):
    for i in range(10):
        ssm.put_parameter(Name=f"/bench/prod/worker/g{g}/k{i}", Value=f"value-{g}-{i}-&<>\"'",
                          Type="SecureString", Overwrite=True)
PY

# an image with 10 templates, each using every parameter of one group
root="$work/root"
mkdir -p "$root/etc/imagectl/templates/templates/bench" "$root/etc"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
templates=""
for t in $(seq 0 9); do
  g=$((t % 5))
  {
    echo "# {{role}} {{env}} {{instance.id}} {{image.hash}}"
    echo "{{#each params.g$g}}"
    echo "{{@key}}={{this}} {{json this}} {{shell this}}"
    echo "{{/each}}"
    for i in $(seq 0 9); do echo "K$i={{params.g$g.k$i}}"; done
  } > "$root/etc/imagectl/templates/templates/bench/t$t.hbs"
  templates+="${templates:+,}{\"source\":\"templates/bench/t$t.hbs\",\"dest\":\"/etc/bench/t$t.conf\",\"mode\":\"0600\",\"owner\":\"root\",\"group\":\"root\"}"
done
hash=$(printf 'ab%.0s' $(seq 32))
cat > "$root/etc/imagectl/image.json" <<JSON
{"format":1,"role":"worker","hash":"$hash","boot":{"parameters":"/bench/{{env}}/{{role}}",
 "start":["bench.service"],"templates":[$templates],
 "health":{"command":"true","timeout_secs":10}},"manifest":[]}
JSON
printf '#!/bin/sh\nexit 0\n' > "$work/systemctl"; chmod 755 "$work/systemctl"

run_once() {
  rm -rf "$root/etc/bench" "$root/run"
  # wait4(2) gives the agent's own rusage: user and system time to the
  # microsecond and its peak RSS (/usr/bin/time rounds to 10 ms).
  env -i PATH=/usr/bin:/bin HOME="$work" \
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    AWS_CONFIG_FILE="$work/none" AWS_SHARED_CREDENTIALS_FILE="$work/none" \
    AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$imds_port" \
    AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" \
    IMAGECTL_AGENT_SYSTEMCTL="$work/systemctl" \
    python3 -c '
import os, sys, time
t = time.monotonic()
pid = os.spawnv(os.P_NOWAIT, sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t
if status != 0:
    sys.exit(1)
print(round((ru.ru_utime + ru.ru_stime) * 1000, 2), ru.ru_maxrss, round(wall * 1000, 1))
' "$bin" boot --root "$root" 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  grep -q '"status": "ok"' "$root/run/imagectl/boot.json"
  [ "$(find "$root/etc/bench" -type f | wc -l)" = 10 ]
}

run_once >/dev/null # warm moto and the page cache
results=()
for _ in $(seq "$runs"); do results+=("$(run_once)"); done

size=$(stat -c %s "$bin")
printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
cpu = sorted(r[0] for r in rows); rss = sorted(r[1] for r in rows); wall = sorted(r[2] for r in rows)
size = int(sys.argv[1]); n = len(rows)
over = []
def line(name, value, budget, unit):
    ok = value < budget
    if not ok: over.append(name)
    verdict = "ok" if ok else "OVER"
    print(f"{name:<28} {value:>10} {unit:<3}  budget < {budget} {unit}  {verdict}")
print(f"imagectl-agent boot: 50 parameters, 10 templates, {n} runs against moto + a test IMDSv2 server")
line("binary size (stripped)", round(size / 1e6, 2), 10, "MB")
line("CPU user+sys, median", round(statistics.median(cpu), 2), 30, "ms")
line("CPU user+sys, max", max(cpu), 30, "ms")
line("peak RSS, max", round(max(rss) / 1024, 1), 20, "MB")
label = "wall, median (emulators)"
print(f"{label:<28} {round(statistics.median(wall)):>10} ms   (no budget: mostly moto; CPU includes the systemctl and health child processes)")
sys.exit(1 if over else 0)
' "$size"
