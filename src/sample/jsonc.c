/* jsonc — JSON-constrained decoding: a pushdown recognizer over bytes, driven by a compiled
 * JSON Schema.
 *
 * The schema compiles into a table of nodes (node 0 is "any JSON value"). The recognizer keeps
 * a stack of open containers (each with its schema node, its position in the container's
 * grammar, the properties already seen and the element count) and one lexer for the scalar or
 * key being typed. Every byte either extends a prefix that can still be completed or is
 * rejected, so a caller that only ever picks accepted bytes always reaches a document that
 * parses and validates. What keeps it free of dead ends:
 *   - maxLength / maxItems / required / additionalProperties are checked before the byte that
 *     would make them unsatisfiable (a string's first byte of a character, a ',' or a '"');
 *   - \uXXXX escapes are checked digit by digit so no hex prefix leads only to a lone
 *     surrogate or to U+0000 (cJSON and C strings cannot carry either);
 *   - numbers are capped at JC_MAX_NUMBER bytes (cJSON parses at most 63) and a byte is taken
 *     only if the number can still end within the cap;
 *   - the schema may nest at most JC_MAX_DEPTH containers, so a required structure always fits
 *     the recognizer's stack.
 * Choices that make output canonical rather than merely valid (documented in the header):
 *   - at most JC_MAX_WS consecutive whitespace bytes outside strings, so a model cannot loop on
 *     spaces or newlines forever;
 *   - enum / const values must be typed exactly as cJSON's unformatted serialization;
 *   - in an object whose schema lists properties, keys may use only the short escapes
 *     (\" \\ \b \f \n \r \t), so a key's bytes decide at once whether it names a property;
 *   - "integer" accepts no fraction or exponent; strings may not contain \u0000. */
#include "sample/jsonc.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    JC_MAX_DEPTH = 64,  /* open containers in the output and nesting levels in the schema */
    JC_MAX_WS = 2,      /* consecutive whitespace bytes outside strings */
    JC_MAX_NUMBER = 32, /* bytes of one number */
    JC_MAX_PROPS = 64,  /* properties of one object schema (a 64-bit seen mask) */
};

/* Type bits. T_INTEGER alone admits integers; T_NUMBER admits every number. */
enum { T_OBJECT = 1, T_ARRAY = 2, T_STRING = 4, T_NUMBER = 8, T_INTEGER = 16, T_BOOL = 32, T_NULL = 64, T_ALL = 127 };

/* A literal alternative: an enum value's or a property name's canonical JSON text. */
typedef struct {
    char *s;
    uint32_t n;
    int node;      /* properties: the value's schema node */
    char *name;    /* properties: the decoded name */
    cJSON *value;  /* enum: the parsed value, for the tree validator */
} jc_lit;

typedef struct {
    uint8_t types;
    uint32_t enum0, n_enum;  /* lits[enum0 .. +n_enum), sorted by bytes */
    uint32_t prop0, n_props; /* props[prop0 .. +n_props), sorted by canonical key */
    uint64_t required;       /* bit i: props[prop0 + i] is required */
    int additional;          /* node for properties not listed, -1 when forbidden */
    int items;
    uint32_t min_len, max_len, min_items, max_items;
} jc_node;

typedef struct {
    atomic_int refs;
    jc_node *nodes;
    int n_nodes, cap_nodes;
    jc_lit *lits, *props;
    uint32_t n_lits, cap_lits, n_props, cap_props;
    int schemaless; /* json_object: the root must be an object */
} jc_schema;

/* Lexer modes. */
enum { M_NONE, M_STRING, M_KEY, M_NUMBER, M_LITERAL, M_ENUM };
/* Container states. */
enum { S_OBJ_START, S_OBJ_KEY, S_OBJ_COLON, S_OBJ_VALUE, S_OBJ_AFTER, S_ARR_START, S_ARR_VALUE, S_ARR_AFTER };
/* Number states. */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

typedef struct {
    uint16_t node;
    uint8_t st;
    int8_t is_obj;
    int32_t prop; /* object: index (relative to prop0) of the value being typed, -1 additional */
    uint32_t count;
    uint64_t seen;
} jc_frame;

/* The string lexer: escapes, \u digits, UTF-8 sequences and the length in code points. */
typedef struct {
    uint8_t esc;       /* 0, 1 after '\', 2..5 while reading \u digits (esc - 2 read) */
    uint8_t need;      /* UTF-8 continuation bytes still to come */
    uint8_t lo, hi;    /* range of the next continuation byte */
    uint16_t hex;      /* \u digits so far */
    uint16_t high;     /* a high surrogate waiting for its low half, else 0 */
    uint32_t len;      /* code points */
} jc_str;

/* The part of the state that changes with every byte; frames follow, `depth` of them live. */
typedef struct {
    uint8_t mode, done, ws, depth;
    uint8_t num, num_len, lit;
    uint16_t vnode; /* schema node of the scalar being typed */
    uint32_t lo, hi, pos; /* enum / key candidates (absolute indices) and bytes matched */
    jc_str str;
    jc_frame stack[JC_MAX_DEPTH];
} jc_state;

