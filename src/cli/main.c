/* netgpt — cloud–edge collaborative LLM serving. One binary; this file dispatches to the
 * subcommands (one file each in src/cli/). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char USAGE[] =
    "usage: netgpt COMMAND [options]   (netgpt COMMAND --help for each)\n"
    "\n"
    "commands:\n"
    "  generate   run a model on a prompt, streaming the text as it is made\n"
    "  tokenize   text -> token ids, or ids -> text with --decode\n"
    "  convert    Hugging Face folder / llama2.c checkpoint / GGUF -> GGUF (f32/f16/bf16)\n"
    "  merge      bake LoRA adapters into a base model, write GGUF\n"
    "  init       a new model with random weights, to train from scratch\n"
    "  quantize   rewrite a GGUF model with q8_0 / q4_0 (or f16, bf16, f32) weights\n"
    "  eval       perplexity on a text file; with --ref, the logit difference to another model\n"
    "  bench      measured speed and memory against this machine's own limits\n"
    "  train      fine-tune a model (LoRA or full) on JSONL / text; PEFT, GGUF LoRA or GGUF out\n"
    "  serve      OpenAI-compatible HTTP server (continuous batching, per-request LoRA)\n"
    "  edge       edge tier: personalizes requests, forwards them to the cloud, falls back, web UI\n"
    "  edge-db    the edge context store: import places, add users/visits/cells, query\n"
    "\n"
    "MODEL is a GGUF file or a Hugging Face model folder (config.json + model.safetensors\n"
    "[+ vocab.json/encoder.json + merges.txt/vocab.bpe]).\n";

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"generate", cmd_generate}, {"tokenize", cmd_tokenize}, {"convert", cmd_convert}, {"merge", cmd_merge},
                   {"bench", cmd_bench}, {"train", cmd_train}, {"quantize", cmd_quantize}, {"eval", cmd_eval},
                   {"serve", cmd_serve},
                   {"edge", cmd_edge}, {"edge-db", cmd_edge_db}, {"init", cmd_init}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "netgpt: unknown command '%s'\n\n%s", argv[1], USAGE);
    return 2;
}
