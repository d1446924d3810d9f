#include "nn/eval/loglik.h"

#include <algorithm>
#include <cmath>

#include "tensor/loss.h"

namespace lolcats {

namespace {

// An item's requests as token sequences, and what they share.
struct Prepared {
  std::vector<std::vector<int32_t>> full;  // (requests) context + continuation
  std::vector<int> context;                // (requests) context lengths
  int prefix = 0;                          // P: leading tokens shared by every request, <= each context
  int anchor = 0;                          // the first `anchor` of them come from slot 0
  long run = -1;                           // the anchor's run (items sharing it), -1: none
  int slot = 0;                            // first slot of the item in its batch
};

int common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int limit) {
  int n = 0;
  while (n < limit && size_t(n) < a.size() && size_t(n) < b.size() && a[size_t(n)] == b[size_t(n)]) n++;
  return n;
}

Prepared prepare(const std::vector<LoglikRequest>& reqs, size_t index) {
  ENSURE(!reqs.empty(), "loglik: item %zu has no requests", index);
  Prepared p;
  p.prefix = int(reqs[0].context.size());
  for (const LoglikRequest& r : reqs) {
    ENSURE(!r.context.empty() && !r.continuation.empty(), "loglik: item %zu has an empty context or continuation",
           index);
    std::vector<int32_t> f = r.context;
    f.insert(f.end(), r.continuation.begin(), r.continuation.end());
    p.context.push_back(int(r.context.size()));
    p.prefix = std::min(p.prefix, int(r.context.size()));
    p.full.push_back(std::move(f));
  }
  for (const std::vector<int32_t>& f : p.full) p.prefix = common_prefix(p.full[0], f, p.prefix);
  return p;
}

// Runs of consecutive items whose prefixes share at least `min_anchor` tokens: the shared part
// (the shortest pairwise agreement with the run's first item) becomes their anchor.
void find_anchors(std::vector<Prepared>& items, int min_anchor) {
  for (size_t i = 0; i < items.size();) {
    int a = items[i].prefix;
    size_t j = i + 1;
    for (; j < items.size(); j++) {
      const int l = common_prefix(items[i].full[0], items[j].full[0], std::min(a, items[j].prefix));
      if (l < min_anchor) break;
      a = l;
    }
    if (j - i < 2) {
      i++;
      continue;
    }
    for (size_t k = i; k < j; k++) items[k].anchor = a, items[k].run = long(i);
    i = j;
  }
}

// log softmax(logits)[target] in double, and whether target is the argmax (the first, on ties).
std::pair<double, bool> token_logprob(const float* logits, int V, int32_t target) {
  int arg = 0;
  for (int v = 1; v < V; v++)
    if (logits[v] > logits[arg]) arg = v;
  const double mx = logits[arg];
  double sum = 0;
  for (int v = 0; v < V; v++) sum += std::exp(double(logits[v]) - mx);
  return {double(logits[target]) - mx - std::log(sum), arg == target};
}

}  // namespace

