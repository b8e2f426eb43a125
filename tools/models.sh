#!/bin/sh
# make models — rebuilds netgpt's default models from the npm data packages with netgpt's own
# trainer, fixed seeds, on the CPU (about 110 minutes on 2 cores):
#
#   models/edge-gpt2.gguf        GPT-2 architecture, real GPT-2 vocabulary, pretrained from
#                                scratch on English text (build/data/text), Q4_0 (EDGE_QUANT)
#   models/edge-completion.gguf  LoRA on it, with the embedding / head rows of the tokens the
#                                responses use (--lora-tokens response): (edge context, concise
#                                prompt) -> comprehensive prompt with references to the context
#                                the edge fills (build/data/pairs/*_refs.jsonl); the edge's
#                                completion model — installed only when its evaluation meets the
#                                bar (>= 90% of facts and requests stated, <= 2% invented); below
#                                it the adapter stays in build/models/edge-completion/
#   models/edge-gpt2-completion.gguf
#                                the edge base fully fine-tuned on the same pairs, for comparison
#                                (and the edge's completion model should the adapter fall below
#                                the bar); installed under the same bar
#   models/cloud-llama.gguf      LLaMA architecture, real LLaMA-2 vocabulary, trained on the
#                                English text, then on answers built from the same places
#                                (build/data/answers), Q8_0
#
# and their evaluation (held-out perplexity; facts stated and invented by the edge completion
# on held-out cities, against the template baseline) into build/models/*.json, from which the
# model cards in models/*.md are written.
#
#   tools/models.sh [STEP...]   steps: data edge-base edge-completion edge-full cloud eval cards
#                               (default: all, in that order; a step whose outputs exist is
#                               skipped, so an interrupted run continues where it stopped)
#   FORCE=1 tools/models.sh STEP   redo STEP
#   THREADS=N                      trainer threads (default: all cores)
#   NETGPT=PATH                    the netgpt binary (default ./netgpt)
#   MODELS_DIR=D MODELS_BUILD=D    where the models / the work files go (default models,
#                                  build/models); the recipe variables below can be overridden
#                                  the same way (quick trial runs with tiny shapes)
set -e
cd "$(dirname "$0")/.."
N=${NETGPT:-./netgpt}
B=${MODELS_BUILD:-build/models}
M=${MODELS_DIR:-models}
T=${THREADS:+-t $THREADS}
mkdir -p "$B" "$M"

have() { [ -z "$FORCE" ] && [ -f "$1" ]; }
say() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
# seconds since the epoch, for the time each step took
now() { date +%s; }

# ---- recipe: shapes and schedules (fixed seeds)
EDGE_SHAPE=${EDGE_SHAPE:-"--arch gpt2 --n-embd 256 --n-layer 6 --n-head 4 --ctx 256 --seed 1"}
EDGE_TRAIN=${EDGE_TRAIN:-"--full --batch 8 --ctx 256 --steps 700 --lr 2e-3 --min-lr 2e-4 --warmup 50 --seed 1"}
COMP_TRAIN=${COMP_TRAIN:-"--lora-rank 16 --lora-targets all --lora-tokens response --batch 8 --ctx 256 --steps 900 --lr 2e-3 \
 --min-lr 2e-4 --warmup 50 --seed 1 --save-format gguf"}
FULL_TRAIN=${FULL_TRAIN:-"--full --batch 8 --ctx 256 --steps 800 --lr 1e-3 --min-lr 1e-4 --warmup 20 --seed 1"}
CLOUD_SHAPE=${CLOUD_SHAPE:-"--arch llama --n-embd 256 --n-layer 4 --n-head 4 --ctx 512 --seed 2"}
CLOUD_TEXT=${CLOUD_TEXT:-"--full --batch 8 --ctx 256 --steps 300 --lr 2e-3 --min-lr 2e-4 --warmup 50 --seed 2"}
CLOUD_ANS=${CLOUD_ANS:-"--full --batch 8 --ctx 256 --steps 300 --lr 1e-3 --min-lr 1e-4 --warmup 20 --seed 2 \
 --chat-template llama2"}
EVAL_PAIRS=${EVAL_PAIRS:-300}
# The edge models' weight type: q4_0 keeps them under 20 MB (q8_0: 20.6 MB, most of it the
# 50,257 x 256 token embedding, which is also the output head); held-out perplexity moves by
# about 0.1% (first 60 kB of the held-out text: f32 1408.4, q8_0 1408.3, q4_0 1410.0).
EDGE_QUANT=${EDGE_QUANT:-q4_0}
# The completion adapter's type as shipped (netgpt quantize: A matrices and token rows q8_0, the
# rank-16 B matrices f16): 1.0 MiB instead of 2.5 MiB of f32, evaluated as shipped.
ADAPTER_QUANT=${ADAPTER_QUANT:-q8_0}