#define STATE_HEAD offsetof(jc_state, stack)

struct jsonc {
    jc_schema *sc;
    jc_state st;
};

/* ---- schema compilation ------------------------------------------------------------------- */

static int node_add(jc_schema *sc) {
    if (sc->n_nodes == sc->cap_nodes) {
        sc->cap_nodes = sc->cap_nodes ? 2 * sc->cap_nodes : 16;
        sc->nodes = xrealloc(sc->nodes, (size_t)sc->cap_nodes * sizeof *sc->nodes);
    }
    jc_node *n = &sc->nodes[sc->n_nodes];
    memset(n, 0, sizeof *n);
    n->types = T_ALL;
    n->items = 0;
    n->additional = 0;
    n->max_len = n->max_items = UINT32_MAX;
    return sc->n_nodes++;
}

static jc_lit *lit_push(jc_lit **arr, uint32_t *n, uint32_t *cap) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *arr = xrealloc(*arr, (size_t)*cap * sizeof **arr);
    }
    jc_lit *l = &(*arr)[(*n)++];
    memset(l, 0, sizeof *l);
    return l;
}

static int lit_cmp(const void *a, const void *b) {
    const jc_lit *x = a, *y = b;
    uint32_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, m);
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static void schema_free(jc_schema *sc) {
    if (!sc) return;
    for (uint32_t i = 0; i < sc->n_lits; i++) {
        free(sc->lits[i].s);
        cJSON_Delete(sc->lits[i].value);
    }
    for (uint32_t i = 0; i < sc->n_props; i++) {
        free(sc->props[i].s);
        free(sc->props[i].name);
    }
    free(sc->lits);
    free(sc->props);
    free(sc->nodes);
    free(sc);
}

/* Canonical JSON text of a property name (quotes included), as a key must be typed; NULL when
 * the name holds a control character that only a \u escape could write. */
static char *key_text(const char *name, uint32_t *n) {
    size_t len = strlen(name);
    char *out = xmalloc(2 * len + 3), *o = out;
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        const char *e = NULL;
        switch (*p) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
            if (*p < 0x20) {
                free(out);
                return NULL;
            }
        }
        if (e) {
            memcpy(o, e, 2);
            o += 2;
        } else {
            *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *n = (uint32_t)(o - out);
    return out;
}

static int val_node(const jc_schema *sc, int ni, const cJSON *v);

static int read_count(const cJSON *v, const char *kw, const char *path, uint32_t *out, ng_error *err) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 4294967295.0 || v->valuedouble != floor(v->valuedouble))
        return ng_error_set(err, "jsonc: schema %s: \"%s\" must be a non-negative integer", path, kw);
    *out = (uint32_t)v->valuedouble;
    return NG_OK;
}

static int type_bit(const cJSON *t) {
    static const struct {
        const char *name;
        int bit;
    } names[] = {{"object", T_OBJECT}, {"array", T_ARRAY},     {"string", T_STRING}, {"number", T_NUMBER},
                 {"integer", T_INTEGER}, {"boolean", T_BOOL}, {"null", T_NULL}};
    if (!cJSON_IsString(t)) return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(t->valuestring, names[i].name) == 0) return names[i].bit;
    return 0;
}

