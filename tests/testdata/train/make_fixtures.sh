#!/bin/sh
# Regenerates the fixtures of tests/test_train_cli.c (run from the repository root after `make`):
#   codes-{a,b}-{train,val}.jsonl  a synthetic Alpaca task: "Code of 3?" -> a fixed two-letter code,
#                                  ten phrasings x ten digits; two phrasings of each digit held out
#                                  for validation. Task b maps the digits to other codes.
#   base-a.gguf                    a tiny GPT-2 (2 layers, 32 wide, the 320-token vocabulary of
#                                  gpt2-tiny-a) trained from random weights on task a with
#                                  `netgpt train --full`: the base the test fine-tunes to task b.
set -e
D=tests/testdata/train
python3 - "$D" <<'PY'
import json, sys
d = sys.argv[1]
tpl = ["What is the code of {}?", "Give the code for {}.", "Code of {}?", "Tell me the code of {}.",
       "Which code does {} have?", "Name the code of {}.", "I need the code for {}.", "Look up the code of {}.",
       "The code of {} is what?", "Say the code of {}."]
codes = {"a": ["KQ", "RT", "MW", "BZ", "FH", "JD", "PL", "SV", "GN", "CX"],
         "b": ["ZU", "YK", "XA", "WP", "VE", "TM", "NI", "LO", "HS", "DR"]}
for name, c in codes.items():
    with open(f"{d}/codes-{name}-train.jsonl", "w") as tr, open(f"{d}/codes-{name}-val.jsonl", "w") as va:
        for digit in range(10):
            for j, t in enumerate(tpl):
                line = json.dumps({"instruction": t.format(digit), "output": c[digit]})
                (va if j in (digit % 10, (digit + 5) % 10) else tr).write(line + "\n")
PY
make build/san/tests/test_train_cli netgpt
./build/san/tests/test_train_cli --write-random build/tmp/random-gpt2.gguf
./netgpt train -m build/tmp/random-gpt2.gguf --data $D/codes-a-train.jsonl --val $D/codes-a-val.jsonl --full \
    --steps 200 --batch 8 --ctx 60 --lr 1e-2 --warmup 5 --seed 1 -o build/tmp/base-a --log-every 20
cp build/tmp/base-a/model.gguf $D/base-a.gguf