step_data() {
    if have build/data/text/train.txt && have build/data/pairs/train.jsonl && have build/data/answers/train.jsonl; then
        return
    fi
    say "data: building from the npm packages (make data)"
    make data
}

# Plain text for the trainer: paragraphs separated by blank lines (each ends with the
# end-of-text token); the builder's document-separator lines are dropped.
text_files() {
    have $B/text-train.txt && return
    grep -v '^<|endoftext|>$' build/data/text/train.txt >$B/text-train.txt
    grep -v '^<|endoftext|>$' build/data/text/heldout.txt >$B/text-heldout.txt
    head -c 100000 $B/text-heldout.txt >$B/text-val.txt
}

step_edge_base() {
    have $M/edge-gpt2.gguf && return
    text_files
    # the f32 model is kept: a later run (a changed EDGE_QUANT) only quantizes it again
    if ! have $B/edge-base/model.gguf || ! have $B/edge-base.time.json; then
        say "edge base: GPT-2 from scratch on English text"
        t0=$(now)
        $N init $EDGE_SHAPE --tokenizer tests/testdata/gpt2 -o $B/edge-init.gguf
        $N train -m $B/edge-init.gguf --data $B/text-train.txt --val $B/text-val.txt --format text $EDGE_TRAIN \
            --eval-every 100 --log-every 10 --json-log $B/edge-base.log.jsonl -o $B/edge-base $T --json \
            >$B/edge-base.train.json
        echo "{\"seconds\": $(($(now) - t0))}" >$B/edge-base.time.json
    fi
    $N quantize $B/edge-base/model.gguf $M/edge-gpt2.gguf $EDGE_QUANT
}

# The completion models learn the prompts in referenced form ({place}, {poi1}, {dist1}, ...: the
# edge fills the references from its own context block, see src/edge/complete.h): a model this
# small does not learn to copy names and numbers it has never seen.
pairs_val() { head -n 300 build/data/pairs/val_refs.jsonl >$B/pairs-val.jsonl; }

step_edge_completion() {
    have $B/edge-completion/adapter.gguf && return
    say "edge completion adapter: LoRA on the edge base, (context, concise prompt) -> comprehensive prompt"
    t0=$(now)
    pairs_val
    $N train -m $M/edge-gpt2.gguf --data build/data/pairs/train_refs.jsonl --val $B/pairs-val.jsonl $COMP_TRAIN \
        --eval-every 150 --log-every 10 --json-log $B/edge-completion.log.jsonl -o $B/edge-completion $T --json \
        >$B/edge-completion.train.json
    echo "{\"seconds\": $(($(now) - t0))}" >$B/edge-completion.time.json
}

step_edge_full() {
    have $B/edge-comp-full/model.gguf && return
    say "edge completion model: the edge base fully fine-tuned on the pairs"
    t0=$(now)
    pairs_val
    $N train -m $B/edge-base/model.gguf --data build/data/pairs/train_refs.jsonl --val $B/pairs-val.jsonl $FULL_TRAIN \
        --eval-every 100 --log-every 10 --json-log $B/edge-comp-full.log.jsonl -o $B/edge-comp-full $T --json \
        >$B/edge-comp-full.train.json
    $N quantize $B/edge-comp-full/model.gguf $B/edge-comp-full-q.gguf $EDGE_QUANT
    echo "{\"seconds\": $(($(now) - t0))}" >$B/edge-comp-full.time.json
}

# The answers as chat conversations (the cloud is served through /v1/chat/completions, whose
# template the model then knows).
answers_chat() {
    have $B/answers-train.jsonl && return
    for s in train val; do
        node -e '
const rl = require("readline").createInterface({input: process.stdin});
rl.on("line", (l) => { const r = JSON.parse(l);
  console.log(JSON.stringify({messages: [{role: "user", content: r.instruction},
                                         {role: "assistant", content: r.output}]})); });' \
            <build/data/answers/$s.jsonl >$B/answers-$s.jsonl
    done
    head -n 200 $B/answers-val.jsonl >$B/answers-val-small.jsonl
}