/* Compiles schema s found at path (level: containers around it) into a new node; -1 + err. */
static int compile(jc_schema *sc, const cJSON *s, int level, const char *path, ng_error *err) {
    if (level > JC_MAX_DEPTH - 1) {
        ng_error_set(err, "jsonc: schema %s nests deeper than %d levels", path, JC_MAX_DEPTH);
        return -1;
    }
    if (cJSON_IsTrue(s)) return 0;
    if (!cJSON_IsObject(s)) {
        ng_error_set(err, "jsonc: schema %s must be an object or true", path);
        return -1;
    }
    int ni = node_add(sc);
    const cJSON *enum_v = NULL, *const_v = NULL, *required = NULL, *props_v = NULL;
    char sub[512];
    for (const cJSON *kw = s->child; kw; kw = kw->next) {
        const char *k = kw->string;
        jc_node tmp = sc->nodes[ni];
        if (strcmp(k, "type") == 0) {
            int bits = 0;
            if (cJSON_IsArray(kw)) {
                for (const cJSON *t = kw->child; t; t = t->next) {
                    int b = type_bit(t);
                    if (!b) goto bad_type;
                    bits |= b;
                }
            } else if (!(bits = type_bit(kw))) {
                goto bad_type;
            }
            if (!bits) goto bad_type;
            tmp.types = (uint8_t)bits;
        } else if (strcmp(k, "properties") == 0) {
            if (!cJSON_IsObject(kw)) {
                ng_error_set(err, "jsonc: schema %s: \"properties\" must be an object", path);
                return -1;
            }
            props_v = kw;
        } else if (strcmp(k, "required") == 0) {
            if (!cJSON_IsArray(kw)) {
                ng_error_set(err, "jsonc: schema %s: \"required\" must be an array of strings", path);
                return -1;
            }
            for (const cJSON *r = kw->child; r; r = r->next)
                if (!cJSON_IsString(r)) {
                    ng_error_set(err, "jsonc: schema %s: \"required\" must be an array of strings", path);
                    return -1;
                }
            required = kw;
        } else if (strcmp(k, "additionalProperties") == 0) {
            if (cJSON_IsFalse(kw)) {
                tmp.additional = -1;
            } else {
                snprintf(sub, sizeof sub, "%s/additionalProperties", path);
                int c = compile(sc, kw, level + 1, sub, err);
                if (c < 0) return -1;
                tmp = sc->nodes[ni];
                tmp.additional = c;
            }
        } else if (strcmp(k, "items") == 0) {
            if (cJSON_IsArray(kw)) {
                ng_error_set(err, "jsonc: schema %s: \"items\" as a list (tuple validation) is not supported", path);
                return -1;
            }
            snprintf(sub, sizeof sub, "%s/items", path);
            int c = compile(sc, kw, level + 1, sub, err);
            if (c < 0) return -1;
            tmp = sc->nodes[ni];
            tmp.items = c;
        } else if (strcmp(k, "enum") == 0) {
            if (!cJSON_IsArray(kw) || !kw->child) {
                ng_error_set(err, "jsonc: schema %s: \"enum\" must be a non-empty array", path);
                return -1;
            }
            enum_v = kw;
        } else if (strcmp(k, "const") == 0) {
            const_v = kw;
        } else if (strcmp(k, "minLength") == 0) {
            if (read_count(kw, k, path, &tmp.min_len, err)) return -1;
        } else if (strcmp(k, "maxLength") == 0) {
            if (read_count(kw, k, path, &tmp.max_len, err)) return -1;
        } else if (strcmp(k, "minItems") == 0) {
            if (read_count(kw, k, path, &tmp.min_items, err)) return -1;
        } else if (strcmp(k, "maxItems") == 0) {
            if (read_count(kw, k, path, &tmp.max_items, err)) return -1;
        } else if (strcmp(k, "title") && strcmp(k, "description") && strcmp(k, "default") && strcmp(k, "examples") &&
                   strcmp(k, "$schema") && strcmp(k, "$id") && strcmp(k, "$comment")) {
            /* annotations above change nothing; every other keyword would constrain output */
            ng_error_set(err, "jsonc: schema %s: keyword \"%s\" is not supported", path, k);
            return -1;
        }
        sc->nodes[ni] = tmp;
    }
    /* properties: those listed, then required names not listed (valued by additionalProperties) */
    const char *names[JC_MAX_PROPS];
    int kids[JC_MAX_PROPS], np = 0;
    for (const cJSON *p = props_v ? props_v->child : NULL; p; p = p->next) {
        for (int i = 0; i < np; i++)
            if (strcmp(names[i], p->string) == 0) {
                ng_error_set(err, "jsonc: schema %s: property \"%s\" listed twice", path, p->string);
                return -1;
            }
        if (np == JC_MAX_PROPS) goto too_many;
        snprintf(sub, sizeof sub, "%s/properties/%s", path, p->string);
        int c = compile(sc, p, level + 1, sub, err);
        if (c < 0) return -1;
        names[np] = p->string;
        kids[np++] = c;
    }
    for (const cJSON *r = required ? required->child : NULL; r; r = r->next) {
        int i = 0;
        while (i < np && strcmp(names[i], r->valuestring) != 0) i++;
        if (i < np) continue;
        if (sc->nodes[ni].additional < 0) {
            ng_error_set(err, "jsonc: schema %s: required property \"%s\" is not in properties and additionalProperties is false",
                         path, r->valuestring);
            return -1;
        }
        if (np == JC_MAX_PROPS) goto too_many;
        names[np] = r->valuestring;
        kids[np++] = sc->nodes[ni].additional;
    }
    jc_node *n = &sc->nodes[ni];
    n->prop0 = sc->n_props;
    n->n_props = (uint32_t)np;
    for (int i = 0; i < np; i++) {
        uint32_t len;
        char *text = key_text(names[i], &len);
        if (!text) {
            ng_error_set(err, "jsonc: schema %s: property name \"%s\" holds a control character (not supported)", path, names[i]);
            return -1;
        }
        jc_lit *l = lit_push(&sc->props, &sc->n_props, &sc->cap_props);
        l->s = text;
        l->n = len;
        l->name = xstrdup(names[i]);
        l->node = kids[i];
    }
    if (np) qsort(sc->props + n->prop0, n->n_props, sizeof *sc->props, lit_cmp);
    for (const cJSON *r = required ? required->child : NULL; r; r = r->next)
        for (uint32_t i = 0; i < n->n_props; i++)
            if (strcmp(sc->props[n->prop0 + i].name, r->valuestring) == 0) n->required |= 1ull << i;
    if (n->min_len > n->max_len) {
        ng_error_set(err, "jsonc: schema %s: minLength is greater than maxLength", path);
        return -1;
    }
    if (n->min_items > n->max_items) {
        ng_error_set(err, "jsonc: schema %s: minItems is greater than maxItems", path);
        return -1;
    }
    if (enum_v || const_v) {
        /* the alternatives: enum values (or the const) that satisfy the rest of this schema */
        n->enum0 = sc->n_lits;
        const cJSON *first = enum_v ? enum_v->child : const_v;
        for (const cJSON *v = first; v; v = enum_v ? v->next : NULL) {
            if (enum_v && const_v && !cJSON_Compare(v, const_v, 1)) continue;
            if (!val_node(sc, ni, v)) continue;
            char *text = cJSON_PrintUnformatted(v);
            jc_lit *l = lit_push(&sc->lits, &sc->n_lits, &sc->cap_lits);
            l->s = text;
            l->n = (uint32_t)strlen(text);
            l->value = cJSON_Duplicate(v, 1);
        }
        n = &sc->nodes[ni];
        n->n_enum = sc->n_lits - n->enum0;
        if (!n->n_enum) {
            ng_error_set(err, "jsonc: schema %s: no enum/const value satisfies the schema", path);
            return -1;
        }
        jc_lit *l = sc->lits + n->enum0;
        qsort(l, n->n_enum, sizeof *l, lit_cmp);
        uint32_t k = 1; /* drop duplicates: one text may not stand for two alternatives */
        for (uint32_t i = 1; i < n->n_enum; i++) {
            if (lit_cmp(&l[i], &l[k - 1]) == 0) {
                free(l[i].s);
                cJSON_Delete(l[i].value);
            } else {
                l[k++] = l[i];
            }
        }
        sc->n_lits -= n->n_enum - k;
        n->n_enum = k;
    }
    return ni;
too_many:
    ng_error_set(err, "jsonc: schema %s: more than %d properties", path, JC_MAX_PROPS);
    return -1;
bad_type:
    ng_error_set(err, "jsonc: schema %s: \"type\" must name object, array, string, number, integer, boolean or null", path);
    return -1;
}

