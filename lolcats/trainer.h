// One training stage of LoLCATs (LOLCATS.md 3 and 4): AdamW over a set of parameters, gradient
// accumulation over packed chunks, evaluation on the validation chunks every `eval_every` steps,
// ReduceLROnPlateau stepped on the validation loss, the best-validation parameters kept and
// restored at the end, and a resumable checkpoint written atomically after every evaluation.
//
// The stage is generic: it is given a training function, which computes one chunk's loss and adds
// d(loss_scale * loss)/d(params) into the gradients, and an evaluation function, the same loss
// without gradients. Stage 1 plugs in the attention-transfer MSE, stage 2 the next-token
// cross-entropy (lolcats/stages.h).
//
// Determinism: chunk i of step s is train chunk (s * grad_accum + i) mod count, so the data order
// needs no saved state, and a resumed run repeats the uninterrupted one bit for bit.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tape.h"
#include "data/alpaca.h"

namespace lolcats {

struct StageConfig {
  std::string name = "stage";
  float lr = 1e-3f;
  float weight_decay = 0.0f;
  int grad_accum = 8;
  int64_t max_steps = 100;  // optimizer steps
  int eval_every = 100;     // also evaluates after the last step
  int eval_chunks = 0;      // validation chunks per evaluation (0 = all)
  double plateau_factor = 0.1;
  int plateau_patience = 10;
  double min_lr = 1e-5;
  std::string checkpoint;   // resumable checkpoint path ("" = none)
  bool resume = false;      // continue from `checkpoint` when it exists
  // Stop, as if killed, after this many optimizer steps of this call (-1: never): nothing more is
  // written, the best parameters are not restored, and the log says `stopped`. Tests and
  // ./linearize --kill-after-steps use it to prove that a resumed run repeats an uninterrupted one.
  int64_t stop_after = -1;
};

struct StageLog {
  struct Step { int64_t step; double loss, lr, seconds; int64_t tokens; };
  struct Eval { int64_t step; double val_loss, lr; };
  std::vector<Step> steps;
  std::vector<Eval> evals;
  double best_val = 0;
  int64_t best_step = -1;
  int64_t tokens = 0;
  double seconds = 0;
  bool stopped = false;  // ended by stop_after, before max_steps
};

// One chunk (ids (1, T), targets (T)): the loss, a (1) f32 tensor on the model's device, with
// d(loss_scale * loss) added into the parameters' gradients. The trainer reads every chunk's loss
// at the step's end, before the update: on a GPU the one wait of a step, however many chunks.
using TrainChunk = std::function<Tensor(const Tensor& ids, const Tensor& targets, float loss_scale)>;
// One chunk's loss without gradients (called under NoGrad).
using EvalChunk = std::function<double(const Tensor& ids, const Tensor& targets)>;


StageLog train_stage(const StageConfig& cfg, const std::vector<std::pair<std::string, Var>>& params,
                     const Chunks& train, const Chunks& val, const TrainChunk& train_chunk,
                     const EvalChunk& eval_chunk,
                     const std::function<void(const std::string& json_line)>& on_log = {});

// What a stage checkpoint has recorded (all zero when there is no such file): how far an earlier
// process of a resumed run got, and how long it trained.
struct CheckpointInfo {
  int64_t step = 0, tokens = 0;
  double seconds = 0;
};
CheckpointInfo checkpoint_info(const std::string& path);

// Mean loss over the first n validation chunks (all when n <= 0), under NoGrad.
double evaluate(const Chunks& val, int n, const EvalChunk& loss);

// A model's mean loss, mean_loss(ids (1, T), targets (T)) -> scalar Var (e.g. Llama::forward_loss),
// as an evaluation function.
EvalChunk eval_chunk_of(std::function<Var(const Tensor&, const Tensor&)> mean_loss);

// Chunk i of a set as (1, T) input ids and (T) targets.
std::pair<Tensor, Tensor> chunk_tensors(const Chunks& c, int64_t i);

}  // namespace lolcats
