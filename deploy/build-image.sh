#!/usr/bin/env bash
# Build Crossway's image (deploy/Dockerfile) where no registry serves base images, then
# smoke-test it: a base is made from Debian's packages (debootstrap), imported into podman,
# and the real Dockerfile is built on it with BASE_IMAGE=localhost/crossway-base:bookworm.
# Where a registry is at hand, `docker build -f deploy/Dockerfile .` needs none of this.
#
#   sudo deploy/build-image.sh            # base (once), image, smoke test
#   SMOKE=0 deploy/build-image.sh         # base and image only
#
# Needs root, podman and debootstrap; the smoke test also runc (or crun), redis-server and curl:
#   apt-get install -y podman debootstrap runc redis-server curl
# The build runs RUN steps with `--isolation chroot` (no OCI runtime needed, so it also works
# where crun refuses the host's cgroups). The base trusts the CA certificates this machine
# trusts (copied from /usr/local/share/ca-certificates), so pip inside the build works behind a
# TLS-inspecting proxy; an image for elsewhere should be built from the official base instead.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-bookworm}
BASE=${BASE:-localhost/crossway-base:${SUITE}}
IMAGE=${IMAGE:-localhost/crossway:dev}
SMOKE=${SMOKE:-1}
WORK=${WORK:-$(mktemp -d /tmp/crossway-image.XXXXXX)}

say() { printf '\n== %s\n' "$*"; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and rootful podman)"
for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y podman debootstrap runc)"
done

if ! podman image exists "$BASE"; then
  say "base image $BASE from Debian $SUITE packages"
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  fi
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs/var/lib/apt/lists/"*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE"
  rm -rf "$rootfs"
fi

say "image $IMAGE from deploy/Dockerfile"
podman build --isolation chroot --format docker \
  --build-arg "BASE_IMAGE=$BASE" \
  -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
  -t "$IMAGE" .
podman image inspect "$IMAGE" --format \
  'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} ports={{.Config.ExposedPorts}} stopsignal={{.Config.StopSignal}} healthcheck={{.Config.Healthcheck.Test}}'

[ "$SMOKE" = 1 ] || exit 0

say "smoke test: the sample upstream and Crossway in containers of the image, redis on the host"
# Host networking with loopback addresses: nothing listens beyond this machine. runc, and
# rlimits no higher than the host's, because some sandboxes refuse crun's hybrid cgroups and
# podman's default rlimits; RUNTIME and RUN_ARGS override both.
RUNTIME=${RUNTIME:-$(command -v runc >/dev/null && echo runc || echo crun)}
read -r -a RUN_ARGS <<<"${RUN_ARGS:---ulimit nofile=4096:4096 --ulimit nproc=4096:4096}"
podman_() { podman --runtime "$RUNTIME" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); PORT=$(free_port); ADMIN_PORT=$(free_port); REDIS_PORT=$(free_port)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
command -v redis-server >/dev/null || die "the smoke test needs redis-server on this machine (apt-get install -y redis-server)"
command -v curl >/dev/null || die "the smoke test needs curl"
NAME=crossway-smoke-$$

redis_pid=
cleanup() {
  podman_ rm -f "$NAME-gateway" "$NAME-upstream" >/dev/null 2>&1 || true
  podman volume rm -f "$NAME-data" >/dev/null 2>&1 || true
  [ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null || true
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
redis_pid=$!

# podman's health-check timers need systemd; `podman healthcheck run` below runs it directly.
podman_ run -d --name "$NAME-upstream" "${RUN_ARGS[@]}" --network host --read-only \
  --entrypoint python3 "$IMAGE" \
  -m crossway.samples.openai_server --host 127.0.0.1 --port "$UP_PORT" 2> >(grep -v systemd >&2)
podman_ run -d --name "$NAME-gateway" "${RUN_ARGS[@]}" --network host \
  --read-only --tmpfs /tmp -v "$NAME-data:/var/lib/crossway" \
  -e CROSSWAY_HOST=127.0.0.1 -e CROSSWAY_ADMIN_HOST=127.0.0.1 \
  -e CROSSWAY_PORT="$PORT" -e CROSSWAY_ADMIN_PORT="$ADMIN_PORT" \
  -e CROSSWAY_ADMIN_TOKEN="$TOKEN" -e REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
  -e OPENAI_BASE_URL="http://127.0.0.1:$UP_PORT/v1" \
  "$IMAGE" 2> >(grep -v systemd >&2)

ready=0
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
  [ "$(podman_ inspect -f '{{.State.Running}}' "$NAME-gateway")" = true ] || break
  sleep 0.2
done
[ "$ready" = 1 ] || { podman_ logs "$NAME-gateway"; die "the gateway did not become ready"; }

uid=$(podman_ exec "$NAME-gateway" id -u)
[ "$uid" = 10001 ] || die "the image runs as uid $uid, not 10001"
echo "runs as uid: $uid"
pid1=$(podman_ exec "$NAME-gateway" sh -c 'tr "\0" " " </proc/1/cmdline')
case "$pid1" in *"crossway serve"*) echo "PID 1: $pid1";; *) die "PID 1 is $pid1";; esac
podman_ exec "$NAME-gateway" sh -c 'touch /etc/crossway/x 2>/dev/null' && die "the root file system is writable"
podman_ exec "$NAME-gateway" sh -c 'touch /var/lib/crossway/x' || die "the data volume is not writable"
echo "read-only root, writable /var/lib/crossway"
echo "healthz: $(curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz")"
podman_ healthcheck run "$NAME-gateway" 2> >(grep -v systemd >&2) || die "the image's HEALTHCHECK failed"
echo "HEALTHCHECK: healthy"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/keys")
[ "$status" = 401 ] || die "the admin API answered $status without the token (want 401)"
echo "admin API without the token: $status"
key=$(curl -fsS -X POST "http://127.0.0.1:$ADMIN_PORT/keys" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{"name": "smoke"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
answer=$(curl -fsS "http://127.0.0.1:$PORT/v1/chat/completions" -H "authorization: Bearer $key" \
  -H 'content-type: application/json' \
  -d '{"model": "sample-model", "messages": [{"role": "user", "content": "hello from the image"}]}')
echo "chat: $answer"
case "$answer" in *"You said: hello from the image"*) ;; *) die "unexpected answer";; esac
start=$(date +%s)
podman_ stop -t 30 "$NAME-gateway" >/dev/null 2> >(grep -v systemd >&2)
code=$(podman_ inspect -f '{{.State.ExitCode}}' "$NAME-gateway")
[ "$code" = 0 ] || { podman_ logs "$NAME-gateway" | tail -20; die "SIGTERM: exit code $code (want 0)"; }
echo "SIGTERM: exit 0 after $(( $(date +%s) - start )) s"
say "smoke test passed"
