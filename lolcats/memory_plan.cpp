#include "lolcats/memory_plan.h"

#include <algorithm>

namespace lolcats {

namespace {

constexpr double kMiB = 1048576.0, kGiB = 1073741824.0;
constexpr size_t kCublasWorkspace = size_t(32) << 20;  // cuda/gemm.cu's kWorkspaceBytes
constexpr size_t kCudaContext = size_t(512) << 20;     // a typical CUDA 12 context with cuBLASLt
constexpr size_t kMinMargin = size_t(64) << 20;

// cuda/memory.cu's size classes: multiples of 512 B up to 1 MiB, then of 2 MiB.
size_t size_class(size_t bytes) {
  size_t unit = bytes <= (size_t(1) << 20) ? 512 : (size_t(2) << 20);
  return (std::max<size_t>(bytes, 1) + unit - 1) / unit * unit;
}

size_t sum_bytes(const std::vector<PlanTensor>& ts) {
  size_t n = 0;
  for (const PlanTensor& t : ts) n += t.bytes();
  return n;
}

// A projection: its name (q, k, v, o) and sizes, W (out, in).
struct Site {
  std::string p;
  int64_t in, out;
};

// An activation of one layer, and whether it carries a gradient in the backward.
struct Act {
  PlanTensor t;
  bool grad;
};

struct Builder {
  const LlamaConfig& m;
  const LolcatsConfig& lc;
  PlanOptions opt;
  int64_t B, T, C, H, Hkv, D, FF, V, R, HD, KD, Fh, F;
  bool t2r;
  DType act, w;  // activations of frozen matmuls / norms / residual / MLP; frozen weights
  int converted = 0;

  Builder(const LlamaConfig& m_, const LolcatsConfig& lc_, int T_, int batch, int rank, const PlanOptions& o)
      : m(m_), lc(lc_), opt(o), B(batch), T(T_), C(m.d_model), H(m.n_heads), Hkv(m.n_kv_heads),
        D(m.head_dim), FF(m.ffn), V(m.vocab), R(rank), HD(H * D), KD(Hkv * D) {
    // Feature sizes as LolcatsModel's constructor sets them.
    Fh = std::min<int64_t>(lc.feature_half, D);
    t2r = lc.feature_map == FeatureMapKind::t2r;
    F = t2r ? D : 2 * Fh;
    const bool cuda = o.device == Device::cuda;
    act = w = cuda ? DType::bf16 : DType::f32;
    for (int l = 0; l < m.n_layers; l++)
      converted += std::find(lc.softmax_layers.begin(), lc.softmax_layers.end(), l) == lc.softmax_layers.end();
  }
  bool lora(const std::string& p) const {
    return std::find(opt.lora_targets.begin(), opt.lora_targets.end(), p) != opt.lora_targets.end();
  }

  // As the Llama constructor allocates them (nn/llama.cpp).
  std::vector<PlanTensor> weights() const {
    const int64_t L = m.n_layers;
    std::vector<PlanTensor> v = {{"embedding wte", {V, C}, w}};
    if (!m.tied_embeddings) v.push_back({"lm_head", {V, C}, w});
    v.insert(v.end(), {{"attn_norm", {C}, w, L}, {"Wq", {HD, C}, w, L}, {"Wk", {KD, C}, w, L},
                       {"Wv", {KD, C}, w, L}, {"Wo", {C, HD}, w, L}, {"mlp_norm", {C}, w, L},
                       {"Wgate", {FF, C}, w, L}, {"Wup", {FF, C}, w, L}, {"Wdown", {C, FF}, w, L},
                       {"final norm", {C}, w}});
    return v;
  }
  // As LolcatsModel's constructor creates them, for every converted layer.
  std::vector<PlanTensor> feature_maps(const std::string& suffix) const {
    const int64_t n = converted, cols = t2r ? F : Fh;
    std::vector<PlanTensor> v = {{"feature map q W" + suffix, {H, D, cols}, DType::f32, n},
                                 {"feature map k W" + suffix, {H, D, cols}, DType::f32, n}};
    if (t2r)
      v.insert(v.end(), {{"feature map q bias" + suffix, {H, F}, DType::f32, n},
                         {"feature map k bias" + suffix, {H, F}, DType::f32, n}});
    v.push_back({"window logits" + suffix, {H}, DType::f32, n});
    return v;
  }
  // As Llama::add_lora creates them: A (R, in), B (out, R) per target and layer.
  std::vector<PlanTensor> lora_params() const {
    std::vector<PlanTensor> v;
    for (Site s : {Site{"q", C, HD}, Site{"k", C, KD}, Site{"v", C, KD}, Site{"o", HD, C}})
      if (lora(s.p)) {
        v.push_back({"LoRA " + s.p + " A", {R, s.in}, DType::f32, m.n_layers});
        v.push_back({"LoRA " + s.p + " B", {s.out, R}, DType::f32, m.n_layers});
      }
    return v;
  }

