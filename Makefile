# The one build. `make` builds every binary at the repo root; `make test` runs the CPU tests;
# `make test-gpu` the GPU tests; `make bench` the benchmarks.
#   CUDA=auto|0|1   build the CUDA twins (auto: when nvcc is found)
#   SANITIZE=1      ASan + UBSan build of the tests, in build-san/ (binaries at the root untouched)
#   THREADS=N       threads for tests and benchmarks (default: all cores)

SANITIZE ?= 0
CUDA ?= auto
ifeq ($(SANITIZE),1)
  # The sanitizers check host code; the CUDA runtime is not ASan-clean without a GPU.
  CUDA := 0
endif
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(CUDA),auto)
  CUDA := $(if $(NVCC),1,0)
endif
ifeq ($(CUDA),1)
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found; install the CUDA toolkit or build with CUDA=0)
  endif
endif

CXX ?= g++
WARN := -Wall -Wextra -Werror
CXXFLAGS := -std=c++17 -fopenmp -I. -isystem /usr/include/eigen3 -MMD -MP $(WARN)
LDLIBS := -fopenmp -lzstd -lpcre2-8
ifeq ($(SANITIZE),1)
  BUILD := build-san
  BIN := build-san/
  # -Wno-maybe-uninitialized: GCC 12 reports false positives inside libstdc++'s <regex> (used by
  # Catch2) when instrumenting with ASan.
  CXXFLAGS += -O1 -g -march=native -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined -Wno-maybe-uninitialized
  LDLIBS += -fsanitize=address,undefined
else
  BUILD := build
  BIN :=
  CXXFLAGS += -O3 -march=native -DNDEBUG
endif

