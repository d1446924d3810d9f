// The stage trainer: a run stopped after k steps and resumed from its checkpoint reproduces the
// uninterrupted run's losses bit for bit; a NaN loss stops the run with a clear message and leaves
// the last good checkpoint loadable; the best-validation parameters are restored at the end.
#include <cmath>
#include <cstdio>

#include "autograd/ops.h"
#include "lolcats/model.h"
#include "lolcats/stages.h"
#include "lolcats/trainer.h"
#include "tests/helpers.h"

using namespace lolcats;

namespace {

std::string tiny_path() {
  const char* d = std::getenv("LOLCATS_FIXTURES");
  return std::string(d ? d : "build/fixtures") + "/tiny_llama";
}

// sum(-w): a constant gradient of -1 (AdamW then moves w up by about lr per step).
Var scale_var(const Var& w) { return scale(sum(w), -1.0f); }

using lolcats_test::synthetic_chunks;

// Stage 1 of a fresh LoLCATs conversion of the tiny model; returns the per-step losses.
std::vector<double> run_stage1(const Llama& base, StageConfig cfg, const Chunks& train, const Chunks& val) {
  LolcatsModel m(base, LolcatsConfig{});
  StageLog log = train_stage(
      cfg, m.named_parameters(), train, val,
      [&](const Tensor& ids, const Tensor&, float scale) { return transfer_train_chunk(m, ids, scale); },
      [&](const Tensor& ids, const Tensor&) { return transfer_eval_chunk(m, ids); });
  std::vector<double> out;
  for (auto& s : log.steps) out.push_back(s.loss);
  return out;
}

}  // namespace

TEST_CASE("trainer: stop + resume gives bit-identical losses", "[trainer]") {
  auto base = Llama::load(tiny_path());
  Chunks train = synthetic_chunks(5, 130, base->cfg.vocab, 1), val = synthetic_chunks(2, 130, base->cfg.vocab, 2);
  StageConfig cfg;
  cfg.name = "stage1";
  cfg.lr = 1e-2f;
  cfg.grad_accum = 2;
  cfg.max_steps = 6;
  cfg.eval_every = 2;
  cfg.plateau_patience = 0;  // make the scheduler act, so its state must survive the resume too
  std::vector<double> straight = run_stage1(*base, cfg, train, val);
  REQUIRE(straight.size() == 6);
  CHECK(straight.back() < straight.front());  // it learns

  cfg.checkpoint = "build/test_tmp_trainer.ckpt";
  std::remove(cfg.checkpoint.c_str());
  cfg.stop_after = 4;  // "killed" after step 4 (its checkpoint was written at the step-4 evaluation)
  std::vector<double> first = run_stage1(*base, cfg, train, val);
  cfg.stop_after = -1;
  cfg.resume = true;
  std::vector<double> rest = run_stage1(*base, cfg, train, val);
  REQUIRE(first.size() == 4);
  REQUIRE(rest.size() == 2);
  first.insert(first.end(), rest.begin(), rest.end());
  for (size_t i = 0; i < straight.size(); i++) {
    INFO("step " << i + 1);
    CHECK(first[i] == straight[i]);  // exact: same operations on the same values
  }
  std::remove(cfg.checkpoint.c_str());
}

TEST_CASE("trainer: a NaN loss stops the run and keeps the last good checkpoint", "[trainer]") {
  Var w = leaf(Tensor::from({1.0f, 2.0f}, {2}), true);
  int calls = 0;
  // Each step trains on one chunk and evaluates on one: steps 1-3 are finite, then NaN.
  TrainChunk train = [&](const Tensor&, const Tensor&, float scale) {
    Var l = sum(mul(w, w));
    backward(l, scale);
    return ++calls > 6 ? Tensor::from({NAN}, {1}) : l->value;
  };
  EvalChunk eval = [&](const Tensor&, const Tensor&) { return ++calls > 6 ? NAN : double(item(sum(mul(w, w)))); };
  Chunks c = synthetic_chunks(2, 4, 10, 3);
  StageConfig cfg;
  cfg.name = "toy";
  cfg.grad_accum = 1;
  cfg.max_steps = 10;
  cfg.eval_every = 1;
  cfg.eval_chunks = 1;
  cfg.checkpoint = "build/test_tmp_nan.ckpt";
  std::remove(cfg.checkpoint.c_str());
  REQUIRE_THROWS_WITH(train_stage(cfg, {{"w", w}}, c, c, train, eval),
                      Catch::Contains("the loss is nan at step 4") && Catch::Contains("test_tmp_nan.ckpt"));
  SafeTensorsFile f(cfg.checkpoint);  // still there and readable
  CHECK(f.has("param.w"));
  std::remove(cfg.checkpoint.c_str());
}

TEST_CASE("trainer: the best-validation parameters are restored at the end", "[trainer]") {
  // Training pushes w up by a fixed gradient; the validation loss (w - 3.5)^2 is best after a few
  // steps and worse later, so the final w must be the best-validation one, not the last one.
  Var w = leaf(Tensor::from({3.0f}, {1}), true);
  TrainChunk train = [&](const Tensor&, const Tensor&, float scale) {
    backward(scale_var(w), scale);
    return Tensor::zeros({1});
  };
  EvalChunk eval = [&](const Tensor&, const Tensor&) {
    double d = w->value.f32()[0] - 3.5;
    return d * d;
  };
  Chunks c = synthetic_chunks(1, 4, 10, 4);
  StageConfig cfg;
  cfg.grad_accum = 1;
  cfg.lr = 0.1f;
  cfg.max_steps = 12;
  cfg.eval_every = 1;
  cfg.eval_chunks = 1;
  StageLog log = train_stage(cfg, {{"w", w}}, c, c, train, eval);
  REQUIRE(log.evals.size() == 12);
  size_t best_i = 0;
  for (size_t i = 0; i < log.evals.size(); i++)
    if (log.evals[i].val_loss < log.evals[best_i].val_loss) best_i = i;
  CHECK(log.best_step == int64_t(best_i) + 1);
  CHECK(log.best_step < 12);
  CHECK(std::pow(w->value.f32()[0] - 3.5, 2) == Approx(log.best_val));
}
