# The one build. `make` builds every binary at the repo root; `make test` runs the CPU tests;
# `make test-gpu` the cuda-device tests alone (on the GPU in a CUDA=nvcc build); `make bench` the
# benchmarks.
#   CUDA=auto|nvcc|emu|0  how the CUDA twins are built: nvcc for a real GPU; emu compiles the same
#                   .cu files with g++ and runs them under the SIMT emulator (cuda/emu/), so the cuda
#                   device exists on every machine; 0 leaves them out. auto: nvcc when nvcc and a GPU
#                   are present, else emu when the CUDA headers are, else 0.
#   SANITIZE=1      ASan + UBSan build of the tests, in build-san/ (binaries at the root untouched)
#   THREADS=N       threads for tests and benchmarks (default: all cores)
#   ARCH=native     the CPU the binaries are built for (-march); ARCH=x86-64-v3 gives binaries that
#                   run on any x86-64 host with AVX2 (for carrying to another machine)
#   WERROR=1        warnings stop the build (CI and development); off by default so that a new
#                   compiler's warning never stops a user's build

SANITIZE ?= 0
CUDA ?= auto
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME := $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
CUDA_HEADERS := $(wildcard $(CUDA_HOME)/include/cuda_runtime.h)
ifeq ($(CUDA),1)
  override CUDA := nvcc
endif
ifeq ($(CUDA),auto)
  # A real GPU and nvcc: the GPU build. Otherwise the emulator, which needs only the CUDA headers.
  HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
  override CUDA := $(if $(and $(NVCC),$(HAVE_GPU)),nvcc,$(if $(CUDA_HEADERS),emu,0))
endif
ifeq ($(SANITIZE)$(CUDA),1nvcc)
  # The sanitizers check host code: their build runs the CUDA kernels under the emulator.
  override CUDA := emu
endif
ifeq ($(CUDA),nvcc)
  ifeq ($(NVCC),)
    $(error CUDA=nvcc but nvcc was not found; install the CUDA toolkit or build with CUDA=emu or CUDA=0)
  endif
