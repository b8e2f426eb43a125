#!/bin/sh
# make demo — netgpt's main job on this machine: the cloud tier (`netgpt serve`) and the edge
# tier (`netgpt edge`) on loopback, a few personalized requests from different places in each
# mode (concise prompt -> comprehensive prompt -> answer, with telemetry), then both left
# running for the web UI until Ctrl-C.
#
# Models: the defaults in models/ when they exist (edge-gpt2.gguf with edge-completion.gguf, or
# the fully fine-tuned edge-gpt2-completion.gguf; cloud-llama.gguf); otherwise stand-ins made here and named as such: a random-weight GPT-2 with
# the real GPT-2 vocabulary for the edge, and for the cloud the real TinyStories LLaMA
# (../shared/models/stories260K.bin) when present, else the edge stand-in again.
# Context store: build/demo/edge.sqlite from the full GeoNames/OSM places (build/data/places,
# `node tools/data/places/build_places.js`) when built, else the committed fixture.
# Ports: CLOUD_PORT (default 8080) and EDGE_PORT (default 8081), loopback only.
set -e
cd "$(dirname "$0")/.."
N=./netgpt
dir=build/demo
PY=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
CLOUD_PORT=${CLOUD_PORT:-8080}
EDGE_PORT=${EDGE_PORT:-8081}
mkdir -p "$dir"

# ---- models
edge_opts=
if [ -f models/edge-gpt2-completion.gguf ] && [ ! -f models/edge-completion.gguf ]; then
    edge_model=models/edge-gpt2-completion.gguf
    edge_opts="--completion model"
    echo "== edge model: $edge_model (it writes the comprehensive prompts itself; see its model card)"
elif [ -f models/edge-gpt2.gguf ]; then
    edge_model=models/edge-gpt2.gguf
    echo "== edge model: $edge_model"
else
    edge_model=$dir/gpt2-demo.gguf
    if [ ! -f "$edge_model" ]; then
        echo "== making a stand-in edge model (real GPT-2 vocabulary, random weights) in $dir"
        $PY -B tools/make_demo_model.py "$dir/gpt2-demo-hf"
        $N convert -m "$dir/gpt2-demo-hf" -o "$edge_model" --type f16
    fi
    echo "== edge model: $edge_model (STAND-IN: random weights, so its own answers are not meaningful;"
    echo "   models/edge-gpt2.gguf replaces it once trained)"
fi
if [ -f models/edge-completion.gguf ]; then
    edge_opts="--lora models/edge-completion.gguf"
    echo "== completion adapter: models/edge-completion.gguf (the edge model writes comprehensive prompts)"
elif [ -z "$edge_opts" ]; then
    echo "== completion adapter: none (models/edge-completion.gguf): comprehensive prompts by the template"
fi
if [ -f models/cloud-llama.gguf ]; then
    cloud_model=models/cloud-llama.gguf
    echo "== cloud model: $cloud_model"
elif [ -f ../shared/models/stories260K.bin ]; then
    cloud_model=$dir/cloud-stories260K.gguf
    [ -f "$cloud_model" ] || $N convert --from llama2c ../shared/models/stories260K.bin \
        --tokenizer ../shared/models/tok512.bin -o "$cloud_model" >/dev/null
    echo "== cloud model: $cloud_model (STAND-IN: the real TinyStories LLaMA, 260K parameters; it tells"
    echo "   stories, it does not follow instructions; models/cloud-llama.gguf replaces it)"
else
    cloud_model=$edge_model
    echo "== cloud model: $cloud_model (STAND-IN: the edge stand-in again; its 256-token context is too"
    echo "   short for most comprehensive prompts, so expect the edge to fall back)"
fi

# ---- context store
db=$dir/edge.sqlite
places=tests/testdata/places
[ -f build/data/places/cities.tsv ] && places=build/data/places
if [ ! -f "$db" ] || [ "$places" -nt "$db" ]; then
    echo "== context store $db from $places"
    rm -f "$db"
    $N edge-db init "$db" >/dev/null
    $N edge-db import-places "$db" --cities $places/cities.tsv --brands $places/brands.tsv --seed 1
    $N edge-db add-user "$db" --id alice --lang en --prefs "vegetarian, travels on foot" \
        --home-lat 48.8566 --home-lon 2.3522 >/dev/null
    $N edge-db add-user "$db" --id kenji --lang ja --prefs "likes quiet places, needs wifi" \
        --home-lat 35.6895 --home-lon 139.6917 >/dev/null
    $N edge-db add-user "$db" --id sam --lang en --prefs "low budget, with children" \
        --home-lat 51.5085 --home-lon -0.1257 >/dev/null
    $N edge-db add-cell "$db" --id FR-PAR-0042 --lat 48.8566 --lon 2.3522 --radius 2000 >/dev/null
    $N edge-db add-cell "$db" --id JP-TYO-0117 --lat 35.6895 --lon 139.6917 --radius 2000 >/dev/null
    # a recent visit for alice: the nearest restaurant to her home
    place=$($N edge-db query "$db" --lat 48.8566 --lon 2.3522 --kind poi --category restaurant --radius 3000 \
        --limit 1 --json | $PY -c 'import json,sys; p=json.load(sys.stdin)["places"]; print(p[0]["id"] if p else "")')
    [ -n "$place" ] && $N edge-db add-visit "$db" --user alice --place "$place" >/dev/null
