#include "lolcats/trainer.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "data/safetensors.h"
#include "nn/adamw.h"
#include "nn/lr_schedule.h"
#include "tensor/activations.h"
#include "tensor/clock.h"

namespace lolcats {

namespace {

std::string eta(double seconds) {
  int s = int(seconds);
  return s >= 3600 ? strfmt("%dh%02dm", s / 3600, s / 60 % 60) : strfmt("%dm%02ds", s / 60, s % 60);
}

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

void copy_values(Tensor dst, const Tensor& src) { dst.copy_from(src, "parameter"); }

// The counters a checkpoint records (JSON in its metadata), every one checked: a damaged file is
// one error that names it, not a JSON library's message without a file.
nlohmann::json checkpoint_record(const SafeTensorsFile& f) {
  auto it = f.metadata().find("lolcats_checkpoint");
  ENSURE(it != f.metadata().end(), "%s is not a training checkpoint (no lolcats_checkpoint record)",
         f.path().c_str());
  nlohmann::json m = nlohmann::json::parse(it->second, nullptr, false);
  ENSURE(m.is_object(), "%s: the checkpoint record is not a JSON object (damaged file?)", f.path().c_str());
  for (const char* key : {"step", "adam_steps", "plateau_bad", "plateau_cooldown", "best_step", "tokens"})
    ENSURE(m.contains(key) && m[key].is_number_integer(), "%s: the checkpoint record has no integer \"%s\"",
           f.path().c_str(), key);
  for (const char* key : {"lr", "plateau_best", "best_val", "seconds"})
    ENSURE(m.contains(key) && m[key].is_number(), "%s: the checkpoint record has no number \"%s\"",
           f.path().c_str(), key);
  return m;
}

// Everything needed to continue: parameters, AdamW moments, the best parameters so far, and the
// counters (in the metadata). Parameters are AdamW's f32 masters (for f32 parameters, their
// values), wherever they live: a checkpoint is the same file from the CPU or the cuda device.
struct Checkpoint {
  static void save(const std::string& path, const std::vector<std::pair<std::string, Var>>& params,
                   AdamW& opt, const std::vector<Tensor>& best, const ReduceLROnPlateau& sched,
                   int64_t step, const StageLog& log) {
    std::vector<std::pair<std::string, Tensor>> t;
    for (size_t i = 0; i < params.size(); i++) {
      t.push_back({"param." + params[i].first, opt.master(i)});
      t.push_back({"adam_m." + params[i].first, opt.m(i)});
      t.push_back({"adam_v." + params[i].first, opt.v(i)});
      t.push_back({"best." + params[i].first, best[i]});
    }
    auto st = sched.state();
    nlohmann::json meta = {{"step", step},           {"adam_steps", opt.steps()},
                           {"lr", st.lr},            {"plateau_best", st.best},
                           {"plateau_bad", st.num_bad}, {"plateau_cooldown", st.cooldown_counter},
                           {"best_val", log.best_val}, {"best_step", log.best_step},
                           {"tokens", log.tokens},   {"seconds", log.seconds}};
    save_safetensors(path, t, {{"lolcats_checkpoint", meta.dump()}});
  }

