/* netgpt serve — the cloud tier: an OpenAI-compatible HTTP server with continuous batching. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "serve/serve.h"

static const char HELP[] =
    "usage: netgpt serve -m MODEL [options]\n"
    "\n"
    "OpenAI-compatible HTTP/1.1 server: POST /v1/chat/completions, POST /v1/completions (SSE\n"
    "streaming with \"stream\": true), GET /v1/models, POST /v1/adapters {\"name\",\"path\",\"scale\"},\n"
    "DELETE /v1/adapters/NAME, GET /health, GET /metrics (Prometheus). Requests are batched\n"
    "continuously: one forward per step for every running sequence. SIGTERM/SIGINT drains the\n"
    "running streams, then exits 0.\n"
    "\n"
    "  -m, --model PATH       GGUF file or Hugging Face model folder (with a tokenizer)\n"
    "      --host ADDR        address to listen on (default 127.0.0.1)\n"
    "      --port N           port; 0 picks a free one (default 8080). The address is printed\n"
    "                         on stderr: \"listening on http://HOST:PORT\"\n"
    "      --lora NAME=PATH[:SCALE]  a LoRA adapter served as model NAME (repeatable)\n"
    "      --api-key KEY      require 'Authorization: Bearer KEY' on /v1/*\n"
    "      --parallel N       sequences generated at once (default 8)\n"
    "      --ctx N            context per sequence (default: the model's)\n"
    "      --max-queue N      requests that may wait for a sequence before 429 (default 64)\n"
    "      --batch N          tokens per forward step: decode rows + prompt chunks (default 128)\n"
    "      --max-body BYTES   largest request body (default 1048576); larger gets 413\n"
    "      --chat-template T  llama2 | chatml | zephyr (default: the model's, else chatml for\n"
    "                         GPT-2 vocabularies, llama2 for SentencePiece)\n"
    "      --drain-timeout S  seconds to let running requests finish on SIGTERM (default 60)\n"
    "      --mmap             read the weights through the file's memory mapping; by default\n"
    "                         they are copied into memory on huge pages (slower start; a batch\n"
    "                         of 8 rows streams the weights about a quarter faster)\n"
    "      --kv-type T        f32 (default) or f16: the type of the slots' cached keys and\n"
    "                         values (f16: half the memory per slot, half the bytes read)\n"
    "      --no-bf16-dot      bf16 weights: keep activations f32 in steps of more than 8 rows\n"
    "                         (default: rounded to bf16 for AVX512-BF16's products, 1.7x)\n"
    "      --bf16-attention   quantized weights: a prompt's attention in bf16 with AVX512-BF16\n"
    "                         (default f32; faster, less exact: see README)\n"
    "      --kernels P        avx512, avx2 or portable: run that path's kernels (default: the\n"
    "                         best this CPU has)\n"
    "      --no-avx-vnni      AVX2 path: integer dot products without AVX-VNNI\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "      --bench ...        the load generator instead (netgpt serve --bench --help)\n";

int cmd_serve(int argc, char **argv) {
    serve_config cfg;
    serve_config_defaults(&cfg);
    cli_opts o;
    cli_opts_init(&o);
    double drain = 60;
    if (argc > 1 && !strcmp(argv[1], "--bench")) return serve_bench_main(argc - 1, argv + 1);
    ng_model_set_mmap(0); /* a server lives long: copy the weights onto huge pages */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (!strcmp(a, "--mmap")) ng_model_set_mmap(1);
        else if (!strcmp(a, "--host")) cfg.host = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--port")) cfg.port = (int)cli_long(a, cli_value(argc, argv, &i), 0, 65535);
        else if (!strcmp(a, "--api-key")) cfg.api_key = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--parallel")) cfg.parallel = (int)cli_long(a, cli_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(a, "--max-queue")) cfg.max_queue = (int)cli_long(a, cli_value(argc, argv, &i), 0, 1 << 20);
        else if (!strcmp(a, "--batch")) cfg.n_batch = (int)cli_long(a, cli_value(argc, argv, &i), 1, 1 << 16);
        else if (!strcmp(a, "--max-body")) cfg.max_body = (size_t)cli_long(a, cli_value(argc, argv, &i), 64, 1L << 32);
        else if (!strcmp(a, "--chat-template")) cfg.chat_template = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--drain-timeout")) drain = cli_double(a, cli_value(argc, argv, &i), 0, 86400);
        else if (!strcmp(a, "--lora")) {
            const char *v = cli_value(argc, argv, &i), *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1]) {
                fprintf(stderr, "netgpt serve: --lora '%s': expected NAME=PATH[:SCALE]\n", v);
                return 2;
            }
            if (cfg.n_lora == SERVE_MAX_LORA) {
                fprintf(stderr, "netgpt serve: more than %d --lora adapters\n", SERVE_MAX_LORA);
                return 2;
            }
            static char names[SERVE_MAX_LORA][72];
            snprintf(names[cfg.n_lora], sizeof names[0], "%.*s", (int)(eq - v) < 71 ? (int)(eq - v) : 71, v);
            cfg.lora_name[cfg.n_lora] = names[cfg.n_lora];
            cfg.lora_arg[cfg.n_lora++] = eq + 1;
        } else if (cli_common_flag(argc, argv, &i, &o)) continue;
        else cli_positional(&o, a, "serve");
    }
    if (o.n_pos || !o.model) {
        fprintf(stderr, "netgpt serve: %s (see --help)\n", o.n_pos ? "unexpected argument" : "-m MODEL is required");
        return 2;
    }
    cfg.model_path = o.model;
    cfg.n_ctx = o.ctx;
    cfg.threads = o.threads;

    /* Every thread (libmicrohttpd's, the scheduler) inherits this mask, so SIGTERM/SIGINT reach
     * only sigwait below; a client that hangs up must not kill the server with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    ng_error err;
    serve_server *s = serve_start(&cfg, &err);
    if (!s) {
        fprintf(stderr, "netgpt serve: %s\n", err.msg);
        return 1;
    }
    int v6 = strchr(cfg.host, ':') != NULL;
    fprintf(stderr, "netgpt serve: listening on http://%s%s%s:%d\n", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
            serve_port(s));
    if (serve_load(s, &err)) {
        fprintf(stderr, "netgpt serve: %s\n", err.msg);
        serve_stop(s);
        return 1;
    }
    fprintf(stderr, "netgpt serve: ready (%s)\n", cfg.model_path);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "netgpt serve: %s: draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    serve_drain(s, drain);
    serve_stop(s);
    fprintf(stderr, "netgpt serve: stopped\n");
    return 0;
}
