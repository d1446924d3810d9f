// The memory plan of linearizing a model (LOLCATS.md 3-4): what each training stage holds, as a
// list of named tensors (name, shape, dtype, count) per arena, summed. `./linearize` prints it
// before training and refuses a GPU whose free memory is below its peak; `./linearize --plan-only`
// prints it for any named config or model folder, without weights or a GPU.
//
// What is counted, per stage (every arena of a stage as if alive at once, so a stage's total is
// an upper bound of its peak; a stage's arenas are released before the next stage starts):
//   frozen weights      every Llama weight (the Llama constructor's list); bf16 on cuda, f32 on cpu
//   parameters          stage 1: feature maps + window logits (trainable); stage 2: LoRA
//                       (trainable) and the now frozen feature maps; all f32
//   gradients, AdamW    f32, one gradient and two moments (m, v) per trainable value; no master
//                       copies (the trainable parameters are f32 already)
//   kept activations    what lives across layers. Stage 1: token ids and RoPE tables only (teacher
//                       forcing: no graph crosses layers). Stage 2 on cuda: each layer's input
//                       hidden state (B, T, C), bf16, for all L layers (per-layer recomputation);
//                       on cpu: every layer's activations (the CPU tape keeps the whole graph)
//   one layer (live)    stage 1: a converted layer's teacher forward (no grad) and student graph
//                       with its gradients; stage 2 on cuda: one layer's recomputed forward and
//                       the gradients of all its activations (on cpu: the gradients only). Every
//                       tensor of the layer is counted as alive at once: an upper bound, since the
//                       no-grad teacher and the tape free most of them as they go. Plus the
//                       LoLCATs kernels' scratch (per-block states S of the hybrid attention, ...)
//                       as cuda/hybrid_attention.cu and cuda/feature_map.cu allocate it.
//   logits              stage 2: the LM head's input, the logits (B*T, V) f32 and their gradient,
//                       both counted (cross_entropy_backward writes dlogits into a new buffer)
//   workspace           cuda: cuBLASLt's 32 MiB (cuda/gemm.cu), the caching allocator's rounding
//                       of every activation to its size class (cuda/memory.cu), and a margin of
//                       10% of the activations (at least 64 MiB) for what the list leaves out:
//                       kernels' scratch, the tape's scratch where a gradient arrives twice
//                       (fan-out), driver internals. The cache never splits blocks, but every step
//                       and every layer asks for the same sizes, so after the first step it holds
//                       at most the most blocks of each size alive at once, which the "all of a
//                       layer alive at once" count already covers.
// The CUDA context (about 512 MiB) is already taken when the free memory is read, so the refusal
// compares the peak with what is free; a GPU's size must cover the peak plus the context.
//
// Activation dtypes on cuda (the device path's choice, which device training must honour): bf16
// for outputs of frozen-weight matmuls, norms, the residual stream, the MLP and the layer
// checkpoints; f32 for everything the LoLCATs ops read or write (q, k, v after RoPE, phi_q, phi_k,
// y, Z, y_true and its lse), for LoRA's path (trainable), and for the logits. A cast between the
// two is listed where a tensor must exist in both (v as f32 without LoRA on v, y as bf16 for Wo);
// RoPE is assumed to write its f32 output from the bf16 projection itself. On cpu all is f32.
// (The cuda hybrid kernels also take bf16 q, k, v and write bf16 y; f32 is the conservative count.)
#pragma once
#include <string>
#include <vector>

#include "lolcats/model.h"

namespace lolcats {

struct PlanTensor {
  std::string name;   // what it is: "gate = m Wgate^T"
  Shape shape;        // of one copy
  DType dtype = DType::f32;
  int64_t count = 1;  // copies: one per layer, ...
  size_t raw = 0;     // bytes per copy of a plain buffer (workspace, slack), which has no shape
  size_t bytes() const;
};

enum class PlanArena { weights, parameters, gradients, optimizer, kept, layer, logits, workspace };
constexpr int kPlanArenas = 8;
const char* plan_arena_name(PlanArena a);

struct StagePlan {
  int number = 1;  // 1: attention transfer, 2: LoRA
  std::vector<PlanTensor> arenas[kPlanArenas];
  int64_t trainable = 0;  // trainable values (the gradients arena's numel)
  size_t bytes(PlanArena a) const;
  size_t total() const;
};

struct PlanOptions {
  std::string label;                     // the model's name in the printout
  Device device = Device::cuda;
  std::vector<std::string> lora_targets = {"q", "k", "v", "o"};
  bool stage1 = true, stage2 = true;     // the stages that will run
};

struct MemoryPlan {
  std::string label;
  LlamaConfig model;
  Device device = Device::cuda;
  int T = 0, batch = 1;
  std::vector<StagePlan> stages;
  size_t context = 0;  // the CUDA context (not in the device's free memory when it is read)
  size_t peak() const;  // the largest stage's total
  const StagePlan* stage(int number) const;  // null when that stage does not run
};

MemoryPlan plan_linearize_memory(const LlamaConfig& model, const LolcatsConfig& lolcats, int T, int batch,
                                 int lora_rank, const PlanOptions& options = {});

// Every tensor of every arena, with the totals per arena and stage and the peak (MiB).
std::string format_plan(const MemoryPlan& plan);
// One line per arena, a column per stage, the totals and the peak.
std::string format_plan_summary(const MemoryPlan& plan);
// ENSUREs the peak fits in `free_bytes` (the free memory of `card`, the device checked), else one
// line naming the three.
void check_plan_fits(const MemoryPlan& plan, size_t free_bytes, const std::string& card);

}  // namespace lolcats
