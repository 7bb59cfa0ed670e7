#!/usr/bin/env bash
# imagectl's benchmarks. Each compares against a baseline measured in the
# same run and prints the ratio, since absolute times vary between machines:
#
#   hash    `imagectl hash` of a role with 1 GiB of files, against
#           `openssl dgst -sha256` of the same files
#   render  `imagectl render` and `render --check` of 1000 roles, against 10
#   plan    `imagectl plan --all` of 1000 roles against moto: wall time and
#           AWS calls (from moto's request log), against 10 roles
#   noop    `imagectl build --all` when every image exists, against the
#           build that made them; a `packer` that fails is first on PATH
#   local   `imagectl build --target local` of a small role, against plain
#           mmdebstrap of the same package set (both with the package cache
#           warm); the rebuild of an unchanged hash; boot-to-checks time of
#           `imagectl test` (needs root)
#   disk    `imagectl build --target disk` of the same small role, against
#           `--target local` (package cache warm); the upload of
#           `build --method disk` to moto (MB/s from upload.json), against a
#           plain sequential boto3 loop putting the same blocks; boot-to-
#           checks time of `imagectl test --vm` (QEMU), against `imagectl
#           test` (nspawn). Needs root, QEMU and about 6 minutes: run only when
#           asked for (`bench/run.sh disk`)
#
# Usage: bench/run.sh [hash|render|plan|noop|local|disk]...
#        (default: hash render plan noop local)
# Needs what scripts/setup installs, and about 2 GiB in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imagectl/target}"
venv="${IMAGECTL_VENV:-$HOME/.cache/imagectl/venv}"
cargo build --release --locked -p imagectl -p imagectl-agent >&2
bin="$CARGO_TARGET_DIR/release/imagectl"
export IMAGECTL_AGENT_BIN="$CARGO_TARGET_DIR/release/imagectl-agent"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

now() { date +%s.%N; }
# best of N runs of a command, in seconds
best() {
  local n=$1; shift
  local best=""
  for _ in $(seq "$n"); do
    local t0 t1 d
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
    d=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
  done
  printf '%.3f' "$best"
}
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }

# A project with the fixture's settings and lock, and N generated roles.
project() {
  local dir=$1 n=$2
  mkdir -p "$dir/roles/files" "$dir/images"
  cp "$repo/tests/fixtures/project/imagectl.toml" "$dir/"
  cp "$repo/tests/fixtures/project/images/bases.lock" "$dir/images/"
  for i in $(seq -f '%04g' "$n"); do
    echo "listen $i" > "$dir/roles/files/r$i.conf"
    printf 'description = "role %s"\n[image]\nbase = "debian-12"\n[packages]\napt = ["curl"]\n[[files]]\nsource = "files/r%s.conf"\ndest = "/etc/r%s.conf"\n' "$i" "$i" "$i" > "$dir/roles/r$i.toml"
  done
}