/* ---- tree validator (for compile-time enum filtering and for callers' checks) --------------- */

/* Code points of a UTF-8 string, -1 when it is not valid UTF-8 (shortest form, no surrogates). */
static long utf8_count(const unsigned char *s) {
    long n = 0;
    while (*s) {
        unsigned c = *s, need, lo = 0x80, hi = 0xBF;
        if (c < 0x80) need = 0;
        else if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else return -1;
        s++;
        for (unsigned i = 0; i < need; i++, s++) {
            if (*s < lo || *s > hi) return -1;
            lo = 0x80, hi = 0xBF;
        }
        n++;
    }
    return n;
}

static int val_node(const jc_schema *sc, int ni, const cJSON *v) {
    const jc_node *n = &sc->nodes[ni];
    int t;
    if (cJSON_IsObject(v)) t = T_OBJECT;
    else if (cJSON_IsArray(v)) t = T_ARRAY;
    else if (cJSON_IsString(v)) t = T_STRING;
    else if (cJSON_IsBool(v)) t = T_BOOL;
    else if (cJSON_IsNull(v)) t = T_NULL;
    else if (cJSON_IsNumber(v)) t = isfinite(v->valuedouble) && v->valuedouble == floor(v->valuedouble) ? T_INTEGER : T_NUMBER;
    else return 0;
    if (!(n->types & t) && !(t == T_INTEGER && (n->types & T_NUMBER))) return 0;
    if (n->n_enum) {
        uint32_t i = 0;
        while (i < n->n_enum && !cJSON_Compare(v, sc->lits[n->enum0 + i].value, 1)) i++;
        if (i == n->n_enum) return 0;
    }
    if (t == T_STRING) {
        long len = utf8_count((const unsigned char *)v->valuestring);
        if (len < 0 || (uint64_t)len < n->min_len || (uint64_t)len > n->max_len) return 0;
    } else if (t == T_ARRAY) {
        uint64_t count = 0;
        for (const cJSON *e = v->child; e; e = e->next, count++)
            if (!val_node(sc, n->items, e)) return 0;
        if (count < n->min_items || count > n->max_items) return 0;
    } else if (t == T_OBJECT) {
        uint64_t seen = 0;
        for (const cJSON *e = v->child; e; e = e->next) {
            if (utf8_count((const unsigned char *)e->string) < 0) return 0;
            uint32_t i = 0;
            while (i < n->n_props && strcmp(sc->props[n->prop0 + i].name, e->string) != 0) i++;
            if (i < n->n_props) {
                seen |= 1ull << i;
                if (!val_node(sc, sc->props[n->prop0 + i].node, e)) return 0;
            } else if (n->additional < 0 || !val_node(sc, n->additional, e)) {
                return 0;
            }
        }
        if ((seen & n->required) != n->required) return 0;
    }
    return 1;
}

int jsonc_validate(const jsonc *c, const char *text, size_t n) {
    if (memchr(text, 0, n)) return 0; /* cJSON would stop at the NUL */
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!v) return 0;
    int ok = 1;
    for (const char *p = end; p < text + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') ok = 0;
    if (ok && c->sc->schemaless && !cJSON_IsObject(v)) ok = 0;
    if (ok) ok = val_node(c->sc, 1, v);
    cJSON_Delete(v);
    return ok;
}

