#!/usr/bin/env bash
# The .NET process snapdump's .NET tests dump: Python hosting the .NET Core 3.1 runtime from
# the dotnetcore2 wheel (with createdump) through pythonnet. No .NET SDK is needed.
#
# Creates (once) a virtual environment and prints its python. Idempotent and quick when done.
#   SNAPDUMP_DOTNET_VENV  where the environment goes (default /var/tmp/snapdump-dotnet-venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SNAPDUMP_DOTNET_VENV:-/var/tmp/snapdump-dotnet-venv}"
python="$venv/bin/python"

ready() {
  "$python" - <<'PY' 2>/dev/null
import os, dotnetcore2, clr_loader, pythonnet
root = os.path.join(os.path.dirname(dotnetcore2.__file__), "bin", "shared", "Microsoft.NETCore.App")
assert any(os.path.exists(os.path.join(root, v, "createdump")) for v in os.listdir(root))
PY
}

if [ ! -x "$python" ] || ! ready; then
  echo "setting up $venv (dotnetcore2, pythonnet)" >&2
  rm -rf "$venv"
  # Any Python 3.8+ will do; prefer the system one, which does not move.
  base="$(command -v python3)"
  [ -x /usr/bin/python3 ] && base=/usr/bin/python3
  if ! "$base" -m venv "$venv" 2>/dev/null; then
    if command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    "$base" -m venv "$venv"
  fi
  "$python" -m pip install --quiet --disable-pip-version-check \
    "dotnetcore2==3.1.23" "pythonnet==3.2.1" "clr_loader==0.3.1"
  ready || { echo "the dotnetcore2 runtime or createdump is missing in $venv" >&2; exit 1; }
fi

# Smoke: the runtime starts and answers (keeps a broken environment from reaching the tests).
if [ "${1:-}" = "--check" ]; then
  echo quit | SNAPDUMP_MANAGED_STRINGS=10 timeout 60 "$python" "$here/host.py" | grep '^READY ' >&2
fi
echo "$python"