fi
echo "== $($N edge-db stats "$db" --json)"

# ---- both tiers
spid= epid=
cleanup() {
    [ -n "$epid" ] && kill "$epid" 2>/dev/null
    [ -n "$spid" ] && kill "$spid" 2>/dev/null
    wait 2>/dev/null
}
trap 'echo; echo "== stopping"; cleanup; exit 0' INT TERM
trap cleanup EXIT
$N serve -m "$cloud_model" --host 127.0.0.1 --port "$CLOUD_PORT" 2>"$dir/serve.log" &
spid=$!
$N edge --cloud "http://127.0.0.1:$CLOUD_PORT" -m "$edge_model" $edge_opts --db "$db" --host 127.0.0.1 \
    --port "$EDGE_PORT" --max-tokens 96 2>"$dir/edge.log" &
epid=$!

# ---- requests (python3 stdlib only: urllib, streamed SSE)
$PY -B - "$CLOUD_PORT" "$EDGE_PORT" <<'EOF'
import json, sys, time, urllib.request

cloud, edge = int(sys.argv[1]), int(sys.argv[2])

def ready(port):
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False

for name, port in (("cloud (netgpt serve)", cloud), ("edge (netgpt edge)", edge)):
    if not ready(port):
        sys.exit(f"demo: the {name} did not start on port {port}: see build/demo/*.log")

def ask(concise, netgpt):
    body = {"messages": [{"role": "user", "content": concise}], "stream": True, "max_tokens": 96,
            "temperature": 0, "netgpt": netgpt}
    req = urllib.request.Request(f"http://127.0.0.1:{edge}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    first = last = None
    text = ""
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "netgpt" in ev:
                if first is None:
                    first = ev["netgpt"]
                    print(f"  comprehensive: {first['comprehensive_prompt']}")
                    print("  answer:        ", end="", flush=True)
                else:
                    last = ev["netgpt"]
            for c in ev.get("choices", []):
                piece = c.get("delta", {}).get("content") or ""
                text += piece
                print(piece.replace("\n", " "), end="", flush=True)
    print()
    t = last["telemetry"]
    ms = lambda v: "-" if v is None else f"{v:.0f} ms"
    fb = f", FALLBACK ({last['fallback_reason']})" if last["fallback"] else ""
    print(f"  telemetry:     mode {last['mode']}{fb}; edge completion {ms(t['edge_completion_ms'])}, "
          f"cloud TTFT {ms(t['cloud_ttft_ms'])}, total {ms(t['total_ms'])}; uplink {t['uplink_bytes']} B, "
          f"downlink {t['downlink_bytes']} B; tokens cloud {t['cloud_completion_tokens']} edge "
          f"{t['edge_answer_tokens']}")

requests = [
    ("alice", 48.85837, 2.29448, "find me somewhere to eat", "Paris, near the Eiffel Tower"),
    ("kenji", 35.69012, 139.70034, "coffee?", "Tokyo, Shinjuku"),
    ("sam", 51.50135, -0.14189, "need a pharmacy", "London, Buckingham Palace"),
]
for user, lat, lon, concise, where in requests:
    print(f"\n== {user} in {where} (lat/lon stay on the edge)")
    print(f"  concise:       {concise}")
    ask(concise, {"user": user, "lat": lat, "lon": lon})
print("\n== the same request in each mode (alice, Paris)")
for mode in ("edge-cloud", "cloud-only", "edge-only"):
    print(f"-- {mode}")
    print("  concise:       find me somewhere to eat")
    ask("find me somewhere to eat", {"user": "alice", "lat": 48.85837, "lon": 2.29448, "mode": mode})
EOF
echo
echo "== web UI: http://127.0.0.1:$EDGE_PORT/   (cloud: http://127.0.0.1:$CLOUD_PORT/v1, logs: $dir/*.log)"
echo "== both tiers keep running; Ctrl-C stops them"
wait