/* ---- the recognizer ----------------------------------------------------------------------- */

static int is_ws(unsigned b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }

/* Narrows candidates [lo, hi) of arr, which share their first pos bytes, to those whose byte at
 * pos is b. Sorted by bytes, a candidate of length pos comes first and the rest are ordered by
 * their byte at pos, so the result is again a range. */
static void range_narrow(const jc_lit *arr, uint32_t *lo, uint32_t *hi, uint32_t pos, unsigned b) {
    uint32_t a = *lo, z = *hi;
    if (a < z && arr[a].n == pos) a++;
    uint32_t l = a, r = z; /* first with byte >= b */
    while (l < r) {
        uint32_t m = l + (r - l) / 2;
        if ((unsigned char)arr[m].s[pos] < b) l = m + 1;
        else r = m;
    }
    uint32_t first = l;
    r = z; /* first with byte > b */
    while (l < r) {
        uint32_t m = l + (r - l) / 2;
        if ((unsigned char)arr[m].s[pos] <= b) l = m + 1;
        else r = m;
    }
    *lo = first;
    *hi = l;
}

enum { R_FAIL, R_CONT, R_DONE };

/* One byte of a string's content (after its opening quote). short_esc: only \" \\ \b \f \n \r \t;
 * max_len: the limit on code points. */
static int str_byte(jc_str *s, unsigned b, int short_esc, uint32_t max_len) {
    if (s->need) {
        if (b < s->lo || b > s->hi) return R_FAIL;
        s->need--;
        s->lo = 0x80, s->hi = 0xBF;
        return R_CONT;
    }
    if (s->esc == 1) {
        switch (b) {
        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
            if (s->high) return R_FAIL;
            s->esc = 0;
            return R_CONT;
        case '/':
            if (s->high || short_esc) return R_FAIL;
            s->esc = 0;
            return R_CONT;
        case 'u':
            if (short_esc) return R_FAIL;
            s->esc = 2;
            s->hex = 0;
            return R_CONT;
        default:
            return R_FAIL;
        }
    }
    if (s->esc >= 2) {
        unsigned d;
        if (b >= '0' && b <= '9') d = b - '0';
        else if (b >= 'a' && b <= 'f') d = b - 'a' + 10;
        else if (b >= 'A' && b <= 'F') d = b - 'A' + 10;
        else return R_FAIL;
        unsigned v = (unsigned)s->hex << 4 | d, rest = 4 * (5 - s->esc);
        unsigned lo = v << rest, hi = lo | ((1u << rest) - 1);
        if (s->high) {
            if (hi < 0xDC00 || lo > 0xDFFF) return R_FAIL; /* must become the low half */
        } else if (hi == 0 || (lo >= 0xDC00 && hi <= 0xDFFF)) {
            return R_FAIL; /* only U+0000 or a lone low surrogate could follow */
        }
        s->hex = (uint16_t)v;
        if (s->esc < 5) {
            s->esc++;
            return R_CONT;
        }
        s->esc = 0;
        if (s->high) s->high = 0;
        else if (v >= 0xD800 && v <= 0xDBFF) s->high = (uint16_t)v;
        return R_CONT;
    }
    if (s->high) { /* after a high surrogate only "\u" may come */
        if (b != '\\') return R_FAIL;
        s->esc = 1;
        return R_CONT;
    }
    if (b == '"') return R_DONE;
    if (b < 0x20) return R_FAIL;
    if (b >= 0x80 && (b < 0xC2 || b > 0xF4)) return R_FAIL;
    if (s->len >= max_len) return R_FAIL; /* b starts a character */
    s->len++;
    if (b == '\\') s->esc = 1;
    else if (b >= 0xF0) s->need = 3, s->lo = b == 0xF0 ? 0x90 : 0x80, s->hi = b == 0xF4 ? 0x8F : 0xBF;
    else if (b >= 0xE0) s->need = 2, s->lo = b == 0xE0 ? 0xA0 : 0x80, s->hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xC0) s->need = 1, s->lo = 0x80, s->hi = 0xBF;
    return R_CONT;
}

/* Whether a number in state st (of num_len bytes) may end here. */
static int num_final(unsigned st) { return st == N_ZERO || st == N_INT || st == N_FRAC || st == N_EXP; }

/* One byte of a number: R_CONT when it extends it, R_DONE when it cannot but the number is
 * complete (the byte is then the next token's), R_FAIL otherwise. */
