#include "nn/eval/passkey.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>

#include "nn/generate.h"
#include "tensor/check.h"
#include "tensor/clock.h"

namespace lolcats {

const char* const kPasskeyInstruction =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
const char* const kPasskeyFiller[5] = {"The grass is green.", "The sky is blue.", "The sun is yellow.",
                                       "Here we go.", "There and back again."};
const char* const kPasskeyQuestion = "What is the pass key? The pass key is";

// ---- the prompt ---------------------------------------------------------------------------------

int passkey_before(int filler, int depth) { return int((2L * depth * filler + 100) / 200); }

namespace {

std::string filler_run(int from, int to) {  // sentences from .. to-1, joined by spaces
  std::string s;
  for (int i = from; i < to; i++) (s += i > from ? " " : "") += kPasskeyFiller[i % 5];
  return s;
}

std::string needle(int key) { return strfmt("The pass key is %d. Remember it. %d is the pass key.", key, key); }

}  // namespace

std::string passkey_text(int filler, int before, int key) {
  ENSURE(0 <= before && before <= filler, "passkey: %d filler sentences before the needle of %d", before, filler);
  std::string s = kPasskeyInstruction;
  if (before > 0) s += "\n" + filler_run(0, before);
  s += "\n" + needle(key);
  if (before < filler) s += "\n" + filler_run(before, filler);
  return s + "\n" + kPasskeyQuestion;
}

PasskeyPrompt build_passkey_prompt(const Tokenizer& tok, int length, int depth, int key, bool bos) {
  ENSURE(0 <= depth && depth <= 100, "passkey: depth %d%% is not within 0..100", depth);
  PasskeyPrompt p;
  p.length = length, p.depth = depth, p.key = key;
  const int extra = bos && tok.bos_id() >= 0 ? 1 : 0;
  auto tokens = [&](int n) { return extra + int(tok.encode(passkey_text(n, passkey_before(n, depth), key)).size()); };
  const int bare = tokens(0);
  ENSURE(bare <= length, "--passkey-len %d: the instruction, the needle and the question alone take %d tokens",
         length, bare);
  // The largest N with tokens(N) <= length: every sentence is at least one token, so N < length.
  int lo = 0, hi = length;  // tokens(lo) <= length < tokens(hi)
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    (tokens(mid) <= length ? lo : hi) = mid;
  }
  p.filler = lo;
  p.before = passkey_before(lo, depth);
  p.text = passkey_text(p.filler, p.before, key);
  if (extra) p.ids.push_back(tok.bos_id());
  const std::vector<int32_t> ids = tok.encode(p.text);
  p.ids.insert(p.ids.end(), ids.begin(), ids.end());
  return p;
}

// ---- scoring ------------------------------------------------------------------------------------

bool passkey_correct(const std::string& output, int key) {
  const size_t at = output.find_first_of("0123456789");
  if (at == std::string::npos) return false;
  const size_t end = output.find_first_not_of("0123456789", at);
  return output.substr(at, end == std::string::npos ? std::string::npos : end - at) == std::to_string(key);
}

int passkey_key(uint64_t seed, int length, int depth, int trial) {
  std::seed_seq ss{uint32_t(seed), uint32_t(seed >> 32), uint32_t(length), uint32_t(depth), uint32_t(trial)};
  std::mt19937_64 rng(ss);
  return int(10000 + rng() % 90000);
}

// ---- decoding with shared beginnings --------------------------------------------------------------

namespace {

int common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) i++;
  return int(i);
}

// Where each prompt leaves the anchor (the prompt sharing most with the others): shared[i] tokens
// come from the anchor, at least the last one is the prompt's own (its logits start the reply).
struct SharePlan {
  int anchor = -1;          // index of the anchor's prompt; -1: no sharing
  std::vector<int> shared;  // (prompts)
  size_t tokens = 0;        // tokens the decoder will be fed, prompts and replies
};

SharePlan plan_sharing(const std::vector<std::vector<int32_t>>& prompts, bool share, int new_tokens) {
  SharePlan p;
  p.shared.assign(prompts.size(), 0);
  if (share && prompts.size() > 1) {
    long best = -1;
    for (size_t j = 0; j < prompts.size(); j++) {
      long sum = 0;
      for (size_t i = 0; i < prompts.size(); i++) sum += i == j ? 0 : common_prefix(prompts[i], prompts[j]);
      if (sum > best) best = sum, p.anchor = int(j);
    }
    for (size_t i = 0; i < prompts.size(); i++)
      p.shared[i] = std::min(common_prefix(prompts[i], prompts[size_t(p.anchor)]), int(prompts[i].size()) - 1);
  }
  int anchor_fed = 0;
  for (size_t i = 0; i < prompts.size(); i++) {
    anchor_fed = std::max(anchor_fed, p.shared[i]);
    p.tokens += prompts[i].size() - size_t(p.shared[i]) + size_t(new_tokens - 1);
  }
  p.tokens += size_t(anchor_fed);
  return p;
}

}  // namespace

