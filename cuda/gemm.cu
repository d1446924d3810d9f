// gemm() over cuBLASLt; see cuda/gemm.h for the convention and the row-major trick.
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "cuda/common.cuh"
#include "cuda/gemm.h"

namespace lolcats::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper

// The handle, and one workspace per stream: cuBLASLt's kernels use the workspace while they run,
// so two matmuls in flight on different streams must not share one (on one stream they run in
// order and may). A workspace lives as long as the program, like the handle.
struct Library {
  cublasLtHandle_t handle = nullptr;
  std::mutex mu;
  std::unordered_map<Stream, void*> workspaces;
  Library() { cublasCheck(cublasLtCreate(&handle)); }
  void* workspace(Stream stream) {
    std::lock_guard<std::mutex> lock(mu);
    void*& ws = workspaces[stream];
    if (!ws) cudaCheck(cudaMalloc(&ws, kWorkspaceBytes));
    return ws;
  }
};
Library& library() {
  static Library* lib = new Library;  // created at the first gemm; never destroyed (gemms at exit)
  return *lib;
}

template <typename T>
constexpr cudaDataType_t data_type() {
  return std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_16BF;
}

// Largest power of two (up to 256) that divides the address: what cuBLASLt may assume.
uint32_t alignment(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

// A stored row-major matrix (rows, cols) is the column-major (cols, rows) matrix with ld = cols.
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int rows, int cols, int batch) {
  cublasLtMatrixLayout_t layout = nullptr;
  cublasCheck(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(cols), uint64_t(rows), int64_t(cols)));
  if (batch > 1) {
    int64_t stride = int64_t(rows) * cols;
    cublasCheck(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
    cublasCheck(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
  return layout;
}

// ---- the plan cache ---------------------------------------------------------------------------------
// A training step makes thousands of gemm calls over a few dozen shapes. Each call used to build
// three layouts and a matmul descriptor and ask the heuristic again; a plan keeps all of that per
// (types, shape, transposes, bias, alignments, workspace), for the life of the program.
//
// What the key must hold, and why:
//   * the operand alignments as cuBLASLt sees them: the heuristic chooses an algorithm for them,
//     and an algorithm chosen for 16-byte aligned operands may use loads that a less aligned
//     pointer breaks (cuda/emu/cublaslt.cpp refuses such a call, so a key without them fails
//     tests/test_cuda_gemm.cpp);
//   * has-bias and the bias's alignment: the epilogue is part of the descriptor, and its loads of
//     the bias may need alignment too; the bias POINTER is not in the key: it is set on the
//     plan's descriptor at each call, under the plan's lock (see gemm_impl);
//   * the workspace size, which bounds the algorithms the heuristic may pick.
// Not in the key: accumulate (beta is a cublasLtMatmul argument, not part of the descriptors or
// the heuristic's question) and the stream (a plan holds no device memory).
struct PlanKey {
  cudaDataType_t ab, c;
  int batch, M, N, K;
  bool trans_a, trans_b, bias;
  uint32_t align_a, align_b, align_c;  // cuBLASLt's A, B, C = D (our B, A, C)
  uint32_t align_bias;                 // 0 without a bias
  size_t workspace;
  bool operator==(const PlanKey& o) const {
    return ab == o.ab && c == o.c && batch == o.batch && M == o.M && N == o.N && K == o.K &&
           trans_a == o.trans_a && trans_b == o.trans_b && bias == o.bias && align_a == o.align_a &&
           align_b == o.align_b && align_c == o.align_c && align_bias == o.align_bias &&
           workspace == o.workspace;
  }
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (uint64_t v : {uint64_t(k.ab), uint64_t(k.c), uint64_t(k.batch), uint64_t(k.M), uint64_t(k.N),
                       uint64_t(k.K), uint64_t(k.trans_a), uint64_t(k.trans_b), uint64_t(k.bias),
                       uint64_t(k.align_a), uint64_t(k.align_b), uint64_t(k.align_c), uint64_t(k.align_bias),
                       uint64_t(k.workspace)})
      mix(v);
    return size_t(h);
  }
};

struct Plan {
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatmulAlgo_t algo;
  std::mutex bias_mu;  // the bias pointer is set on `op` per call: set and used under this lock
};

class PlanCache {
 public:
  // The plan for `k`, made on first use (for the first caller's bias, when it has one). Plans are
  // never freed, so the pointer stays valid.
  Plan* get(const PlanKey& k, cublasLtHandle_t handle, const void* bias) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(k);
    if (it != plans_.end()) {
      hits_++;
      return it->second.get();
    }
    misses_++;
    auto plan = make(k, handle, bias);  // throws when cuBLASLt has no algorithm: nothing is cached
    Plan* p = plan.get();
    plans_.emplace(k, std::move(plan));
    return p;
  }
  GemmPlanStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {hits_, misses_, uint64_t(plans_.size())};
  }

 private:
  static std::unique_ptr<Plan> make(const PlanKey& k, cublasLtHandle_t handle, const void* bias) {
    auto plan = std::make_unique<Plan>();
    struct Undo {  // on a failure below, no descriptor leaks
      Plan* p;
      ~Undo() {
        if (!p) return;
        if (p->la) cublasLtMatrixLayoutDestroy(p->la);
        if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
        if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
        if (p->op) cublasLtMatmulDescDestroy(p->op);
      }
    } undo{plan.get()};
    // cuBLASLt's "A" is our B: stored (K, N), or (N, K) when trans_b. Read column-major, the
    // stored matrix is its own transpose: (N, K) as needed when !trans_b (op N), (K, N) when
    // trans_b (op T). Likewise its "B" is our A, and its (m, n) output is our C^T: m = N, n = M.
    plan->la = make_layout(k.ab, k.trans_b ? k.N : k.K, k.trans_b ? k.K : k.N, k.batch);
    plan->lb = make_layout(k.ab, k.trans_a ? k.K : k.M, k.trans_a ? k.M : k.K, k.batch);
    plan->lc = make_layout(k.c, k.M, k.N, k.batch);

    cublasCheck(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t opa = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opb = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    cublasCheck(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (k.bias) {
      // cuBLASLt adds the bias per row of its column-major output, i.e. per column of our C. The
      // heuristic sees this caller's bias; later callers' are as aligned (the key) and set their own.
      uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      int32_t bias_type = k.c;
      cublasCheck(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
      cublasCheck(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
      cublasCheck(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
    }

    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = k.workspace;
    uint32_t al_a = k.align_a, al_b = k.align_b, al_c = k.align_c;
    // The heuristic assumes 256-byte aligned operands unless told otherwise; ours may be less.
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    auto set = [&](cublasLtMatmulPreferenceAttributes_t attr, const void* value, size_t size) {
      if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, value, size);
    };
    set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
    cublasLtMatmulHeuristicResult_t heuristic;
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->la, plan->lb, plan->lc, plan->lc, pref, 1,
                                          &heuristic, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      fail(__FILE__, __LINE__,
           strfmt("gemm: cuBLASLt has no algorithm for batch %d, M %d, N %d, K %d, trans_a %d, "
                  "trans_b %d, bias %d, alignments %u/%u/%u (%s)",
                  k.batch, k.M, k.N, k.K, int(k.trans_a), int(k.trans_b), int(k.bias), k.align_b,
                  k.align_a, k.align_c, cublasLtGetStatusString(st)));
    plan->algo = heuristic.algo;
    undo.p = nullptr;
    return plan;
  }

  std::mutex mu_;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans_;
  uint64_t hits_ = 0, misses_ = 0;
};
PlanCache& plan_cache() {
  static PlanCache* c = new PlanCache;  // never destroyed: gemms may run during exit
  return *c;
}

template <typename TC, typename TAB>
void gemm_impl(TC* c, const TAB* a, const TAB* b, const GemmShape& g, const TC* bias, Stream stream) {
  ENSURE(g.batch >= 1 && g.M >= 0 && g.N >= 0 && g.K >= 0, "gemm: bad shape batch %d, M %d, N %d, K %d",
         g.batch, g.M, g.N, g.K);
  if (g.M == 0 || g.N == 0) return;
  ENSURE(g.K > 0, "gemm: K = 0 (an empty inner dimension) is not supported");
  Library& lib = library();
  PlanKey key{data_type<TAB>(), data_type<TC>(), g.batch, g.M, g.N, g.K, g.trans_a, g.trans_b,
              bias != nullptr, alignment(b), alignment(a), alignment(c), bias ? alignment(bias) : 0,
              kWorkspaceBytes};
  Plan* plan = plan_cache().get(key, lib.handle, bias);
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  void* workspace = lib.workspace(stream);
  auto run = [&] {
    return cublasLtMatmul(lib.handle, plan->op, &alpha, b, plan->la, a, plan->lb, &beta, c, plan->lc, c,
                          plan->lc, &plan->algo, workspace, kWorkspaceBytes, stream);
  };
  if (bias) {
    // cuBLASLt reads the descriptor when cublasLtMatmul is called (not when the kernel runs), so
    // the pointer may change again as soon as the call returns.
    std::lock_guard<std::mutex> lock(plan->bias_mu);
    cublasCheck(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasCheck(run());
  } else {
    cublasCheck(run());
  }
}

}  // namespace

GemmPlanStats gemm_plan_stats() { return plan_cache().stats(); }

void gemm(float* c, const float* a, const float* b, const GemmShape& g, const float* bias, Stream s) {
  gemm_impl(c, a, b, g, bias, s);
}
void gemm(bf16* c, const bf16* a, const bf16* b, const GemmShape& g, const bf16* bias, Stream s) {
  gemm_impl(c, a, b, g, bias, s);
}
void gemm(float* c, const bf16* a, const bf16* b, const GemmShape& g, const float* bias, Stream s) {
  gemm_impl(c, a, b, g, bias, s);
}

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int batch, int M, int N, int K, Transpose t, Accumulate acc,
                    Stream s) {
  gemm(c, a, b, GemmShape{batch, M, N, K, t, acc}, nullptr, s);
}

// The same four cases as the CPU's matmul_backward (tensor/matmul.cpp), each one gemm.
template <typename T, typename TG>
void matmul_backward(TG* da, TG* db, const T* dc, const T* a, const T* b, int batch, int M, int N,
                     int K, Transpose t, Accumulate acc_da, Accumulate acc_db, Stream s) {
  const bool trans_a = transposes_a(t), trans_b = transposes_b(t);
  if (da) {
    if (!trans_a)  // dA (M,K) = dC (M,N) @ op(B)^T
      gemm(da, dc, b, GemmShape{batch, M, K, N, transpose_of(false, !trans_b), acc_da}, nullptr, s);
    else  // dA (K,M) = op(B) (K,N) @ dC^T
      gemm(da, b, dc, GemmShape{batch, K, M, N, transpose_of(trans_b, true), acc_da}, nullptr, s);
  }
  if (db) {
    if (!trans_b)  // dB (K,N) = op(A)^T @ dC
      gemm(db, a, dc, GemmShape{batch, K, N, M, transpose_of(!trans_a, false), acc_db}, nullptr, s);
    else  // dB (N,K) = dC^T @ op(A)
      gemm(db, dc, a, GemmShape{batch, N, K, M, transpose_of(true, trans_a), acc_db}, nullptr, s);
  }
}

#define MATMUL_ARGS int, int, int, int, Transpose
template void matmul_forward<float>(float*, const float*, const float*, MATMUL_ARGS, Accumulate, Stream);
template void matmul_forward<bf16>(bf16*, const bf16*, const bf16*, MATMUL_ARGS, Accumulate, Stream);
template void matmul_backward<float, float>(float*, float*, const float*, const float*, const float*, MATMUL_ARGS,
                                            Accumulate, Accumulate, Stream);
template void matmul_backward<bf16, bf16>(bf16*, bf16*, const bf16*, const bf16*, const bf16*, MATMUL_ARGS, Accumulate,
                                          Accumulate, Stream);
template void matmul_backward<bf16, float>(float*, float*, const bf16*, const bf16*, const bf16*, MATMUL_ARGS,
                                           Accumulate, Accumulate, Stream);
#undef MATMUL_ARGS

}  // namespace lolcats::cuda