static int num_byte(jc_state *s, unsigned b, int integer_only) {
    int digit = b >= '0' && b <= '9';
    int nx = -1;
    switch (s->num) {
    case N_MINUS: if (digit) nx = b == '0' ? N_ZERO : N_INT; break;
    case N_ZERO:
        if (b == '.' && !integer_only) nx = N_DOT;
        else if ((b == 'e' || b == 'E') && !integer_only) nx = N_E;
        break;
    case N_INT:
        if (digit) nx = N_INT;
        else if (b == '.' && !integer_only) nx = N_DOT;
        else if ((b == 'e' || b == 'E') && !integer_only) nx = N_E;
        break;
    case N_DOT: if (digit) nx = N_FRAC; break;
    case N_FRAC:
        if (digit) nx = N_FRAC;
        else if (b == 'e' || b == 'E') nx = N_E;
        break;
    case N_E:
        if (digit) nx = N_EXP;
        else if (b == '+' || b == '-') nx = N_ESIGN;
        break;
    case N_ESIGN: if (digit) nx = N_EXP; break;
    case N_EXP: if (digit) nx = N_EXP; break;
    }
    if (nx < 0) {
        if (digit && s->num == N_ZERO) return R_FAIL; /* a leading zero */
        return num_final(s->num) ? R_DONE : R_FAIL;
    }
    if (s->num_len + 1 + !num_final((unsigned)nx) > JC_MAX_NUMBER) return R_FAIL;
    s->num = (uint8_t)nx;
    s->num_len++;
    return R_CONT;
}

/* Whether a key could start in object frame f: an unseen property or any other name. */
static int key_possible(const jc_schema *sc, const jc_frame *f) {
    const jc_node *n = &sc->nodes[f->node];
    if (n->additional >= 0) return 1;
    uint64_t all = n->n_props == 64 ? ~0ull : (1ull << n->n_props) - 1;
    return (all & ~f->seen) != 0;
}

/* A value (scalar or container) has ended: its container moves on. */
static void value_done(const jc_schema *sc, jc_state *s) {
    s->mode = M_NONE;
    if (!s->depth) {
        s->done = 1;
        return;
    }
    jc_frame *f = &s->stack[s->depth - 1];
    if (f->is_obj) {
        f->st = S_OBJ_AFTER;
    } else {
        f->count++;
        f->st = S_ARR_AFTER;
    }
}

static const char *const literal_words[3] = {"true", "false", "null"};

/* First byte of a value of schema node ni. */
static int value_start(const jc_schema *sc, jc_state *s, int ni, unsigned b) {
    const jc_node *n = &sc->nodes[ni];
    s->vnode = (uint16_t)ni;
    if (n->n_enum) {
        s->lo = n->enum0;
        s->hi = n->enum0 + n->n_enum;
        range_narrow(sc->lits, &s->lo, &s->hi, 0, b);
        if (s->lo == s->hi) return 0;
        s->pos = 1;
        s->mode = M_ENUM;
        return 1;
    }
    if (b == '{' || b == '[') {
        if (!(n->types & (b == '{' ? T_OBJECT : T_ARRAY)) || s->depth == JC_MAX_DEPTH) return 0;
        jc_frame *f = &s->stack[s->depth++];
        f->node = (uint16_t)ni;
        f->is_obj = b == '{';
        f->st = b == '{' ? S_OBJ_START : S_ARR_START;
        f->prop = -1;
        f->count = 0;
        f->seen = 0;
        return 1;
    }
    if (b == '"') {
        if (!(n->types & T_STRING)) return 0;
        memset(&s->str, 0, sizeof s->str);
        s->mode = M_STRING;
        return 1;
    }
    if (b == '-' || (b >= '0' && b <= '9')) {
        if (!(n->types & (T_NUMBER | T_INTEGER))) return 0;
        s->num = b == '-' ? N_MINUS : b == '0' ? N_ZERO : N_INT;
        s->num_len = 1;
        s->mode = M_NUMBER;
        return 1;
    }
    int w = b == 't' ? 0 : b == 'f' ? 1 : b == 'n' ? 2 : -1;
    if (w < 0 || !(n->types & (w == 2 ? T_NULL : T_BOOL))) return 0;
    s->lit = (uint8_t)w;
    s->pos = 1;
    s->mode = M_LITERAL;
    return 1;
}

/* The opening quote of a key in object frame f. */
static int key_start(const jc_schema *sc, jc_state *s, const jc_frame *f, unsigned b) {
    const jc_node *n = &sc->nodes[f->node];
    if (b != '"' || !key_possible(sc, f)) return 0;
    memset(&s->str, 0, sizeof s->str);
    s->lo = n->prop0;
    s->hi = n->prop0 + n->n_props;
    s->pos = 1;
    s->mode = M_KEY;
    return 1;
}

