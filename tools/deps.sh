#!/bin/sh
# Installs what netgpt needs on Debian/Ubuntu, skipping what is already there.
#   sh tools/deps.sh            build + test dependencies (C toolchain, libraries)
#   sh tools/deps.sh --fuzz     also clang and its fuzzer runtime, for `make fuzz`
#   sh tools/deps.sh --ui       also Chromium, for `make test-ui`
#   sh tools/deps.sh --all      also what `make fixtures` needs (python3-torch, node + the npm
#                               reference packages)
set -e
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs="make gcc libc6-dev libcjson-dev libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev python3 python3-numpy"
npm=
for arg in "$@"; do
    case "$arg" in
    --fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    --ui) pkgs="$pkgs chromium nodejs fonts-noto-cjk" ;;
    --all) pkgs="$pkgs clang libclang-rt-14-dev python3-torch nodejs npm"; npm=1 ;;
    *) echo "deps: unknown option $arg" >&2; exit 2 ;;
    esac
done

missing=
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ -n "$npm" ]; then
    (cd tools/reference && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "deps: ok" >&2