std::vector<std::vector<Loglik>> score_loglik(Decoder& dec, const std::vector<std::vector<LoglikRequest>>& reqs,
                                              const LoglikOptions& opt,
                                              const std::function<void(size_t, size_t)>& progress) {
  const int V = dec.vocab();
  std::vector<Prepared> items;
  int max_len = 1, max_k = 1;
  size_t requests = 0;
  for (size_t i = 0; i < reqs.size(); i++) {
    items.push_back(prepare(reqs[i], i));
    for (const std::vector<int32_t>& f : items.back().full) max_len = std::max(max_len, int(f.size()));
    max_k = std::max(max_k, int(reqs[i].size()));
    requests += reqs[i].size();
  }
  find_anchors(items, opt.min_anchor);
  std::vector<std::vector<Loglik>> out(reqs.size());
  if (items.empty()) return out;

  // Slot 0 holds the anchor; the others one request each. As many as the options allow, never
  // fewer than one item needs.
  const size_t per_slot = std::max<size_t>(1, dec.sequence_bytes(max_len));
  int slots = int(std::min<size_t>({size_t(opt.max_slots), opt.max_state_bytes / per_slot, requests + 1}));
  slots = std::max(slots, max_k + 1);
  dec.reserve(slots, max_len);

  std::vector<float> last(size_t(slots) * V), rows, prefix_logits, anchor_logits(static_cast<size_t>(V));
  std::vector<int32_t> tokens;
  std::vector<int> n(static_cast<size_t>(slots));
  long anchor_run = -1;
  size_t fed = 0;
  for (size_t i = 0; i < items.size();) {
    // The anchor of item i's run, fed once for the whole run.
    if (items[i].run >= 0 && items[i].run != anchor_run) {
      std::fill(n.begin(), n.end(), 0);
      n[0] = items[i].anchor;
      dec.reset(0);
      dec.step(items[i].full[0].data(), n.data(), last.data());
      std::copy(last.begin(), last.begin() + V, anchor_logits.begin());
      anchor_run = items[i].run;
      fed += size_t(n[0]);
    }
    // The batch: items i .. j-1, as many as the slots and row bounds take (at least one).
    size_t j = i;
    int used = 1;
    long rows_a = 0, rows_c = 0;
    for (; j < items.size(); j++) {
      Prepared& p = items[j];
      if (p.run >= 0 && p.run != anchor_run) break;
      long a = p.prefix - p.anchor, c = 0;
      for (const std::vector<int32_t>& f : p.full) c += long(f.size()) - 1 - p.prefix;
      if (j > i && (used + int(p.full.size()) > slots || rows_c + c > opt.max_rows || rows_a + a > 8L * opt.max_rows))
        break;
      p.slot = used;
      used += int(p.full.size());
      rows_a += a, rows_c += c;
    }
    // Step A: each item's shared prefix (after its anchor) into its first slot.
    std::fill(n.begin(), n.end(), 0);
    tokens.clear();
    for (size_t k = i; k < j; k++) {
      const Prepared& p = items[k];
      dec.reset(p.slot);
      if (p.anchor > 0) dec.copy(0, p.slot);
      n[size_t(p.slot)] = p.prefix - p.anchor;
      tokens.insert(tokens.end(), p.full[0].begin() + p.anchor, p.full[0].begin() + p.prefix);
    }
    if (rows_a > 0) dec.step(tokens.data(), n.data(), last.data());
    // The distribution after each item's prefix (predicts the first token after it).
    prefix_logits.resize((j - i) * size_t(V));
    for (size_t k = i; k < j; k++) {
      const Prepared& p = items[k];
      const float* src = p.prefix > p.anchor ? last.data() + size_t(p.slot) * V : anchor_logits.data();
      std::copy(src, src + V, prefix_logits.begin() + ptrdiff_t((k - i) * size_t(V)));
    }
    // Step B and C: every request goes on from a copy of its item's prefix, all rows scored. Its
    // last token predicts nothing that is scored: it is not fed (a one-token continuation, as
    // MMLU's " A", needs no step at all).
    std::fill(n.begin(), n.end(), 0);
    tokens.clear();
    for (size_t k = i; k < j; k++) {
      const Prepared& p = items[k];
      for (size_t r = 0; r < p.full.size(); r++) {
        const int rest = int(p.full[r].size()) - 1 - p.prefix;
        if (r > 0 && rest > 0) dec.copy(p.slot, p.slot + int(r));
        n[size_t(p.slot) + r] = rest;
        tokens.insert(tokens.end(), p.full[r].begin() + p.prefix, p.full[r].end() - 1);
      }
    }
    rows.resize(size_t(rows_c) * V);
    if (rows_c > 0) dec.step(tokens.data(), n.data(), rows.data(), Logits::every_row);
    fed += size_t(rows_a + rows_c);
    // Each continuation token t of request r is predicted by the row of token t-1: the prefix's
    // last row when t-1 = P-1, else row t-1-P of the request's rows in step C.
    struct Job {
      const float* logits;
      int32_t target;
      size_t item, req;
    };
    std::vector<Job> jobs;
    size_t row0 = 0;
    for (size_t k = i; k < j; k++) {
      const Prepared& p = items[k];
      out[k].assign(p.full.size(), Loglik{});
      for (size_t r = 0; r < p.full.size(); r++) {
        for (size_t t = size_t(p.context[r]); t < p.full[r].size(); t++) {
          const long q = long(t) - 1 - p.prefix;
          const float* lg = q < 0 ? prefix_logits.data() + (k - i) * size_t(V) : rows.data() + (row0 + size_t(q)) * V;
          jobs.push_back({lg, p.full[r][t], k, r});
        }
        row0 += p.full[r].size() - 1 - size_t(p.prefix);
      }
    }
    std::vector<std::pair<double, bool>> lp(jobs.size());
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < jobs.size(); q++) lp[q] = token_logprob(jobs[q].logits, V, jobs[q].target);
    for (size_t q = 0; q < jobs.size(); q++) {
      Loglik& l = out[jobs[q].item][jobs[q].req];
      l.logprob += lp[q].first;
      l.greedy = l.greedy && lp[q].second;
      l.tokens++;
    }
    i = j;
    if (progress) progress(i, fed);
  }
  return out;
}