step_cloud() {
    have $M/cloud-llama.gguf && return
    text_files
    answers_chat
    say "cloud default: LLaMA from scratch on English text, then on place answers"
    t0=$(now)
    $N init $CLOUD_SHAPE --tokenizer tests/testdata/llama-vocab/tokenizer.gguf -o $B/cloud-init.gguf
    $N train -m $B/cloud-init.gguf --data $B/text-train.txt --val $B/text-val.txt --format text $CLOUD_TEXT \
        --eval-every 150 --log-every 10 --json-log $B/cloud-text.log.jsonl -o $B/cloud-text $T --json \
        >$B/cloud-text.train.json
    $N train -m $B/cloud-text/model.gguf --data $B/answers-train.jsonl --val $B/answers-val-small.jsonl $CLOUD_ANS \
        --eval-every 100 --log-every 10 --json-log $B/cloud-answers.log.jsonl -o $B/cloud-answers $T --json \
        >$B/cloud-answers.train.json
    $N quantize $B/cloud-answers/model.gguf $M/cloud-llama.gguf q8_0
    echo "{\"seconds\": $(($(now) - t0))}" >$B/cloud.time.json
}

# install_if_meets_bar KEY SRC DST WHAT: SRC becomes DST when the evaluation KEY of
# $B/eval-pairs.json states >= 90% of the facts and of the requests and invents <= 2% of its
# mentions; else DST goes.
install_if_meets_bar() {
    if node -e 'const e = JSON.parse(require("fs").readFileSync(process.argv[1]))[process.argv[2]];
process.exit(e.facts_stated >= 0.9 && e.requests_stated >= 0.9 && e.invented_share <= 0.02 ? 0 : 1);' \
        $B/eval-pairs.json "$1"; then
        cp "$2" "$3"
        echo "$4 meets the bar: installed as $3"
    else
        rm -f "$3"
        echo "$4 below the bar (>= 90% of facts and requests stated, <= 2% invented): not installed ($2 keeps it)"
    fi
}

step_eval() {
    have $B/eval-pairs.json && return
    text_files
    say "evaluation: held-out perplexity"
    $N eval -m $M/edge-gpt2.gguf -f $B/text-heldout.txt --ctx 256 --json $T >$B/eval-edge-ppl.json
    $N eval -m $M/cloud-llama.gguf -f $B/text-heldout.txt --ctx 256 --json $T >$B/eval-cloud-ppl.json
    say "evaluation: edge completion on held-out cities ($EVAL_PAIRS records)"
    P=build/data/pairs
    $N quantize $B/edge-completion/adapter.gguf $B/edge-completion-q.gguf $ADAPTER_QUANT
    $N eval -m $M/edge-gpt2.gguf --lora $B/edge-completion-q.gguf --pairs $P/test.jsonl --facts $P/test_facts.jsonl \
        --limit "$EVAL_PAIRS" -o $B/pairs-pred.jsonl --json $T >$B/eval-pairs-model.json
    $N eval --score $P/test_baseline.jsonl --facts $P/test_facts.jsonl --limit "$EVAL_PAIRS" --json \
        >$B/eval-pairs-template.json
    $N eval -m $B/edge-comp-full-q.gguf --pairs $P/test.jsonl --facts $P/test_facts.jsonl --limit "$EVAL_PAIRS" \
        -o $B/pairs-pred-full.jsonl --json $T >$B/eval-pairs-full.json
    printf '{"model": %s, "full": %s, "template": %s}\n' "$(cat $B/eval-pairs-model.json)" \
        "$(cat $B/eval-pairs-full.json)" "$(cat $B/eval-pairs-template.json)" >$B/eval-pairs.json
    cat $B/eval-pairs.json
    # the bar: a completion model that writes worse prompts than the template does not ship
    install_if_meets_bar model $B/edge-completion-q.gguf $M/edge-completion.gguf "edge completion adapter"
    install_if_meets_bar full $B/edge-comp-full-q.gguf $M/edge-gpt2-completion.gguf \
        "fully fine-tuned completion model"
}

step_cards() {
    say "model cards"
    EDGE_QUANT=$EDGE_QUANT ADAPTER_QUANT=$ADAPTER_QUANT EDGE_SHAPE=$EDGE_SHAPE EDGE_TRAIN=$EDGE_TRAIN COMP_TRAIN=$COMP_TRAIN CLOUD_SHAPE=$CLOUD_SHAPE \
        FULL_TRAIN=$FULL_TRAIN CLOUD_TEXT=$CLOUD_TEXT CLOUD_ANS=$CLOUD_ANS MODELS_DIR=$M MODELS_BUILD=$B node tools/model_cards.js
}

steps=${*:-data edge-base edge-completion edge-full cloud eval cards}
for s in $steps; do
    case $s in
    data) step_data ;;
    edge-base) step_edge_base ;;
    edge-completion) step_edge_completion ;;
    edge-full) step_edge_full ;;
    cloud) step_cloud ;;
    eval) step_eval ;;
    cards) step_cards ;;
    *) echo "tools/models.sh: unknown step '$s' (data edge-base edge-completion edge-full cloud eval cards)" >&2; exit 2 ;;
    esac
done