  // Projection p of input x (a, or y for o) -> (B, T, out): x W^T, and with LoRA the terms
  // linear_lora builds, x W^T + scale (x A^T) B^T.
  void projection(std::vector<Act>& v, const std::string& p, const std::string& x, int64_t out, bool lo,
                  bool grad) const {
    const std::string base = x + " W" + p + "^T";
    if (!lo) return v.push_back({{p + " = " + base, {B, T, out}, act}, grad});
    const DType f = DType::f32;
    v.push_back({{base, {B, T, out}, act}, true});
    v.push_back({{p + " LoRA " + x + " A^T", {B, T, R}, f}, true});
    v.push_back({{p + " LoRA (" + x + " A^T) B^T", {B, T, out}, f}, true});
    v.push_back({{p + " LoRA scaled", {B, T, out}, f}, true});
    v.push_back({{p + " = " + base + " + LoRA", {B, T, out}, f}, true});
  }

  // One layer's activations in the order nn/llama.cpp and lolcats/model.cpp make them. Stage 1:
  // teacher (no grad) and, in a converted layer, the student graph; stage 2: the student.
  std::vector<Act> layer(int stage, bool conv) const {
    const bool s2 = stage == 2, cuda = act == DType::bf16;
    const DType f = DType::f32;
    std::vector<Act> v;
    auto add = [&](const std::string& name, Shape s, DType t, bool grad) { v.push_back({{name, s, t}, grad}); };
    add("a = rmsnorm(x)", {B, T, C}, act, s2);
    add("rstd of a", {B, T}, f, false);
    for (Site p : {Site{"q", C, HD}, Site{"k", C, KD}, Site{"v", C, KD}})
      projection(v, p.p, "a", p.out, s2 && lora(p.p), s2);
    add("q after RoPE", {B, T, H, D}, f, s2);
    add("k after RoPE", {B, T, Hkv, D}, f, s2);
    if (cuda && !(s2 && lora("v"))) add("v as f32", {B, T, Hkv, D}, f, s2);  // else a view
    if (!s2) {
      add("y_true (teacher softmax attention)", {B, T, H, D}, f, false);
      add("lse of y_true", {B, H, T}, f, false);
    }
    if (conv) {
      add("phi_q", {B, T, H, F}, f, true);
      add("phi_k", {B, T, H, F}, f, true);
      add(s2 ? "y (hybrid attention)" : "y_pred (hybrid attention)", {B, T, H, D}, f, true);
      add("Z normaliser", {B, H, T}, f, false);
    } else if (s2) {
      add("y (softmax attention, kept layer)", {B, T, H, D}, f, true);
      add("lse of y", {B, H, T}, f, false);
    }
    if (cuda) add(s2 ? "y as bf16 for Wo" : "y_true as bf16 for Wo", {B, T, HD}, act, s2);
    projection(v, "o", "y", C, s2 && lora("o"), s2);
    add("x1 = x + o", {B, T, C}, act, s2);
    add("m = rmsnorm(x1)", {B, T, C}, act, s2);
    add("rstd of m", {B, T}, f, false);
    add("gate = m Wgate^T", {B, T, FF}, act, s2);
    add("up = m Wup^T", {B, T, FF}, act, s2);
    add("h = silu(gate) * up", {B, T, FF}, act, s2);
    add("down = h Wdown^T", {B, T, C}, act, s2);
    add("x2 = x1 + down (layer output)", {B, T, C}, act, s2);
    return v;
  }
  static std::vector<PlanTensor> values(const std::vector<Act>& acts, int64_t count) {
    std::vector<PlanTensor> v;
    for (const Act& a : acts) v.push_back({a.t.name, a.t.shape, a.t.dtype, count});
    return v;
  }
  static std::vector<PlanTensor> grads(const std::vector<Act>& acts) {
    std::vector<PlanTensor> v;
    for (const Act& a : acts)
      if (a.grad) v.push_back({"d " + a.t.name, a.t.shape, a.t.dtype});
    return v;
  }
  // The larger of a converted and a kept layer's list, by bytes (only kinds that exist).
  std::vector<PlanTensor> larger_layer(const std::vector<PlanTensor>& conv,
                                       const std::vector<PlanTensor>& soft) const {
    const bool any_soft = converted < m.n_layers;
    if (converted == 0) return soft;
    return any_soft && sum_bytes(soft) > sum_bytes(conv) ? soft : conv;
  }
  // The temporary buffers of the LoLCATs kernels, as cuda/hybrid_attention.cu and
  // cuda/feature_map.cu allocate them (the CPU kernels need no more): the hybrid's per-block
  // states and its backward's row statistics; the feature map's z = x W (or dz) and x (or dx)
  // gathered by head (H heads: the query map's; the key map's Hkv are fewer).
  void kernel_scratch(std::vector<PlanTensor>& v) const {
    if (converted == 0) return;
    const int64_t nb = (T + kHybridBlock - 1) / kHybridBlock;
    v.push_back({"scratch: hybrid block states S", {B * H, nb, F, D}, DType::f32});
    v.push_back({"scratch: hybrid block states z", {B, H, nb, F}, DType::f32});
    v.push_back({"scratch: hybrid row statistics", {B, H, T}, DType::f32, 4});
    v.push_back({"scratch: feature map z or dz", {B, T, H, t2r ? F : Fh}, DType::f32});
    v.push_back({"scratch: feature map x, dx by head", {B, T, H, D}, DType::f32, 2});
  }
  void inputs(std::vector<PlanTensor>& v, bool targets) const {
    v.push_back({"token ids", {B, T}, DType::i32});
    if (targets) v.push_back({"targets", {B * T}, DType::i32});
    v.push_back({"RoPE cos, sin tables", {T, D / 2}, DType::f32, 2});
  }