CUDA_HOME := $(patsubst %/bin/nvcc,%,$(NVCC))
NVCCFLAGS := -std=c++17 -O3 -I. -arch=sm_90 -Xcompiler -fopenmp -MMD -MP --Werror all-warnings
ifeq ($(CUDA),1)
  CXXFLAGS += -DLOLCATS_CUDA -isystem $(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt
endif

# ---- sources -------------------------------------------------------------------------------------
LIB_SRC := $(wildcard tensor/*.cpp autograd/*.cpp nn/*.cpp lolcats/*.cpp data/*.cpp)
CU_SRC :=
ifeq ($(CUDA),1)
  LIB_SRC := $(filter-out tensor/no_cuda.cpp,$(LIB_SRC))
  CU_SRC := $(wildcard cuda/*.cu)
endif
LIB_OBJ := $(LIB_SRC:%.cpp=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
APPS := linearize generate eval bench
TEST_SRC := $(wildcard tests/*.cpp)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/%.o)
TEST_BIN := $(BIN)run_tests
THREADS ?= 0
# The default model (see DESIGN: SmolLM2-135M-Instruct, shipped in a PyPI package).
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all test test-gpu clean venv fixtures model FORCE
all: $(APPS) $(TEST_BIN) $(MODEL)

# System libraries: installed (as root) or named (otherwise) before the first compile.
$(BUILD)/.deps-ok: scripts/install_deps.sh
	@mkdir -p $(BUILD) && scripts/install_deps.sh && touch $@

# Rebuild everything when the flags change (CUDA on/off, sanitizers): the stamp is rewritten only
# when its contents differ.
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD) && echo '$(CXX) $(CXXFLAGS) $(NVCCFLAGS)' | cmp -s - $@ || echo '$(CXX) $(CXXFLAGS) $(NVCCFLAGS)' > $@
FORCE:

$(BUILD)/%.o: %.cpp $(BUILD)/.flags | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(BUILD)/.flags | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/liblolcats.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(APPS): %: $(BUILD)/apps/%.o $(BUILD)/liblolcats.a
	$(CXX) $^ -o $@ $(LDLIBS)

$(TEST_BIN): $(TEST_OBJ) $(BUILD)/liblolcats.a
	$(CXX) $^ -o $@ $(LDLIBS)

# ---- reference tensors from PyTorch (see tests/reference/) ---------------------------------------
.venv/.stamp: tests/reference/requirements.txt tests/reference/setup_venv.sh
	tests/reference/setup_venv.sh
venv: .venv/.stamp

$(MODEL): | scripts/get_model.sh
	scripts/get_model.sh
model: $(MODEL)

FIXTURE_DIR := build/fixtures
FIXTURES := $(patsubst tests/reference/%.py,$(FIXTURE_DIR)/%.safetensors,$(wildcard tests/reference/ref_*.py))
$(FIXTURE_DIR)/%.safetensors: tests/reference/%.py tests/reference/common.py .venv/.stamp | $(MODEL)
	@mkdir -p $(FIXTURE_DIR)
	.venv/bin/python $< $@
fixtures: $(FIXTURES)

# ---- running --------------------------------------------------------------------------------------
test: $(TEST_BIN) $(FIXTURES)
	LOLCATS_FIXTURES=$(FIXTURE_DIR) LOLCATS_THREADS=$(THREADS) ./$(TEST_BIN) "~[gpu]"

test-gpu: $(TEST_BIN) $(FIXTURES)
	LOLCATS_FIXTURES=$(FIXTURE_DIR) LOLCATS_THREADS=$(THREADS) ./$(TEST_BIN) "[gpu]"

# `make bench` builds ./bench and runs every benchmark (PyTorch side included, hence the venv).
ifeq ($(MAKECMDGOALS),bench)
.PHONY: bench
bench: $(BUILD)/apps/bench.o $(BUILD)/liblolcats.a .venv/.stamp
	$(CXX) $(BUILD)/apps/bench.o $(BUILD)/liblolcats.a -o bench $(LDLIBS)
	./bench all
endif

clean:
	rm -rf build build-san $(APPS) run_tests

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(APPS:%=$(BUILD)/apps/%.d)

# ---- fuzzing (clang + libFuzzer + ASan/UBSan; not part of `make test`) -----------------------------
# `make fuzz FUZZ_SECONDS=60` builds every tests/fuzz/fuzz_*.cpp into build-fuzz/ and runs each for
# FUZZ_SECONDS, starting from tests/fuzz/seeds/NAME/ (and FUZZ_SEEDS_NAME, a list of more folders);
# new interesting inputs accumulate in build-fuzz/corpus/NAME/. Any crash or sanitizer report fails
# the target and leaves the input in build-fuzz/crash-NAME-*. Each target links the library code of
# tensor/ and data/, built with the same flags (no CUDA: tensor/no_cuda.cpp is in).
FUZZ_CXX ?= clang++-14
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 -std=c++17 \
              -fopenmp -I. -isystem /usr/include/eigen3 -MMD -MP
FUZZ_NAMES := $(patsubst tests/fuzz/%.cpp,%,$(wildcard tests/fuzz/fuzz_*.cpp))
FUZZ_LIB_OBJ := $(patsubst %.cpp,build-fuzz/%.o,$(wildcard tensor/*.cpp data/*.cpp))
FUZZ_SEEDS_fuzz_gguf := $(wildcard build/fixtures/gguf)  # small.gguf, when the fixtures exist

.PHONY: fuzz fuzz-clean
.PRECIOUS: build-fuzz/%.o build-fuzz/fuzz_%
fuzz: $(FUZZ_NAMES:%=fuzz-run-%)

build-fuzz/%.o: %.cpp | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -c $< -o $@

build-fuzz/liblolcats.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build-fuzz/fuzz_%: build-fuzz/tests/fuzz/fuzz_%.o build-fuzz/liblolcats.a
	$(FUZZ_CXX) $(FUZZ_FLAGS) $^ -o $@ -lzstd -lpcre2-8 -ldl

fuzz-run-%: build-fuzz/%
	@mkdir -p build-fuzz/corpus/$*
	$< -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 -artifact_prefix=build-fuzz/crash-$*- \
	  build-fuzz/corpus/$* $(wildcard tests/fuzz/seeds/$*) $(FUZZ_SEEDS_$*)

fuzz-clean:
	rm -rf build-fuzz

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_NAMES:%=build-fuzz/tests/fuzz/%.d)
