// The Llama on the cuda device (emulated in `make test`, the hardware in the GPU bundle) against
// Hugging Face transformers' float64 reference (tests/reference/ref_llama.py): logits, the loss
// (the fused, vocabulary-chunked LM-head cross-entropy) and every parameter gradient, with f32
// storage and with the GPU's mixed precision (bf16 weights and activations, f32 gradients).
#include <algorithm>

#include "autograd/ops.h"
#include "data/chat_template.h"
#include "data/defaults.h"
#include "data/safetensors.h"
#include "data/tokenizer.h"
#include "nn/adamw.h"
#include "nn/generate.h"
#include "nn/llama.h"
#include "tensor/bf16.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;
using lolcats_test::fx;
using lolcats_test::fx_i32;

namespace {

const char* F = "ref_llama";

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Every gradient of `model` against the fixture, with tolerance
// atol + atol_rel * max|grad of that tensor| + rtol |grad|.
void check_grads(const Llama& model, const std::string& n, double atol, double atol_rel, double rtol) {
  for (auto& [pname, var] : model.named_parameters()) {
    INFO(pname);
    REQUIRE(var->grad.defined());
    CHECK(var->grad.dtype() == DType::f32);  // trainable weights keep f32 gradients
    std::vector<double> want = fx<double>(F, n + ".grad." + pname);
    CHECK_CLOSE(n + " grad " + pname, var->grad.to_vector(), want, atol + atol_rel * max_abs(want), rtol);
  }
}

}  // namespace

TEST_CASE("llama: forward_loss (the fused LM-head loss) matches transformers on the CPU", "[llama][ref]") {
  auto model = Llama::load(fixture_dir() + "/tiny_llama");
  model->set_requires_grad(true);
  Tensor ids = Tensor::from_i32(fx_i32(F, "tiny_llama.ids"), {2, 40});
  Tensor targets = Tensor::from_i32(fx_i32(F, "tiny_llama.targets"), {80});
  Var loss = model->forward_loss(ids, targets);
  // The same f32 arithmetic as forward + cross_entropy (tests/test_llama.cpp), same tolerances.
  CHECK_CLOSE("loss", loss->value.f32(), fx<double>(F, "tiny_llama.loss"), 1e-6, 1e-5);
  backward(loss);
  check_grads(*model, "tiny_llama", 1e-6, 0, 1e-4);
}

TEST_CASE("llama on the cuda device: tiny models match transformers, f32 and bf16", "[cuda][llama]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const char* name : {"tiny_llama", "tiny_llama_tied"}) {
      std::string n = name;
      INFO(n << " stored in " << dtype_name(dtype));
      auto model = Llama::load(fixture_dir() + "/" + n);
      model->to(Device::cuda, dtype);
      REQUIRE(model->device() == Device::cuda);
      REQUIRE(model->wte->value.dtype() == dtype);
      model->set_requires_grad(true);
      Tensor ids = Tensor::from_i32(fx_i32(F, n + ".ids"), {2, 40});  // on the host: moved by forward
      Tensor targets = Tensor::from_i32(fx_i32(F, n + ".targets"), {80});
      bool f32 = dtype == DType::f32;
      {
        NoGrad ng;
        Var logits = model->forward(ids);
        CHECK(logits->value.device() == Device::cuda);
        std::vector<double> want = fx<double>(F, n + ".logits");
        // f32: the CPU test's 2e-5 (f32 through 2 layers), the GPU summing in another order.
        // bf16: weights and every activation rounded to 8 bits of mantissa (2^-9 relative each),
        // through ~20 roundings in series: ~2% of the logits' scale.
        double atol = f32 ? 2e-5 : 2e-2 * max_abs(want), rtol = f32 ? 2e-5 : 2e-2;
        CHECK_CLOSE(n + " logits", logits->value.to_vector().data(), want, atol, rtol);
      }
      Var loss = model->forward_loss(ids, targets);
      CHECK(loss->value.device() == Device::cuda);  // the loss stays on the device: no wait in the step
      // bf16: the loss averages 80 rows of those logits: 1% relative.
      CHECK_CLOSE(n + " loss", loss->value.to_vector().data(), fx<double>(F, n + ".loss"), f32 ? 1e-6 : 0, f32 ? 1e-5 : 1e-2);
      backward(loss);
      // f32: as the CPU (1e-6 absolute + 1e-4 relative). bf16: the
      // backward runs through bf16 activations and bf16 activation gradients: a few % of the
      // largest gradient of each tensor.
      check_grads(*model, n, f32 ? 1e-6 : 0, f32 ? 0 : 5e-2, f32 ? 1e-4 : 5e-2);
    }
  }
}

