#!/usr/bin/env bash
# Build Crossway's image (deploy/Dockerfile) where no registry serves base images, then
# smoke-test it: a base is made from Debian's packages (debootstrap), imported into podman,
# and the real Dockerfile is built on it with BASE_IMAGE=localhost/crossway-base:bookworm.
# Where a registry is at hand, `docker build -f deploy/Dockerfile .` needs none of this.
#
#   sudo deploy/build-image.sh            # base (once), image, smoke test
#   SMOKE=0 deploy/build-image.sh         # base and image only
#
# Needs root, podman (with buildah's chroot isolation) and debootstrap:
#   apt-get install -y podman buildah debootstrap
# The base trusts the CA certificates this machine trusts (copied from
# /usr/local/share/ca-certificates), so pip inside the build works behind a TLS-inspecting
# proxy; an image for elsewhere should be built from the official base instead.
#
# Containers are run with `buildah run --isolation chroot` for the smoke test, because on hosts
# where podman's OCI runtimes cannot start containers (a sandbox that refuses setrlimit or
# hybrid cgroups) that is what still works; the Dockerfile's ENTRYPOINT, ENV, USER and
# healthcheck script are what it runs. docs/deploy.md says what was verified where.
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
for tool in podman buildah debootstrap; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y podman buildah debootstrap)"
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

say "smoke test: redis, the sample upstream and Crossway, all from the image, on loopback"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); PORT=$(free_port); ADMIN_PORT=$(free_port); REDIS_PORT=$(free_port)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
command -v redis-server >/dev/null || die "the smoke test needs redis-server on this machine (apt-get install -y redis-server)"
command -v curl >/dev/null || die "the smoke test needs curl"

pids=()
ctrs=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for ctr in "${ctrs[@]}"; do buildah rm "$ctr" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)

upstream=$(buildah from --pull-never "$IMAGE"); ctrs+=("$upstream")
buildah run --isolation chroot --network host "$upstream" -- \
  python3 -m crossway.samples.openai_server --host 127.0.0.1 --port "$UP_PORT" \
  >"$WORK/upstream.log" 2>&1 &
pids+=($!)

gateway=$(buildah from --pull-never "$IMAGE"); ctrs+=("$gateway")
# Loopback only: with the host's network the image's 0.0.0.0 would be every interface here.
buildah run --isolation chroot --network host \
  --env CROSSWAY_HOST=127.0.0.1 --env CROSSWAY_ADMIN_HOST=127.0.0.1 \
  --env CROSSWAY_PORT="$PORT" --env CROSSWAY_ADMIN_PORT="$ADMIN_PORT" \
  --env CROSSWAY_ADMIN_TOKEN="$TOKEN" --env REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
  --env OPENAI_BASE_URL="http://127.0.0.1:$UP_PORT/v1" \
  "$gateway" -- crossway serve >"$WORK/gateway.log" 2>&1 &
pids+=($!)

ready=0
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "${pids[2]}" 2>/dev/null || break
  sleep 0.2
done
[ "$ready" = 1 ] || { cat "$WORK/gateway.log"; die "the gateway did not become ready"; }

uid=$(buildah run --isolation chroot "$gateway" -- id -u)
[ "$uid" = 10001 ] || die "the image runs as uid $uid, not 10001"
echo "runs as uid: $uid"
echo "healthz: $(curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz")"
buildah run --isolation chroot --network host --env CROSSWAY_ADMIN_PORT="$ADMIN_PORT" "$gateway" -- \
  python3 /opt/crossway/healthcheck.py /healthz && echo "healthcheck.py: ok"
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
say "smoke test passed"
