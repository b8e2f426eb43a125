/* privacy — scrubs what must never leave the edge from text bound for the cloud: e-mail
 * addresses, phone numbers, precise coordinates, the user's id and the names in the user's
 * profile. Each is replaced by a bracketed placeholder ("[email]", "[phone]", "[location]",
 * "[user]", "[name]"), so the cloud still sees that something was there.
 *
 * Detection is deliberately eager (a number with four or more decimals is taken for a
 * coordinate; seven or more digits in a phone-like run for a phone number): a false positive
 * costs a word of the prompt, a false negative leaks personal data. */
#ifndef NG_PRIVACY_H
#define NG_PRIVACY_H

typedef struct {
    const char *user_id;      /* may be NULL */
    const char *const *names; /* profile names (whole words, case-insensitive); may be NULL */
    int n_names;
} privacy_rules;

typedef struct {
    int emails, phones, coords, user_ids, names;
} privacy_report;

/* Returns a scrubbed malloc'd copy of text; report (may be NULL) counts what was replaced. */
char *privacy_scrub(const char *text, const privacy_rules *rules, privacy_report *report);

#endif
