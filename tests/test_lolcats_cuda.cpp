// Both LoLCATs stages on the cuda device (the SIMT emulator in `make test`): three optimizer steps of
// attention transfer and of LoRA finetuning on the tiny model follow the CPU run step for step, with
// the weights in f32 and in bf16 (f32 feature maps, window factors, LoRA masters and AdamW state),
// stage 2 with its layers recomputed in the backward as ./linearize runs it there;
// a device run stopped and resumed from its checkpoint repeats the uninterrupted one bit for bit.
#ifdef LOLCATS_CUDA
#include <cmath>
#include <cstdio>
#include <functional>

#include "autograd/ops.h"
#include "lolcats/model.h"
#include "lolcats/stages.h"
#include "lolcats/trainer.h"
#include "tests/helpers.h"
#ifdef LOLCATS_CUDA_EMU
#include "cuda/emu/streams.h"
#endif

using namespace lolcats;

namespace {

std::string tiny_path() { return lolcats_test::fixture_dir() + "/tiny_llama"; }

// Chunks of T = 130 tokens below: two full 64-token blocks and a partial one, so the hybrid
// attention's state is read.
using lolcats_test::synthetic_chunks;

StageConfig three_steps(const std::string& name, float lr) {
  StageConfig cfg;
  cfg.name = name;
  cfg.lr = lr;
  cfg.grad_accum = 2;
  cfg.max_steps = 3;
  cfg.eval_every = 3;
  cfg.eval_chunks = 1;
  return cfg;
}

struct Run {
  std::vector<double> stage1, stage2;  // per-step losses
  double val1 = 0, val2 = 0;           // validation loss after each stage
  std::vector<float> feature_map;      // layer 0's trained query feature map
};

// Stage 1 then stage 2 of the tiny model's conversion, with the weights on `device` in `dtype`.
Run run_both(Device device, DType dtype, const Chunks& train, const Chunks& val) {
  auto base = Llama::load(tiny_path(), device, dtype);
  LolcatsModel m(*base, LolcatsConfig{});
  Run r;
  StageLog s1 = train_stage(
      three_steps("stage1", 1e-2f), m.named_parameters(), train, val,
      [&](const Tensor& ids, const Tensor&, float scale) { return transfer_train_chunk(m, ids, scale); },
      [&](const Tensor& ids, const Tensor&) { return transfer_eval_chunk(m, ids); });
  auto lora = base->add_lora(8, 16.0f, {"q", "k", "v", "o"}, 0);
  // As ./linearize runs stage 2 there: each layer recomputed in the backward.
  const Recompute recompute = device == Device::cuda ? Recompute::layers : Recompute::no;
  StageLog s2 = train_stage(
      three_steps("stage2", 1e-3f), lora, train, val,
      [&](const Tensor& ids, const Tensor& t, float scale) { return lora_train_chunk(m, ids, t, scale, recompute); },
      [&](const Tensor& ids, const Tensor& t) { return lora_eval_chunk(m, ids, t); });
  for (auto& s : s1.steps) r.stage1.push_back(s.loss);
  for (auto& s : s2.steps) r.stage2.push_back(s.loss);
  r.val1 = s1.evals.back().val_loss;
  r.val2 = s2.evals.back().val_loss;
  r.feature_map = m.layers[0].wq_fm->value.to_vector();
  return r;
}

void check_close_seq(const std::vector<double>& got, const std::vector<double>& want, double rel, const char* what) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); i++) {
    INFO(what << " step " << i + 1 << ": device " << got[i] << ", cpu " << want[i]);
    CHECK(std::fabs(got[i] - want[i]) <= rel * std::fabs(want[i]));
  }
}

}  // namespace

TEST_CASE("lolcats on the cuda device: both stages follow the CPU run (f32 and bf16 weights)", "[cuda][lolcats][slow]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  auto probe = Llama::load(tiny_path());
  Chunks train = synthetic_chunks(4, 130, probe->cfg.vocab, 1), val = synthetic_chunks(1, 130, probe->cfg.vocab, 2);
  Run cpu = run_both(Device::cpu, DType::f32, train, val);
  REQUIRE(cpu.stage1.back() < cpu.stage1.front());  // it learns, so the steps are not all alike
  for (DType dtype : {DType::f32, DType::bf16}) {
    INFO("cuda weights in " << dtype_name(dtype));
    Run gpu = run_both(Device::cuda, dtype, train, val);
    // Tolerances. f32: the same arithmetic in another order, through three Adam steps: 1e-4
    // relative. bf16: the frozen weights, and with them q, k, v and both attentions' outputs, are
    // rounded to 8 bits (2^-9 relative); the MSE of the student-teacher difference and the
    // cross-entropy average that noise down: 2e-2 for stage 1, 1e-2 for stage 2 (as the Llama's
    // own bf16 loss, test_llama_cuda.cpp).
    const bool f32 = dtype == DType::f32;
    check_close_seq(gpu.stage1, cpu.stage1, f32 ? 1e-4 : 2e-2, "stage 1 loss");
    check_close_seq(gpu.stage2, cpu.stage2, f32 ? 1e-4 : 1e-2, "stage 2 loss");
    check_close_seq({gpu.val1, gpu.val2}, {cpu.val1, cpu.val2}, f32 ? 1e-4 : 2e-2, "validation loss");
    // The trained feature map moved as on the CPU (relative norm error of its update from the
    // identity init; a map that did not train, or trained elsewhere, gives about 1).
    LolcatsModel fresh(*probe, LolcatsConfig{});
    std::vector<float> init = fresh.layers[0].wq_fm->value.to_vector();
    double err = 0, norm = 0;
    for (size_t i = 0; i < init.size(); i++) {
      double want = double(cpu.feature_map[i]) - init[i], got = double(gpu.feature_map[i]) - init[i];
      err += (got - want) * (got - want), norm += want * want;
    }
    INFO("feature-map update: relative norm error " << std::sqrt(err / norm));
    CHECK(norm > 0);
    CHECK(std::sqrt(err / norm) < (f32 ? 1e-3 : 0.2));
  }
}

