/* cli — shared command-line handling for the subcommands: the flags that mean the same in
 * every subcommand (DESIGN.md), strict number parsing, and the subcommand entry points.
 * CLI code fails fast: a bad flag prints what and where and exits with status 2. */
#ifndef NG_CLI_H
#define NG_CLI_H

#include "model/model.h"
#include "sample/sampler.h"

typedef struct {
    const char *model;  /* -m */
    const char *prompt; /* -p */
    int n_predict;      /* -n; -1 when not given */
    int threads;        /* -t (0 = all cores) */
    int ctx;            /* --ctx (0 = the model's) */
    int json;           /* --json */
    int seed_set;       /* --seed given */
    ng_sampler_params sp;
    const char *lora[8]; /* --lora PATH[:SCALE], repeatable */
    int n_lora;
    const char *pos[8]; /* positional arguments */
    int n_pos;
} cli_opts;

void cli_opts_init(cli_opts *o);
/* Consumes argv[*i] (and its value) when it is a shared flag: 1 consumed, 0 not shared. */
int cli_common_flag(int argc, char **argv, int *i, cli_opts *o);
/* The value of flag argv[*i] (advancing *i); exits when it is missing. */
const char *cli_value(int argc, char **argv, int *i);
long cli_long(const char *flag, const char *s, long min, long max);
double cli_double(const char *flag, const char *s, double min, double max);
/* Exits with "unknown option" for a leftover flag, or stores a positional argument. */
void cli_positional(cli_opts *o, const char *arg, const char *cmd);
/* Loads -m (exits with the loader's message on failure) and applies -t. */
ng_model *cli_load_model(const cli_opts *o);
/* The --lora adapters of o for m as one adapter (NULL when none given); exits on error. */
struct ng_lora *cli_load_lora(const cli_opts *o, const ng_model *m);

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_edge(int argc, char **argv);
int cmd_edge_db(int argc, char **argv);
int cmd_init(int argc, char **argv);

#endif
