/* chat — chat templates: a list of messages (system / user / assistant) rendered into the
 * prompt text a chat model was trained on, with its special tokens written as text
 * ("<|im_start|>", "[INST]", "</s>") for tok_encode_special to turn into their ids.
 *
 * Known templates: llama2 ([INST] ... [/INST] with <<SYS>>), chatml (<|im_start|>role ...
 * <|im_end|>), zephyr (<|user|> ... </s>). A GGUF's tokenizer.chat_template (Jinja) is matched
 * to one of them by its markers; a flag can override. */
#ifndef NG_CHAT_H
#define NG_CHAT_H

typedef enum { CHAT_NONE = -1, CHAT_LLAMA2 = 0, CHAT_CHATML = 1, CHAT_ZEPHYR = 2 } ng_chat_template;

typedef struct {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} ng_chat_msg;

/* "llama2" | "chatml" | "zephyr" -> template; CHAT_NONE when unknown. */
ng_chat_template chat_template_by_name(const char *name);
const char *chat_template_name(ng_chat_template t);
/* The known template a Jinja chat_template string implements, or CHAT_NONE. */
ng_chat_template chat_template_detect(const char *jinja);
/* The template a model is prompted with when nobody names one: the one its GGUF
 * tokenizer.chat_template implements (jinja may be NULL), else by vocabulary: llama2 for
 * SentencePiece (LLaMA), chatml for GPT-2 byte-level BPE. serve, generate and train share it,
 * so a model fine-tuned on chat data is served in the format it learned. */
ng_chat_template chat_template_for(const char *jinja, int sentencepiece);
/* Renders msgs (malloc'd NUL-terminated text), ending with the assistant's turn opened when
 * add_generation_prompt. BOS is not included (the tokenizer adds it). Returns NULL when a role
 * is not system/user/assistant. */
char *chat_apply(ng_chat_template t, const ng_chat_msg *msgs, int n, int add_generation_prompt);

/* The Alpaca instruction format that `netgpt train` formats instruction data with and the edge
 * prompts its completion model with: "### Instruction:\n{instruction}\n\n[### Input:\n{input}
 * \n\n]### Response:\n" (the input section only when input is not empty). malloc'd. */
char *chat_alpaca_prompt(const char *instruction, const char *input);

#endif