TEST_CASE("lolcats on the cuda device: a stopped and resumed stage repeats the uninterrupted run",
          "[cuda][lolcats][trainer][slow]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  auto base = Llama::load(tiny_path(), Device::cuda, DType::bf16);
  Chunks train = synthetic_chunks(4, 130, base->cfg.vocab, 1), val = synthetic_chunks(1, 130, base->cfg.vocab, 2);
  auto run = [&](const std::string& ckpt, int64_t stop_after, bool resume) {
    LolcatsModel m(*base, LolcatsConfig{});
    // Stage 2's LoRA, fresh and identical each run: bf16 working copies of f32 masters.
    auto lora = base->add_lora(4, 8.0f, {"q", "v"}, 0);
    StageConfig cfg = three_steps("stage2", 1e-2f);
    cfg.max_steps = 4;
    cfg.eval_every = 2;
    cfg.checkpoint = ckpt;
    cfg.stop_after = stop_after;
    cfg.resume = resume;
    StageLog log = train_stage(
        cfg, lora, train, val,
        [&](const Tensor& ids, const Tensor& t, float scale) {
          return lora_train_chunk(m, ids, t, scale, Recompute::layers);
        },
        [&](const Tensor& ids, const Tensor& t) { return lora_eval_chunk(m, ids, t); });
    std::vector<double> out;
    for (auto& s : log.steps) out.push_back(s.loss);
    return out;
  };
  const std::string a = "build/test_tmp_cuda_a.ckpt", b = "build/test_tmp_cuda_b.ckpt";
  std::remove(a.c_str());
  std::remove(b.c_str());
  std::vector<double> straight = run(a, -1, false);
  std::vector<double> first = run(b, 2, false);
  std::vector<double> rest = run(b, -1, true);
  std::remove(a.c_str());
  std::remove(b.c_str());
  REQUIRE(straight.size() == 4);
  REQUIRE(first.size() == 2);
  REQUIRE(rest.size() == 2);
  first.insert(first.end(), rest.begin(), rest.end());
  for (size_t i = 0; i < 4; i++) {
    INFO("step " << i + 1);
    CHECK(first[i] == straight[i]);
  }
}

#ifdef LOLCATS_CUDA_EMU
// The emulator counts the calls after which a GPU's host waits for the device (cuda/emu/streams.h).
// A training chunk of either stage may upload its ids and targets before its first kernel; after
// that, nothing may wait until the trainer reads the loss at the step's end, or the host would
// stop queueing work while the device drains. Reading the loss must count, so the test can fail.
TEST_CASE("lolcats on the cuda device: a training chunk of either stage never waits for the device",
          "[cuda][lolcats]") {
  auto base = Llama::load(tiny_path(), Device::cuda, DType::bf16);
  LolcatsModel m(*base, LolcatsConfig{});
  Chunks train = synthetic_chunks(2, 130, base->cfg.vocab, 1);
  auto [ids, targets] = chunk_tensors(train, 0);
  auto check_no_wait = [&](const char* what, const std::function<Tensor()>& chunk) {
    INFO(what);
    chunk();  // the first call builds what later steps reuse (cuBLASLt plans, device tables)
    emu::reset_host_waits();
    Tensor loss = chunk();
    emu::HostWaits w = emu::host_waits();
    INFO("first wait after a kernel: " << w.first_late);
    CHECK(w.after_first_launch == 0);
    REQUIRE(loss.device() == Device::cuda);
    CHECK(std::isfinite(loss.to_vector()[0]));
    CHECK(emu::host_waits().after_first_launch == 1);  // the read is the one wait
  };
  check_no_wait("stage 1", [&] { return transfer_train_chunk(m, ids, 0.5f); });
  auto lora = base->add_lora(8, 16.0f, {"q", "k", "v", "o"}, 0);
  check_no_wait("stage 2", [&] { return lora_train_chunk(m, ids, targets, 0.5f, Recompute::layers); });
}
#endif

#endif  // LOLCATS_CUDA