  static int64_t load(const std::string& path, const std::vector<std::pair<std::string, Var>>& params,
                      AdamW& opt, std::vector<Tensor>& best, ReduceLROnPlateau& sched, StageLog& log) {
    SafeTensorsFile f(path);
    const nlohmann::json m = checkpoint_record(f);
    for (size_t i = 0; i < params.size(); i++) {
      const std::string& n = params[i].first;
      for (auto [prefix, dst] : {std::pair<std::string, Tensor>{"param.", opt.master(i)},
                                 {"adam_m.", opt.m(i)}, {"adam_v.", opt.v(i)}, {"best.", best[i]}}) {
        f.load_into(prefix + n, dst);
      }
    }
    opt.refresh_working();
    opt.set_steps(m["adam_steps"].get<int64_t>());
    sched.restore({m["lr"].get<double>(), m["plateau_best"].get<double>(), m["plateau_bad"].get<int>(),
                   m["plateau_cooldown"].get<int>()});
    opt.set_lr(float(sched.lr()));
    log.best_val = m["best_val"].get<double>();
    log.best_step = m["best_step"].get<int64_t>();
    log.tokens = m["tokens"].get<int64_t>();
    log.seconds = m["seconds"].get<double>();
    return m["step"].get<int64_t>();
  }
};

}  // namespace

CheckpointInfo checkpoint_info(const std::string& path) {
  if (!exists(path)) return {};
  SafeTensorsFile f(path);
  const nlohmann::json m = checkpoint_record(f);
  return {m["step"].get<int64_t>(), m["tokens"].get<int64_t>(), m["seconds"].get<double>()};
}

std::pair<Tensor, Tensor> chunk_tensors(const Chunks& c, int64_t i) {
  ENSURE(i >= 0 && i < c.count(), "chunk %lld out of range (%lld chunks)", (long long)i, (long long)c.count());
  std::vector<int32_t> ids(c.inputs.begin() + i * c.T, c.inputs.begin() + (i + 1) * c.T);
  std::vector<int32_t> tg(c.targets.begin() + i * c.T, c.targets.begin() + (i + 1) * c.T);
  return {Tensor::from_i32(ids, {1, c.T}), Tensor::from_i32(tg, {c.T})};
}

EvalChunk eval_chunk_of(std::function<Var(const Tensor&, const Tensor&)> mean_loss) {
  return [mean_loss](const Tensor& ids, const Tensor& targets) { return double(item(mean_loss(ids, targets))); };
}

double evaluate(const Chunks& val, int n, const EvalChunk& loss) {
  int64_t count = n > 0 ? std::min<int64_t>(n, val.count()) : val.count();
  ENSURE(count > 0, "evaluation needs at least one validation chunk");
  NoGrad no_grad;
  double total = 0;
  for (int64_t i = 0; i < count; i++) {
    auto [ids, targets] = chunk_tensors(val, i);
    total += loss(ids, targets);
  }
  return total / double(count);
}

StageLog train_stage(const StageConfig& cfg, const std::vector<std::pair<std::string, Var>>& params,
                     const Chunks& train, const Chunks& val, const TrainChunk& train_chunk,
                     const EvalChunk& eval_chunk,
                     const std::function<void(const std::string&)>& on_log) {
  ENSURE(train.count() > 0, "%s: no training chunks", cfg.name.c_str());
  ENSURE(cfg.grad_accum > 0 && cfg.eval_every > 0, "%s: grad_accum and eval_every must be positive",
         cfg.name.c_str());
  std::vector<Var> vars;
  for (auto& p : params) vars.push_back(p.second);
  AdamWConfig acfg;
  acfg.lr = cfg.lr;
  acfg.weight_decay = cfg.weight_decay;
  AdamW opt(vars, acfg);
  std::fprintf(stderr, "[%s] memory: %s\n", cfg.name.c_str(), opt.memory_report().c_str());
  ReduceLROnPlateau sched(cfg.lr, cfg.plateau_factor, cfg.plateau_patience, cfg.min_lr);
  std::vector<Tensor> best;  // f32, beside the masters
  for (size_t i = 0; i < vars.size(); i++) best.push_back(opt.master(i).clone());
  StageLog log;
  log.best_val = INFINITY;
  int64_t step = 0;
  if (cfg.resume && !cfg.checkpoint.empty() && exists(cfg.checkpoint)) {
    step = Checkpoint::load(cfg.checkpoint, params, opt, best, sched, log);
    std::fprintf(stderr, "[%s] resumed from %s at step %lld\n", cfg.name.c_str(), cfg.checkpoint.c_str(),
                 (long long)step);
  }
  auto emit = [&](const nlohmann::json& j) {
    if (on_log) on_log(j.dump());
  };
  const double t_start = seconds_now() - log.seconds;
  const int64_t T = train.T;
  const Device device = vars.empty() ? Device::cpu : vars[0]->value.device();
  bool first = true;  // the run's first step reports its activations
  for (int64_t trained = 0; step < cfg.max_steps; step++, trained++) {
    if (cfg.stop_after >= 0 && trained >= cfg.stop_after) {
      log.stopped = true;
      break;
    }
    begin_step(device);
    double t0 = seconds_now(), step_loss = 0;
    opt.zero_grad();
    std::vector<Tensor> chunk_losses;  // read after the last chunk is queued (no wait between chunks)
    for (int i = 0; i < cfg.grad_accum; i++) {
      auto [ids, targets] = chunk_tensors(train, (step * cfg.grad_accum + i) % train.count());
      chunk_losses.push_back(train_chunk(ids, targets, 1.0f / float(cfg.grad_accum)));
    }
    for (const Tensor& l : chunk_losses) {
      ENSURE(l.numel() == 1, "%s: a chunk's loss has %lld values, not 1", cfg.name.c_str(), (long long)l.numel());
      step_loss += double(l.to_vector()[0]) / cfg.grad_accum;
    }
    ENSURE(std::isfinite(step_loss),
           "%s: the loss is %g at step %lld; stopping without updating (the last good checkpoint is "
           "%s). Lower the learning rate or check the data.",
           cfg.name.c_str(), step_loss, (long long)step + 1,
           cfg.checkpoint.empty() ? "not kept" : cfg.checkpoint.c_str());
    opt.step();
    log.tokens += int64_t(cfg.grad_accum) * T;
    double dt = seconds_now() - t0;
    log.steps.push_back({step + 1, step_loss, opt.lr(), dt, log.tokens});
    emit({{"stage", cfg.name}, {"step", step + 1}, {"loss", step_loss}, {"lr", opt.lr()},
          {"tokens", log.tokens}, {"seconds", seconds_now() - t_start}});
    double per_step = (seconds_now() - t_start) / double(step + 1);
    if (first) {
      const ActivationStats a = activation_stats(device);
      std::fprintf(stderr, "[%s] %s\n", cfg.name.c_str(), activation_report(device).c_str());
      emit({{"stage", cfg.name}, {"step", step + 1}, {"activation_peak_mib", a.step_peak() / 1048576.0},
            {"activation_allocated_mib", a.allocated / 1048576.0}, {"device", device_name(device)}});
      first = false;
    }
    std::fprintf(stderr, "\r[%s] step %lld/%lld | loss %.4f | lr %.1e | %.0f tok/s | ETA %s   ",
                 cfg.name.c_str(), (long long)step + 1, (long long)cfg.max_steps, step_loss, opt.lr(),
                 cfg.grad_accum * T / dt, eta(per_step * double(cfg.max_steps - step - 1)).c_str());
    bool last = step + 1 == cfg.max_steps;
    if ((step + 1) % cfg.eval_every == 0 || last) {
      double v = evaluate(val, cfg.eval_chunks, eval_chunk);
      if (v < log.best_val) {  // keep the best parameters (LOLCATS.md 3: restored at the end)
        log.best_val = v;
        log.best_step = step + 1;
        for (size_t i = 0; i < vars.size(); i++) copy_values(best[i], opt.master(i));
      }
      opt.set_lr(float(sched.step(v)));
      log.evals.push_back({step + 1, v, opt.lr()});
      emit({{"stage", cfg.name}, {"step", step + 1}, {"val_loss", v}, {"lr", opt.lr()},
            {"best_val", log.best_val}});
      std::fprintf(stderr, "\n[%s] step %lld: validation loss %.4f (best %.4f at step %lld)\n",
                   cfg.name.c_str(), (long long)step + 1, v, log.best_val, (long long)log.best_step);
      log.seconds = seconds_now() - t_start;
      if (!cfg.checkpoint.empty()) Checkpoint::save(cfg.checkpoint, params, opt, best, sched, step + 1, log);
    }
  }
  log.seconds = seconds_now() - t_start;
  if (step == cfg.max_steps) {  // finished: continue with the best-validation parameters
    for (size_t i = 0; i < vars.size(); i++) copy_values(opt.master(i), best[i]);
    opt.refresh_working();
  }
  return log;
}

}  // namespace lolcats
