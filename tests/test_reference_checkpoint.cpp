// The LoLCATs reference implementation's own checkpoints of a tiny model (tests/reference/ref_torch_pt.py:
// a stage-1 distill file made as its trainer saves one, a stage-2 ft file of a LoRA made by peft)
// through --linearized's loader (lolcats/reference_checkpoint.h): feature maps equal to the saved
// tensors, the LoRA merged as peft's merge_and_unload merges it; and the errors of wrong inputs.
#include <fstream>

#include "lolcats/export.h"
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

TEST_CASE("the reference's distill + ft checkpoints load as --linearized does, equal to what torch and peft hold",
          "[pt]") {
  const std::string distill = pt_file("tiny_distill.pt"), ft = pt_file("tiny_ft.pt");
  LinearizedModel m = load_for_inference(distill + "," + ft, tiny_base(), true);
  REQUIRE(m.model);
  const LolcatsModel& model = *m.model;
  CHECK(model.cfg.variant == HybridVariant::terrace);
  CHECK(model.cfg.feature_map == FeatureMapKind::hedgehog);
  CHECK(model.Fh == 8);
  CHECK(model.layers[0].converted);
  CHECK_FALSE(model.layers[1].converted);  // no feature maps in the file: kept softmax
  CHECK(model.layers[2].converted);

  // Feature maps and window factors: bf16 in the file, the same values exactly.
  for (auto& [name, t] : model.named_tensors()) {
    INFO(name);
    CHECK(values(t) == fixture("ref_torch_pt").load_f64("distill." + name));
  }
  // The LoRA: W + (alpha / r) B A, merged here as ./linearize merges, against peft's merge_and_unload
  // in float64 (f32 products of 8 terms: a few ulps).
  int merged = 0;
  for (size_t l = 0; l < m.base->layers.size(); l++) {
    const LlamaLayer& L = m.base->layers[l];
    for (auto [t, w, lora] : {std::tuple{"q", L.wq, &L.lora_q}, {"k", L.wk, &L.lora_k}, {"v", L.wv, &L.lora_v},
                              {"o", L.wo, &L.lora_o}}) {
      REQUIRE(lora->active());
      CHECK(lora->A->value.size(0) == 8);
      CHECK(lora->scale == 2.0f);
      Var merged_w = leaf(w->value.clone(), false);
      merge_lora(merged_w, *lora);
      const std::string name = "model.layers." + std::to_string(l) + ".self_attn." + t + "_proj.weight";
      CHECK_CLOSE(name, values(merged_w->value), fixture("ref_torch_pt").load_f64("merged." + name), 1e-6, 1e-5);
      merged++;
    }
  }
  CHECK(merged == 12);
  // The model runs (the hybrid attention of layers 0 and 2, softmax in 1).
  Var logits = model.forward(Tensor::from_i32({5, 17, 42, 99, 3, 250, 7, 1}, {1, 8}));
  for (double v : values(logits->value)) REQUIRE(std::isfinite(v));

  // The distill file alone: no LoRA.
  LinearizedModel s1 = load_for_inference(distill, tiny_base(), true);
  CHECK_FALSE(s1.base->layers[0].lora_q.active());
  // The sw variant, when asked for.
  ReferenceOptions sw;
  sw.variant = HybridVariant::sw;
  CHECK(load_for_inference(distill, tiny_base(), true, sw).model->cfg.variant == HybridVariant::sw);
}

TEST_CASE("reference checkpoints: wrong combinations are one clear error", "[pt]") {
  using Catch::Contains;
  const std::string distill = pt_file("tiny_distill.pt"), ft = pt_file("tiny_ft.pt");
  CHECK_THROWS_WITH(load_for_inference(distill, tiny_base(), false), Contains("name it with --model"));
  CHECK_THROWS_WITH(load_for_inference(ft, tiny_base(), true), Contains("no feature maps"));
  // A file that is not a LoLCATs checkpoint (a Linear's state dict).
  CHECK_THROWS_WITH(load_for_inference(pt_file("plain.pt"), tiny_base(), true),
                    Contains("unexpected tensor bias"));
  // Another base model: tiny_llama (ref_llama.py) has 2 layers, the checkpoint's layer 2 has no place.
  lolcats_test::fixture("ref_llama");
  CHECK_THROWS_WITH(load_for_inference(distill, fixture_dir() + "/tiny_llama", true),
                    Contains("has 2 layers"));
  CHECK_FALSE(is_reference_checkpoint("runs/x/lolcats_params.safetensors"));
  CHECK(is_reference_checkpoint("a_distill.pt,b_ft.pt"));
}
