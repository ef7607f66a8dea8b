#!/usr/bin/env bash
# Checks /openapi.json against the real server with schemathesis (from PyPI): every documented
# operation is called with generated inputs, valid and invalid; each response must have a
# documented status, content type, headers and body schema, and none may be a 5xx.
#
# The server runs in its own pid namespace, so the pids schemathesis makes up can only name
# processes inside it: the server (pid 1, refused as itself) and one `sleep` (pid 2, dumped).
# A collection rule dumps the `sleep` once at start, so /collectionrules and /operations show a
# real rule and its operation.
#
#   SNAPDUMP_BIN       the snapdump binary (default: cargo build -p snapdump-cli)
#   SNAPDUMP_SERVER_TOOLS   where the schemathesis venv lives (as ci-setup.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
tools="${SNAPDUMP_SERVER_TOOLS:-$HOME/.cache/snapdump-server-tools}"
venv="$tools/venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet schemathesis==4.32.5
fi

bin="${SNAPDUMP_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --quiet -p snapdump-cli
  bin="$PWD/target/debug/snapdump"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    # unshare --fork ignores SIGTERM itself: stop the server it forked (the namespace's init;
    # its end takes the rest of the namespace with it), then unshare exits on its own.
    pkill -TERM -P "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    pkill -KILL -P "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
mkdir "$work/egress"
printf '%s\n' '[collection_rules.sleep-once]' 'process = { pid = 2 }' \
  'triggers = { every = "1h" }' 'type = "Mini"' 'egress = "local"' >"$work/config.toml"
unshare --pid --fork --mount-proc --kill-child=SIGTERM \
  sh -c 'sleep 600 & exec "$0" serve --urls "$1" --temp-apikey --egress "local=file://$2" --config "$3"' \
  "$bin" "$base" "$work/egress" "$work/config.toml" >"$work/out" 2>"$work/err" &
server_pid=$!

key=""
for _ in $(seq 1 300); do
  key="$(sed -n 's/^Authorization: Bearer //p' "$work/out")"
  [ -n "$key" ] && break
  sleep 0.1
done
if [ -z "$key" ]; then
  echo "the server did not start:" >&2
  cat "$work/out" "$work/err" >&2
  exit 1
fi

curl --silent --show-error --fail -H "Authorization: Bearer $key" "$base/openapi.json" >"$work/openapi.json"

# From the scratch folder: schemathesis leaves a .schemathesis/ cache where it runs.
cd "$work"
"$venv/bin/schemathesis" run "$work/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples 30 \
  --workers 1 \
  --request-timeout 60 \
  --max-time 90 \
  --warnings off
