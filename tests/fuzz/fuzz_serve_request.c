/* libFuzzer harness: request bodies of /v1/chat/completions and /v1/completions through the
 * OpenAI parser, and whatever it accepts through the response builders. The first byte picks
 * the endpoint. Any input must give a request or an error, never a crash, a leak or a read
 * outside the bytes given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int chat = data[0] & 1;
    /* a copy exactly the body's size, so that a read past its end is caught */
    char *body = malloc(size - 1 ? size - 1 : 1);
    memcpy(body, data + 1, size - 1);
    openai_req r;
    openai_error e;
    if (openai_parse(body, size - 1, chat, &r, &e) == 0) {
        const char *text = r.chat ? (r.n_msgs ? r.msgs[r.n_msgs - 1].content : "") : (r.prompt ? r.prompt : "");
        openai_meta m = {"id", r.model ? r.model : "m", 0, r.chat};
        openai_usage u = {1, 2, 0};
        free(openai_response_json(&m, text, strlen(text), "stop", &u, r.prompt_ids, r.n_prompt_ids, NULL, 0));
        free(openai_chunk_sse(&m, text, strlen(text), 1, NULL, NULL));
        openai_req_free(&r);
    } else {
        free(openai_error_json(e.status, e.message, e.param));
    }
    free(body);
    /* the streaming hold-back on raw bytes */
    (void)openai_utf8_tail((const char *)data, size);
    free(openai_utf8_clean((const char *)data, size));
    return 0;
}
