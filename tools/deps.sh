#!/bin/sh
# Installs what netgpt needs on Debian/Ubuntu, skipping what is already there.
#   sh tools/deps.sh            build + test dependencies (C toolchain, libraries)
#   sh tools/deps.sh --fuzz     also clang and its fuzzer runtime, for `make fuzz`
#   sh tools/deps.sh --ui       also Chromium, for `make test-ui`
#   sh tools/deps.sh --llamacpp also node and llama.cpp's CPU build from the npm package
#                               node-llama-cpp (x86-64), for the test that llama.cpp reads the
#                               GGUF files netgpt writes (tests/test_llamacpp.c; skipped without)
#   sh tools/deps.sh --cross    also the aarch64 cross compiler, for `make check-cross`
#   sh tools/deps.sh --all      also what `make fixtures` needs (python3-torch, node + the npm
#                               reference packages)
set -e
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs="make gcc libc6-dev libcjson-dev libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev python3 python3-numpy"
npm= llamacpp=
for arg in "$@"; do
    case "$arg" in
    --fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    --ui) pkgs="$pkgs chromium nodejs fonts-noto-cjk" ;;
    --llamacpp) pkgs="$pkgs nodejs"; llamacpp=1 ;;
    --cross) pkgs="$pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
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
if [ -n "$llamacpp" ]; then
    # npm comes with some builds of nodejs (NodeSource's) and is a package of its own in Debian's
    command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
    if [ "$(uname -m)" = x86_64 ]; then
        # the prebuilt CPU library only: no GPU variants (optional dependencies), nothing built.
        # Versions from package-lock.json; not `npm ci`, which wants lock entries for every
        # platform's variant even when optional ones are left out.
        (cd tools/reference/llamacpp &&
            npm install --omit=optional --ignore-scripts --no-save --no-audit --no-fund --loglevel=error)
    else
        echo "deps: llama.cpp's prebuilt package is for x86-64; tests/test_llamacpp.c will skip" >&2
    fi
fi
echo "deps: ok" >&2
