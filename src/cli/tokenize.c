/* netgpt tokenize — text to token ids, and ids back to text. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char HELP[] =
    "usage: netgpt tokenize -m MODEL [options] TEXT...\n"
    "       netgpt tokenize -m MODEL --decode ID...\n"
    "\n"
    "Prints the token ids of TEXT separated by spaces (several TEXT arguments are joined by a\n"
    "space; '-' reads standard input), or with --decode the text of the given ids.\n"
    "\n"
    "  -m, --model PATH   GGUF file or Hugging Face model folder (only its tokenizer is used)\n"
    "  -f, --file PATH    read the text from a file\n"
    "      --decode       turn ids into text\n"
    "      --pieces       print each token's text beside its id, one per line\n"
    "      --no-bos       no BOS first (SentencePiece models get one by default)\n"
    "      --special      parse control tokens written in the text (\"<|endoftext|>\", \"<s>\")\n"
    "      --json         print a JSON array of ids\n";

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0)
        if ((n += got) + 1 >= cap) buf = xrealloc(buf, cap *= 2);
    buf[n] = 0;
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    int decode = 0, pieces = 0, no_bos = 0, special = 0;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--pieces")) pieces = 1;
        else if (!strcmp(a, "--no-bos")) no_bos = 1;
        else if (!strcmp(a, "--special")) special = 1;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = cli_value(argc, argv, &i);
        else cli_positional(&o, a, "tokenize");
    }
    if (!o.model) {
        fprintf(stderr, "netgpt tokenize: no model given (-m MODEL)\n");
        return 2;
    }
    ng_error lerr;
    ng_tokenizer *tok = tok_load(o.model, &lerr);
    if (!tok) ng_die("%s", lerr.msg);
    int rc = 0;
    if (decode) {
        for (int i = 0; i < o.n_pos; i++) {
            int id = (int)cli_long("--decode", o.pos[i], 0, 0x7fffffff);
            size_t len;
            const char *p = tok_piece(tok, id, &len);
            if (!p) ng_die("token id %d is out of range (vocabulary of %d)", id, tok_n_vocab(tok));
            fwrite(p, 1, len, stdout);
        }
        putchar('\n');
    } else {
        size_t len = 0;
        char *text;
        ng_error err;
        if (file) {
            if (!(text = ng_read_file(file, &len, &err))) ng_die("%s", err.msg);
        } else if (o.n_pos == 1 && !strcmp(o.pos[0], "-")) {
            text = read_stream(stdin, &len);
        } else {
            size_t cap = 1;
            for (int i = 0; i < o.n_pos; i++) cap += strlen(o.pos[i]) + 1;
            text = xmalloc(cap);
            text[0] = 0;
            for (int i = 0; i < o.n_pos; i++) {
                if (i) strcat(text, " ");
                strcat(text, o.pos[i]);
            }
            len = strlen(text);
        }
        int n, bos = tok_add_bos(tok) && !no_bos;
        int *text_ids = special ? tok_encode_special(tok, text, len, &n) : tok_encode(tok, text, len, &n);
        int *ids = xmalloc((size_t)(n + 1) * sizeof *ids);
        if (bos) ids[0] = tok_bos(tok);
        memcpy(ids + bos, text_ids, (size_t)n * sizeof *ids);
        n += bos;
        free(text_ids);
        if (o.json) putchar('[');
        for (int i = 0; i < n; i++) {
            if (pieces) {
                size_t pl;
                const char *p = tok_piece(tok, ids[i], &pl);
                printf("%d\t", ids[i]);
                fwrite(p, 1, pl, stdout);
                putchar('\n');
            } else {
                printf(i ? (o.json ? ",%d" : " %d") : "%d", ids[i]);
            }
        }
        if (!pieces) puts(o.json ? "]" : "");
        free(ids);
        free(text);
    }
    tok_free(tok);
    return rc;
}
