#!/bin/sh
# netgpt beside llama.cpp on the same GGUF files, on this machine, in one run: prefill and
# decode tokens per second of each, and netgpt's as a ratio to llama.cpp's.
#
#   sh tools/bench_llamacpp.sh [MODEL.gguf ...]
#
# llama.cpp is the CPU build inside the npm package node-llama-cpp (sh tools/deps.sh
# --llamacpp), driven by tools/reference/llamacpp/bench.mjs; netgpt is `netgpt generate` on the
# same file (memory-mapped, as llama.cpp maps it). Without arguments the files are made here
# with random weights (nothing to download) in build/bench-llamacpp: GPT-2 124M f16, q8_0,
# q4_0 and TinyLlama 1.1B q8_0, q4_0 (about 4 GB of disk; made once).
#
#   THREADS=N   threads for both (default 1: llama.cpp runs inside node here, whose own threads
#               take cores from it; on a 2-core machine its 2-thread decode is 2-3x slower than
#               its 1-thread one, which would flatter netgpt)
#   N_GEN=N     tokens generated in the decode test (default 128)
#   REPS=N      alternations of the two engines per file (default 2; the best of each counts)
#
# The two engines run one after the other, never together. Random weights make nonsense text,
# which costs the same per token as sense.
set -e
cd "$(dirname "$0")/.."
N=${NETGPT:-./netgpt}
T=${THREADS:-1}
G=${N_GEN:-128}
R=${REPS:-2}
B=build/bench-llamacpp
JS=tools/reference/llamacpp/bench.mjs
[ -f tools/reference/llamacpp/node_modules/node-llama-cpp/package.json ] || {
    echo "bench_llamacpp: llama.cpp is not installed: sh tools/deps.sh --llamacpp" >&2
    exit 1
}
[ -x "$N" ] || make netgpt >&2
PROMPT="The quick brown fox jumps over the lazy dog near the river bank at noon, and then it runs \
back home across the wide green fields while the farmer watches from the old wooden gate. The \
evening comes slowly over the hills; the birds return to their nests, the lights go on in the \
village below, and somewhere a dog barks twice before everything is quiet again for the night."

make_models() {
    mkdir -p $B
    if [ ! -f $B/gpt2-124m-f16.gguf ]; then
        echo "making $B/gpt2-124m-*.gguf (random weights)" >&2
        $N init --arch gpt2 --tokenizer tests/testdata/gpt2 --n-embd 768 --n-layer 12 --n-head 12 --ctx 1024 \
            --type f16 --seed 1 -o $B/gpt2-124m-f16.gguf >&2
    fi
    for q in q8_0 q4_0; do
        [ -f $B/gpt2-124m-$q.gguf ] || $N quantize -q $B/gpt2-124m-f16.gguf $B/gpt2-124m-$q.gguf $q
    done
    if [ ! -f $B/tinyllama-1.1b-q8_0.gguf ]; then
        echo "making $B/tinyllama-1.1b-*.gguf (random weights)" >&2
        $N init --arch llama --tokenizer tests/testdata/llama-vocab/tokenizer.gguf --n-embd 2048 --n-layer 22 \
            --n-head 32 --n-head-kv 4 --n-ff 5632 --ctx 2048 --type f16 --seed 1 -o $B/tinyllama-f16.tmp >&2
        $N quantize -q $B/tinyllama-f16.tmp $B/tinyllama-1.1b-q8_0.gguf q8_0
        $N quantize -q $B/tinyllama-f16.tmp $B/tinyllama-1.1b-q4_0.gguf q4_0
        rm -f $B/tinyllama-f16.tmp
    fi
}

if [ $# -eq 0 ]; then
    make_models
    set -- $B/gpt2-124m-f16.gguf $B/gpt2-124m-q8_0.gguf $B/gpt2-124m-q4_0.gguf $B/tinyllama-1.1b-q8_0.gguf \
        $B/tinyllama-1.1b-q4_0.gguf
fi

# best of "prompt: P tokens, X tok/s | generation: G tokens, Y tok/s" over runs: "X Y"
ng_run() {
    pre=$($N generate -m "$1" -t $T -p "$PROMPT" -n 1 --ids 2>&1 >/dev/null | sed -n 's/.*prompt: [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p')
    dec=$($N generate -m "$1" -t $T -p "The" -n $G --ignore-eos --ids 2>&1 >/dev/null |
        sed -n 's/.*generation: [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p')
    echo "$pre $dec"
}
lc_run() {
    node $JS "$1" "$PROMPT" $G $T | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
const r=JSON.parse(s);console.log(r.prefill_tok_s.toFixed(1), r.decode_tok_s.toFixed(2));});'
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }

printf '%s threads, %s generated tokens, prompt of %s tokens (GPT-2 vocabulary), best of %s\n' \
    "$T" "$G" "$($N tokenize -m tests/testdata/gpt2 "$PROMPT" 2>/dev/null | wc -w)" "$R"
printf '%-26s %12s %12s %7s   %12s %12s %7s\n' file "prefill ng" "prefill lc" ratio "decode ng" "decode lc" ratio
for f in "$@"; do
    np=0 nd=0 lp=0 ld=0
    i=0
    while [ $i -lt "$R" ]; do
        r=$(ng_run "$f")
        np=$(max $np "${r% *}") nd=$(max $nd "${r#* }")
        r=$(lc_run "$f")
        lp=$(max $lp "${r% *}") ld=$(max $ld "${r#* }")
        i=$((i + 1))
    done
    awk -v f="$(basename "$f")" -v np=$np -v lp=$lp -v nd=$nd -v ld=$ld 'BEGIN {
        printf "%-26s %12.1f %12.1f %6.2fx   %12.2f %12.2f %6.2fx\n", f, np, lp, np / lp, nd, ld, nd / ld }'
done
echo "tok/s; ng = netgpt generate, lc = llama.cpp (npm node-llama-cpp $(node -p 'require("./tools/reference/llamacpp/node_modules/node-llama-cpp/package.json").version')); ratio = netgpt / llama.cpp"
