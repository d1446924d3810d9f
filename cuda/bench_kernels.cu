// Device-side pieces of `./bench gpu-ops`; see cuda/bench_kernels.h.
#include <cstdint>

#include "cuda/adamw.h"
#include "cuda/attention.h"
#include "cuda/bench_kernels.h"
#include "cuda/common.cuh"
#include "cuda/cross_entropy.h"
#include "cuda/elementwise.h"
#include "cuda/embedding.h"
#include "cuda/gemm.h"
#include "cuda/mse.h"
#include "cuda/rmsnorm.h"
#include "cuda/rope.h"

namespace lolcats::cuda::bench {

namespace {

// A cheap counter-based hash: value i of a buffer is a function of (seed, i) only.
__device__ inline float uniform(uint32_t seed, uint64_t i) {
  uint64_t z = (i + 0x9E3779B97F4A7C15ull * (seed + 1));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(uint32_t(z >> 40)) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void fill_random(T* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = from_f32<T>(uniform(seed, i));
}

template <typename T>
__global__ void fill_scaled(T* p, size_t n, uint32_t seed, float scale, float shift) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = from_f32<T>(shift + scale * uniform(seed, i));
}

__global__ void fill_targets(int32_t* t, int n, int V) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) t[i] = int32_t((uint64_t(i) * 2654435761u) % uint64_t(V));
}

int grid_for(size_t n) { return int(std::min<size_t>((n + 255) / 256, 4096)); }

}  // namespace

std::string device_summary() {
  int dev = 0;
  cudaCheck(cudaGetDevice(&dev));
  cudaDeviceProp p;
  cudaCheck(cudaGetDeviceProperties(&p, dev));
  return strfmt("%s, %d SMs, %.1f GiB, sm_%d%d", p.name, p.multiProcessorCount,
                p.totalGlobalMem / 1073741824.0, p.major, p.minor);
}

Buffer::Buffer(size_t bytes, bool bf16_elements, unsigned seed) : bytes_(bytes) {
  cudaCheck(cudaMalloc(&p_, bytes));
  if (bf16_elements) {
    auto* k = fill_random<bf16>;
    launch_kernel(k, grid_for(bytes / 2), 256, 0, 0, static_cast<bf16*>(p_), bytes / 2, seed);
  } else {
    auto* k = fill_random<float>;
    launch_kernel(k, grid_for(bytes / 4), 256, 0, 0, static_cast<float*>(p_), bytes / 4, seed);
  }
}
Buffer::~Buffer() { cudaFree(p_); }

void fill_uniform(void* p, size_t n, bool bf16_elements, unsigned seed, float scale, float shift) {
  if (bf16_elements) {
    auto* k = fill_scaled<bf16>;
    launch_kernel(k, grid_for(n), 256, 0, 0, static_cast<bf16*>(p), n, seed, scale, shift);
  } else {
    auto* k = fill_scaled<float>;
    launch_kernel(k, grid_for(n), 256, 0, 0, static_cast<float*>(p), n, seed, scale, shift);
  }
}

void copy(Buffer& dst, const Buffer& src) {
  cudaCheck(cudaMemcpyAsync(dst.data(), src.data(), std::min(dst.bytes(), src.bytes()),
                            cudaMemcpyDeviceToDevice, 0));
}