std::vector<std::vector<Loglik>> score_loglik_whole(const TailLogits& tail_logits, int V,
                                                    const std::vector<std::vector<LoglikRequest>>& reqs,
                                                    const std::function<void(size_t, size_t)>& progress) {
  std::vector<std::vector<Loglik>> out(reqs.size());
  size_t fed = 0;
  for (size_t i = 0; i < reqs.size(); i++) {
    const Prepared p = prepare(reqs[i], i);
    out[i].assign(p.full.size(), Loglik{});
    std::vector<bool> done(p.full.size(), false);
    for (size_t r = 0; r < p.full.size(); r++) {
      if (done[r]) continue;
      // The requests whose input is this one's: (context + continuation)[:-1].
      const std::vector<int32_t> input(p.full[r].begin(), p.full[r].end() - 1);
      std::vector<size_t> same;
      int rows = 0;
      for (size_t s = r; s < p.full.size(); s++)
        if (!done[s] && p.full[s].size() == p.full[r].size() &&
            std::equal(input.begin(), input.end(), p.full[s].begin())) {
          same.push_back(s);
          rows = std::max(rows, int(p.full[s].size()) - p.context[s]);
        }
      const std::vector<float> logits = tail_logits(input, rows);
      ENSURE(logits.size() == size_t(rows) * V, "loglik: %zu logits for %d rows of %d", logits.size(), rows, V);
      fed += input.size();
      // Continuation token t (position t of full) is predicted by input position t-1, which is
      // row (t-1) - (T-rows) of the tail.
      const int T = int(input.size());
      for (size_t s : same) {
        done[s] = true;
        Loglik& l = out[i][s];
        for (size_t t = size_t(p.context[s]); t < p.full[s].size(); t++) {
          auto [lp, greedy] = token_logprob(logits.data() + size_t(int(t) - 1 - (T - rows)) * V, V, p.full[s][t]);
          l.logprob += lp;
          l.greedy = l.greedy && greedy;
          l.tokens++;
        }
      }
    }
    if (progress) progress(i + 1, fed);
  }
  return out;
}

}  // namespace lolcats

namespace lolcats {

double decoder_chunk_loss(Decoder& decoder, const Tensor& ids, const Tensor& targets) {
  ENSURE(ids.ndim() == 2 && targets.numel() == ids.numel(), "decoder loss: ids (B, T) and B*T targets");
  const int B = int(ids.size(0)), T = int(ids.size(1)), V = decoder.vocab();
  const Tensor id = ids.to(Device::cpu), tg = targets.to(Device::cpu);
  if (decoder.batch() < B || decoder.max_len() < T) decoder.reserve(B, T);
  for (int b = 0; b < decoder.batch(); b++) decoder.reset(b);
  const int per_step = std::max(1, 512 / B);  // positions per sequence and step: logits of 512 rows at most
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  double total = 0;
  int64_t counted = 0;
  for (int t0 = 0; t0 < T; t0 += per_step) {
    const int n = std::min(per_step, T - t0);
    tokens.clear();
    for (int b = 0; b < B; b++) tokens.insert(tokens.end(), id.i32() + size_t(b) * T + t0, id.i32() + size_t(b) * T + t0 + n);
    std::vector<int> rows(size_t(decoder.batch()), 0);
    std::fill_n(rows.begin(), B, n);
    logits.resize(size_t(B) * n * V);
    decoder.step(tokens.data(), rows.data(), logits.data(), Logits::every_row);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < n; t++) {  // lse - logit[target], in double
        const int32_t target = tg.i32()[size_t(b) * T + t0 + t];
        if (target == kIgnoreIndex) continue;
        ENSURE(target >= 0 && target < V, "decoder loss: target %d outside the vocabulary of %d", target, V);
        const float* row = logits.data() + (size_t(b) * n + t) * V;
        const double mx = *std::max_element(row, row + V);
        double sum = 0;
        for (int v = 0; v < V; v++) sum += std::exp(double(row[v]) - mx);
        total += mx + std::log(sum) - row[target];
        counted++;
      }
  }
  return counted > 0 ? total / double(counted) : 0.0;  // as cross_entropy: no counted row gives 0
}

}  // namespace lolcats
