// Rotary position embedding (RoPE). Each head vector of q and k is cut into D/2 pairs; pair i at
// position p is rotated by the angle p * inv_freq[i], with inv_freq[i] = theta^(-2i/D):
//   (a, b) -> (a cos - b sin,  a sin + b cos)
// A rotation is orthogonal, so the backward is the rotation by minus the angle:
//   (da, db) = (da' cos + db' sin,  -da' sin + db' cos)
//
// Which two elements form a pair depends on the checkpoint format:
//   half_split  (Hugging Face, rotate_half): pair i = (x[i], x[i + D/2])
//   interleaved (Meta originals, and GGUF files converted by llama.cpp): pair i = (x[2i], x[2i+1])
// Hugging Face's converter permutes the rows of Wq/Wk so the two layouts give the same model; a
// loader must pick the layout that matches the weights it read.
//
// Llama 3.1 "llama3" scaling stretches long wavelengths to extend the context (factor 8): with
// wavelen = 2 pi / f, L = original_max_position,
//   wavelen < L / high_freq_factor  ->  f            (high frequencies kept)
//   wavelen > L / low_freq_factor   ->  f / factor   (low frequencies slowed down)
//   otherwise, with s = (L / wavelen - low) / (high - low):  (1 - s) f / factor + s f
#pragma once
#include <cstdint>

namespace lolcats {

enum class RopeLayout { half_split, interleaved };

struct RopeConfig {
  double theta = 10000.0;
  bool llama3_scaling = false;  // the fields below only apply when true
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position = 8192.0;
};

// inv_freq (D/2): the rotation speed of each pair, scaling applied.
void rope_inv_freq(double* inv_freq, int D, const RopeConfig& cfg);

// cos/sin tables (T, D/2) for the given positions (T): angle = pos[t] * inv_freq[i], in double.
template <typename T>
void rope_tables(T* cos_t, T* sin_t, const int32_t* pos, int n_pos, int D, const double* inv_freq);

// x, y: (B, T, H, D); y may equal x (in place). cos_t/sin_t: (T, D/2).
template <typename T>
void rope_forward(T* y, const T* x, const T* cos_t, const T* sin_t, int B, int T_, int H, int D,
                  RopeLayout layout);
template <typename T>
void rope_backward(T* dx, const T* dy, const T* cos_t, const T* sin_t, int B, int T_, int H, int D,
                   RopeLayout layout);


// Tensor-level entry points (tensor/device.h). x, y (B, T, H, D) (y may be x); cos/sin tables
// (T, D/2) f32 on the same device, made by rope_tables.
class Tensor;
void rope_forward(Tensor& y, const Tensor& x, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout);
void rope_backward(Tensor& dx, const Tensor& dy, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout);
// The tables for positions start .. start+T-1 on `device`.
void rope_tables(Tensor& cos_t, Tensor& sin_t, int start, int T, int D, const RopeConfig& cfg);

}  // namespace lolcats
