/* privacy — a single left-to-right pass over the text; at each position the detectors are
 * tried in a fixed order (e-mail, user id, profile names, coordinate, phone) and the first
 * match is replaced. */
#include "edge/privacy.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

typedef struct {
    char *s;
    size_t n, cap;
} out_buf;

static void emit(out_buf *o, const char *s, size_t n) {
    if (o->n + n + 1 > o->cap) o->s = xrealloc(o->s, o->cap = 2 * (o->n + n + 1));
    memcpy(o->s + o->n, s, n);
    o->n += n;
    o->s[o->n] = 0;
}

static int is_word(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }

/* Case-insensitive whole-word match of w at text+i; its length or 0. */
static size_t word_at(const char *text, size_t i, size_t len, const char *w) {
    size_t n = strlen(w);
    if (n == 0 || i + n > len || strncasecmp(text + i, w, n) != 0) return 0;
    if (i > 0 && is_word((unsigned char)text[i - 1])) return 0;
    if (i + n < len && is_word((unsigned char)text[i + n])) return 0;
    return n;
}

static int email_char(unsigned char c) { return isalnum(c) || strchr("._%+-", c) != NULL; }

/* local@domain.tld starting at i (i must start the local part). */
static size_t email_at(const char *t, size_t i, size_t len) {
    if (i > 0 && email_char((unsigned char)t[i - 1])) return 0;
    size_t j = i;
    while (j < len && email_char((unsigned char)t[j])) j++;
    if (j == i || j >= len || t[j] != '@') return 0;
    size_t k = ++j, dots = 0;
    while (k < len && (isalnum((unsigned char)t[k]) || t[k] == '-' || (t[k] == '.' && k + 1 < len && isalnum((unsigned char)t[k + 1]))))
        dots += t[k++] == '.';
    return k > j && dots > 0 ? k - i : 0;
}

/* A decimal number with four or more decimals (optionally signed): about 10 m of precision. */
static size_t coord_at(const char *t, size_t i, size_t len) {
    if (i > 0 && (isdigit((unsigned char)t[i - 1]) || t[i - 1] == '.')) return 0;
    size_t j = i;
    if (j < len && (t[j] == '-' || t[j] == '+')) j++;
    size_t d0 = j;
    while (j < len && isdigit((unsigned char)t[j])) j++;
    if (j == d0 || j - d0 > 3 || j >= len || t[j] != '.') return 0;
    size_t f0 = ++j;
    while (j < len && isdigit((unsigned char)t[j])) j++;
    return j - f0 >= 4 ? j - i : 0;
}

/* An ISO date (2024-05-01) is digits and dashes too, but not a phone number. */
static int iso_date(const char *t, size_t n) {
    static const char shape[] = "dddd-dd-dd";
    if (n != 10) return 0;
    for (size_t k = 0; k < n; k++)
        if (shape[k] == 'd' ? !isdigit((unsigned char)t[k]) : t[k] != '-') return 0;
    return 1;
}

/* A phone number: starts with + or a digit or "(", runs of digits separated by at most two of
 * space, dash, dot and parentheses, seven or more digits in all. */
static size_t phone_at(const char *t, size_t i, size_t len) {
    if (i > 0 && (isalnum((unsigned char)t[i - 1]))) return 0;
    if (!(t[i] == '+' || t[i] == '(' || isdigit((unsigned char)t[i]))) return 0;
    size_t j = i + (t[i] == '+' || t[i] == '('), digits = 0, end = i;
    while (j < len) {
        if (isdigit((unsigned char)t[j])) {
            digits++;
            end = ++j;
            continue;
        }
        size_t k = j;
        while (k < len && k - j < 2 && strchr(" -.()", t[k])) k++;
        if (k == j || k >= len || !isdigit((unsigned char)t[k])) break;
        j = k;
    }
    if (digits < 7 || (end < len && isalpha((unsigned char)t[end])) || iso_date(t + i, end - i)) return 0;
    return end - i;
}

char *privacy_scrub(const char *text, const privacy_rules *r, privacy_report *rep) {
    privacy_report local = {0};
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    size_t len = strlen(text);
    out_buf o = {xmalloc(len + 1), 0, len + 1};
    o.s[0] = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        const char *ph = NULL;
        int *count = NULL;
        if ((n = email_at(text, i, len))) ph = "[email]", count = &rep->emails;
        if (!n && r && r->user_id && r->user_id[0] && (n = word_at(text, i, len, r->user_id)))
            ph = "[user]", count = &rep->user_ids;
        for (int k = 0; !n && r && k < r->n_names; k++)
            if ((n = word_at(text, i, len, r->names[k]))) ph = "[name]", count = &rep->names;
        if (!n && (n = coord_at(text, i, len))) ph = "[location]", count = &rep->coords;
        if (!n && (n = phone_at(text, i, len))) ph = "[phone]", count = &rep->phones;
        if (n) {
            emit(&o, ph, strlen(ph));
            (*count)++;
            i += n;
        } else {
            emit(&o, text + i, 1);
            i++;
        }
    }
    return o.s;
}
