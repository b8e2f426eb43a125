#!/bin/sh
# make demo: build, make the demo model if missing, and run netgpt's main job on it.
set -e
cd "$(dirname "$0")/.."
dir=build/demo
if [ ! -f "$dir/gpt2-demo.gguf" ]; then
    echo "== making a demo GPT-2 (real GPT-2 vocabulary, random weights) in $dir"
    ${PYTHON:-/usr/bin/python3} -B tools/make_demo_model.py "$dir/gpt2-demo-hf"
    ./netgpt convert -m "$dir/gpt2-demo-hf" -o "$dir/gpt2-demo.gguf" --type f16
fi
echo "== netgpt tokenize"
./netgpt tokenize -m "$dir/gpt2-demo.gguf" "The edge knows where you are, so the cloud doesn't have to."
echo "== netgpt generate (random weights: the text is not meaningful yet)"
printf "prompt: The edge node near the station\ncontinuation:"
./netgpt generate -m "$dir/gpt2-demo.gguf" -p "The edge node near the station" -n 48 --seed 1