  // Gradients and AdamW moments of the trainable tensors; the trainable count.
  void optimizer(StagePlan& s, const std::vector<PlanTensor>& trainable) const {
    for (const PlanTensor& p : trainable) {
      s.arenas[int(PlanArena::gradients)].push_back({"d " + p.name, p.shape, DType::f32, p.count});
      s.arenas[int(PlanArena::optimizer)].push_back({"m and v of " + p.name, p.shape, DType::f32, 2 * p.count});
      s.trainable += p.shape.numel() * p.count;
    }
  }

  void workspace(StagePlan& s) const {
    auto& ws = s.arenas[int(PlanArena::workspace)];
    size_t activations = 0, rounding = 0;
    for (PlanArena a : {PlanArena::kept, PlanArena::layer, PlanArena::logits})
      for (const PlanTensor& t : s.arenas[int(a)]) {
        size_t one = t.bytes() / size_t(std::max<int64_t>(t.count, 1));
        activations += t.bytes();
        rounding += (size_class(one) - one) * size_t(t.count);
      }
    if (opt.device == Device::cuda) {
      ws.push_back({"cuBLASLt workspace", {}, DType::f32, 1, kCublasWorkspace});
      ws.push_back({"allocator rounding to size classes", {}, DType::f32, 1, rounding});
    }
    ws.push_back({"margin: 10% of activations, >= 64 MiB", {}, DType::f32, 1,
                  std::max(kMinMargin, activations / 10)});
  }

  StagePlan stage1() const {
    ENSURE(converted > 0, "memory plan: no layer is converted, so there is no attention transfer to plan");
    StagePlan s;
    s.number = 1;
    s.arenas[int(PlanArena::weights)] = weights();
    s.arenas[int(PlanArena::parameters)] = feature_maps("");
    optimizer(s, s.arenas[int(PlanArena::parameters)]);
    inputs(s.arenas[int(PlanArena::kept)], false);
    // A converted layer's teacher and student (a kept layer's teacher alone is a part of it).
    std::vector<Act> acts = layer(1, true);
    auto& live = s.arenas[int(PlanArena::layer)];
    live = values(acts, 1);
    live.push_back({"x (layer input)", {B, T, C}, act});
    for (const PlanTensor& g : grads(acts)) live.push_back(g);
    kernel_scratch(live);
    workspace(s);
    return s;
  }

