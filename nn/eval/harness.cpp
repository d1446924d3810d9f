#include "nn/eval/harness.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "tensor/check.h"
#include "tensor/clock.h"

namespace lolcats {

std::vector<LoglikRequest> item_requests(const EvalItem& item, const Tokenizer& tok, bool bos) {
  std::vector<LoglikRequest> reqs;
  for (size_t k = 0; k < item.continuations.size(); k++) {
    std::string ctx = item.context(k), cont = item.continuations[k];
    const size_t keep = ctx.find_last_not_of(" \t\n\r\f\v") + 1;  // npos + 1 = 0: all whitespace
    cont = ctx.substr(keep) + cont;
    ctx.resize(keep);
    LoglikRequest r;
    if (bos && tok.bos_id() >= 0) r.context.push_back(tok.bos_id());
    std::vector<int32_t> c = tok.encode(ctx);
    r.context.insert(r.context.end(), c.begin(), c.end());
    if (r.context.empty()) r.context.push_back(tok.eos_id());
    r.continuation = tok.encode(cont);
    reqs.push_back(std::move(r));
  }
  return reqs;
}

namespace {

// Mean and the harness's stderr (sample stddev / sqrt(n)) of 0/1 scores.
Metric mean_metric(const std::string& name, const std::vector<double>& x) {
  Metric m{name, 0, 0, x.size()};
  if (x.empty()) return m;
  for (double v : x) m.value += v;
  m.value /= double(x.size());
  if (x.size() > 1) {
    double ss = 0;
    for (double v : x) ss += (v - m.value) * (v - m.value);
    m.stderr_ = std::sqrt(ss / double(x.size() - 1)) / std::sqrt(double(x.size()));
  }
  return m;
}

// The first index of the largest score (np.argmax).
size_t argmax(const std::vector<double>& s) {
  size_t a = 0;
  for (size_t k = 1; k < s.size(); k++)
    if (s[k] > s[a]) a = k;
  return a;
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = std::lround(s);
  return t >= 3600 ? strfmt("%ldh%02ldm", t / 3600, t / 60 % 60) : strfmt("%ldm%02lds", t / 60, t % 60);
}

}  // namespace

void compute_metrics(const EvalTask& task, TaskResult& r) {
  std::vector<double> acc, acc_norm;
  for (size_t i = 0; i < task.items.size(); i++) {
    const EvalItem& it = task.items[i];
    std::vector<double> s, sn;
    for (size_t k = 0; k < r.logliks[i].size(); k++) {
      s.push_back(r.logliks[i][k].logprob);
      sn.push_back(r.logliks[i][k].logprob / double(std::max(1, it.choice_chars[k])));
    }
    acc.push_back(argmax(s) == size_t(it.gold));
    acc_norm.push_back(argmax(sn) == size_t(it.gold));
  }
  r.metrics.clear();
  r.subjects.clear();
  if (task.name == "winogrande") {
    r.metrics = {mean_metric("acc", acc)};
    r.paper_metric = "acc";
  } else if (task.name == "mmlu") {
    // The choices are the letters A-D: acc_norm is acc. Macro: the mean of the subjects' means.
    std::vector<std::vector<double>> by(task.subjects.size());
    for (size_t i = 0; i < task.items.size(); i++) by[size_t(task.items[i].subject)].push_back(acc[i]);
    Metric macro{"acc_macro", 0, 0, task.items.size()};
    double var = 0;
    int S = 0;
    for (size_t s = 0; s < by.size(); s++) {
      if (by[s].empty()) continue;
      Metric m = mean_metric("acc", by[s]);
      r.subjects.emplace_back(task.subjects[s], m);
      macro.value += m.value;
      var += m.stderr_ * m.stderr_;
      S++;
    }
    if (S > 0) macro.value /= S, macro.stderr_ = std::sqrt(var) / S;
    r.metrics = {macro, mean_metric("acc_micro", acc)};
    r.paper_metric = "acc_macro";
  } else {
    r.metrics = {mean_metric("acc", acc), mean_metric("acc_norm", acc_norm)};
    r.paper_metric = (task.name == "arc_challenge" || task.name == "hellaswag") ? "acc_norm" : "acc";
  }
}

TaskResult evaluate_task(const EvalTask& task, const Tokenizer& tok, Decoder& decoder,
                         const HarnessOptions& o) {
  return evaluate_task(task, tok, [&](const std::vector<std::vector<LoglikRequest>>& reqs,
                                      const std::function<void(size_t, size_t)>& progress) {
    return score_loglik(decoder, reqs, o.loglik, progress);
  }, o);
}

TaskResult evaluate_task(const EvalTask& task, const Tokenizer& tok, const LoglikScorer& scorer,
                         const HarnessOptions& o) {
  const auto t0 = seconds_now();
  std::vector<std::vector<LoglikRequest>> reqs;
  for (const EvalItem& it : task.items) reqs.push_back(item_requests(it, tok, o.bos));
  const bool tty = isatty(fileno(stderr));
  const auto t1 = seconds_now();
  double last_print = -1;
  size_t last_tenth = 0;
  auto progress = [&](size_t done, size_t tokens) {
    if (!o.progress) return;
    const double el = (seconds_now() - t1), now = (seconds_now() - t0);
    const size_t tenth = done * 10 / std::max<size_t>(1, reqs.size());
    if (tty ? (now - last_print < 0.5 && done < reqs.size()) : (tenth == last_tenth && done < reqs.size())) return;
    last_print = now, last_tenth = tenth;
    const double eta = el / double(done) * double(reqs.size() - done);
    std::fprintf(stderr, "%s%-13s %6zu/%zu items  %7.0f tok/s  %s elapsed  ETA %s%s", tty ? "\r" : "", task.name.c_str(),
                 done, reqs.size(), double(tokens) / std::max(el, 1e-9), format_duration(now).c_str(),
                 format_duration(eta).c_str(), tty ? "  " : "\n");
  };
  TaskResult r;
  r.task = task.name;
  size_t fed = 0;
  r.logliks = scorer(reqs, [&](size_t done, size_t tokens) {
    fed = tokens;
    progress(done, tokens);
  });
  if (o.progress && tty) std::fprintf(stderr, "\n");
  r.tokens = fed;
  r.seconds = (seconds_now() - t0);
  compute_metrics(task, r);
  return r;
}

nlohmann::json result_json(const TaskResult& r) {
  nlohmann::json metrics = nlohmann::json::array();
  for (const Metric& m : r.metrics) metrics.push_back({{"name", m.name}, {"value", m.value}, {"stderr", m.stderr_}, {"n", m.n}});
  nlohmann::json j = {{"metrics", metrics}, {"paper_metric", r.paper_metric}, {"seconds", r.seconds},
                      {"tokens", r.tokens}, {"tokens_per_second", double(r.tokens) / std::max(r.seconds, 1e-9)}};
  nlohmann::json logliks = nlohmann::json::array();  // per item, each choice's summed log-likelihood
  for (const std::vector<Loglik>& item : r.logliks) {
    logliks.push_back(nlohmann::json::array());
    for (const Loglik& l : item) logliks.back().push_back(l.logprob);
  }
  j["logliks"] = logliks;
  if (!r.subjects.empty()) {
    nlohmann::json s = nlohmann::json::object();
    for (const auto& [name, m] : r.subjects) s[name] = {{"acc", m.value}, {"stderr", m.stderr_}, {"n", m.n}};
    j["subjects"] = s;
  }
  return j;
}

namespace {

// Tasks present in `tasks`, in ./eval's order.
std::vector<std::string> ordered_tasks(const nlohmann::json& tasks) {
  std::vector<std::string> out;
  for (const std::string& t : eval_task_names())
    if (tasks.contains(t)) out.push_back(t);
  return out;
}

std::string cell(double v, const char* fmt) { return std::isfinite(v) ? strfmt(fmt, v) : std::string("-"); }

// The paper's numbers (LOLCATS.md section 7), on the metric it reports for each task (in %):
// teacher and LoLCATs for Llama 3 8B and Llama 3.2 1B.
struct PaperRow {
  const char* task;
  double llama8b_teacher, llama8b_lolcats, llama1b_teacher, llama1b_lolcats;
};
const PaperRow kPaper[] = {
    {"piqa", 79.9, 80.9, 74.4, 74.6},      {"arc_easy", 80.1, 81.7, 65.5, 63.0},
    {"arc_challenge", 53.3, 54.9, 35.8, 35.1}, {"hellaswag", 79.1, 79.7, 63.7, 63.7},
    {"winogrande", 73.1, 74.1, 60.5, 61.5}, {"mmlu", 66.6, 52.8, 31.9, 27.3},
};

}  // namespace

void print_results_table(const nlohmann::json& tasks, FILE* out) {
  std::fprintf(out, "%-14s %-10s %9s %8s %7s\n", "task", "metric", "value", "stderr", "n");
  for (const std::string& t : ordered_tasks(tasks)) {
    const nlohmann::json& j = tasks[t];
    for (const nlohmann::json& m : j["metrics"]) {
      const std::string name = m["name"];
      const bool percent = name != "val_ppl" && name != "val_loss";
      const double scale = percent ? 100.0 : 1.0;
      const double se = m.contains("stderr") && m["stderr"].is_number() ? m["stderr"].get<double>() * scale : NAN;
      std::fprintf(out, "%-14s %-10s %9s %8s %7lld%s\n", t.c_str(), name.c_str(),
                   cell(m["value"].get<double>() * scale, percent ? "%.2f" : "%.4f").c_str(),
                   cell(se, "%.2f").c_str(), m.value("n", 0LL),
                   j.value("paper_metric", "") == name ? "  (paper)" : "");
    }
  }
}

void print_comparison(const nlohmann::json& a, const nlohmann::json& b, FILE* out) {
  const nlohmann::json& ta = a.at("tasks");
  const nlohmann::json& tb = b.at("tasks");
  std::fprintf(out, "A: %s\nB: %s\nvalues in %%; paper: T = teacher, L = LoLCATs, on the metric the paper reports\n", a.value("model", std::string("?")).c_str(), b.value("model", std::string("?")).c_str());
  std::fprintf(out, "%-14s %-10s %8s %8s %8s   %-27s %-27s\n", "task", "metric", "A", "B", "B-A",
               "paper Llama3-8B T/L (L-T)", "paper Llama3.2-1B T/L (L-T)");
  for (const std::string& t : ordered_tasks(ta)) {
    if (!tb.contains(t)) continue;
    for (const nlohmann::json& ma : ta[t]["metrics"]) {
      const std::string name = ma["name"];
      const nlohmann::json* mb = nullptr;
      for (const nlohmann::json& m : tb[t]["metrics"])
        if (m["name"] == name) mb = &m;
      if (!mb) continue;
      const double scale = (name == "val_ppl" || name == "val_loss") ? 1.0 : 100.0;
      const double va = ma["value"].get<double>() * scale, vb = (*mb)["value"].get<double>() * scale;
      std::string p8, p1;
      for (const PaperRow& p : kPaper)
        if (t == p.task && ta[t].value("paper_metric", "") == name) {
          p8 = strfmt("%.1f / %.1f (%+.1f)", p.llama8b_teacher, p.llama8b_lolcats, p.llama8b_lolcats - p.llama8b_teacher);
          p1 = strfmt("%.1f / %.1f (%+.1f)", p.llama1b_teacher, p.llama1b_lolcats, p.llama1b_lolcats - p.llama1b_teacher);
        }
      std::fprintf(out, "%-14s %-10s %8.2f %8.2f %+8.2f   %-27s %-27s\n", t.c_str(), name.c_str(), va, vb, vb - va,
                   p8.c_str(), p1.c_str());
    }
  }
}

}  // namespace lolcats