/* A byte between tokens: whitespace, punctuation, or the first byte of a key or value. */
static int between(const jc_schema *sc, jc_state *s, unsigned b) {
    if (is_ws(b)) {
        if (s->ws >= JC_MAX_WS) return 0;
        s->ws++;
        return 1;
    }
    s->ws = 0;
    if (!s->depth) return s->done ? 0 : value_start(sc, s, 1, b);
    jc_frame *f = &s->stack[s->depth - 1];
    const jc_node *n = &sc->nodes[f->node];
    switch (f->st) {
    case S_OBJ_START:
    case S_OBJ_AFTER:
        if (b == '}') {
            if ((f->seen & n->required) != n->required) return 0;
            s->depth--;
            value_done(sc, s);
            return 1;
        }
        if (f->st == S_OBJ_START) return key_start(sc, s, f, b);
        if (b != ',' || !key_possible(sc, f)) return 0;
        f->st = S_OBJ_KEY;
        return 1;
    case S_OBJ_KEY:
        return key_start(sc, s, f, b);
    case S_OBJ_COLON:
        if (b != ':') return 0;
        f->st = S_OBJ_VALUE;
        return 1;
    case S_OBJ_VALUE:
        return value_start(sc, s, f->prop < 0 ? n->additional : sc->props[n->prop0 + (uint32_t)f->prop].node, b);
    case S_ARR_START:
        if (b == ']' && n->min_items == 0) break;
        if (n->max_items == 0) return 0;
        return value_start(sc, s, n->items, b);
    case S_ARR_VALUE:
        return value_start(sc, s, n->items, b);
    case S_ARR_AFTER:
        if (b == ',' && f->count < n->max_items) {
            f->st = S_ARR_VALUE;
            return 1;
        }
        if (b == ']' && f->count >= n->min_items) break;
        return 0;
    default:
        return 0;
    }
    s->depth--; /* ']' */
    value_done(sc, s);
    return 1;
}

/* One byte of a key (after its opening quote). */
static int key_byte(const jc_schema *sc, jc_state *s, unsigned b) {
    jc_frame *f = &s->stack[s->depth - 1];
    const jc_node *n = &sc->nodes[f->node];
    int r = str_byte(&s->str, b, n->n_props > 0, UINT32_MAX);
    if (r == R_FAIL) return 0;
    range_narrow(sc->props, &s->lo, &s->hi, s->pos, b);
    s->pos++;
    uint32_t lo = s->lo - n->prop0, hi = s->hi - n->prop0;
    if (r == R_DONE) {
        if (s->lo < s->hi && sc->props[s->lo].n == s->pos) {
            if (f->seen >> lo & 1) return 0; /* a property given twice */
            f->seen |= 1ull << lo;
            f->prop = (int32_t)lo;
        } else if (n->additional >= 0) {
            f->prop = -1;
        } else {
            return 0;
        }
        f->st = S_OBJ_COLON;
        s->mode = M_NONE;
        return 1;
    }
    if (n->additional >= 0) return 1;
    if (lo >= hi) return 0;
    uint64_t in_range = (hi >= 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
    return (in_range & ~f->seen) != 0;
}

static int step(const jc_schema *sc, jc_state *s, unsigned b) {
    switch (s->mode) {
    case M_STRING: {
        int r = str_byte(&s->str, b, 0, sc->nodes[s->vnode].max_len);
        if (r == R_DONE) {
            if (s->str.len < sc->nodes[s->vnode].min_len) return 0;
            value_done(sc, s);
        }
        return r != R_FAIL;
    }
    case M_KEY:
        return key_byte(sc, s, b);
    case M_LITERAL: {
        const char *w = literal_words[s->lit];
        if (b != (unsigned char)w[s->pos]) return 0;
        if (!w[++s->pos]) value_done(sc, s);
        return 1;
    }
    case M_NUMBER: {
        const jc_node *n = &sc->nodes[s->vnode];
        int r = num_byte(s, b, !(n->types & T_NUMBER));
        if (r != R_DONE) return r == R_CONT;
        value_done(sc, s);
        return between(sc, s, b);
    }
    case M_ENUM: {
        uint32_t lo = s->lo, hi = s->hi;
        int exact = sc->lits[lo].n == s->pos;
        range_narrow(sc->lits, &lo, &hi, s->pos, b);
        if (lo < hi) {
            s->lo = lo, s->hi = hi;
            s->pos++;
            return 1;
        }
        if (!exact) return 0;
        value_done(sc, s);
        return between(sc, s, b);
    }
    default:
        return between(sc, s, b);
    }
}

static int state_feed(const jc_schema *sc, jc_state *s, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!step(sc, s, p[i])) return 0;
    return 1;
}

/* Copies the live part of a state: the head and the open frames. */
static void state_copy(jc_state *dst, const jc_state *src) {
    memcpy(dst, src, STATE_HEAD + src->depth * sizeof src->stack[0]);
}

static int state_complete(const jc_schema *sc, const jc_state *s) {
    if (s->depth) return 0;
    if (s->done) return 1;
    if (s->mode == M_NUMBER) return num_final(s->num);
    if (s->mode == M_ENUM) return sc->lits[s->lo].n == s->pos;
    return 0;
}

/* ---- public API --------------------------------------------------------------------------- */

