// `./linearize --export-format peft` (lolcats/peft_export.h): the adapter folder we write for a tiny
// model, loaded by peft itself (PeftModel.from_pretrained, in tests/reference/check_peft.py): no key
// unexpected or missing, peft's merged weights equal ours, and torch.load reads our feature maps.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>

#include "data/safetensors.h"
#include "lolcats/export.h"
#include "lolcats/peft_export.h"
#include "tests/helpers.h"
#include "tests/torch_pt_fixtures.h"

using namespace lolcats;
using lolcats_test::fixture;
using lolcats_test::fixture_dir;
using lolcats_test::pt_file;
using lolcats_test::tiny_base;
using lolcats_test::values;
using lolcats_test::read_bytes;
using lolcats_test::temp_dir;

namespace {




}  // namespace

TEST_CASE("--export-format peft: peft loads our adapter and merges it as we do; torch loads our feature maps",
          "[peft]") {
  const std::string base_path = tiny_base();
  pt_file("tiny_distill.pt");  // the fixtures exist (pt_tiny_llama among them)
  std::unique_ptr<Llama> base = Llama::load(base_path);
  auto lora = base->add_lora(8, 16.0f, {"q", "k", "v", "o"}, 3);
  LolcatsConfig cfg;
  cfg.feature_half = 8;
  cfg.softmax_layers = {1};
  LolcatsModel model(*base, cfg);
  // Random values everywhere (B starts at zero, the feature maps at the identity).
  std::mt19937 rng(77);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  auto params = model.named_parameters();
  params.insert(params.end(), lora.begin(), lora.end());
  for (auto& [name, v] : params)
    for (int64_t i = 0; i < v->value.numel(); i++) v->value.f32()[i] = normal(rng);

  const std::string dir = temp_dir("lolcats_peft_"), adapter = dir + "/peft", out = dir + "/peft_check.safetensors";
  export_peft(adapter, model, base_path);
  const std::string python = ".venv/bin/python";
  if (access(python.c_str(), X_OK) != 0) FAIL(python << " is missing: `make venv` (or `make test`) creates it");
  const std::string ft = dir + "/ft.pt";
  const std::string cmd = python + " tests/reference/check_peft.py " + adapter + " " + base_path + " " + out + " " +
                          ft + " > " + dir + "/log 2>&1";
  const int rc = std::system(cmd.c_str());
  INFO(cmd << "\n" << read_bytes(dir + "/log"));
  REQUIRE(rc == 0);

  SafeTensorsFile got(out);
  CHECK(got.metadata().at("r") == "8");
  CHECK(got.metadata().at("lora_alpha") == "16");
  CHECK(got.metadata().at("target_modules") == "k_proj,o_proj,q_proj,v_proj");
  CHECK(got.metadata().at("task_type") == "CAUSAL_LM");
  CHECK(got.metadata().at("lora_tensors") == "24");
  for (size_t l = 0; l < base->layers.size(); l++) {
    const LlamaLayer& L = base->layers[l];
    for (auto [t, w, site] : {std::tuple{"q", L.wq, &L.lora_q}, {"k", L.wk, &L.lora_k}, {"v", L.wv, &L.lora_v},
                              {"o", L.wo, &L.lora_o}}) {
      Var merged_w = leaf(w->value.clone(), false);
      merge_lora(merged_w, *site);
      const std::string name = "model.layers." + std::to_string(l) + ".self_attn." + t + "_proj.weight";
      CHECK_CLOSE(name, values(merged_w->value), got.load_f64("merged." + name), 1e-6, 1e-5);
    }
  }
  // lolcats_distill.pt through torch.load(weights_only=True): every tensor, exactly.
  int n = 0;
  for (auto& [name, t] : model.named_tensors()) {
    INFO(name);
    REQUIRE(got.has("distill." + name));
    CHECK(values(t) == got.load_f64("distill." + name));
    n++;
  }
  CHECK(got.metadata().at("distill_tensors") == std::to_string(n));

  // The round trip: our feature maps (lolcats_distill.pt) and the LoRA as peft loaded it, saved by
  // torch as the reference saves its stage 2 (ft.pt), read back by --linearized's loader: the same
  // parameters bit for bit, hence the same logits.
  LinearizedModel back = load_for_inference(adapter + "/lolcats_distill.pt," + ft, base_path, true);
  REQUIRE(back.model);
  auto ours = model.named_tensors(), theirs = back.model->named_tensors();
  REQUIRE(ours.size() == theirs.size());
  for (size_t i = 0; i < ours.size(); i++) CHECK(values(ours[i].second) == values(theirs[i].second));
  for (size_t l = 0; l < base->layers.size(); l++)
    for (auto [a, b] : {std::pair{&base->layers[l].lora_q, &back.base->layers[l].lora_q},
                        {&base->layers[l].lora_k, &back.base->layers[l].lora_k},
                        {&base->layers[l].lora_v, &back.base->layers[l].lora_v},
                        {&base->layers[l].lora_o, &back.base->layers[l].lora_o}}) {
      CHECK(values(a->A->value) == values(b->A->value));
      CHECK(values(a->B->value) == values(b->B->value));
      CHECK(a->scale == b->scale);
    }
  const Tensor ids = Tensor::from_i32({5, 17, 42, 99, 3, 250, 7, 1}, {1, 8});
  CHECK(values(model.forward(ids)->value) == values(back.model->forward(ids)->value));
  std::system(("rm -rf " + dir).c_str());
}
