#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on the server's own port, healthy on 200 only (the
# server answers 503 naming the database or broker that does not answer). Plain bash and
# /dev/tcp, so the runtime image needs no curl. The port comes from AIEDGE_BIND.
set -euo pipefail
port="${AIEDGE_BIND:-0.0.0.0:3000}"
port="${port##*:}"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
read -r _ status _ <&3
# Read the rest (bounded: a server that kept the connection open must not fail the check), so
# the server sees a clean close rather than a reset.
timeout 3 cat <&3 >/dev/null || true
[ "$status" = 200 ] || { echo "healthz answered ${status:-nothing}" >&2; exit 1; }
