# inferd - local LLM inference broker. See README.md.
#
#   make            build everything that can be built here
#   make test       install missing Debian packages, build, run the tests
#   make demo       install packages, build, fetch the demo model, run it
#   make bench      prefill/decode benchmark (MODEL=path)
#   make deps       only install missing Debian packages (needs root)
#   make fuzz       build the libFuzzer targets (clang) into build-fuzz/ and
#                   run each for FUZZ_SECONDS (default 60)
#   make valgrind   run the Check tests under valgrind (tests/valgrind.sh)
#   make loadtest   many clients against inferd (tests/load/)
#
# Knobs: CC, CFLAGS, SANITIZE=1 (ASan+UBSan), NVCC, CUDA=0 (skip the CUDA
# backend), CUDA_ARCH (default sm_90 plus PTX), BUILD (output folder).

BUILD    ?= build
CC       ?= cc
OPT      ?= -O2 -g
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA     ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90

# Install locations (make install; PKGLIBDIR is also where backend_open
# looks for libinferd-cuda.so, besides <exe>/../lib/inferd).
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
PKGLIBDIR ?= $(LIBDIR)/inferd
INCDIR  ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
SYSTEMDUNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSTEMDUSERUNITDIR ?= $(PREFIX)/lib/systemd/user
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR  ?= $(PREFIX)/share/doc/inferd
INFER_VERSION := $(shell sed -n 's/^\#define INFER_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' libclient/infer.h | paste -sd.)

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter
CPPFLAGS += -Iengine -Ilibclient -Idaemon -D_GNU_SOURCE
CFLAGS   ?=
CFLAGS   += -std=c11 $(OPT) $(WARN) -pthread -fPIC
LDLIBS   := -lm -ldl -pthread

# FUZZ=1: objects instrumented for libFuzzer (make fuzz sets it).
ifeq ($(FUZZ),1)
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Per-file SIMD flags: the kernels pick one at run time (cpu dispatch).
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c

