/* The privacy filter on known answers: what must not leave the edge is replaced, ordinary
 * text (times, prices, distances, years) is left alone. */
#include "test.h"

#include "core/util.h"
#include "edge/privacy.h"

static void expect(const char *in, const char *want, const privacy_rules *r) {
    char *got = privacy_scrub(in, r, NULL);
    CHECK(!strcmp(got, want), "\n in   [%s]\n got  [%s]\n want [%s]", in, got, want);
    free(got);
}

static void test_known(void) {
    const char *names[] = {"Alice Martin", "Alice"};
    privacy_rules r = {"u-4821", names, 2};
    expect("I am at 45.764043, 4.835659 right now", "I am at [location], [location] right now", &r);
    expect("mail me: alice.martin+x@example.co.uk.", "mail me: [email].", &r);
    expect("call +33 6 12 34 56 78 or (555) 123-4567", "call [phone] or [phone]", &r);
    expect("this is Alice Martin (user u-4821)", "this is [name] (user [user])", &r);
    expect("alice wants coffee; Alicent does not", "[name] wants coffee; Alicent does not", &r);
    /* left alone */
    expect("at 18:40 on 2024-05-01, 350 m away, 3.5 km, costs 12.99 EUR, room 101",
           "at 18:40 on 2024-05-01, 350 m away, 3.5 km, costs 12.99 EUR, room 101", &r);
    expect("", "", NULL);
    expect("lat 45.7640 lon -4.8357", "lat [location] lon [location]", NULL);
}

static void test_report(void) {
    privacy_report rep;
    const char *names[] = {"Bob"};
    privacy_rules r = {"bob-1", names, 1};
    char *s = privacy_scrub("Bob (bob-1) at 1.23456,2.34567 bob@x.org +1 202 555 0143", &r, &rep);
    CHECK(rep.names == 1 && rep.user_ids == 1 && rep.coords == 2 && rep.emails == 1 && rep.phones == 1,
          "counts %d %d %d %d %d: %s", rep.names, rep.user_ids, rep.coords, rep.emails, rep.phones, s);
    free(s);
}

/* Arbitrary bytes: never crashes, never grows without bound. */
static void test_random_bytes(void) {
    uint64_t st = 7;
    char buf[257];
    for (int it = 0; it < 2000; it++) {
        int n = (int)(st % 256);
        for (int i = 0; i < n; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (char)(1 + (st >> 33) % 255);
        }
        buf[n] = 0;
        char *s = privacy_scrub(buf, NULL, NULL);
        CHECK(strlen(s) <= 10 * (size_t)n + 1, "output size");
        free(s);
    }
}

int main(void) {
    RUN(test_known);
    RUN(test_report);
    RUN(test_random_bytes);
    TEST_EXIT();
}
