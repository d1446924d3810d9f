// Learning-rate schedules.
//   constant:             lr(t) = base
//   cosine with warmup:   t < W: base * t / W;  then base * (r + (1 - r) * 0.5 (1 + cos(pi p)))
//                         with p = (t - W) / (total - W) clamped to [0, 1], r = min_lr_ratio
//                         (Hugging Face get_cosine_with_min_lr_schedule_with_warmup; r = 0 gives
//                          get_cosine_schedule_with_warmup)
//   ReduceLROnPlateau:    stepped with a validation loss; PyTorch semantics (mode "min",
//                         threshold_mode "rel"): after more than `patience` evaluations without a
//                         relative improvement of `threshold`, lr = max(lr * factor, min_lr);
//                         then `cooldown` evaluations during which bad evaluations are not counted.
#pragma once
#include <cstdint>
#include <limits>

namespace lolcats {

double lr_constant(double base, int64_t step);
double lr_cosine_warmup(double base, int64_t step, int64_t warmup_steps, int64_t total_steps,
                        double min_lr_ratio = 0.0);

class ReduceLROnPlateau {
 public:
  ReduceLROnPlateau(double lr, double factor = 0.1, int patience = 10, double min_lr = 0.0,
                    double threshold = 1e-4, int cooldown = 0);
  // Feed one validation loss; returns the learning rate to use from now on.
  double step(double metric);
  double lr() const { return lr_; }
  double best() const { return best_; }
  int num_bad() const { return num_bad_; }

  // State, for checkpoints.
  struct State {
    double lr, best;
    int num_bad, cooldown_counter;
  };
  State state() const { return {lr_, best_, num_bad_, cooldown_counter_}; }
  void restore(const State& s);

 private:
  double lr_, factor_, min_lr_, threshold_;
  int patience_, cooldown_;
  double best_ = std::numeric_limits<double>::infinity();
  int num_bad_ = 0, cooldown_counter_ = 0;
};

}  // namespace lolcats