ENGINE_SRC := $(filter-out engine/infer_run.c,$(wildcard engine/*.c))
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/%.o)
LIBC_SRC   := $(wildcard libclient/*.c)
LIBC_OBJ   := $(LIBC_SRC:%.c=$(BUILD)/%.o)
CLIENT_SRC := $(wildcard client/*.c)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/%.o)
TEST_SRC   := $(wildcard tests/check_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_SUPPORT := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(BUILD)/%.o)
CUDA_SRC   := $(wildcard cuda/*.cu)
CUDA_OBJ   := $(CUDA_SRC:%.cu=$(BUILD)/%.o)

SERVICE_LIBS := -levent -levent_pthreads -lmsgpackc -lsqlite3
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt)

BINS := $(BUILD)/libengine.a
ifneq ($(wildcard engine/infer_run.c),)
BINS += $(BUILD)/infer-run
endif
ifneq ($(wildcard daemon/main.c),)
BINS += $(BUILD)/inferd
endif
ifneq ($(LIBC_SRC),)
BINS += $(BUILD)/libinfer.a $(BUILD)/libinfer.so
endif
ifneq ($(CLIENT_SRC),)
BINS += $(BUILD)/infer-client
endif
ifeq ($(CUDA),1)
ifneq ($(CUDA_SRC),)
BINS += $(BUILD)/libinferd-cuda.so $(BUILD)/cuda-layer-bench
endif
endif

.PHONY: all test check tests deps demo bench clean install uninstall fuzz fuzz-build valgrind loadtest
all: $(BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# libinfer exports only what infer.h marks INFER_API.
$(BUILD)/libclient/%.o: libclient/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fvisibility=hidden -MMD -MP -c $< -o $@

# backend.o has PKGLIBDIR compiled in: rebuild it when that changes.
PKGLIBDIR_STAMP := $(BUILD)/.pkglibdir
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(PKGLIBDIR_STAMP) 2>/dev/null)" = "$(PKGLIBDIR)" ] || echo "$(PKGLIBDIR)" > $(PKGLIBDIR_STAMP); })
$(BUILD)/engine/backend.o: CPPFLAGS += -DINFERD_PKGLIBDIR='"$(PKGLIBDIR)"'
$(BUILD)/engine/backend.o: $(PKGLIBDIR_STAMP)

$(BUILD)/engine/%_avx2.o: engine/%_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/engine/%_avx512.o: engine/%_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libengine.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libinferd.a: $(DAEMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/infer-run: $(BUILD)/engine/infer_run.o $(BUILD)/libengine.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# inferd shares libclient/protocol.c (the frame validator) through libinfer.a.
$(BUILD)/inferd: $(BUILD)/daemon/main.o $(BUILD)/libinferd.a $(BUILD)/libengine.a $(BUILD)/libinfer.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(SERVICE_LIBS) $(LDLIBS)

# libinfer: public symbols only (infer.h marks them), soname by ABI major.
INFER_SOVER := 0
$(BUILD)/libinfer.a: $(LIBC_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/libinfer.so: $(LIBC_OBJ)
	$(CC) -shared $(CFLAGS) $(LDFLAGS) -Wl,-soname,libinfer.so.$(INFER_SOVER) -o $@ $^ -lmsgpackc $(LDLIBS)

# infer-client reads the JSON that libinfer hands it with engine/json.c.
$(BUILD)/infer-client: $(CLIENT_OBJ) $(BUILD)/libinfer.a $(BUILD)/engine/json.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lmsgpackc $(LDLIBS)

# CUDA backend: a shared object the engine dlopens at run time, so the
# binaries above never link against the CUDA runtime.
NVCCFLAGS ?= -O3 -std=c++17 $(CUDA_ARCH) -Xcompiler -fPIC,-Wall,-Wextra,-Werror,-fvisibility=hidden --expt-relaxed-constexpr -Werror all-warnings
$(BUILD)/cuda/%.o: cuda/%.cu $(wildcard cuda/*.cuh) engine/backend.h engine/tensor.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Iengine -c $< -o $@
$(BUILD)/libinferd-cuda.so: $(CUDA_OBJ) $(BUILD)/engine/tensor.o
	$(NVCC) -shared -o $@ $^ -Xlinker --version-script=cuda/exports.map,--no-undefined -L$(CUDA_HOME)/lib64 -lcublas -lcudart

# Op-level forward benchmark of the CUDA backend (random weights).
$(BUILD)/cuda-layer-bench: contrib/bench/cuda_layer_bench.c $(BUILD)/engine/tensor.o
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Tests: one Check binary per tests/check_*.c, linked with everything.
$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT_OBJ) $(BUILD)/libengine.a $(if $(DAEMON_SRC),$(BUILD)/libinferd.a) $(if $(LIBC_SRC),$(BUILD)/libinfer.a)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests -DINFERD_SRCDIR='"$(CURDIR)"' $(CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_SUPPORT_OBJ) $(if $(DAEMON_SRC),$(BUILD)/libinferd.a) $(BUILD)/libengine.a $(if $(LIBC_SRC),$(BUILD)/libinfer.a) $(SERVICE_LIBS) $(CHECK_LIBS) $(LDLIBS)

TESTDATA := $(BUILD)/testdata/.unpacked
$(TESTDATA): $(shell find tests/data -type f 2>/dev/null)
	@rm -rf $(BUILD)/testdata && mkdir -p $(BUILD)/testdata
	cp -r tests/data/. $(BUILD)/testdata/
	find $(BUILD)/testdata -name '*.gz' -exec gunzip -f {} +
	@touch $@

tests: all $(TEST_BIN) $(TESTDATA)

deps:
	@sh contrib/install-deps.sh

# The test command the README gives and .ci/run calls.
test: deps
	@$(MAKE) --no-print-directory tests
	@sh tests/run.sh $(BUILD)

check: test

demo: deps
	@sh contrib/fetch-demo-model.sh >/dev/null
	@$(MAKE) --no-print-directory all
	@sh contrib/demo.sh $(BUILD)

bench: all
	@sh contrib/bench/bench.sh $(BUILD) $(MODEL)

clean:
	rm -rf $(BUILD)

# make install PREFIX=/usr/local DESTDIR=: see README "Install" for the
# list. inferd goes to bin, not sbin: most users run it as their own user
# (the user unit, or by hand), and sbin is not on a user's PATH everywhere.
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) \
	    $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSTEMDUSERUNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(DOCDIR)
	$(if $(wildcard $(BUILD)/inferd),install -m 755 $(BUILD)/inferd $(DESTDIR)$(BINDIR)/)
	$(if $(wildcard $(BUILD)/infer-run),install -m 755 $(BUILD)/infer-run $(DESTDIR)$(BINDIR)/)
	install -m 755 $(BUILD)/infer-client $(DESTDIR)$(BINDIR)/
	install -m 644 libclient/infer.h $(DESTDIR)$(INCDIR)/
	install -m 644 $(BUILD)/libinfer.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libinfer.so $(DESTDIR)$(LIBDIR)/libinfer.so.$(INFER_VERSION)
	ln -sf libinfer.so.$(INFER_VERSION) $(DESTDIR)$(LIBDIR)/libinfer.so.$(INFER_SOVER)
	ln -sf libinfer.so.$(INFER_SOVER) $(DESTDIR)$(LIBDIR)/libinfer.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCDIR)|' -e 's|@VERSION@|$(INFER_VERSION)|' \
	    contrib/libinfer.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libinfer.pc
	$(if $(wildcard $(BUILD)/libinferd-cuda.so),install -d $(DESTDIR)$(PKGLIBDIR) && install -m 755 $(BUILD)/libinferd-cuda.so $(DESTDIR)$(PKGLIBDIR)/)
	install -m 644 contrib/man/infer-client.1 contrib/man/infer-run.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 contrib/man/libinfer.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 644 contrib/man/inferd.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 contrib/completion/infer-client.bash $(DESTDIR)$(BASHCOMPDIR)/infer-client
	install -m 644 contrib/completion/_infer-client $(DESTDIR)$(ZSHCOMPDIR)/_infer-client
	for u in inferd.service inferd.socket; do \
	    sed 's|@BINDIR@|$(BINDIR)|g' contrib/systemd/system/$$u.in > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
	    sed 's|@BINDIR@|$(BINDIR)|g' contrib/systemd/user/$$u.in > $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$$u || exit 1; \
	done
	install -m 644 contrib/systemd/system/inferd.sysusers $(DESTDIR)$(SYSUSERSDIR)/inferd.conf
	install -m 644 contrib/inferd.conf.example $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/inferd $(DESTDIR)$(BINDIR)/infer-run \
	      $(DESTDIR)$(BINDIR)/infer-client $(DESTDIR)$(INCDIR)/infer.h \
	      $(DESTDIR)$(LIBDIR)/libinfer.a $(DESTDIR)$(LIBDIR)/libinfer.so \
	      $(DESTDIR)$(LIBDIR)/libinfer.so.$(INFER_SOVER) \
	      $(DESTDIR)$(LIBDIR)/libinfer.so.$(INFER_VERSION) \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/libinfer.pc \
	      $(DESTDIR)$(PKGLIBDIR)/libinferd-cuda.so \
	      $(DESTDIR)$(MANDIR)/man1/infer-client.1 $(DESTDIR)$(MANDIR)/man1/infer-run.1 \
	      $(DESTDIR)$(MANDIR)/man3/libinfer.3 $(DESTDIR)$(MANDIR)/man8/inferd.8 \
	      $(DESTDIR)$(BASHCOMPDIR)/infer-client $(DESTDIR)$(ZSHCOMPDIR)/_infer-client \
	      $(DESTDIR)$(SYSTEMDUNITDIR)/inferd.service $(DESTDIR)$(SYSTEMDUNITDIR)/inferd.socket \
	      $(DESTDIR)$(SYSTEMDUSERUNITDIR)/inferd.service $(DESTDIR)$(SYSTEMDUSERUNITDIR)/inferd.socket \
	      $(DESTDIR)$(SYSUSERSDIR)/inferd.conf $(DESTDIR)$(DOCDIR)/inferd.conf.example
	-rmdir $(DESTDIR)$(PKGLIBDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# CPU kernel throughput benchmark (not part of `make`).
$(BUILD)/kernels_bench: contrib/bench/kernels_bench.c $(BUILD)/libengine.a
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Broker benchmark: ping round trip and generate overhead (not part of `make`).
$(BUILD)/broker_bench: contrib/bench/broker_bench.c $(BUILD)/libinfer.a $(BUILD)/inferd $(BUILD)/infer-run
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ contrib/bench/broker_bench.c $(BUILD)/libinfer.a -lmsgpackc $(LDLIBS)

# Aggregate throughput with N concurrent clients (not part of `make`).
$(BUILD)/batch_bench: contrib/bench/batch_bench.c $(BUILD)/libinfer.a $(BUILD)/inferd
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ contrib/bench/batch_bench.c $(BUILD)/libinfer.a -lmsgpackc $(LDLIBS)

# GGUF metadata / tensor table dump (not part of `make`).
$(BUILD)/gguf_dump: contrib/gguf_dump.c $(BUILD)/libengine.a
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Fuzzing: libFuzzer targets tests/fuzz/fuzz_*.c, built with clang and
# ASan+UBSan in build-fuzz/, each run FUZZ_SECONDS on a working corpus
# seeded from tests/fuzz/corpus/<target> (the committed seeds: known attack
# inputs). Crashes land in build-fuzz/crashes/<target>/; logs beside them.
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
ifeq ($(FUZZ),1)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(BUILD)/libinferd.a $(BUILD)/libengine.a $(BUILD)/libinfer.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/fuzz $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/libinferd.a $(BUILD)/libengine.a $(BUILD)/libinfer.a $(SERVICE_LIBS) $(LDLIBS)
.PHONY: fuzz-targets
fuzz-targets: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
endif
fuzz-build:
	@$(MAKE) --no-print-directory FUZZ=1 CC=$(FUZZ_CC) CUDA=0 BUILD=$(FUZZ_BUILD) fuzz-targets $(FUZZ_BUILD)/testdata/.unpacked
fuzz: fuzz-build
	@sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

valgrind: tests
	@sh tests/valgrind.sh $(BUILD)

# Load test: LOAD_ARGS passes -c clients -n requests -t seconds.
LOAD_ARGS ?=
$(BUILD)/loadtest: tests/load/loadtest.c tests/daemon_util.h $(BUILD)/libinfer.a
	$(CC) $(CPPFLAGS) -Itests $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libinfer.a -lmsgpackc -lsqlite3 $(LDLIBS)
loadtest: tests $(BUILD)/loadtest
	INFERD_TEST_DATA=$(CURDIR)/$(BUILD)/testdata INFERD_BUILD=$(CURDIR)/$(BUILD) $(BUILD)/loadtest $(LOAD_ARGS)