double time_once(const std::function<void()>& fn) {
  cudaEvent_t a, b;
  cudaCheck(cudaEventCreate(&a));
  cudaCheck(cudaEventCreate(&b));
  cudaCheck(cudaEventRecord(a, 0));
  fn();
  cudaCheck(cudaEventRecord(b, 0));
  cudaCheck(cudaEventSynchronize(b));
  float ms = 0;
  cudaCheck(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 1e3;
}

GemmOperands::GemmOperands(int M_, int N_, int K_, bool square) : M(M_), N(N_), K(K_), trans_w(!square) {
  x = std::make_unique<Buffer>(size_t(M) * K * 2, true, 1);
  w = std::make_unique<Buffer>(size_t(N) * K * 2, true, 2);
  y = std::make_unique<Buffer>(size_t(M) * N * 2, true, 3);
}
void GemmOperands::run() {
  gemm(y->as<bf16>(), x->as<bf16>(), w->as<bf16>(), GemmShape{1, M, N, K, transpose_of(false, trans_w)});
}

std::vector<KernelCase> kernel_cases(bool smoke) {
  std::vector<KernelCase> cases;
  // Llama 3 8B sizes at T = 1024 x batch 8 tokens (the paper's stage-1 batch), or toy sizes.
  const int N = smoke ? 64 : 8192, C = smoke ? 64 : 4096, V = smoke ? 500 : 128256;

  {  // LM head + cross-entropy, chunked: FLOPs of the forward (one GEMM) and backward (two GEMMs
     // with a frozen head: logits again and dx).
    struct S {
      std::unique_ptr<Buffer> x, w, t, loss, lse, dx, ws;
      int chunk;
    };
    auto s = std::make_shared<S>();
    int n = smoke ? 64 : 1024;  // rows: the logit slice is n x chunk
    s->x = std::make_unique<Buffer>(size_t(n) * C * 2, true, 4);
    s->w = std::make_unique<Buffer>(size_t(V) * C * 2, true, 5);
    s->t = std::make_unique<Buffer>(size_t(n) * 4, false);
    launch_kernel(fill_targets, ceil_div(n, 256), 256, 0, 0, s->t->as<int32_t>(), n, V);
    s->loss = std::make_unique<Buffer>(4, false);
    s->lse = std::make_unique<Buffer>(size_t(n) * 4, false);
    s->dx = std::make_unique<Buffer>(size_t(n) * C * 2, true);
    s->chunk = lm_head_chunk(n, V);
    s->ws = std::make_unique<Buffer>(lm_head_cross_entropy_workspace(n, C, s->chunk), false);
    std::string shape = strfmt("N %d, C %d, V %d, chunk %d", n, C, V, s->chunk);
    cases.push_back({"lm_head_cross_entropy_forward bf16", shape, 0, 2.0 * n * C * V, [s, n, C, V] {
                       lm_head_cross_entropy_forward(s->loss->as<float>(), s->lse->as<float>(), s->x->as<bf16>(),
                                                     s->w->as<bf16>(), s->t->as<int32_t>(), n, C, V, -100, s->chunk,
                                                     s->ws->data());
                     }, s});
    cases.push_back({"lm_head_cross_entropy_backward bf16 (frozen head)", shape, 0, 4.0 * n * C * V, [s, n, C, V] {
                       lm_head_cross_entropy_backward(s->dx->as<bf16>(), nullptr, 1.0f, s->x->as<bf16>(),
                                                      s->w->as<bf16>(), s->lse->as<float>(), s->t->as<int32_t>(), n, C,
                                                      V, -100, s->chunk, s->ws->data());
                     }, s});
  }
  // Memory-bound kernels over N tokens x C channels in bf16 (2 bytes), f32 statistics.
  auto buf = [](size_t bytes, bool bf16 = true) { return std::make_shared<Buffer>(bytes, bf16); };
  const double act = double(N) * C * 2;  // one (N, C) bf16 activation, bytes
  std::string nc = strfmt("N %d, C %d, bf16", N, C);
  {
    auto x = buf(size_t(act)), y = buf(size_t(act)), w = buf(size_t(C) * 2), rstd = buf(size_t(N) * 4, false);
    auto dy = buf(size_t(act)), dx = buf(size_t(act)), dw = buf(size_t(C) * 4, false);
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{x, y, w, rstd, dy, dx, dw});
    cases.push_back({"rmsnorm_forward", nc, 2 * act + N * 4.0, 0, [=] {
                       rmsnorm_forward(y->as<bf16>(), rstd->as<float>(), x->as<bf16>(), w->as<bf16>(), N, C, 1e-5f, nullptr);
                     }, keep});
    cases.push_back({"rmsnorm_backward (dx and dw)", nc, 3 * act + N * 4.0, 0, [=] {
                       rmsnorm_backward(dx->as<bf16>(), dw->as<float>(), dy->as<bf16>(), x->as<bf16>(), w->as<bf16>(),
                                        rstd->as<float>(), N, C, nullptr);
                     }, keep});
    cases.push_back({"add_forward (residual)", nc, 3 * act, 0, [=] {
                       add_forward(y->as<bf16>(), x->as<bf16>(), dy->as<bf16>(), int64_t(N) * C, nullptr);
                     }, keep});
  }
  {  // SwiGLU over the MLP's hidden size (Llama 3 8B: 14336), N / 4 tokens to stay near 1 GiB.
    int n_tok = smoke ? 16 : N / 4, ff = smoke ? 64 : 14336;
    double h = double(n_tok) * ff * 2;
    auto g = buf(size_t(h)), u = buf(size_t(h)), y = buf(size_t(h)), dy = buf(size_t(h)), dg = buf(size_t(h)), du = buf(size_t(h));
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{g, u, y, dy, dg, du});
    int64_t n = int64_t(n_tok) * ff;
    std::string shape = strfmt("N %d, FF %d, bf16", n_tok, ff);
    cases.push_back({"swiglu_forward", shape, 3 * h, 0, [=] { swiglu_forward(y->as<bf16>(), g->as<bf16>(), u->as<bf16>(), n, nullptr); }, keep});
    cases.push_back({"swiglu_backward", shape, 5 * h, 0, [=] {
                       swiglu_backward(dg->as<bf16>(), du->as<bf16>(), dy->as<bf16>(), g->as<bf16>(), u->as<bf16>(), n, nullptr);
                     }, keep});
  }
  {  // RoPE on q (32 heads of 128) in place, tables for T = 1024 positions.
    int B = smoke ? 1 : N / 1024, T = smoke ? 16 : 1024, H = 32, D = 128;
    double bytes = 2.0 * B * T * H * D * 2 + 2.0 * T * (D / 2) * 4;
    auto q = buf(size_t(B) * T * H * D * 2), cs = buf(size_t(T) * (D / 2) * 4, false), sn = buf(size_t(T) * (D / 2) * 4, false);
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{q, cs, sn});
    cases.push_back({"rope_forward (in place)", strfmt("B %d, T %d, H %d, D %d, bf16", B, T, H, D), bytes, 0, [=] {
                       rope_forward(q->as<bf16>(), q->as<bf16>(), cs->as<float>(), sn->as<float>(), B, T, H, D,
                                    RopeLayout::half_split, nullptr);
                     }, keep});
  }
  {
    auto x = buf(size_t(N) * C * 4, false), y = buf(size_t(N) * C * 2);
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{x, y});
    int64_t n = int64_t(N) * C;
    cases.push_back({"cast_f32_to_bf16", strfmt("n %lld", (long long)n), 6.0 * n, 0, [=] { cast_f32_to_bf16(y->as<bf16>(), x->as<float>(), n, nullptr); }, keep});
    cases.push_back({"cast_bf16_to_f32", strfmt("n %lld", (long long)n), 6.0 * n, 0, [=] { cast_bf16_to_f32(x->as<float>(), y->as<bf16>(), n, nullptr); }, keep});
  }
  {  // Embedding gather from Llama 3 8B's table.
    int v = smoke ? 500 : V;
    auto wte = buf(size_t(v) * C * 2), y = buf(size_t(act)), idx = buf(size_t(N) * 4, false);
    launch_kernel(fill_targets, ceil_div(N, 256), 256, 0, 0, idx->as<int32_t>(), N, v);
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{wte, y, idx});
    cases.push_back({"embedding_forward", strfmt("N %d, V %d, C %d, bf16", N, v, C), 2 * act + N * 4.0, 0, [=] {
                       embedding_forward(y->as<bf16>(), idx->as<int32_t>(), wte->as<bf16>(), N, v, C, nullptr);
                     }, keep});
  }
  {  // MSE between two (N, C) bf16 tensors (stage 1's loss).
    auto a = buf(size_t(act)), b = buf(size_t(act)), loss = buf(4, false), da = buf(size_t(act)), db = buf(size_t(act));
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{a, b, loss, da, db});
    int64_t n = int64_t(N) * C;
    cases.push_back({"mse_forward", nc, 2 * act, 0, [=] { mse_forward(loss->as<float>(), a->as<bf16>(), b->as<bf16>(), n, nullptr); }, keep});
    cases.push_back({"mse_backward", nc, 4 * act, 0, [=] {
                       mse_backward(da->as<bf16>(), db->as<bf16>(), 1.0f, a->as<bf16>(), b->as<bf16>(), n, nullptr);
                     }, keep});
  }
  {  // AdamW over 100M f32 parameters (+ their bf16 copy): reads p, m, v, g; writes p, m, v, p16.
    int64_t n = smoke ? 4096 : 100'000'000;
    auto p = buf(size_t(n) * 4, false), m = buf(size_t(n) * 4, false), v = buf(size_t(n) * 4, false);
    auto g = buf(size_t(n) * 4, false), p16 = buf(size_t(n) * 2);
    cudaCheck(cudaMemset(m->data(), 0, size_t(n) * 4));
    cudaCheck(cudaMemset(v->data(), 0, size_t(n) * 4));
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{p, m, v, g, p16});
    cases.push_back({"adamw_step (+ bf16 copy)", strfmt("n %lld", (long long)n), 30.0 * n, 0, [=] {
                       adamw_step(p->as<float>(), m->as<float>(), v->as<float>(), g->as<float>(), n, 1, 1e-3f, 0.9f,
                                  0.999f, 1e-8f, 0.0f, p16->as<bf16>(), nullptr);
                     }, keep});
  }
  {  // Causal GQA attention, Llama 3 8B heads, batch 4 x T 1024: FLOPs of the causal half.
    int B = smoke ? 1 : 4, T = smoke ? 64 : 1024, H = 32, Hkv = 8, D = 128;
    double qb = double(B) * T * H * D * 2, kb = double(B) * T * Hkv * D * 2;
    auto q = buf(size_t(qb)), k = buf(size_t(kb)), v = buf(size_t(kb)), y = buf(size_t(qb)), lse = buf(size_t(B) * H * T * 4, false);
    auto dy = buf(size_t(qb)), dq = buf(size_t(qb)), dk = buf(size_t(kb)), dv = buf(size_t(kb));
    auto keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>(std::vector<std::shared_ptr<Buffer>>{q, k, v, y, lse, dy, dq, dk, dv});
    double causal = 2.0 * 2.0 * B * H * double(T) * T * D / 2;  // QK^T and PV, lower half
    const AttentionTiles tiles = attention_tiles(D);  // the columns streamed per step, from the card's shared memory
    std::string shape = strfmt("B %d, T %d, H %d/%d, D %d, bf16, cols %d/%d/%d", B, T, H, Hkv, D, tiles.forward.cols,
                               tiles.dq.cols, tiles.dkdv.cols);
    attention_forward(y->as<bf16>(), lse->as<float>(), q->as<bf16>(), k->as<bf16>(), v->as<bf16>(), B, T, H, Hkv, D, nullptr);
    cases.push_back({"attention_forward (portable, f32 FMA)", shape, 0, causal, [=] {
                       attention_forward(y->as<bf16>(), lse->as<float>(), q->as<bf16>(), k->as<bf16>(), v->as<bf16>(),
                                         B, T, H, Hkv, D, nullptr);
                     }, keep});
    cases.push_back({"attention_backward (portable, f32 FMA)", shape, 0, 2.5 * causal, [=] {
                       attention_backward(dq->as<bf16>(), dk->as<bf16>(), dv->as<bf16>(), dy->as<bf16>(), y->as<bf16>(),
                                          lse->as<float>(), q->as<bf16>(), k->as<bf16>(), v->as<bf16>(), B, T, H, Hkv, D,
                                          nullptr);
                     }, keep});
  }
  return cases;
}

}  // namespace lolcats::cuda::bench