TEST_CASE("llama on the cuda device: greedy generation equals the CPU's", "[cuda][llama]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  auto cpu = Llama::load(fixture_dir() + "/tiny_llama");
  auto gpu = Llama::load(fixture_dir() + "/tiny_llama");
  gpu->to(Device::cuda, DType::f32);  // f32: the argmax must not flip on rounding
  std::vector<int32_t> prompt = fx_i32(F, "tiny_llama.ids");
  prompt.resize(9);
  SamplingConfig cfg;
  cfg.max_new_tokens = 12;
  CHECK(generate(*make_decoder(*gpu), prompt, cfg) == generate(*make_decoder(*cpu), prompt, cfg));
}

TEST_CASE("llama on the cuda device: SmolLM2's greedy text equals the CPU's (f32)", "[cuda][llama][smollm2]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  const std::string path = kDefaultModel;
  if (FILE* f = std::fopen(path.c_str(), "rb")) std::fclose(f);
  else SKIP_TEST("the default model is not here (make model)");
  auto cpu = Llama::load(path);
  auto gpu = Llama::load(path);
  // f32 on the device: the same arithmetic in another order, so the argmax is stable. (In bf16 the
  // first answer token of some prompts is a near-tie, e.g. "The" 25.33 vs "L" 25.24 for "What is
  // the capital of France?" in transformers' float32, and either side may win.)
  gpu->to(Device::cuda, DType::f32);
  Tokenizer tok = Tokenizer::from_model(path);
  std::string text = apply_chat_template(chat_format_for(load_chat_template(path)),
                                         {{"user", "What is the capital of France?"}}, true);
  std::vector<int32_t> prompt = tok.encode(text, false);
  SamplingConfig cfg;
  cfg.max_new_tokens = 6;
  CHECK(generate(*make_decoder(*gpu), prompt, cfg) == generate(*make_decoder(*cpu), prompt, cfg));
}

TEST_CASE("llama: loading straight into a bf16 cuda arena equals loading then moving", "[cuda][llama]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  // The tiny model's safetensors are f32: converted one tensor at a time on the way in.
  auto moved = Llama::load(fixture_dir() + "/tiny_llama");
  moved->to(Device::cuda, DType::bf16);
  auto direct = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, DType::bf16);
  REQUIRE(direct->device() == Device::cuda);
  REQUIRE(direct->dtype() == DType::bf16);
  auto a = moved->named_parameters(), b = direct->named_parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); i++) {
    INFO(a[i].first);
    CHECK(a[i].second->value.to_vector() == b[i].second->value.to_vector());  // bit-equal
  }
  // A bf16 checkpoint goes in as stored: save the moved weights in bf16, load them back directly.
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, v] : b) tensors.push_back({name, v->value.to(Device::cpu)});
  std::string dir = "build/test_tmp_bf16_llama";
  std::string cmd = "rm -rf " + dir + " && mkdir -p " + dir + " && cp " + fixture_dir() + "/tiny_llama/config.json " + dir + "/";
  REQUIRE(std::system(cmd.c_str()) == 0);
  save_safetensors(dir + "/model.safetensors", tensors);
  auto from_bf16 = Llama::load(dir, Device::cuda, DType::bf16);
  auto c = from_bf16->named_parameters();
  for (size_t i = 0; i < b.size(); i++) {
    INFO(b[i].first);
    CHECK(c[i].second->value.to_vector() == b[i].second->value.to_vector());
  }
}