std::vector<std::vector<int32_t>> passkey_generate(Decoder& dec, const std::vector<std::vector<int32_t>>& prompts,
                                                   const PasskeyGenOptions& o,
                                                   const std::function<void(size_t, size_t)>& progress) {
  ENSURE(o.new_tokens >= 1 && o.max_rows >= 1, "passkey: new_tokens %d and max_rows %d must be positive", o.new_tokens,
         o.max_rows);
  std::vector<std::vector<int32_t>> out(prompts.size());
  if (prompts.empty()) return out;
  int max_len = 0;
  for (size_t i = 0; i < prompts.size(); i++) {
    ENSURE(!prompts[i].empty(), "passkey: prompt %zu is empty", i);
    max_len = std::max(max_len, int(prompts[i].size()) + o.new_tokens);
  }
  const SharePlan plan = plan_sharing(prompts, o.share_prefix, o.new_tokens);
  const int first = plan.anchor >= 0 ? 1 : 0;  // slot 0 is the anchor when sharing
  const size_t per_slot = std::max<size_t>(1, dec.sequence_bytes(max_len));
  const int slots = std::max<int>(first + 1, int(std::min<size_t>({size_t(o.max_slots), o.max_state_bytes / per_slot,
                                                                    prompts.size() + size_t(first)})));
  dec.reserve(slots, max_len);
  const int V = dec.vocab();

  // Prompts in the order the anchor reaches their branch points.
  std::vector<size_t> order(prompts.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return plan.shared[a] < plan.shared[b]; });
  struct Slot {
    long prompt = -1;  // -1: free
    int fed = 0;       // prompt tokens in the slot's sequence
  };
  std::vector<Slot> slot(static_cast<size_t>(slots));
  std::vector<int> n(static_cast<size_t>(slots));
  std::vector<int32_t> tokens;
  std::vector<float> logits(size_t(slots) * V);
  std::mt19937_64 unused;  // greedy sampling draws nothing
  size_t next = 0, done = 0, fed = 0;
  int anchor_len = 0;
  const std::vector<int32_t>* anchor = plan.anchor >= 0 ? &prompts[size_t(plan.anchor)] : nullptr;
  while (done < prompts.size()) {
    // Free slots take the next prompts whose branch point the anchor has reached.
    for (int b = first; b < slots && next < order.size(); b++) {
      const int s = plan.shared[order[next]];
      if (slot[size_t(b)].prompt >= 0 || (s > 0 && s != anchor_len)) continue;
      if (s > 0) dec.copy(0, b);
      else dec.reset(b);
      slot[size_t(b)] = Slot{long(order[next++]), s};
    }
    // This step's rows: a token for each replying slot, then prompt rows, then the anchor's.
    std::fill(n.begin(), n.end(), 0);
    int budget = o.max_rows;
    for (int b = first; b < slots; b++) {
      const Slot& sl = slot[size_t(b)];
      if (sl.prompt >= 0 && sl.fed == int(prompts[size_t(sl.prompt)].size())) n[size_t(b)] = 1, budget--;
    }
    for (int b = first; b < slots; b++) {
      const Slot& sl = slot[size_t(b)];
      if (sl.prompt < 0 || n[size_t(b)] > 0) continue;
      const int rest = int(prompts[size_t(sl.prompt)].size()) - sl.fed;
      n[size_t(b)] = first ? std::min(rest, std::max(budget, 0)) : budget > 0 ? rest : 0;
      budget -= n[size_t(b)];
    }
    if (anchor && next < order.size()) n[0] = std::min(plan.shared[order[next]] - anchor_len, std::max(budget, 0));
    tokens.clear();
    for (int b = 0; b < slots; b++) {
      if (n[size_t(b)] == 0) continue;
      if (b < first) {
        tokens.insert(tokens.end(), anchor->begin() + anchor_len, anchor->begin() + anchor_len + n[0]);
        continue;
      }
      const Slot& sl = slot[size_t(b)];
      const std::vector<int32_t>& p = prompts[size_t(sl.prompt)];
      if (sl.fed == int(p.size())) tokens.push_back(out[size_t(sl.prompt)].back());
      else tokens.insert(tokens.end(), p.begin() + sl.fed, p.begin() + sl.fed + n[size_t(b)]);
    }
    ENSURE(!tokens.empty(), "passkey: a step with nothing to feed (prompt %zu of %zu waits)", next, prompts.size());
    dec.step(tokens.data(), n.data(), logits.data());
    fed += tokens.size();
    anchor_len += first ? n[0] : 0;
    // Every slot whose prompt is all in takes its greedy token; a full or stopped reply frees it.
    for (int b = first; b < slots; b++) {
      Slot& sl = slot[size_t(b)];
      if (sl.prompt < 0 || n[size_t(b)] == 0) continue;
      std::vector<int32_t>& reply = out[size_t(sl.prompt)];
      if (sl.fed < int(prompts[size_t(sl.prompt)].size())) sl.fed += n[size_t(b)];
      if (sl.fed < int(prompts[size_t(sl.prompt)].size())) continue;
      const int32_t id = sample_token(logits.data() + size_t(b) * V, V, 0.0f, 1.0f, unused);
      reply.push_back(id);
      const bool stop = std::find(o.stop_ids.begin(), o.stop_ids.end(), id) != o.stop_ids.end();
      if (stop || int(reply.size()) == o.new_tokens) sl.prompt = -1, done++;
    }
    if (progress) progress(done, fed);
  }
  return out;
}

