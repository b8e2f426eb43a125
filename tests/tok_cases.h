/* tok_cases — the tokenizer fixtures' format, shared by test_bpe and test_spm: one case a
 * line, "HEX_OF_UTF8_TEXT<TAB>id id ...", "#" lines are comments. Loader and failure printers. */
#ifndef NG_TOK_CASES_H
#define NG_TOK_CASES_H

#include <stdbool.h>
#include <stdint.h>

#include "core/util.h"

typedef struct {
    char *text;
    size_t len;
    int *ids;
    int n_ids;
} tok_case;

static int tok_hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parses path into *cases (*n of them); false (and says where) on a malformed line. */
static bool tok_cases_load(const char *path, tok_case **cases, int *n_cases) {
    ng_error err = {{0}};
    size_t n;
    char *buf = ng_read_file(path, &n, &err);
    if (!buf) {
        fprintf(stderr, "%s\n", err.msg);
        return false;
    }
    int cap = 0, line = 0;
    bool ok = true;
    for (char *p = buf; ok && *p; line++) {
        char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        if (*p == '#') {
            p = *eol ? eol + 1 : eol;
            continue;
        }
        char *tab = memchr(p, '\t', (size_t)(eol - p));
        if (!tab || (tab - p) % 2) {
            fprintf(stderr, "%s:%d: expected HEX<TAB>ids\n", path, line + 1);
            ok = false;
            break;
        }
        if (*n_cases == cap) {
            cap = cap ? 2 * cap : 1024;
            *cases = xrealloc(*cases, (size_t)cap * sizeof **cases);
        }
        tok_case *c = &(*cases)[(*n_cases)++];
        c->len = (size_t)(tab - p) / 2;
        c->text = xmalloc(c->len + 1);
        for (size_t i = 0; i < c->len; i++) {
            int hi = tok_hex_val(p[2 * i]), lo = tok_hex_val(p[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                fprintf(stderr, "%s:%d: bad hex\n", path, line + 1);
                ok = false;
            }
            c->text[i] = (char)(hi << 4 | lo);
        }
        c->text[c->len] = 0;
        c->ids = xmalloc(((size_t)(eol - tab) / 2 + 1) * sizeof *c->ids);
        c->n_ids = 0;
        for (char *q = tab + 1; q < eol;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "%s:%d: bad id list\n", path, line + 1);
                ok = false;
                break;
            }
            c->ids[c->n_ids++] = (int)v;
            q = end;
            while (q < eol && *q == ' ') q++;
        }
        p = *eol ? eol + 1 : eol;
    }
    free(buf);
    return ok;
}

/* Prints text with C escapes, for failure messages. */
static void print_escaped(const char *s, size_t n) {
    fputc('"', stderr);
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '\t')
            fputs("\\t", stderr);
        else if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(n > 200 ? "\"..." : "\"", stderr);
}

static void print_ids(const char *label, const int *ids, int n) {
    fprintf(stderr, "    %s:", label);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fputs(n > 40 ? " ...\n" : "\n", stderr);
}

#endif
