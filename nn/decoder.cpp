#include "nn/decoder.h"

#include "nn/decode.h"
#include "nn/decode_device.h"
#include "nn/kv_cache.h"

namespace lolcats {

Decoder::Decoder(const Llama& model, std::unique_ptr<DecodeMemory> memory)
    : model_(model), trunk_(make_decode_trunk(model)), memory_(std::move(memory)) {}

void Decoder::reserve(int batch, int max_len) {
  ENSURE(batch > 0 && max_len > 0, "decoder: batch %d and max_len %d must be positive", batch, max_len);
  memory_->reserve(batch, max_len);
  length_.assign(size_t(batch), 0);
  max_len_ = max_len;
}

void Decoder::step(const int32_t* tokens, const int* n, float* logits, Logits which) {
  ENSURE(batch() > 0, "decoder: reserve() before the first step");
  StepRows& r = rows_;
  const int B = batch(), V = vocab();
  r.n.assign(n, n + B);
  r.length = length_;
  r.first.resize(size_t(B));
  r.R = 0;
  for (int b = 0; b < B; b++) {
    ENSURE(n[b] >= 0 && (!memory_->bounded() || length_[size_t(b)] + n[b] <= max_len_),
           "decode: sequence %d holds %d tokens, %d more do not fit in %d", b, length_[size_t(b)], n[b], max_len_);
    r.first[size_t(b)] = r.R;
    r.R += n[b];
  }
  if (r.R == 0) return;
  r.seq.resize(size_t(r.R));
  r.pos.resize(size_t(r.R));
  for (int b = 0, i = 0; b < B; b++)
    for (int t = 0; t < n[b]; t++, i++) r.seq[size_t(i)] = b, r.pos[size_t(i)] = length_[size_t(b)] + t;
  for (int i = 0; i < r.R; i++)
    ENSURE(tokens[i] >= 0 && tokens[i] < V, "decode: token id %d is outside [0, %d)", tokens[i], V);
  if (model_.device() == Device::cpu) {  // views of the host vectors: nothing allocated per step
    r.seq_t = Tensor::borrow(r.seq.data(), {r.R}, DType::i32);
    r.pos_t = Tensor::borrow(r.pos.data(), {r.R}, DType::i32);
  } else {
    r.seq_t = Tensor::from_i32(r.seq, {r.R}).to(model_.device());
    r.pos_t = Tensor::from_i32(r.pos, {r.R}).to(model_.device());
  }

  trunk_->embed(tokens, r);
  memory_->begin_step(r);
  for (int l = 0; l < model_.cfg.n_layers; l++) {
    DecodeTrunk::Rows x = trunk_->attention_inputs(l);
    memory_->attend(l, x.y, x.q, x.k, x.v, r);
    trunk_->finish_layer(l);
  }
  trunk_->logits(logits, r, which);
  memory_->end_step(r);
  for (int b = 0; b < B; b++) length_[size_t(b)] += n[b];
}

void Decoder::copy(int from, int to) {
  ENSURE(from >= 0 && from < batch() && to >= 0 && to < batch(), "decoder: copy %d -> %d outside a batch of %d", from,
         to, batch());
  if (from == to) return;
  memory_->copy(from, to, length_[size_t(from)]);
  length_[size_t(to)] = length_[size_t(from)];
}

void Decoder::reset(int b) {
  ENSURE(b >= 0 && b < batch(), "decoder: sequence %d outside a batch of %d", b, batch());
  memory_->reset(b);
  length_[size_t(b)] = 0;
}

void Decoder::assume_length(int b, int P) {
  ENSURE(b >= 0 && b < batch() && P >= 0 && (!memory_->bounded() || P <= max_len_),
         "decoder: sequence %d cannot hold %d tokens", b, P);
  memory_->assume_length(b, P);
  length_[size_t(b)] = P;
}

std::unique_ptr<DecodeTrunk> make_decode_trunk(const Llama& model) {
  return model.device() == Device::cpu ? make_cpu_decode_trunk(model) : make_device_decode_trunk(model);
}

std::unique_ptr<Decoder> make_decoder(const Llama& model) {
  return std::make_unique<Decoder>(model, std::make_unique<KvCache>(model));
}

}  // namespace lolcats