jsonc *jsonc_new(const char *schema_json, ng_error *err) {
    jc_schema *sc = xcalloc(1, sizeof *sc);
    atomic_init(&sc->refs, 1);
    node_add(sc); /* node 0: any value */
    cJSON *root = NULL;
    if (!schema_json) {
        int r = node_add(sc);
        sc->nodes[r].types = T_OBJECT;
        sc->schemaless = 1;
    } else {
        const char *end = NULL;
        root = cJSON_ParseWithOpts(schema_json, &end, 1);
        if (!root) {
            ng_error_set(err, "jsonc: the schema is not valid JSON (near byte %zu)", end ? (size_t)(end - schema_json) : 0);
            goto fail;
        }
        if (cJSON_IsTrue(root)) {
            node_add(sc); /* node 1: the root, any value */
        } else {
            /* the root must be node 1: compile objects that start at node 1 */
            if (!cJSON_IsObject(root)) {
                ng_error_set(err, "jsonc: schema / must be an object or true");
                goto fail;
            }
            if (compile(sc, root, 0, "/", err) != 1) goto fail;
        }
        cJSON_Delete(root);
    }
    if (sc->n_nodes > UINT16_MAX) {
        ng_error_set(err, "jsonc: the schema has more than %d subschemas", UINT16_MAX);
        schema_free(sc);
        return NULL;
    }
    jsonc *c = xcalloc(1, sizeof *c);
    c->sc = sc;
    return c;
fail:
    cJSON_Delete(root);
    schema_free(sc);
    return NULL;
}

jsonc *jsonc_clone(const jsonc *c) {
    jsonc *d = xmalloc(sizeof *d);
    d->sc = c->sc;
    atomic_fetch_add(&c->sc->refs, 1);
    state_copy(&d->st, &c->st);
    return d;
}

void jsonc_free(jsonc *c) {
    if (!c) return;
    if (atomic_fetch_sub(&c->sc->refs, 1) == 1) schema_free(c->sc);
    free(c);
}

int jsonc_try(const jsonc *c, const char *bytes, size_t n) {
    jc_state s;
    state_copy(&s, &c->st);
    return state_feed(c->sc, &s, (const unsigned char *)bytes, n);
}

int jsonc_feed(jsonc *c, const char *bytes, size_t n) {
    jc_state s;
    state_copy(&s, &c->st);
    if (!state_feed(c->sc, &s, (const unsigned char *)bytes, n)) return NG_ERR;
    state_copy(&c->st, &s);
    return NG_OK;
}

int jsonc_complete(const jsonc *c) { return state_complete(c->sc, &c->st); }

/* Whether token id may come next; first: which single bytes may (a quick filter). */
static int token_ok(const jsonc *c, const ng_tokenizer *tok, int id, int eos, int bos, int complete,
                    const unsigned char *first) {
    if (id == eos) return complete;
    if (id == bos) return 0;
    size_t len = 0;
    const char *p = tok_piece(tok, id, &len);
    if (!p || !len || !first[(unsigned char)p[0]]) return 0; /* empty pieces could repeat forever */
    return len == 1 || jsonc_try(c, p, len);
}

static void first_bytes(const jsonc *c, unsigned char *first) {
    for (int b = 0; b < 256; b++) {
        char ch = (char)b;
        first[b] = (unsigned char)jsonc_try(c, &ch, 1);
    }
}

void jsonc_mask(const jsonc *c, const ng_tokenizer *tok, float *logits, int n_vocab, int eos) {
    unsigned char first[256];
    first_bytes(c, first);
    int complete = jsonc_complete(c), bos = tok_bos(tok), nt = tok_n_vocab(tok);
    for (int id = 0; id < n_vocab; id++) {
        if (logits[id] == -INFINITY) continue;
        if (id >= nt || !token_ok(c, tok, id, eos, bos, complete, first)) logits[id] = -INFINITY;
    }
}

void jsonc_mask_top(const jsonc *c, const ng_tokenizer *tok, float *logits, int n_vocab, int eos, int k) {
    if (k <= 0 || k >= n_vocab) {
        jsonc_mask(c, tok, logits, n_vocab, eos);
        return;
    }
    /* the k best ids, best first, by insertion into a short sorted list */
    int small[64], *top = k <= 64 ? small : xmalloc((size_t)k * sizeof *top);
    int m = 0;
    for (int id = 0; id < n_vocab; id++) {
        float v = logits[id];
        if (v == -INFINITY || (m == k && v <= logits[top[m - 1]])) continue;
        int j = m < k ? m++ : m - 1;
        while (j > 0 && logits[top[j - 1]] < v) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = id;
    }
    unsigned char first[256];
    first_bytes(c, first);
    int complete = jsonc_complete(c), bos = tok_bos(tok), nt = tok_n_vocab(tok), kept = 0;
    for (int i = 0; i < m; i++) {
        if (top[i] < nt && token_ok(c, tok, top[i], eos, bos, complete, first)) top[kept++] = top[i];
        else top[i] = -1;
    }
    if (!kept) {
        if (top != small) free(top);
        jsonc_mask(c, tok, logits, n_vocab, eos);
        return;
    }
    /* keep the allowed ones' values, clear everything else */
    float vals[64], *kv = kept <= 64 ? vals : xmalloc((size_t)kept * sizeof *kv);
    for (int i = 0; i < kept; i++) kv[i] = logits[top[i]];
    for (int id = 0; id < n_vocab; id++) logits[id] = -INFINITY;
    for (int i = 0; i < kept; i++) logits[top[i]] = kv[i];
    if (kv != vals) free(kv);
    if (top != small) free(top);
}
