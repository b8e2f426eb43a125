#!/bin/sh
# make test-ui — the edge web UI in headless Chromium: starts `netgpt serve` and `netgpt edge`
# on loopback (free ports), opens the page with ?q=... so it sends one chat request at load,
# waits (DevTools protocol, tests/ui/edge_ui.js) until the answer has streamed in and the
# prompts and timings are filled, then checks the DOM and saves a screenshot to build/ui/edge.png. Needs chromium (Debian package) and python3.
# Usage: sh tests/ui/run.sh [NETGPT_BINARY]   (default ./netgpt)
set -e
cd "$(dirname "$0")/../.."
N=${1:-./netgpt}
out=build/ui
mkdir -p "$out"
CHROME=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROME" ]; then
    echo "test-ui: chromium is not installed (apt-get install chromium)" >&2
    exit 1
fi
PY=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}

# fixtures: the context store from the committed places, a model with the real GPT-2
# vocabulary (the demo's stand-in) as both tiers
db=$out/edge.sqlite
rm -f "$db"
$N edge-db init "$db" >/dev/null
$N edge-db import-places "$db" --cities tests/testdata/places/cities.tsv --brands tests/testdata/places/brands.tsv \
    --seed 1 >/dev/null 2>&1
$N edge-db add-user "$db" --id kenji --lang ja --prefs "likes quiet places, needs wifi" >/dev/null
model=build/demo/gpt2-demo.gguf
if [ ! -f "$model" ]; then
    $PY -B tools/make_demo_model.py build/demo/gpt2-demo-hf
    $N convert -m build/demo/gpt2-demo-hf -o "$model" --type f16 >/dev/null
fi

spid= epid=
cleanup() {
    [ -n "$epid" ] && kill "$epid" 2>/dev/null
    [ -n "$spid" ] && kill "$spid" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
port_of() { # the port a server printed in "listening on http://127.0.0.1:PORT"
    for _ in $(seq 300); do
        p=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1")
        [ -n "$p" ] && { echo "$p"; return; }
        sleep 0.1
    done
}
$N serve -m "$model" --host 127.0.0.1 --port 0 -t 2 2>"$out/serve.log" &
spid=$!
cport=$(port_of "$out/serve.log")
$N edge --cloud "http://127.0.0.1:$cport" -m "$model" --db "$db" --host 127.0.0.1 --port 0 -t 2 2>"$out/edge.log" &
epid=$!
eport=$(port_of "$out/edge.log")
[ -n "$cport" ] && [ -n "$eport" ] || { echo "test-ui: the servers did not start (see $out/*.log)" >&2; exit 1; }
$PY - "$cport" <<'PYEOF'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1); break
    except Exception: time.sleep(0.1)
PYEOF

# place 1 = Tokyo; the prompt carries an e-mail the privacy filter must replace
url="http://127.0.0.1:$eport/?q=coffee%3F%20mail%20kenji%40example.com&user=kenji&place=1&mode=edge-cloud"
node --experimental-websocket tests/ui/edge_ui.js "$CHROME" "$url" "$out/edge.png" >"$out/edge.dom.json" \
    2>"$out/chromium.log" || { cat "$out/chromium.log" >&2; exit 1; }

# DOM assertions: the round trip finished and every panel was filled
$PY - "$out/edge.dom.json" <<'PYEOF'
import json, re, sys
dom = json.load(open(sys.argv[1], encoding="utf-8"))
def text(id_):
    return dom.get(id_, "").strip()
checks = [
    ("the page finished the round trip", dom.get("done") is True and dom.get("bubbles") == 2),
    ("concise prompt shown", text("concise") == "coffee? mail kenji@example.com"),
    ("comprehensive prompt shown, personalized", "Tokyo, Japan" in (text("comprehensive") or "")),
    ("the e-mail is scrubbed from the comprehensive prompt", "kenji@example.com" not in (text("comprehensive") or "")
     and "[email]" in (text("comprehensive") or "")),
    ("an answer streamed in", bool(text("answer"))),
    ("mode used", text("t-mode") == "edge-cloud"),
    ("cloud time to first token", (text("t-ttft") or "").endswith(" ms")),
    ("total time", (text("t-total") or "").endswith(" ms")),
    ("uplink / downlink bytes", re.fullmatch(r"[1-9]\d* / [1-9]\d*", text("t-bytes") or "") is not None),
    ("place", (text("t-place") or "").startswith("Tokyo, Japan")),
]
bad = [name for name, ok in checks if not ok]
for name, ok in checks:
    print(("PASS " if ok else "FAIL ") + name)
sys.exit(1 if bad else 0)
PYEOF
[ -s "$out/edge.png" ] || { echo "FAIL no screenshot" >&2; exit 1; }
echo "test-ui: passed; screenshot $out/edge.png"