bench_hash() {
  local dir=$work/hash
  mkdir -p "$dir/roles/files" "$dir/images"
  cp "$repo/tests/fixtures/project/imagectl.toml" "$dir/"
  cp "$repo/tests/fixtures/project/images/bases.lock" "$dir/images/"
  printf 'description = "1 GiB of files"\n[image]\nbase = "debian-12"\n' > "$dir/roles/big.toml"
  for i in $(seq -w 64); do
    head -c 16M /dev/urandom > "$dir/roles/files/f$i.bin"
    printf '[[files]]\nsource = "files/f%s.bin"\ndest = "/srv/f%s.bin"\n' "$i" "$i" >> "$dir/roles/big.toml"
  done
  cat "$dir"/roles/files/*.bin > /dev/null # warm the page cache for both
  local ours theirs
  ours=$(best 5 "$bin" -C "$dir" hash big)
  theirs=$(best 5 openssl dgst -sha256 "$dir"/roles/files/*.bin)
  echo "hash    1 GiB in 64 files: imagectl $ours s ($(printf '%.0f' "$(echo "1024 / $ours" | bc -l)") MiB/s), openssl dgst -sha256 $theirs s ($(printf '%.0f' "$(echo "1024 / $theirs" | bc -l)") MiB/s); openssl/imagectl time ratio $(ratio "$theirs" "$ours")"
}

# Renders every template anew (each written atomically, fsynced).
render_fresh() { rm -f "$1"/images/*.pkr.hcl; "$bin" -C "$1" render; }

bench_render() {
  project "$work/r10" 10
  project "$work/r1000" 1000
  local small large check
  small=$(best 3 render_fresh "$work/r10")
  large=$(best 3 render_fresh "$work/r1000")
  "$bin" -C "$work/r1000" render --check > /dev/null 2>&1 || { echo "render --check found stale templates" >&2; exit 1; }
  check=$(best 3 "$bin" -C "$work/r1000" render --check)
  echo "render  1000 roles: render $large s, render --check $check s; 10 roles: render $small s; ratio $(ratio "$large" "$small") for 100x the roles"
}

moto() {
  local log=$1 port
  port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  MOTO_AMIS_PATH="$repo/tests/fixtures/amis.json" "$venv/bin/python" "$repo/tests/moto_server.py" -H 127.0.0.1 -p "$port" > /dev/null 2> "$log" &
  pids+=($!)
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
  export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
}

calls() { grep -c '"POST / HTTP' "$1" || true; }

bench_plan() {
  project "$work/p10" 10
  project "$work/p1000" 1000
  moto "$work/moto-plan.log"
  local before small large c10 c1000
  before=$(calls "$work/moto-plan.log"); "$bin" -C "$work/p10" plan --all > /dev/null 2>&1
  c10=$(( $(calls "$work/moto-plan.log") - before ))
  before=$(calls "$work/moto-plan.log"); "$bin" -C "$work/p1000" plan --all > /dev/null 2>&1
  c1000=$(( $(calls "$work/moto-plan.log") - before ))
  small=$(best 3 "$bin" -C "$work/p10" plan --all)
  large=$(best 3 "$bin" -C "$work/p1000" plan --all)
  echo "plan    1000 roles, none built: $large s, $c1000 AWS calls; 10 roles: $small s, $c10 calls; time ratio $(ratio "$large" "$small"), call ratio $(ratio "$c1000" "$c10")"

  # Every role built (a complete, tagged image each), then 10 changed.
  "$bin" -C "$work/p1000" plan --all --output json > "$work/plan.json" 2>/dev/null
  "$venv/bin/python" - "$work/plan.json" <<'PY'
import json, sys, boto3
ec2 = boto3.client("ec2", region_name="eu-west-1")
for row in json.load(open(sys.argv[1]))["roles"]:
    ami = ec2.register_image(Name=f"imagectl-{row['role']}-{row['hash'][:12]}", Architecture="x86_64",
                             RootDeviceName="/dev/xvda", VirtualizationType="hvm")["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=[{"Key": "imagectl:role", "Value": row["role"]},
        {"Key": "imagectl:content-hash", "Value": row["hash"]}, {"Key": "imagectl:build", "Value": "bench"}])
PY
  local built cbuilt changed cchanged
  before=$(calls "$work/moto-plan.log"); "$bin" -C "$work/p1000" plan --all > /dev/null 2>&1
  cbuilt=$(( $(calls "$work/moto-plan.log") - before ))
  built=$(best 3 "$bin" -C "$work/p1000" plan --all)
  for i in $(seq -f '%04g' 10); do echo "listen changed" > "$work/p1000/roles/files/r$i.conf"; done
  before=$(calls "$work/moto-plan.log"); "$bin" -C "$work/p1000" plan --all > /dev/null 2>&1
  cchanged=$(( $(calls "$work/moto-plan.log") - before ))
  changed=$(best 3 "$bin" -C "$work/p1000" plan --all)
  # The emulator's own share: boto3 listing the same 1000 images.
  local listing
  listing=$(best 3 "$venv/bin/python" -c 'import boto3; boto3.client("ec2", region_name="eu-west-1").describe_images(Owners=["self"], Filters=[{"Name": "tag-key", "Values": ["imagectl:content-hash"]}])')
  echo "plan    1000 roles, all built: $built s, $cbuilt AWS calls; 10 of them changed: $changed s, $cchanged calls; boto3 listing the same 1000 images from moto: $listing s; ratio $(ratio "$built" "$listing")"
}

bench_noop() {
  local dir=$work/noop n=20
  project "$dir" $n
  moto "$work/moto-noop.log"
  "$venv/bin/python" "$repo/tests/fixtures/aws_setup.py"
  local t0 t1 first noop
  t0=$(now); "$bin" -C "$dir" -q build --all -j 2 > /dev/null; t1=$(now)
  first=$(echo "$t1 - $t0" | bc -l)
  mkdir -p "$work/fake"; printf '#!/bin/sh\necho packer ran >&2\nexit 99\n' > "$work/fake/packer"; chmod +x "$work/fake/packer"
  noop=$(PATH="$work/fake:$PATH" best 3 "$bin" -C "$dir" build --all)
  PATH="$work/fake:$PATH" "$bin" -C "$dir" -q build --all | grep -q "reused" || { echo "noop: not reused" >&2; exit 1; }
  echo "noop    build --all of $n roles when every image exists: $noop s, Packer never ran; the build that made them: $(printf '%.3f' "$first") s; ratio $(ratio "$noop" "$first")"
}

bench_local() {
  local dir=$work/local
  cp -r "$repo/tests/fixtures/local" "$dir"
  "$bin" -C "$dir" -q build tiny --target local > /dev/null # fills the package cache
  local ours plain rebuild boot cache
  cache="${IMAGECTL_APT_CACHE:-$HOME/.cache/imagectl/apt-archives}"
  ours=$(best 3 sh -c "rm -f '$dir'/images/local/*.tar && '$bin' -C '$dir' -q build tiny --target local")
  plain=$(best 3 mmdebstrap --mode=root --variant=minbase --include=systemd,systemd-sysv,dbus,netcat-openbsd \
    --skip=essential/unlink --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
    --setup-hook="sync-in $cache /var/cache/apt/archives/" bookworm "$work/plain.tar" http://deb.debian.org/debian)
  rebuild=$(best 3 "$bin" -C "$dir" -q build tiny --target local)
  boot=$("$bin" -C "$dir" -q test tiny --output json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["boot_to_checks_secs"])')
  echo "local   build of tiny: $ours s, plain mmdebstrap of the same packages: $plain s, overhead ratio $(ratio "$ours" "$plain"); rebuild of the same hash: $rebuild s; boot to checks: $boot s"
}

bench_disk() {
  local dir=$work/disk
  cp -r "$repo/tests/fixtures/local" "$dir"
  # Fills the package cache with everything both targets install (the disk
  # adds a kernel, systemd-boot and a few more to the local target's set).
  "$bin" -C "$dir" -q build tiny --target disk > /dev/null
  local disk tar
  tar=$(best 2 sh -c "rm -f '$dir'/images/local/*.tar && '$bin' -C '$dir' -q build tiny --target local")
  disk=$(best 2 sh -c "rm -f '$dir'/images/local/*.raw && '$bin' -C '$dir' -q build tiny --target disk")
  local raw
  raw=$("$bin" -C "$dir" -q build tiny --target disk --output json | "$venv/bin/python" -c '
import json, sys
image = json.load(sys.stdin)["images"][0]
assert not image["built"], "the timed disk builds left no disk"
print(image["path"])')
  ls "$dir"/images/local/tiny-*.tar > /dev/null || { echo "disk: the timed local builds left no tarball" >&2; exit 1; }

  # The upload: the disk just built (same hash), to moto, then the same
  # non-zero blocks put one at a time by boto3, reading the image included
  # in both.
  moto "$work/moto-disk.log"
  "$venv/bin/python" "$repo/tests/fixtures/aws_setup.py"
  "$bin" -C "$dir" -q build tiny --method disk > /dev/null
  local log ours blocks theirs theirs_blocks
  log=$(find "$dir/.imagectl/builds" -name upload.json -newer "$raw" | head -1)
  [ -n "$log" ] || { echo "disk: build --method disk wrote no upload.json" >&2; exit 1; }
  read -r ours blocks <<< "$("$venv/bin/python" -c '
import json, sys
u = json.load(open(sys.argv[1]))
print("%.1f" % (u["bytes_written"] / 1e6 / u["secs"]), u["blocks_written"])' "$log")"
  local boto3_out
  boto3_out=$("$venv/bin/python" - "$raw" <<'PY'
import base64, hashlib, os, sys, time
import boto3
BLOCK = 512 * 1024
ZERO = bytes(BLOCK)
ebs = boto3.client("ebs", region_name="eu-west-1")
start = time.monotonic()
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
snap = ebs.start_snapshot(VolumeSize=-(-size // 2**30), Encrypted=True, Timeout=60,
                          Description="bench: boto3 sequential")["SnapshotId"]
digests, pos = [], 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:  # only a hole is left
        break
    pos, end = data // BLOCK * BLOCK, os.lseek(fd, data, os.SEEK_HOLE)
    while pos < end:
        data = os.pread(fd, BLOCK, pos).ljust(BLOCK, b"\0")
        if data != ZERO:
            digest = hashlib.sha256(data).digest()
            ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=pos // BLOCK, BlockData=data,
                                   DataLength=BLOCK, Checksum=base64.b64encode(digest).decode(),
                                   ChecksumAlgorithm="SHA256")
            digests.append(digest)
        pos += BLOCK
ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(digests),
                      Checksum=base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode(),
                      ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
secs = time.monotonic() - start
print(f"{len(digests) * BLOCK / 1e6 / secs:.1f}", len(digests))
PY
)
  read -r theirs theirs_blocks <<< "$boto3_out"
  [ "$blocks" = "$theirs_blocks" ] || { echo "disk: imagectl wrote $blocks blocks, boto3 $theirs_blocks" >&2; exit 1; }

  # Boot to checks: the disk in QEMU (TCG when KVM does not work), the
  # tarball under systemd-nspawn; both images exist already.
  local vm nspawn
  vm=$("$bin" -C "$dir" -q test tiny --vm --timeout 900 --output json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["boot_to_checks_secs"])')
  nspawn=$("$bin" -C "$dir" -q test tiny --output json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["boot_to_checks_secs"])')
  echo "disk    build of tiny: $disk s, --target local: $tar s, ratio $(ratio "$disk" "$tar"); upload to moto: $ours MB/s ($blocks blocks), boto3 sequential: $theirs MB/s, ratio $(ratio "$ours" "$theirs"); test --vm boot to checks: $vm s, nspawn: $nspawn s, ratio $(ratio "$vm" "$nspawn")"
}

for b in "${@:-hash render plan noop local}"; do
  for one in $b; do "bench_$one"; done
done
