/* chat — the known chat templates, rendered by hand (no Jinja interpreter): each is a few
 * lines of fixed markup around the messages. */
#include "tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

static const char *NAMES[] = {"llama2", "chatml", "zephyr"};

ng_chat_template chat_template_by_name(const char *name) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, NAMES[i])) return (ng_chat_template)i;
    return CHAT_NONE;
}

const char *chat_template_name(ng_chat_template t) { return t >= 0 && t < 3 ? NAMES[t] : "none"; }

ng_chat_template chat_template_detect(const char *jinja) {
    if (!jinja) return CHAT_NONE;
    if (strstr(jinja, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(jinja, "<|user|>") && strstr(jinja, "<|assistant|>")) return CHAT_ZEPHYR;
    if (strstr(jinja, "[INST]")) return CHAT_LLAMA2;
    return CHAT_NONE;
}

typedef struct {
    char *s;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s) {
    size_t n = strlen(s);
    if (b->n + n + 1 > b->cap) b->s = xrealloc(b->s, b->cap = 2 * (b->n + n + 1));
    memcpy(b->s + b->n, s, n + 1);
    b->n += n;
}

static int role_ok(const char *r) {
    return !strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant");
}

/* LLaMA-2: the system prompt goes inside the first [INST] between <<SYS>> markers; each
 * exchange after the first is opened by </s><s> (BOS of the first one comes from the
 * tokenizer). */
static void render_llama2(buf *b, const ng_chat_msg *m, int n) {
    const char *sys = NULL;
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "system")) {
            sys = m[i].content;
        } else if (!strcmp(m[i].role, "user")) {
            put(b, first ? "[INST] " : "<s>[INST] ");
            if (sys) {
                put(b, "<<SYS>>\n");
                put(b, sys);
                put(b, "\n<</SYS>>\n\n");
                sys = NULL;
            }
            put(b, m[i].content);
            put(b, " [/INST]");
            first = 0;
        } else {
            put(b, " ");
            put(b, m[i].content);
            put(b, " </s>");
        }
    }
}

char *chat_apply(ng_chat_template t, const ng_chat_msg *msgs, int n, int add_generation_prompt) {
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content || !role_ok(msgs[i].role)) return NULL;
    buf b = {xmalloc(256), 0, 256};
    b.s[0] = 0;
    switch (t) {
    case CHAT_LLAMA2:
        render_llama2(&b, msgs, n);
        break;
    case CHAT_CHATML:
        for (int i = 0; i < n; i++) {
            put(&b, "<|im_start|>");
            put(&b, msgs[i].role);
            put(&b, "\n");
            put(&b, msgs[i].content);
            put(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt) put(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_ZEPHYR:
        for (int i = 0; i < n; i++) {
            put(&b, "<|");
            put(&b, msgs[i].role);
            put(&b, "|>\n");
            put(&b, msgs[i].content);
            put(&b, "</s>\n");
        }
        if (add_generation_prompt) put(&b, "<|assistant|>\n");
        break;
    default:
        free(b.s);
        return NULL;
    }
    return b.s;
}

char *chat_alpaca_prompt(const char *instruction, const char *input) {
    buf b = {xmalloc(256), 0, 256};
    b.s[0] = 0;
    put(&b, "### Instruction:\n");
    put(&b, instruction);
    put(&b, "\n\n");
    if (input && input[0]) {
        put(&b, "### Input:\n");
        put(&b, input);
        put(&b, "\n\n");
    }
    put(&b, "### Response:\n");
    return b.s;
}
