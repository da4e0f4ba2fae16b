# deploy/compose.yaml under podman-compose, sourced by deploy/container-check.sh --compose (its
# variables, step, say, fail and cleanup apply). What is changed from compose.yaml, and why, is in
# compose_for_check below; the rest runs as written: serve built by compose, PostgreSQL's health
# check gating serve, the volumes, the send service of the cron profile.
COMPOSE_DIR=$WORK/compose
PC_VENV=$WORK/podman-compose
POSTGRES_IMAGE=localhost/newsletter-check-postgres:15

if ! cmp -s deploy/check/podman-compose.txt "$PC_VENV/requirements.txt"; then
  rm -rf "$PC_VENV"
  step podman-compose-install sh -c "python3 -m venv '$PC_VENV' \
    && '$PC_VENV/bin/pip' install --quiet -r deploy/check/podman-compose.txt \
    && cp deploy/check/podman-compose.txt '$PC_VENV/requirements.txt'"
fi
step postgres-image buildah bud --isolation chroot --layers "${NO_CACHE[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -f deploy/check/postgres.Containerfile -t "$POSTGRES_IMAGE" .

mkdir -p "$COMPOSE_DIR"
COMPOSE_PORT=$(free_port)
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'POSTGRES_PASSWORD=%s\n' "$password" >"$COMPOSE_DIR/postgres.env"
cat >"$COMPOSE_DIR/newsletter.env" <<EOF
NEWSLETTER_DATABASE_URL=postgresql+psycopg://newsletter:$password@postgres/newsletter
NEWSLETTER_SECRET_KEY=container-check-$password
NEWSLETTER_SMTP_HOST=sink
NEWSLETTER_SMTP_PORT=2525
EOF
chmod 600 "$COMPOSE_DIR"/*.env
# The changes, each because of this machine: PostgreSQL from Debian's package (no registry of images
# here); the build from the local base (same reason), its context the checkout's absolute path (the
# file is written elsewhere); a free port instead of 8000; an SMTP sink as a service of the same
# network (the mail stays between the check's containers).
compose_for_check() {
  "$PC_VENV/bin/python" - deploy/compose.yaml "$COMPOSE_DIR/compose.yaml" "$PWD" "$BASE_IMAGE" \
    "$POSTGRES_IMAGE" "$COMPOSE_PORT" <<'EOF'
import sys, yaml
source, target, project, base, postgres, port = sys.argv[1:]
compose = yaml.safe_load(open(source))
services = compose["services"]
services["postgres"]["image"] = postgres
services["serve"]["build"] = {"context": project, "dockerfile": "deploy/Containerfile", "args": {"BASE_IMAGE": base}}
services["serve"]["ports"] = [f"127.0.0.1:{port}:8000"]
services["sink"] = {"image": services["serve"]["image"],
                    "entrypoint": ["python", "-m", "aiosmtpd", "-n", "-l", "0.0.0.0:2525",
                                   "-c", "aiosmtpd.handlers.Mailbox", "/tmp/mail"]}
yaml.safe_dump(compose, open(target, "w"), sort_keys=False)
EOF
}
compose_for_check
pc() { (cd "$COMPOSE_DIR" && BUILDAH_ISOLATION=chroot "$PC_VENV/bin/podman-compose" -p "$NAME" "$@"); }

step compose-up pc up -d
# podman 4.3 runs health checks from systemd timers and cannot wait for "healthy" (podman-compose says
# so and starts serve anyway; serve waits for its database itself): run compose's check by hand.
for _ in $(seq 60); do podman healthcheck run "${NAME}_postgres_1" >/dev/null 2>&1 && break; sleep 0.5; done
podman healthcheck run "${NAME}_postgres_1" >/dev/null 2>&1 || fail "compose: postgres's health check (pg_isready) never passed"
for _ in $(seq 150); do [ "$(health "http://127.0.0.1:$COMPOSE_PORT/healthz")" = 200 ] && break; sleep 0.2; done
[ "$(health "http://127.0.0.1:$COMPOSE_PORT/healthz")" = 200 ] || { pc logs serve | tail -20; fail "compose: serve gave no 200 on /healthz"; }
say "compose: postgres healthy (pg_isready), serve answers /healthz on the published port" \
  "(restarted $(podman inspect --format '{{.RestartCount}}' "${NAME}_serve_1") times while postgres started)"
add_readers() {
  local reader
  for reader in amal@example.org badr@example.org dalia@example.org; do
    pc --profile cron run --rm send subscribers add "$reader" || return
  done
}
step compose-subscribers add_readers
step compose-send pc --profile cron run --rm send send --date 2017-05-09
grep -q 'Sent 3' "$WORK/logs/compose-send.log" || fail "compose: the send did not send 3 (log: $WORK/logs/compose-send.log)"
in_postgres=$(podman exec "${NAME}_postgres_1" psql -U newsletter -d newsletter -tAc 'SELECT count(*) FROM deliveries')
in_sink=$(podman exec "${NAME}_sink_1" sh -c 'ls /tmp/mail/new | wc -l')
[ "$in_postgres" = 3 ] && [ "$in_sink" = 3 ] || fail "compose: $in_postgres deliveries in PostgreSQL, $in_sink messages in the sink (3 each expected)"
say "compose: send from the cron profile, 3 deliveries in PostgreSQL, 3 messages in the sink"
step compose-down pc down -v
