/* netgpt edge — the edge tier: personalization, cloud forwarding, fallback, telemetry, web UI. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "edge/cloud.h"
#include "edge/complete.h"
#include "edge/edge.h"

static const char HELP[] =
    "usage: netgpt edge --cloud URL -m EDGE_MODEL --db EDGE.sqlite [options]\n"
    "\n"
    "The edge node: speaks the OpenAI API (POST /v1/chat/completions, POST /v1/completions, GET\n"
    "/v1/models, GET /health) and serves a web UI at GET /. Each request is personalized from the\n"
    "context store (place, local time, nearby places, the user's preferences and visits), the edge\n"
    "model turns the concise prompt into a comprehensive one, personal data is scrubbed, and the\n"
    "cloud's answer is streamed back. When the cloud fails the edge model answers (marked\n"
    "fallback) and a circuit breaker keeps the cloud out for a while.\n"
    "\n"
    "Requests may add \"netgpt\": {\"user\": ID, \"lat\": X, \"lon\": Y, \"cell\": ID, \"name\": PROFILE_NAME,\n"
    "\"mode\": \"edge-cloud\" | \"cloud-only\" | \"edge-only\"} to the body, or X-Netgpt-User, -Lat, -Lon,\n"
    "-Cell, -Name, -Mode headers. Responses carry \"netgpt\" (mode, prompts, telemetry) and\n"
    "X-Netgpt-* headers.\n"
    "\n"
    "options:\n"
    "      --cloud URL            the cloud tier (an OpenAI-compatible server, e.g. netgpt serve)\n"
    "      --cloud-key KEY        its API key\n"
    "      --cloud-model NAME     \"model\" sent to the cloud (default: none, the cloud's own)\n"
    "  -m, --model MODEL          the edge model (GPT-2 family, GGUF or Hugging Face folder)\n"
    "      --lora PATH[:SCALE]    the completion adapter\n"
    "      --completion WHO       model | template: who writes comprehensive prompts (default:\n"
    "                             model when --lora is given, else template)\n"
    "      --completion-tokens N  most tokens of a model-written prompt (default 128;\n"
    "                             fewer when the context block leaves less room)\n"
    "      --completion-beams N   beam width of the model's prompt writing, 1 (greedy) to 8\n"
    "                             (default 4)\n"
    "      --db FILE              the context store (netgpt edge-db)\n"
    "      --cell ID              this node's cell, for requests that name none\n"
    "      --host ADDR            address to listen on (default 127.0.0.1)\n"
    "      --port N               port (default 8081; 0 = any free port)\n"
    "  -n, --max-tokens N         answer tokens when a request gives none (default 128)\n"
    "      --connect-timeout S    to connect to the cloud (default 2)\n"
    "      --idle-timeout S       with no byte from the cloud, incl. the first (default 10)\n"
    "      --cloud-timeout S      for a whole cloud answer (default 120)\n"
    "      --breaker N:S          open the breaker after N cloud failures in a row, for S seconds\n"
    "                             (default 3:30)\n"
    "      --max-body BYTES       largest request body (default 1048576)\n"
    "      --mmap                 read the edge model's weights through the file's memory mapping;\n"
    "                             by default they are copied into memory on huge pages, in the\n"
    "                             order this CPU's kernels read fastest (slower start)\n"
    "  -t, --threads N            threads for the edge model (default: all cores)\n";

int cmd_edge(int argc, char **argv) {
    edge_config cfg;
    edge_config_defaults(&cfg);
    cli_opts o;
    cli_opts_init(&o);
    ng_model_set_mmap(0); /* a server lives long, as netgpt serve: copy the weights */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (!strcmp(a, "--mmap")) ng_model_set_mmap(1);
        else if (!strcmp(a, "--cloud")) cfg.cloud_url = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--cloud-key")) cfg.cloud_key = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--cloud-model")) cfg.cloud_model = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--completion")) cfg.completion = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--completion-tokens"))
            cfg.completion_tokens = (int)cli_long(a, cli_value(argc, argv, &i), 1, 4096);
        else if (!strcmp(a, "--completion-beams"))
            cfg.completion_beams = (int)cli_long(a, cli_value(argc, argv, &i), 1, EDGE_MAX_BEAMS);
        else if (!strcmp(a, "--db")) cfg.db_path = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--cell")) cfg.cell = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--host")) cfg.host = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--port")) cfg.port = (int)cli_long(a, cli_value(argc, argv, &i), 0, 65535);
        else if (!strcmp(a, "--max-tokens")) cfg.max_tokens = (int)cli_long(a, cli_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(a, "--connect-timeout")) cfg.connect_timeout_s = cli_double(a, cli_value(argc, argv, &i), 0.01, 3600);
        else if (!strcmp(a, "--idle-timeout")) cfg.idle_timeout_s = cli_double(a, cli_value(argc, argv, &i), 0.01, 3600);
        else if (!strcmp(a, "--cloud-timeout")) cfg.total_timeout_s = cli_double(a, cli_value(argc, argv, &i), 0.01, 86400);
        else if (!strcmp(a, "--max-body")) cfg.max_body = (size_t)cli_long(a, cli_value(argc, argv, &i), 64, 1L << 32);
        else if (!strcmp(a, "--breaker")) {
            const char *v = cli_value(argc, argv, &i);
            int n;
            double sec;
            char tail;
            if (sscanf(v, "%d:%lf%c", &n, &sec, &tail) != 2 || n < 1 || n > 1000 || !(sec >= 0 && sec <= 86400)) {
                fprintf(stderr, "netgpt edge: --breaker '%s': expected N:SECONDS (N in [1, 1000])\n", v);
                return 2;
            }
            cfg.breaker_threshold = n, cfg.breaker_cooldown_s = sec;
        } else if (cli_common_flag(argc, argv, &i, &o)) continue;
        else cli_positional(&o, a, "edge");
    }
    const char *missing = o.n_pos ? "unexpected argument" : !cfg.cloud_url ? "--cloud URL is required"
                          : !o.model ? "-m EDGE_MODEL is required" : !cfg.db_path ? "--db FILE is required"
                          : o.n_lora > 1 ? "one --lora (the completion adapter) at most" : NULL;
    if (missing) {
        fprintf(stderr, "netgpt edge: %s (see --help)\n", missing);
        return 2;
    }
    cfg.model_path = o.model;
    cfg.lora_arg = o.n_lora ? o.lora[0] : NULL;
    cfg.threads = o.threads;
    if (o.n_predict > 0) cfg.max_tokens = o.n_predict;

    /* as in serve: SIGTERM/SIGINT reach only sigwait below; a client hanging up is no signal */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    cloud_global_init();

    ng_error err;
    edge_server *s = edge_start(&cfg, &err);
    if (!s) {
        fprintf(stderr, "netgpt edge: %s\n", err.msg);
        return 1;
    }
    int v6 = strchr(cfg.host, ':') != NULL;
    fprintf(stderr, "netgpt edge: %s, comprehensive prompts by the %s, cloud %s\n", cfg.model_path,
            edge_completion_kind(s), cfg.cloud_url);
    fprintf(stderr, "netgpt edge: listening on http://%s%s%s:%d\n", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
            edge_port(s));
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "netgpt edge: %s: stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    edge_stop(s);
    fprintf(stderr, "netgpt edge: stopped\n");
    return 0;
}
