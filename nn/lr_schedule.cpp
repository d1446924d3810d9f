#include "nn/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "tensor/check.h"

namespace lolcats {

double lr_constant(double base, int64_t) { return base; }

double lr_cosine_warmup(double base, int64_t step, int64_t warmup_steps, int64_t total_steps,
                        double min_lr_ratio) {
  if (step < warmup_steps) return base * double(step) / double(std::max<int64_t>(1, warmup_steps));
  double p = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  p = std::min(1.0, std::max(0.0, p));
  const double kPi = 3.14159265358979323846;
  double cosine = 0.5 * (1.0 + std::cos(kPi * p));
  return base * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine);
}

ReduceLROnPlateau::ReduceLROnPlateau(double lr, double factor, int patience, double min_lr,
                                     double threshold, int cooldown)
    : lr_(lr), factor_(factor), min_lr_(min_lr), threshold_(threshold), patience_(patience),
      cooldown_(cooldown) {
  ENSURE(factor < 1.0, "ReduceLROnPlateau: factor must be < 1, got %g", factor);
}

double ReduceLROnPlateau::step(double metric) {
  if (metric < best_ * (1.0 - threshold_)) {  // a relative improvement
    best_ = metric;
    num_bad_ = 0;
  } else {
    num_bad_++;
  }
  if (cooldown_counter_ > 0) {  // just reduced: give the new lr time before judging it
    cooldown_counter_--;
    num_bad_ = 0;
  }
  if (num_bad_ > patience_) {
    double new_lr = std::max(lr_ * factor_, min_lr_);
    if (lr_ - new_lr > 1e-8) lr_ = new_lr;  // PyTorch ignores changes smaller than eps = 1e-8
    cooldown_counter_ = cooldown_;
    num_bad_ = 0;
  }
  return lr_;
}

void ReduceLROnPlateau::restore(const State& s) {
  lr_ = s.lr;
  best_ = s.best;
  num_bad_ = s.num_bad;
  cooldown_counter_ = s.cooldown_counter;
}

}  // namespace lolcats