endif
ifeq ($(CUDA),emu)
  ifeq ($(CUDA_HEADERS),)
    $(error CUDA=emu needs the CUDA toolkit's headers ($(CUDA_HOME)/include/cuda_runtime.h); install the toolkit or build with CUDA=0)
  endif
endif

CXX ?= g++
ARCH ?= native
WERROR ?= 0
# -Wno-maybe-uninitialized: GCC 12 reports false positives inside its own AVX-512 intrinsics
# headers (avx512fintrin.h, "'__Y' may be used uninitialized", GCC bug 105593) wherever Eigen's
# AVX-512 kernels are inlined into our code; being inlined, they escape -isystem's silencing.
WARN := -Wall -Wextra -Wno-maybe-uninitialized $(if $(filter 1,$(WERROR)),-Werror)
CXXFLAGS := -std=c++17 -fopenmp -I. -isystem /usr/include/eigen3 -MMD -MP $(WARN)
LDLIBS := -fopenmp -lzstd -lpcre2-8
ifeq ($(SANITIZE),1)
  BUILD := build-san
  BIN := build-san/
  # -Wno-uninitialized: at -O1 with ASan, GCC 12 reports the same AVX-512 intrinsics false
  # positive as an error-level "is used uninitialized" (the -O3 builds keep the warning on).
  CXXFLAGS += -O1 -g -march=$(ARCH) -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined -Wno-uninitialized
  LDLIBS += -fsanitize=address,undefined
else
  BUILD ?= build
  # A build folder of its own (BUILD=build-x) keeps its test binary there too: build-x/run_tests.
  BIN := $(if $(filter build,$(BUILD)),,$(BUILD)/)
  CXXFLAGS += -O3 -march=$(ARCH) -DNDEBUG
endif

# The GPUs the device code is built for: A100 (sm_80), RTX 30xx / A10 (sm_86), RTX 40xx / L4 / L40S
# (sm_89), H100 / H200 (sm_90). Shared memory per block: 99 KiB on sm_86/89, 163 KiB on sm_80,
# 227 KiB on sm_90; a launch that asks for more than the card has is refused, so the kernels that
# need much (attention, hybrid attention) pick their tile from the card's limit at run time
# (cuda/shared_limit.cuh).
CUDA_ARCHS ?= 80 86 89 90
NVCC_ARCH_FLAGS := $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a))
NVCCFLAGS := -std=c++17 -O3 -I. $(NVCC_ARCH_FLAGS) -Xcompiler -fopenmp -MMD -MP $(if $(filter 1,$(WERROR)),--Werror all-warnings)
ifeq ($(CUDA),nvcc)
  CXXFLAGS += -DLOLCATS_CUDA -isystem $(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt
endif
ifeq ($(CUDA),emu)
  CXXFLAGS += -DLOLCATS_CUDA -DLOLCATS_CUDA_EMU -isystem $(CUDA_HOME)/include
endif
# How a .cu file is compiled: by nvcc, or by g++ as C++ for the emulator. -fno-strict-aliasing:
# kernels reinterpret memory (bf16 pairs through 32-bit words, float4 loads) as CUDA allows and g++
# at -O2 would otherwise miscompile. -Wno-sign-compare: threadIdx and blockDim are unsigned in
# CUDA, and comparing them with int sizes is the idiom (nvcc does not warn about it).
COMPILE_CU := $(if $(filter nvcc,$(CUDA)),$(NVCC) $(NVCCFLAGS),$(CXX) $(CXXFLAGS) -x c++ -fno-strict-aliasing -Wno-sign-compare)

# PORTABLE=1 links binaries to carry to another machine (the GPU bundle): libstdc++, zstd, PCRE2
# and the CUDA runtime statically; libgomp travels beside them; cuBLASLt (500 MB) is the target's.
ifeq ($(PORTABLE),1)
  LDLIBS := -fopenmp -static-libstdc++ -static-libgcc -Wl,-Bstatic -lzstd -lpcre2-8 -Wl,-Bdynamic
  ifeq ($(CUDA),nvcc)
    LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -lcublasLt -ldl -lrt -lpthread \
              -Wl,-rpath,/usr/local/cuda/lib64
  endif
endif

# ---- sources -------------------------------------------------------------------------------------
LIB_SRC := $(wildcard tensor/*.cpp autograd/*.cpp nn/*.cpp nn/eval/*.cpp lolcats/*.cpp data/*.cpp)
CU_SRC :=
TEST_CU_SRC :=
ifneq ($(CUDA),0)
  LIB_SRC := $(filter-out tensor/no_cuda.cpp,$(LIB_SRC))
  CU_SRC := $(wildcard cuda/*.cu)
  TEST_CU_SRC := $(wildcard tests/*.cu)
endif
ifeq ($(CUDA),emu)
  LIB_SRC += $(wildcard cuda/emu/*.cpp)
endif
LIB_OBJ := $(LIB_SRC:%.cpp=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
APPS := linearize generate eval bench
TEST_SRC := $(wildcard tests/*.cpp)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/%.o) $(TEST_CU_SRC:%.cu=$(BUILD)/%.o)
TEST_BIN := $(BIN)run_tests
THREADS ?= 0
# The default model (see DESIGN: SmolLM2-135M-Instruct, shipped in a PyPI package).
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all test test-gpu clean venv fixtures model objects check-avx512 FORCE
all: $(APPS) $(TEST_BIN) $(MODEL)
ifeq ($(MAKELEVEL),0)
  $(info lolcats build: -march=$(ARCH), CUDA=$(CUDA), warnings $(if $(filter 1,$(WERROR)),are errors,do not stop the build) ($(BUILD)/))
endif

# Every object file, nothing linked (used by check-avx512).
objects: $(LIB_OBJ) $(TEST_OBJ) $(APPS:%=$(BUILD)/apps/%.o)

# Compiles the whole tree for an AVX-512 CPU with warnings as errors, linking nothing, so that a
# machine without AVX-512 still catches what only the AVX-512 code paths of Eigen and GCC trigger.
check-avx512:
	$(MAKE) objects BUILD=build-avx512 ARCH=sapphirerapids WERROR=1 CUDA=$(if $(CUDA_HEADERS),emu,0)

# System libraries: installed (as root) or named (otherwise) before the first compile.
$(BUILD)/.deps-ok: scripts/install_deps.sh
	@mkdir -p $(BUILD) && scripts/install_deps.sh && touch $@

# Rebuild everything when the flags change (CUDA on/off, sanitizers): the stamp is rewritten only
# when its contents differ. nvcc's flags count only in a build that uses nvcc.
BUILD_FLAGS := $(CXX) $(CXXFLAGS) $(if $(filter nvcc,$(CUDA)),$(NVCCFLAGS))
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD) && echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' > $@
FORCE:

$(BUILD)/%.o: %.cpp $(BUILD)/.flags | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(BUILD)/.flags | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(COMPILE_CU) -c $< -o $@

$(BUILD)/liblolcats.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(APPS): %: $(BUILD)/apps/%.o $(BUILD)/liblolcats.a
	$(CXX) $^ -o $@ $(LDLIBS)

$(TEST_BIN): $(TEST_OBJ) $(BUILD)/liblolcats.a
	$(CXX) $^ -o $@ $(LDLIBS)

# The apps linked inside a build folder of their own (the GPU bundle's bench).
$(BUILD)/apps/bench: $(BUILD)/apps/bench.o $(BUILD)/liblolcats.a
	$(CXX) $^ -o $@ $(LDLIBS)

# The packed GEMM (tensor/gemm.cpp) has one kernel per vector width, and a build runs the one its
# -march selects. `make test-gemm-isa GEMM_ISA=x86-64-v3` builds the kernel's tests alone for another
# (x86-64-v3: AVX2 + FMA; x86-64: the generic vectors; x86-64-v4: AVX-512) and runs them, so that
# CI runs every variant the host can execute, whatever its own build selects.
GEMM_ISA ?= x86-64-v3
GEMM_ISA_SRC := tests/main.cpp tests/test_gemm.cpp tensor/gemm.cpp tensor/parallel.cpp
.PHONY: test-gemm-isa
test-gemm-isa: build-isa/$(GEMM_ISA)/run_gemm_tests
	LOLCATS_THREADS=$(THREADS) ./build-isa/$(GEMM_ISA)/run_gemm_tests
build-isa/%/run_gemm_tests: $(GEMM_ISA_SRC) tensor/gemm.h tensor/parallel.h tests/helpers.h | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -fopenmp -I. -isystem /usr/include/eigen3 $(WARN) -O2 -march=$* $(GEMM_ISA_SRC) -o $@ $(LDLIBS)

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
test: $(TEST_BIN) $(FIXTURES) $(if $(filter 1,$(SANITIZE)),,linearize generate eval)
	LOLCATS_FIXTURES=$(FIXTURE_DIR) LOLCATS_THREADS=$(THREADS) ./$(TEST_BIN) "~[gpu]"

test-gpu: $(TEST_BIN) $(FIXTURES)
	LOLCATS_FIXTURES=$(FIXTURE_DIR) LOLCATS_THREADS=$(THREADS) ./$(TEST_BIN) "[cuda],[gpu]"

# `make bench` builds ./bench and runs every benchmark (PyTorch side included, hence the venv).
ifeq ($(MAKECMDGOALS),bench)
.PHONY: bench
bench: $(BUILD)/apps/bench.o $(BUILD)/liblolcats.a .venv/.stamp
	$(CXX) $(BUILD)/apps/bench.o $(BUILD)/liblolcats.a -o bench $(LDLIBS)
	./bench all
endif

# ---- one command for a lent GPU machine (see README "On a GPU") --------------------------------------
# Builds here, with nvcc for CUDA_ARCHS and host code for any x86-64-v3 CPU, the folder gpu-bundle/:
# the test binary, ./bench, libgomp, the fixtures of the [cuda] tests, and run.sh (scripts/gpu_run.sh:
# the tests, the benches and compute-sanitizer, at most 420 s; a summary and one archive of logs in
# $OUT). Carry the folder to the GPU machine and run `gpu-bundle/run.sh` there.
.PHONY: gpu-bundle
gpu-bundle:
	$(MAKE) BUILD=build-gpu CUDA=nvcc ARCH=x86-64-v3 PORTABLE=1 build-gpu/run_tests build-gpu/apps/bench
	scripts/make_gpu_bundle.sh build-gpu/run_tests build-gpu/apps/bench gpu-bundle

# Compiles every CUDA file with nvcc for each of CUDA_ARCHS (no GPU needed), keeping ptxas's report
# of registers, shared memory and spills per kernel in build-nvcc/ptxas-sm_*.log.
NVCC_CHECK_SRC := $(wildcard cuda/*.cu tests/*.cu)
NVCC_CHECK_FLAGS := -std=c++17 -O3 -I. -Xptxas -v --Werror all-warnings
.PHONY: check-nvcc
check-nvcc: $(foreach a,$(CUDA_ARCHS),$(NVCC_CHECK_SRC:%.cu=build-nvcc/sm_$(a)/%.o))
	@for a in $(CUDA_ARCHS); do cat $(NVCC_CHECK_SRC:%.cu=build-nvcc/sm_$$a/%.log) > build-nvcc/ptxas-sm_$$a.log; done
	@echo "nvcc: $(words $(NVCC_CHECK_SRC)) files compiled for $(CUDA_ARCHS:%=sm_%); kernels with spills:" \
	  $$(for a in $(CUDA_ARCHS); do printf "sm_$$a %s " $$(grep -h "spill" build-nvcc/ptxas-sm_$$a.log | \
	     grep -vc " 0 bytes spill stores, 0 bytes spill loads"); done) "(ptxas reports in build-nvcc/ptxas-sm_*.log)"
define nvcc_check_rule
build-nvcc/sm_$(1)/%.o: %.cu
	@mkdir -p $$(dir $$@)
	$$(NVCC) $$(NVCC_CHECK_FLAGS) -arch=sm_$(1) -MMD -MP -MF $$(@:.o=.d) -c $$< -o $$@ 2> $$(@:.o=.log) || { cat $$(@:.o=.log); exit 1; }
endef
$(foreach a,$(CUDA_ARCHS),$(eval $(call nvcc_check_rule,$(a))))
-include $(foreach a,$(CUDA_ARCHS),$(NVCC_CHECK_SRC:%.cu=build-nvcc/sm_$(a)/%.d))  # a header edit recompiles

# Drives the bundle's run.sh on this machine's emulator build with toy sizes and a stand-in
# sanitizer, and checks its control flow: every step's verdict in summary.txt in order, a timed
# out step followed by the next, a sanitizer finding reported as a finding, the logs' archive,
# and the worst case within 420 s (scripts/gpu_bundle_check.sh).
.PHONY: gpu-bundle-check
gpu-bundle-check: $(TEST_BIN) $(BUILD)/apps/bench $(FIXTURES)
	scripts/gpu_bundle_check.sh $(TEST_BIN) $(BUILD)/apps/bench $(BUILD)

clean:
	rm -rf build build-san build-avx512 build-gpu build-nvcc build-isa gpu-bundle $(APPS) run_tests

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(APPS:%=$(BUILD)/apps/%.d)

# ---- fuzzing (clang + libFuzzer + ASan/UBSan; not part of `make test`) -----------------------------
# `make fuzz FUZZ_SECONDS=60` builds every tests/fuzz/fuzz_*.cpp into build-fuzz/ and runs each for
# FUZZ_SECONDS, starting from tests/fuzz/seeds/NAME/ (and FUZZ_SEEDS_NAME, a list of more folders);
# new interesting inputs accumulate in build-fuzz/corpus/NAME/. Any crash or sanitizer report fails
# the target and leaves the input in build-fuzz/crash-NAME-*. Each target links the library code of
# tensor/ and data/, built with the same flags (no CUDA: tensor/no_cuda.cpp is in). The flags define
# FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (libFuzzer's convention), which skips checksums (the zip
# CRC-32 of .pt files) so that mutated inputs reach the parsers behind them.
FUZZ_CXX ?= clang++-14
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 -std=c++17 \
              -fopenmp -I. -isystem /usr/include/eigen3 -MMD -MP -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
FUZZ_NAMES := $(patsubst tests/fuzz/%.cpp,%,$(wildcard tests/fuzz/fuzz_*.cpp))
FUZZ_LIB_OBJ := $(patsubst %.cpp,build-fuzz/%.o,$(wildcard tensor/*.cpp data/*.cpp))
FUZZ_SEEDS_fuzz_gguf := $(wildcard build/fixtures/gguf)  # small.gguf, when the fixtures exist
FUZZ_SEEDS_fuzz_torch_pt := $(wildcard build/fixtures/torch_pt)  # torch.save's files, when the fixtures exist

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
