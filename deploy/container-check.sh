#!/usr/bin/env bash
# Builds deploy/Containerfile on this machine and runs the image the way production would:
#   1. a Debian 12 base image made from Debian's packages (mmdebstrap, this machine's apt mirror),
#      imported once and kept;
#   2. `buildah bud` of deploy/Containerfile FROM that base (--isolation chroot);
#   3. the image: --help, runs as a non-root user, every installed package at its pin in
#      constraints.txt, `db upgrade` into a SQLite file on a named volume, `send` to an SMTP sink on
#      the host (host network) and a second send that skips everyone, `serve` answering /healthz;
#   4. with --compose: deploy/compose.yaml under podman-compose (pinned), PostgreSQL from a second
#      image built from Debian's postgresql package (deploy/check/).
# Everything lives in its own storage ($CONTAINER_CHECK_DIR) with its own podman settings, so the
# machine's podman is not touched. What it started (containers, volumes, the sink) is removed at the
# end, on failure and on Ctrl-C; images are kept, so a second run only rebuilds what changed.
# Usage: deploy/container-check.sh [--compose] [--no-cache] [--clean]   (run as root; deploy/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${CONTAINER_CHECK_DIR:-/var/tmp/newsletter-container-check}
PYTHON=${PYTHON:-python3}                      # runs the SMTP sink: needs aiosmtpd (the project's venv)
BASE_IMAGE=localhost/newsletter-check-base:bookworm
IMAGE=localhost/newsletter:check
NAME=newsletter-check                          # prefix of every container and volume it makes
PODMAN_COMPOSE_VERSION=1.5.0
COMPOSE=0 NO_CACHE=() CLEAN=0
for arg in "$@"; do
  case $arg in
    --compose) COMPOSE=1 ;;
    --no-cache) NO_CACHE=(--no-cache) ;;
    --clean) CLEAN=1 ;;
    *) echo "usage: $0 [--compose] [--no-cache] [--clean]" >&2; exit 2 ;;
  esac
done

