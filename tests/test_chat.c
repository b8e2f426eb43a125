/* Chat templates render the exact markup each model family was trained on (known answers
 * written from the templates' definitions), are recognized from their Jinja source, and their
 * control tokens become ids. */
#include "test.h"

#include "core/util.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static const ng_chat_msg CONV[] = {
    {"system", "You are a helpful assistant."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Where am I?"}};

static void expect(ng_chat_template t, int n, const char *want) {
    char *got = chat_apply(t, CONV, n, 1);
    CHECK(got && !strcmp(got, want), "%s:\n got  [%s]\n want [%s]", chat_template_name(t), got ? got : "(null)", want);
    free(got);
}

static void test_render(void) {
    expect(CHAT_CHATML, 4,
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
           "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhere am I?<|im_end|>\n"
           "<|im_start|>assistant\n");
    expect(CHAT_ZEPHYR, 4,
           "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
           "<|user|>\nWhere am I?</s>\n<|assistant|>\n");
    expect(CHAT_LLAMA2, 4,
           "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Where am I? "
           "[/INST]");
    expect(CHAT_LLAMA2, 2, "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi [/INST]");
    ng_chat_msg bad = {"tool", "x"};
    CHECK(chat_apply(CHAT_CHATML, &bad, 1, 1) == NULL, "unknown role accepted");
}

static void test_detect(void) {
    /* excerpts of chat_template strings as model files carry them */
    CHECK(chat_template_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                               "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}") == CHAT_CHATML,
          "chatml");
    CHECK(chat_template_detect("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
                               "message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}{{ "
                               "'<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}{% endfor %}") ==
              CHAT_ZEPHYR,
          "zephyr");
    CHECK(chat_template_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}") == CHAT_LLAMA2,
          "llama2");
    CHECK(chat_template_detect("{{ messages }}") == CHAT_NONE && chat_template_detect(NULL) == CHAT_NONE, "none");
    CHECK(chat_template_by_name("chatml") == CHAT_CHATML && chat_template_by_name("x") == CHAT_NONE, "by name");
}

/* GPT-2's <|endoftext|> written in text becomes its id only through tok_encode_special. */
static void test_special_ids(void) {
    ng_error err;
    ng_tokenizer *t = tok_load("tests/testdata/gpt2", &err);
    REQUIRE(t, "%s", err.msg);
    const char *text = "<|endoftext|>Hello world<|endoftext|>";
    int n;
    int *ids = tok_encode_special(t, text, strlen(text), &n);
    CHECK(n == 4 && ids[0] == 50256 && ids[1] == 15496 && ids[2] == 995 && ids[3] == 50256, "special: n %d", n);
    free(ids);
    ids = tok_encode(t, text, strlen(text), &n);
    CHECK(n > 4 && ids[0] != 50256, "plain encode must not parse markers");
    free(ids);
    CHECK(tok_special_id(t, "<|endoftext|>") == 50256 && tok_special_id(t, "Hello") == -1, "special id");
    tok_free(t);
}

static void test_alpaca(void) {
    char *a = chat_alpaca_prompt("Say hi.", ""), *b = chat_alpaca_prompt("Translate.", "bonjour");
    CHECK(!strcmp(a, "### Instruction:\nSay hi.\n\n### Response:\n"), "[%s]", a);
    CHECK(!strcmp(b, "### Instruction:\nTranslate.\n\n### Input:\nbonjour\n\n### Response:\n"), "[%s]", b);
    free(a), free(b);
}

int main(void) {
    RUN(test_alpaca);
    RUN(test_render);
    RUN(test_detect);
    RUN(test_special_ids);
    TEST_EXIT();
}