TEST_CASE("llama on the cuda device: AdamW steps follow the CPU's (f32, and bf16 with f32 masters)",
          "[cuda][llama]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  Tensor ids = Tensor::from_i32(fx_i32(F, "tiny_llama.ids"), {2, 40});
  Tensor targets = Tensor::from_i32(fx_i32(F, "tiny_llama.targets"), {80});
  AdamWConfig cfg;
  cfg.lr = 1e-2f;  // large enough that 3 steps move every weight well beyond bf16 noise
  for (DType dtype : {DType::f32, DType::bf16}) {
    INFO("cuda weights in " << dtype_name(dtype));
    const bool f32 = dtype == DType::f32;
    auto cpu = Llama::load(fixture_dir() + "/tiny_llama");
    auto gpu = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, dtype);
    cpu->set_requires_grad(true);
    gpu->set_requires_grad(true);
    AdamW ocpu(cpu->parameters(), cfg), ogpu(gpu->parameters(), cfg);
    std::vector<std::vector<float>> start;
    for (size_t i = 0; i < gpu->parameters().size(); i++) start.push_back(ogpu.master(i).to_vector());
    for (int step = 0; step < 3; step++) {
      ocpu.zero_grad();
      ogpu.zero_grad();
      Var lc = cpu->forward_loss(ids, targets), lg = gpu->forward_loss(ids, targets);
      // f32: the same arithmetic in another order. bf16: the logits' ~2% noise, averaged: 1%.
      CHECK(item(lg) == Approx(item(lc)).epsilon(f32 ? 1e-5 : 1e-2));
      backward(lc);
      backward(lg);
      ocpu.step();
      ogpu.step();
    }
    // The updates (final - initial) agree, by the relative norm error of each tensor's update. Not
    // elementwise: Adam divides each gradient by its own running RMS, so where a gradient is tiny
    // the summation order (f32) or bf16 noise decides the size and even the sign of its step.
    // Bounds: f32 1e-3 (measured <= 1e-4); bf16 0.4 (measured 0.05-0.24, the most for the norm
    // weights, whose gradients are the smallest: they come through bf16 activations). A master that
    // is not updated, or a stale working copy, gives 1.0.
    auto params = cpu->named_parameters();
    for (size_t i = 0; i < params.size(); i++) {
      INFO(params[i].first);
      std::vector<float> g = ogpu.master(i).to_vector(), c = ocpu.master(i).to_vector();
      std::vector<float> c0 = params[i].second->value.to_vector();  // (== c: the CPU's master is its value)
      CHECK(c == c0);
      std::vector<double> want(c.size());
      std::vector<float> got(c.size());
      auto cpu_start = Llama::load(fixture_dir() + "/tiny_llama")->named_parameters()[i].second->value.to_vector();
      double max_delta = 0;
      for (size_t k = 0; k < c.size(); k++) {
        want[k] = double(c[k]) - cpu_start[k];
        got[k] = g[k] - start[i][k];
        max_delta = std::max(max_delta, std::fabs(want[k]));
      }
      double err = 0, norm = 0;
      for (size_t k = 0; k < c.size(); k++) err += std::pow(got[k] - want[k], 2), norm += want[k] * want[k];
      double rel = std::sqrt(err / norm);
      INFO("relative norm error of the update " << rel << ", largest step " << max_delta);
      CHECK(rel < (f32 ? 1e-3 : 0.4));
      if (std::getenv("LOLCATS_PRINT_ERRORS")) std::printf("%s %s %.3g\n", dtype_name(dtype), params[i].first.c_str(), rel);
      // The bf16 working copy the forward reads is the master rounded to bf16.
      if (!f32) {
        std::vector<float> w = gpu->named_parameters()[i].second->value.to_vector();
        for (size_t k = 0; k < w.size(); k += 97)
          CHECK(w[k] == bf16_to_f32(f32_to_bf16(g[k])));
      }
    }
  }
}