  StagePlan stage2() const {
    StagePlan s;
    s.number = 2;
    s.arenas[int(PlanArena::weights)] = weights();
    std::vector<PlanTensor> lora_p = lora_params();
    auto& params = s.arenas[int(PlanArena::parameters)];
    params = lora_p;
    for (const PlanTensor& t : feature_maps(" (frozen)")) params.push_back(t);
    optimizer(s, lora_p);

    auto& kept = s.arenas[int(PlanArena::kept)];
    auto& live = s.arenas[int(PlanArena::layer)];
    inputs(kept, true);
    std::vector<Act> conv = layer(2, true), soft = layer(2, false);
    std::vector<PlanTensor> dx_in = {{"d x (layer input)", {B, T, C}, act}};
    if (opt.device == Device::cuda) {
      // Per-layer recomputation: the layer inputs stay; one layer's forward is redone in the
      // backward and lives with its gradients.
      kept.push_back({"x_l, each layer's input", {B, T, C}, act, m.n_layers});
      auto with_grads = [&](const std::vector<Act>& a) {
        std::vector<PlanTensor> v = values(a, 1), g = grads(a);
        v.insert(v.end(), g.begin(), g.end());
        v.insert(v.end(), dx_in.begin(), dx_in.end());
        return v;
      };
      live = larger_layer(with_grads(conv), with_grads(soft));
    } else {
      // The CPU tape keeps every layer's activations until the backward has run.
      kept.push_back({"x_0 = embedding", {B, T, C}, act});
      const int soft_n = m.n_layers - converted;
      if (converted) for (const PlanTensor& t : values(conv, converted)) kept.push_back(t);
      if (soft_n)
        for (const PlanTensor& t : values(soft, soft_n)) kept.push_back({t.name + " (kept layer)", t.shape, t.dtype, t.count});
      std::vector<PlanTensor> gc = grads(conv), gs = grads(soft);
      gc.insert(gc.end(), dx_in.begin(), dx_in.end());
      gs.insert(gs.end(), dx_in.begin(), dx_in.end());
      live = larger_layer(gc, gs);
    }
    kernel_scratch(live);

    // The LM head: logits and their gradient, both whole (cross_entropy on materialised logits).
    auto& head = s.arenas[int(PlanArena::logits)];
    const int64_t N = B * T;
    if (opt.device == Device::cuda) head.push_back({"x_L (last layer's output)", {B, T, C}, act});
    head.insert(head.end(), {{"hn = rmsnorm(x_L)", {B, T, C}, act},
                             {"rstd of hn", {B, T}, DType::f32},
                             {"logits = hn Wlm^T", {N, V}, DType::f32},
                             {"lse of the logits", {N}, DType::f32},
                             {"d logits", {N, V}, DType::f32},
                             {"d hn", {B, T, C}, act},
                             {"d x_L", {B, T, C}, act}});
    workspace(s);
    return s;
  }
};

std::string gib_gb(size_t b) { return strfmt("%.2f GiB = %.2f GB", b / kGiB, b / 1e9); }

std::string header(const MemoryPlan& p) {
  std::string h = strfmt("memory plan: %s (%s), T=%d, batch %d, on %s\n", p.label.c_str(),
                         p.model.summary().c_str(), p.T, p.batch, device_name(p.device));
  h += p.device == Device::cuda
           ? "  bf16 frozen weights and activations, f32 LoLCATs tensors, LoRA path, logits, trainable "
             "parameters, gradients and AdamW moments; stage 2 recomputes each layer in its backward\n"
           : "  f32 throughout; the CPU tape keeps the whole stage-2 graph\n";
  return h;
}

std::string footer(const MemoryPlan& p) {
  std::string f = strfmt("  peak: %.1f MiB (%s)", p.peak() / kMiB, gib_gb(p.peak()).c_str());
  if (p.context)
    f += strfmt("; with the CUDA context (~%.0f MiB) a GPU needs %s", p.context / kMiB,
                gib_gb(p.peak() + p.context).c_str());
  return f + "\n";
}

}  // namespace

size_t PlanTensor::bytes() const {
  size_t one = shape.ndim == 0 ? raw : size_t(shape.numel()) * dtype_size(dtype);
  return one * size_t(count);
}

const char* plan_arena_name(PlanArena a) {
  static const char* names[kPlanArenas] = {"frozen weights", "parameters", "gradients",
                                           "AdamW moments", "kept activations", "one layer (live)",
                                           "logits (LM head)", "workspace"};
  return names[int(a)];
}

size_t StagePlan::bytes(PlanArena a) const { return sum_bytes(arenas[int(a)]); }
size_t StagePlan::total() const {
  size_t n = 0;
  for (const auto& a : arenas) n += sum_bytes(a);
  return n;
}

size_t MemoryPlan::peak() const {
  size_t p = 0;
  for (const StagePlan& s : stages) p = std::max(p, s.total());
  return p;
}
const StagePlan* MemoryPlan::stage(int number) const {
  for (const StagePlan& s : stages)
    if (s.number == number) return &s;
  return nullptr;
}

MemoryPlan plan_linearize_memory(const LlamaConfig& model, const LolcatsConfig& lolcats, int T, int batch,
                                 int lora_rank, const PlanOptions& options) {
  model.validate("memory plan");
  ENSURE(T > 0 && batch > 0, "memory plan: T (%d) and batch (%d) must be positive", T, batch);
  ENSURE(!options.stage2 || lora_rank > 0, "memory plan: the LoRA rank must be positive, got %d", lora_rank);
  for (int l : lolcats.softmax_layers)
    ENSURE(l >= 0 && l < model.n_layers, "softmax layer %d does not exist (the model has %d layers)", l,
           model.n_layers);
  Builder b(model, lolcats, T, batch, lora_rank, options);
  MemoryPlan p;
  p.label = options.label.empty() ? model.arch : options.label;
  p.model = model;
  p.device = options.device;
  p.T = T;
  p.batch = batch;
  p.context = options.device == Device::cuda ? kCudaContext : 0;
  if (options.stage1) p.stages.push_back(b.stage1());
  if (options.stage2) p.stages.push_back(b.stage2());
  return p;
}

std::string format_plan(const MemoryPlan& p) {
  std::string out = header(p);
  for (const StagePlan& s : p.stages) {
    out += strfmt("\nstage %d: %-62s %12s\n", s.number,
                  s.number == 1 ? "attention transfer" : "LoRA", "MiB");
    for (int a = 0; a < kPlanArenas; a++) {
      out += strfmt("  %-70s %12.1f\n", plan_arena_name(PlanArena(a)), s.bytes(PlanArena(a)) / kMiB);
      for (const PlanTensor& t : s.arenas[a])
        out += t.shape.ndim == 0 ? strfmt("    %-40s %-30s %10.1f\n", t.name.c_str(), "", t.bytes() / kMiB)
                     : strfmt("    %-40s %-20s %-4s x%-4lld %10.1f\n", t.name.c_str(), t.shape.str().c_str(),
                              dtype_name(t.dtype), (long long)t.count, t.bytes() / kMiB);
    }
    out += strfmt("  %-70s %12.1f  (%s)\n", strfmt("total, stage %d", s.number).c_str(), s.total() / kMiB,
                  gib_gb(s.total()).c_str());
    out += strfmt("  trainable parameters: %lld\n", (long long)s.trainable);
  }
  return out + "\n" + footer(p);
}

std::string format_plan_summary(const MemoryPlan& p) {
  std::string out = header(p) + strfmt("  %-20s", "MiB");
  for (const StagePlan& s : p.stages) out += strfmt(" %10s", strfmt("stage %d", s.number).c_str());
  out += "\n";
  for (int a = 0; a < kPlanArenas; a++) {
    out += strfmt("  %-20s", plan_arena_name(PlanArena(a)));
    for (const StagePlan& s : p.stages) out += strfmt(" %10.1f", s.bytes(PlanArena(a)) / kMiB);
    out += "\n";
  }
  out += strfmt("  %-20s", "total");
  for (const StagePlan& s : p.stages) out += strfmt(" %10.1f", s.total() / kMiB);
  return out + "\n" + footer(p);
}

void check_plan_fits(const MemoryPlan& p, size_t free_bytes, const std::string& card) {
  ENSURE(p.peak() <= free_bytes,
         "the memory plan needs %.2f GiB on the %s device (%s, T=%d, batch %d) but %.2f GiB is free on %s: "
         "lower --seq-len, free the GPU, or use a larger one (--plan-only lists every tensor)",
         p.peak() / kGiB, device_name(p.device), p.label.c_str(), p.T, p.batch, free_bytes / kGiB, card.c_str());
}

}  // namespace lolcats
