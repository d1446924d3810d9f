#include "lolcats/stages.h"

#include "autograd/ops.h"
#include "tensor/elementwise.h"
#include "lolcats/trainer.h"

namespace lolcats {

TransferLosses transfer_losses(const LolcatsModel& m, const Tensor& ids, float loss_scale) {
  const Llama& base = m.base;
  const int converted = m.converted_layers();
  ENSURE(converted > 0, "attention transfer: no layer is converted");
  const float share = 1000.0f / float(converted);  // each converted layer's weight in the loss
  TransferLosses out;
  out.layer_mse.resize(m.layers.size());

  // The tables first: they are uploaded, and an upload after the step's first kernel would wait.
  const RopeTables rope = base.rope_tables(int(ids.size(1)));
  Var x = base.embed(ids);
  out.loss = Tensor::zeros({1}, DType::f32, base.device());
  for (int l = 0; l < base.cfg.n_layers; l++) {
    AttentionInputs in = base.attention_inputs(l, x, rope);
    Var y_true;
    {
      NoGrad teacher;  // the teacher is fixed: no graph
      y_true = attention(in.q, in.k, in.v);
    }
    if (m.layers[size_t(l)].converted) {
      Var y_pred = m.student_attention(l, in.q, in.k, in.v);
      Var mse_l = mse(y_pred, y_true);
      if (mse_l->requires_grad) backward(mse_l, share * loss_scale);  // frees this layer's graph
      out.layer_mse[size_t(l)] = mse_l->value;
      add_forward(out.loss, out.loss, mse_l->value);  // on the device: no wait
    }
    x = base.mlp_residual(l, base.attention_residual(l, x, y_true));  // teacher forcing
  }
  scale_forward(out.loss, out.loss, share);
  out.hidden = x;
  return out;
}

TransferResult attention_transfer(const LolcatsModel& m, const Tensor& ids, float loss_scale) {
  TransferLosses losses = transfer_losses(m, ids, loss_scale);
  const float share = 1000.0f / float(m.converted_layers());
  TransferResult r;
  r.layer_mse.assign(m.layers.size(), 0.0f);
  double total = 0;
  for (size_t l = 0; l < m.layers.size(); l++)
    if (losses.layer_mse[l].defined()) total += r.layer_mse[l] = losses.layer_mse[l].to_vector()[0];
  r.loss = float(share * total);
  r.hidden = losses.hidden;
  return r;
}

Tensor transfer_train_chunk(const LolcatsModel& m, const Tensor& ids, float loss_scale) {
  return transfer_losses(m, ids, loss_scale).loss;
}

double transfer_eval_chunk(const LolcatsModel& m, const Tensor& ids) {
  NoGrad no_grad;
  return attention_transfer(m, ids, 0.0f).loss;
}

Tensor lora_train_chunk(const LolcatsModel& m, const Tensor& ids, const Tensor& targets, float loss_scale,
                        Recompute recompute) {
  Var loss = m.loss(ids, targets, recompute);
  backward(loss, loss_scale);
  return loss->value;  // on the device: the trainer reads it at the step's end
}

double lora_eval_chunk(const LolcatsModel& m, const Tensor& ids, const Tensor& targets) {
  NoGrad no_grad;
  return item(m.loss(ids, targets));
}

std::vector<double> transfer_mse_per_layer(const LolcatsModel& m, const Chunks& chunks, int n) {
  const int64_t count = n > 0 ? std::min<int64_t>(n, chunks.count()) : chunks.count();
  ENSURE(count > 0, "attention MSE: no chunk to measure it on");
  std::vector<double> out(m.layers.size(), 0.0);
  NoGrad no_grad;
  for (int64_t i = 0; i < count; i++) {
    TransferResult r = attention_transfer(m, chunk_tensors(chunks, i).first, 0.0f);
    for (size_t l = 0; l < out.size(); l++) out[l] += 1000.0 * r.layer_mse[l] / double(count);
  }
  return out;
}

double converted_mean(const LolcatsModel& m, const std::vector<double>& per_layer) {
  double total = 0;
  int n = 0;
  for (size_t l = 0; l < per_layer.size(); l++)
    if (m.layers[l].converted) total += per_layer[l], n++;
  return n ? total / n : 0.0;
}

}  // namespace lolcats