say() { printf '[container-check] %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }
# step NAME COMMAND...: runs it, prints how long it took; the output goes to $WORK/logs/NAME.log.
step() {
  local name=$1 started=$SECONDS; shift
  if "$@" >"$WORK/logs/$name.log" 2>&1; then
    say "$name: $((SECONDS - started)) s"
  else
    tail -n 30 "$WORK/logs/$name.log"; fail "$name (full log: $WORK/logs/$name.log)"
  fi
}

[ "$(id -u)" = 0 ] || fail "run as root (podman and buildah with their own storage under $WORK)"

# --- tools --------------------------------------------------------------------------------------
# crun (podman's default) refuses this machine's hybrid cgroup layout; runc does not.
missing=()
for tool in buildah:buildah podman:podman mmdebstrap:mmdebstrap runc:runc; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- podman's own settings and storage ----------------------------------------------------------
mkdir -p "$WORK/logs" "$WORK/run"
# overlay where the kernel lets this folder be a layer, vfs (full copies, slower) where it does not.
probe=$(mktemp -d "$WORK/probe.XXXXXX")
mkdir -p "$probe"/{lower,upper,work,merged}
if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
     "$probe/merged" 2>/dev/null; then
  umount "$probe/merged"; DRIVER=overlay
else
  DRIVER=vfs
fi
rm -rf "$probe"
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "$DRIVER"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
# The limits podman asks for by default (1048576 open files) are above this machine's hard limits,
# and the kernel refuses them: ask for what we have.
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf CONTAINERS_CONF=$WORK/containers.conf
say "podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}'), storage $DRIVER in $WORK"

SINK_PID=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; fi
  if [ "$COMPOSE" = 1 ] && [ -f "$WORK/compose/compose.yaml" ]; then
    (cd "$WORK/compose" && "$WORK/podman-compose/bin/podman-compose" -p "$NAME" down -v) >/dev/null 2>&1 || true
  fi
  podman ps -a --filter "name=^$NAME" --format '{{.Names}}' | xargs -r podman rm -f -v -t 2 >/dev/null 2>&1
  podman network ls --filter "name=^$NAME" --format '{{.Name}}' | xargs -r podman network rm -f >/dev/null 2>&1
  # The storage is the check's own: every volume and build container left in it is the check's
  # (the images' VOLUMEs, a build stopped by Ctrl-C).
  podman volume prune --force >/dev/null 2>&1
  buildah rm --all >/dev/null 2>&1
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$CLEAN" = 1 ]; then
  trap - EXIT
  podman system reset --force >/dev/null 2>&1 || true
  rm -rf "$WORK"
  say "removed $WORK (images, cache, logs)"
  exit 0
fi

# --- 1. the base: Debian 12 from Debian's packages -----------------------------------------------
# The host's sources (deb822 or one-line), so the image uses the mirror this machine reaches; Valid-Until
# is not checked, as on the host, because that mirror may serve a dated snapshot. Local CAs of the host
# (a proxy's, for instance) go in as /usr/local/share/ca-certificates: the Containerfile's
# ca-certificates adds them to the bundle pip uses. Nothing else of the host's goes in.
make_base() {  # (called in a condition, where set -e is off: hence the returns)
  local sources=() file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$file" ] && grep -q 'debian' "$file" && sources+=("$file")
  done
  [ ${#sources[@]} -gt 0 ] || sources=(http://deb.debian.org/debian)
  mmdebstrap --variant=minbase --mode=root \
    --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"; for c in /usr/local/share/ca-certificates/*.crt; do [ -f "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done; true' \
    bookworm "$WORK/base.tar" "${sources[@]}" || return
  podman import --change 'CMD ["/bin/bash"]' "$WORK/base.tar" "$BASE_IMAGE" || return
  rm -f "$WORK/base.tar"
}
if podman image exists "$BASE_IMAGE"; then
  say "base image: $BASE_IMAGE (kept from an earlier run; --clean makes it again)"
else
  step base-image make_base
fi

# --- 2. the image -------------------------------------------------------------------------------
step build buildah bud --isolation chroot --layers "${NO_CACHE[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -f deploy/Containerfile -t "$IMAGE" .
say "image: $IMAGE, $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1 / 1e6}')"

# --- 3. the image at work -----------------------------------------------------------------------
run() { podman run --rm --network none "$@"; }

run "$IMAGE" --help >"$WORK/logs/help.log" 2>&1 || fail "newsletter --help (log: $WORK/logs/help.log)"
grep -q 'serve' "$WORK/logs/help.log" && grep -q 'send' "$WORK/logs/help.log" || fail "--help lists no send/serve"
say "newsletter --help: ok"

user=$(run --entrypoint id "$IMAGE" -un) uid=$(run --entrypoint id "$IMAGE" -u)
[ "$uid" != 0 ] || fail "the image runs as root"
say "runs as: $user (uid $uid)"

# Every package in the image's venv is pinned in constraints.txt at the version installed.
run --entrypoint pip "$IMAGE" list --format=freeze --exclude-editable >"$WORK/logs/freeze.log" 2>&1
python3 - constraints.txt "$WORK/logs/freeze.log" <<'EOF' || fail "packages off their pins (above)"
import re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins = {norm(n): v.strip() for n, v in (l.split("==") for l in open(sys.argv[1]) if "==" in l)}
off = []
for line in open(sys.argv[2]):
    name, _, version = line.strip().partition("==")
    if name and norm(name) not in ("arabic-morning-newsletter", "pip", "setuptools") \
            and pins.get(norm(name)) != version:
        off.append(f"{name}=={version} (constraints.txt: {pins.get(norm(name), 'not pinned')})")
if off:
    print("\n".join(off))
sys.exit(1 if off else 0)
EOF
say "pins: every package in the image at its constraints.txt version ($(wc -l <"$WORK/logs/freeze.log") packages)"

STATE=$NAME-state
podman volume create "$STATE" >/dev/null
with_state() { podman run --rm -v "$STATE:/var/lib/newsletter" "$@"; }
step db-upgrade with_state --network none "$IMAGE" db upgrade
database=$(podman volume inspect --format '{{.Mountpoint}}' "$STATE")/subscribers.sqlite3
[ -s "$database" ] || fail "no $database after db upgrade"
say "SQLite on the volume: $(stat -c '%s bytes, owner uid %u' "$database")"
for reader in amal@example.org badr@example.org dalia@example.org; do
  with_state --network none "$IMAGE" subscribers add "$reader" >/dev/null
done

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SMTP_PORT=$(free_port)
rm -rf "$WORK/sink"
"$PYTHON" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$WORK/sink" \
  >"$WORK/logs/sink.log" 2>&1 &
SINK_PID=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break; sleep 0.1; done
mail_env=(-e NEWSLETTER_SMTP_HOST=127.0.0.1 -e "NEWSLETTER_SMTP_PORT=$SMTP_PORT"
          -e "NEWSLETTER_SECRET_KEY=container-check-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')")
# The bundled sample feeds are of 9 May 2017.
step send with_state --network host "${mail_env[@]}" "$IMAGE" send --date 2017-05-09
sent=$(find "$WORK/sink/new" -type f | wc -l)
[ "$sent" = 3 ] || fail "the sink got $sent messages, not 3"
step send-again with_state --network host "${mail_env[@]}" "$IMAGE" send --date 2017-05-09
sent=$(find "$WORK/sink/new" -type f | wc -l)
[ "$sent" = 3 ] || fail "the second send mailed again ($sent messages in the sink)"
say "send: 3 readers, 3 messages in the host's sink; a second send sent none"

WEB_PORT=$(free_port)
podman run -d --name "$NAME-serve" --network host -v "$STATE:/var/lib/newsletter" "${mail_env[@]}" \
  "$IMAGE" serve --host 127.0.0.1 --port "$WEB_PORT" >/dev/null
# The status of a GET, or nothing. Ctrl-C kills it (not a KeyboardInterrupt): bash then stops the
# loop it is in; a child that exits on its own after SIGINT would leave bash running on.
health() {
  python3 -c "import signal, sys, urllib.request; signal.signal(signal.SIGINT, signal.SIG_DFL)
print(urllib.request.urlopen(sys.argv[1], timeout=2).status)" "$1" 2>/dev/null
}
for _ in $(seq 100); do [ "$(health "http://127.0.0.1:$WEB_PORT/healthz")" = 200 ] && break; sleep 0.2; done
[ "$(health "http://127.0.0.1:$WEB_PORT/healthz")" = 200 ] || { podman logs "$NAME-serve" | tail -20; fail "serve: no 200 from /healthz"; }
podman rm -f -t 5 "$NAME-serve" >/dev/null
say "serve: /healthz 200"

if [ "$COMPOSE" = 1 ]; then
  . deploy/check/compose-check.sh
fi
say "all checks passed"
