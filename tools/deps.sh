#!/bin/sh
# Installs what netgpt needs on Debian/Ubuntu, skipping what is already there.
#   sh tools/deps.sh            build + test dependencies (C toolchain, libraries)
#   sh tools/deps.sh --all      also what `make fixtures` needs (python3-torch, node + npm
#                               packages for the tokenizer references)
set -e
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs="make gcc libc6-dev libcjson-dev python3 python3-numpy"
[ "$1" = "--all" ] && pkgs="$pkgs python3-torch nodejs npm"

missing=
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ "$1" = "--all" ]; then
    (cd tools/reference && npm install --no-audit --no-fund --loglevel=error)
fi
echo "deps: ok" >&2