// ---- the grid -----------------------------------------------------------------------------------

namespace {

std::string duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = std::lround(s);
  return t >= 3600 ? strfmt("%ldh%02ldm", t / 3600, t / 60 % 60) : strfmt("%ldm%02lds", t / 60, t % 60);
}

// Bytes that are not valid UTF-8 become '?' (a reply cut at its last token may end inside a
// character; JSON must not).
std::string valid_utf8(const std::string& s) {
  std::string r;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = (unsigned char)s[i];
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; k++) ok = ((unsigned char)s[i + k] >> 6) == 2;
    if (ok) r.append(s, i, len), i += len;
    else r += '?', i++;
  }
  return r;
}

}  // namespace

PasskeyResult run_passkey(Decoder& dec, const Tokenizer& tok, const PasskeyOptions& o) {
  ENSURE(!o.lengths.empty() && !o.depths.empty() && o.trials >= 1, "passkey: no lengths, no depths or no trials");
  for (int L : o.lengths) {
    ENSURE(L > 0, "--passkey-len %d: a length must be positive", L);
    ENSURE(o.max_position <= 0 || L + o.gen.new_tokens <= o.max_position,
           "--passkey-len %d: the prompt and its %d generated tokens pass the model's %d positions "
           "(max_position_embeddings); lengths up to %d fit",
           L, o.gen.new_tokens, o.max_position, o.max_position - o.gen.new_tokens);
  }
  for (int d : o.depths) ENSURE(0 <= d && d <= 100, "--passkey-depths: %d is not within 0..100", d);
  const auto t0 = seconds_now();
  PasskeyResult r;
  r.options = o;
  // Prompts by length, in (length, depth, trial) order.
  std::map<int, std::vector<size_t>> by_length;
  std::vector<std::vector<int32_t>> ids;
  for (int L : o.lengths)
    for (int d : o.depths)
      for (int t = 0; t < o.trials; t++) {
        PasskeyPrompt p = build_passkey_prompt(tok, L, d, passkey_key(o.seed, L, d, t), o.bos);
        PasskeyTrial tr{L, d, t, p.key, int(p.ids.size()), 0, "", false};
        tr.needle_token = (o.bos && tok.bos_id() >= 0 ? 1 : 0) +
                          int(tok.encode(p.text.substr(0, p.text.find("The pass key is"))).size());
        by_length[L].push_back(r.trials.size());
        r.trials.push_back(tr);
        ids.push_back(std::move(p.ids));
      }
  // Longest first: the ETA (by tokens) then errs on the long side, as a long prompt's token costs
  // more than a short one's.
  size_t total = 0;
  std::vector<std::pair<int, std::vector<std::vector<int32_t>>>> groups;
  for (auto it = by_length.rbegin(); it != by_length.rend(); ++it) {
    std::vector<std::vector<int32_t>> g;
    for (size_t i : it->second) g.push_back(ids[i]);
    total += plan_sharing(g, o.gen.share_prefix, o.gen.new_tokens).tokens;
    groups.push_back({it->first, std::move(g)});
  }
  const bool tty = isatty(fileno(stderr));
  size_t fed_before = 0, prompts_before = 0;
  double last_print = -1;
  size_t last_tenth = 0;
  for (auto& [L, g] : groups) {
    size_t group_fed = 0;
    auto progress = [&, L = L](size_t done, size_t fed) {
      group_fed = fed;
      if (!o.progress) return;
      const size_t f = fed_before + fed, p = prompts_before + done;
      const double el = (seconds_now() - t0);
      const size_t tenth = f * 10 / std::max<size_t>(1, total);
      if (tty ? el - last_print < 0.5 : tenth == last_tenth) return;
      last_print = el, last_tenth = tenth;
      std::fprintf(stderr, "%spasskey %-6d %5zu/%zu prompts  %7.0f tok/s  %s elapsed  ETA %s%s", tty ? "\r" : "", L, p,
                   r.trials.size(), double(f) / std::max(el, 1e-9), duration(el).c_str(),
                   duration(el / double(std::max<size_t>(f, 1)) * double(total - std::min(total, f))).c_str(),
                   tty ? "  " : "\n");
    };
    std::vector<std::vector<int32_t>> replies = passkey_generate(dec, g, o.gen, progress);
    const std::vector<size_t>& idx = by_length[L];
    for (size_t k = 0; k < idx.size(); k++) {
      PasskeyTrial& tr = r.trials[idx[k]];
      tr.output = valid_utf8(tok.decode(replies[k], true));
      tr.correct = passkey_correct(tr.output, tr.key);
    }
    fed_before += group_fed;
    prompts_before += g.size();
  }
  if (o.progress && tty) std::fprintf(stderr, "\n");
  r.tokens = fed_before;
  r.seconds = (seconds_now() - t0);
  return r;
}

