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

ng_chat_template chat_template_for(const char *jinja, int sentencepiece) {
    ng_chat_template t = chat_template_detect(jinja);
    return t != CHAT_NONE ? t : sentencepiece ? CHAT_LLAMA2 : CHAT_CHATML;
}

ng_chat_template chat_template_detect(const char *jinja) {
    if (!jinja) return CHAT_NONE;
    if (strstr(jinja, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(jinja, "<|user|>") && strstr(jinja, "<|assistant|>")) return CHAT_ZEPHYR;
    if (strstr(jinja, "[INST]")) return CHAT_LLAMA2;
    return CHAT_NONE;
}

static int role_ok(const char *r) {
    return !strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant");
}

/* LLaMA-2: the system prompt goes inside the first [INST] between <<SYS>> markers; each
 * exchange after the first is opened by </s><s> (BOS of the first one comes from the
 * tokenizer). */
static void render_llama2(ng_buf *b, const ng_chat_msg *m, int n) {
    const char *sys = NULL;
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "system")) {
            sys = m[i].content;
        } else if (!strcmp(m[i].role, "user")) {
            ng_buf_puts(b, first ? "[INST] " : "<s>[INST] ");
            if (sys) {
                ng_buf_puts(b, "<<SYS>>\n");
                ng_buf_puts(b, sys);
                ng_buf_puts(b, "\n<</SYS>>\n\n");
                sys = NULL;
            }
            ng_buf_puts(b, m[i].content);
            ng_buf_puts(b, " [/INST]");
            first = 0;
        } else {
            ng_buf_puts(b, " ");
            ng_buf_puts(b, m[i].content);
            ng_buf_puts(b, " </s>");
        }
    }
}

char *chat_apply(ng_chat_template t, const ng_chat_msg *msgs, int n, int add_generation_prompt) {
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content || !role_ok(msgs[i].role)) return NULL;
    ng_buf b;
    ng_buf_init(&b);
    switch (t) {
    case CHAT_LLAMA2:
        render_llama2(&b, msgs, n);
        break;
    case CHAT_CHATML:
        for (int i = 0; i < n; i++) {
            ng_buf_puts(&b, "<|im_start|>");
            ng_buf_puts(&b, msgs[i].role);
            ng_buf_puts(&b, "\n");
            ng_buf_puts(&b, msgs[i].content);
            ng_buf_puts(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt) ng_buf_puts(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_ZEPHYR:
        for (int i = 0; i < n; i++) {
            ng_buf_puts(&b, "<|");
            ng_buf_puts(&b, msgs[i].role);
            ng_buf_puts(&b, "|>\n");
            ng_buf_puts(&b, msgs[i].content);
            ng_buf_puts(&b, "</s>\n");
        }
        if (add_generation_prompt) ng_buf_puts(&b, "<|assistant|>\n");
        break;
    default:
        free(b.s);
        return NULL;
    }
    return b.s;
}

char *chat_alpaca_prompt(const char *instruction, const char *input) {
    ng_buf b;
    ng_buf_init(&b);
    ng_buf_puts(&b, "### Instruction:\n");
    ng_buf_puts(&b, instruction);
    ng_buf_puts(&b, "\n\n");
    if (input && input[0]) {
        ng_buf_puts(&b, "### Input:\n");
        ng_buf_puts(&b, input);
        ng_buf_puts(&b, "\n\n");
    }
    ng_buf_puts(&b, "### Response:\n");
    return b.s;
}
