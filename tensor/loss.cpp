#include "tensor/loss.h"

#include <cmath>

#include "tensor/check.h"

namespace lolcats {

static int count_labels(const int32_t* targets, int N, int V, int ignore_index) {
  int m = 0;
  for (int n = 0; n < N; n++) {
    if (targets[n] == ignore_index) continue;
    ENSURE(targets[n] >= 0 && targets[n] < V, "cross_entropy: target %d at row %d is outside [0, %d)",
          targets[n], n, V);
    m++;
  }
  return m;
}

template <typename T>
double cross_entropy_forward(T* lse, const T* logits, const int32_t* targets, int N, int V,
                             int ignore_index) {
  int m = count_labels(targets, N, V, ignore_index);
  double total = 0;
#pragma omp parallel for reduction(+ : total)
  for (int n = 0; n < N; n++) {
    const T* row = logits + int64_t(n) * V;
    T mx = row[0];
    for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    double s = 0;
    for (int v = 0; v < V; v++) s += std::exp(double(row[v] - mx));
    double l = double(mx) + std::log(s);
    lse[n] = T(l);
    if (targets[n] != ignore_index) total += l - double(row[targets[n]]);
  }
  return m ? total / m : 0.0;
}

template <typename T>
void cross_entropy_backward(T* dlogits, double dloss, const T* logits, const T* lse,
                            const int32_t* targets, int N, int V, int ignore_index) {
  int m = count_labels(targets, N, V, ignore_index);
  const T g = m ? T(dloss / m) : T(0);
#pragma omp parallel for
  for (int n = 0; n < N; n++) {
    const T* row = logits + int64_t(n) * V;
    T* drow = dlogits + int64_t(n) * V;
    if (targets[n] == ignore_index) {
      for (int v = 0; v < V; v++) drow[v] = 0;
      continue;
    }
    for (int v = 0; v < V; v++) drow[v] = g * std::exp(row[v] - lse[n]);
    drow[targets[n]] -= g;
  }
}

template <typename T> double mse_forward(const T* a, const T* b, int64_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s)
  for (int64_t i = 0; i < n; i++) {
    double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return n ? s / double(n) : 0.0;
}
template <typename T>
void mse_backward(T* da, T* db, double dloss, const T* a, const T* b, int64_t n) {
  const T g = T(2 * dloss / double(n));
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) {
    T d = g * (a[i] - b[i]);
    if (da) da[i] = d;
    if (db) db[i] = -d;
  }
}

template <typename T> double sum_forward(const T* x, int64_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += double(x[i]);
  return s;
}
template <typename T> void sum_backward(T* dx, double dy, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) dx[i] = T(dy);
}
template <typename T> double mean_forward(const T* x, int64_t n) {
  return n ? sum_forward(x, n) / double(n) : 0.0;
}
template <typename T> void mean_backward(T* dx, double dy, int64_t n) {
  sum_backward(dx, dy / double(n), n);
}

#define INSTANTIATE(T)                                                                          \
  template double cross_entropy_forward<T>(T*, const T*, const int32_t*, int, int, int);        \
  template void cross_entropy_backward<T>(T*, double, const T*, const T*, const int32_t*, int, \
                                          int, int);                                            \
  template double mse_forward<T>(const T*, const T*, int64_t);                                  \
  template void mse_backward<T>(T*, T*, double, const T*, const T*, int64_t);                   \
  template double sum_forward<T>(const T*, int64_t);                                            \
  template void sum_backward<T>(T*, double, int64_t);                                           \
  template double mean_forward<T>(const T*, int64_t);                                           \
  template void mean_backward<T>(T*, double, int64_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace lolcats