// ---- results ------------------------------------------------------------------------------------

nlohmann::json passkey_json(const PasskeyResult& r) {
  const PasskeyOptions& o = r.options;
  std::map<std::pair<int, int>, std::pair<int, int>> cell;  // (length, depth) -> (correct, n)
  std::vector<double> all;
  nlohmann::json trials = nlohmann::json::array();
  for (const PasskeyTrial& t : r.trials) {
    auto& c = cell[{t.length, t.depth}];
    c.first += t.correct, c.second++;
    all.push_back(t.correct);
    trials.push_back({{"length", t.length}, {"depth", t.depth}, {"trial", t.trial}, {"key", t.key},
                      {"prompt_tokens", t.prompt_tokens}, {"needle_token", t.needle_token}, {"output", t.output},
                      {"correct", t.correct}});
  }
  double mean = 0, ss = 0;
  for (double v : all) mean += v;
  mean /= double(std::max<size_t>(1, all.size()));
  for (double v : all) ss += (v - mean) * (v - mean);
  const double se = all.size() > 1 ? std::sqrt(ss / double(all.size() - 1) / double(all.size())) : 0.0;
  nlohmann::json cells = nlohmann::json::array(), acc = nlohmann::json::array();
  for (int L : o.lengths) {
    nlohmann::json row = nlohmann::json::array();
    for (int d : o.depths) {
      const auto [c, n] = cell[{L, d}];
      cells.push_back({{"length", L}, {"depth", d}, {"acc", double(c) / n}, {"correct", c}, {"n", n}});
      row.push_back(double(c) / n);
    }
    acc.push_back(row);
  }
  return {{"metrics", {{{"name", "acc"}, {"value", mean}, {"stderr", se}, {"n", all.size()}}}},
          {"paper_metric", "acc"},
          {"rule", "greedy, at most new_tokens tokens; correct when the first run of digits in the reply is the key"},
          {"lengths", o.lengths}, {"depths", o.depths}, {"trials_per_cell", o.trials}, {"seed", o.seed},
          {"bos", o.bos}, {"new_tokens", o.gen.new_tokens}, {"shared_prefix", o.gen.share_prefix},
          {"accuracy", acc}, {"cells", cells}, {"seconds", r.seconds}, {"tokens", r.tokens},
          {"tokens_per_second", double(r.tokens) / std::max(r.seconds, 1e-9)}, {"trials", trials}};
}

void print_passkey_table(const nlohmann::json& j, FILE* out) {
  const std::vector<int> lengths = j.at("lengths"), depths = j.at("depths");
  std::fprintf(out, "passkey retrieval accuracy in %% (%d trial%s per cell); rows: prompt tokens, columns: needle depth %%\n",
               j.at("trials_per_cell").get<int>(), j.at("trials_per_cell").get<int>() == 1 ? "" : "s");
  std::fprintf(out, "%-7s", "length");
  for (int d : depths) std::fprintf(out, " %5d", d);
  std::fprintf(out, " %7s\n", "mean");
  for (size_t i = 0; i < lengths.size(); i++) {
    std::fprintf(out, "%-7d", lengths[i]);
    double sum = 0;
    for (size_t k = 0; k < depths.size(); k++) {
      const double a = j.at("accuracy")[i][k];
      sum += a;
      std::fprintf(out, " %5.0f", 100 * a);
    }
    std::fprintf(out, " %7.1f\n", 100 * sum / double(depths.size()));
  }
}

}  // namespace lolcats
