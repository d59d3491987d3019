// One pass per row: Adam-mini's step for parameters whose blocks are runs of whole rows.
//
// One call updates a list of parameters. Parameter i: p[i], g[i] contiguous float32 of rows[i]
// rows (a block is one row of the [rows, -1] view); m[i] the same, float32 or bfloat16 (math in
// float32, stored rounded, and the rounded value used, as the eager step does); v[i] float32 of
// rows[i] elements; steps[i] its float32 step count (0-d), incremented here; weight_decay[i] its
// decoupled weight decay (0 for a parameter not decayed); lr a one-element tensor, so that a
// compiled step takes it as an input.
// For each row, while it is in cache: s = mean(g^2); v = v + (1 - beta2) (s - v);
// d = (sqrt(v) / bc2_sqrt + eps) * bc1 / lr; then per element p = p * (1 - lr weight_decay[i]);
// m = m + (1 - beta1) (g - m); p = p - m / d. Reads p, g, m once and writes p, m once.
// The rows of all parameters are split evenly by elements over the threads: one parallel region
// per call, however many parameters.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

// bf16 <-> fp32 by bit operations (round to nearest even, as torch rounds; no NaN special case:
// a NaN m stays NaN), so that the inner loop vectorizes.
inline float load_m(const float* m, int64_t k) { return m[k]; }
inline float load_m(const uint16_t* m, int64_t k) {
  const uint32_t bits = static_cast<uint32_t>(m[k]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float store_m(float* m, int64_t k, float x) { return m[k] = x; }
inline float store_m(uint16_t* m, int64_t k, float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  m[k] = static_cast<uint16_t>(bits >> 16);
  return load_m(m, k);
}

// Sum of squares of n floats: 64 independent lanes (four 16-float vectors), so that the loads are
// not serialized behind one chain of additions; the lanes are added in double.
inline double sum_squares(const float* x, int64_t n) {
  float part[64] = {0};
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) {
#pragma omp simd
    for (int k = 0; k < 64; ++k) part[k] += x[j + k] * x[j + k];
  }
  double acc = 0.0;
  for (; j < n; ++j) acc += static_cast<double>(x[j]) * x[j];
  for (int k = 0; k < 64; ++k) acc += part[k];
  return acc;
}

struct Param {
  float* p;
  const float* g;
  void* m;
  float* v;
  int64_t rows, cols, first;  // first: index of its first element among all parameters' elements
  float decay, scale, bc2_sqrt;  // scale = bc1 / lr
};

// Rows [r0, r1) of one parameter. With an fp32 m they are software-pipelined: the loop updating
// row r also sums the squares of row r + 1, so that the p and m streams of one row and the g
// stream of the next are in flight together. Measured on one core of a shared box (A/B on the
// same tensors, times relative to fused AdamW's): fp32 m 0.70-0.86x pipelined, 0.81-1.0x with
// a loop of its own for each row's reduction; bf16 m, whose loop does more work per element,
// 0.66-0.84x pipelined and 0.59-0.71x with separate loops, which it therefore keeps.
template <typename M>
void update_rows(const Param& t, int64_t r0, int64_t r1, float w1, float w2, float eps) {
  constexpr bool pipelined = std::is_same_v<M, float>;
  const int64_t cols = t.cols;
  const float decay = t.decay;
  double sq = r0 < r1 ? sum_squares(t.g + r0 * cols, cols) : 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    float* pr = t.p + r * cols;
    const float* gr = t.g + r * cols;
    M* mr = static_cast<M*>(t.m) + r * cols;
    const float mean = static_cast<float>(sq / cols);
    const float vr = t.v[r] + w2 * (mean - t.v[r]);
    t.v[r] = vr;
    const float inv_d = 1.0f / ((std::sqrt(vr) / t.bc2_sqrt + eps) * t.scale);
    const bool last = r + 1 == r1;
    if (pipelined && !last) {
      const float* gn = gr + cols;
      float next = 0.0f;
#pragma omp simd reduction(+ : next)
      for (int64_t k = 0; k < cols; ++k) {
        const float mo = load_m(mr, k);
        const float mk = store_m(mr, k, mo + w1 * (gr[k] - mo));
        pr[k] = pr[k] * decay - mk * inv_d;
        next += gn[k] * gn[k];
      }
      sq = next;
      continue;
    }
#pragma omp simd
    for (int64_t k = 0; k < cols; ++k) {
      const float mo = load_m(mr, k);
      const float mk = store_m(mr, k, mo + w1 * (gr[k] - mo));  // the stored (rounded) value
      pr[k] = pr[k] * decay - mk * inv_d;
    }
    if (!last) sq = sum_squares(gr + cols, cols);
  }
}

// The rows whose first element lies in [begin, end) of all parameters' elements.
template <typename M>
void update_range(const std::vector<Param>& params, int64_t begin, int64_t end, float w1, float w2, float eps) {
  // the last parameter starting at or before `begin`
  auto it = std::upper_bound(params.begin(), params.end(), begin,
                             [](int64_t x, const Param& t) { return x < t.first; });
  for (size_t i = static_cast<size_t>(it - params.begin()) - 1; i < params.size(); ++i) {
    const Param& t = params[i];
    if (t.first >= end) break;
    const int64_t r0 = std::max<int64_t>(0, (begin - t.first + t.cols - 1) / t.cols);
    const int64_t r1 = std::min(t.rows, (end - t.first + t.cols - 1) / t.cols);
    update_rows<M>(t, r0, r1, w1, w2, eps);
  }
}

void row_step_(at::TensorList p, at::TensorList g, at::TensorList m, at::TensorList v, at::TensorList steps,
               at::IntArrayRef rows, const at::Tensor& lr_tensor, double beta1, double beta2, double eps,
               at::ArrayRef<double> weight_decay) {
  const size_t n = p.size();
  TORCH_CHECK(g.size() == n && m.size() == n && v.size() == n && steps.size() == n && rows.size() == n &&
                  weight_decay.size() == n,
              "row_step_: every list needs one entry per parameter");
  TORCH_CHECK(lr_tensor.numel() == 1, "row_step_: lr must hold one value");
  const double lr = lr_tensor.item().toDouble();
  for (size_t i = 0; i < n; ++i) {  // every check before anything changes
    TORCH_CHECK(p[i].is_contiguous() && g[i].is_contiguous() && m[i].is_contiguous() && v[i].is_contiguous(),
                "row_step_: tensors must be contiguous");
    TORCH_CHECK(p[i].scalar_type() == at::kFloat && g[i].scalar_type() == at::kFloat &&
                    v[i].scalar_type() == at::kFloat && steps[i].scalar_type() == at::kFloat,
                "row_step_: p, g, v and the step counts must be float32");
    TORCH_CHECK(m[i].scalar_type() == m[0].scalar_type(), "row_step_: every m must have the same dtype");
    TORCH_CHECK(rows[i] > 0 && p[i].numel() % rows[i] == 0 && g[i].numel() == p[i].numel() &&
                    m[i].numel() == p[i].numel() && v[i].numel() == rows[i] && steps[i].numel() == 1,
                "row_step_: parameter ", i, " does not split into ", rows[i], " rows of g, m and v");
  }
  TORCH_CHECK(n == 0 || m[0].scalar_type() == at::kFloat || m[0].scalar_type() == at::kBFloat16,
              "row_step_: m must be float32 or bfloat16");
  std::vector<Param> params;
  params.reserve(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    float* step = steps[i].data_ptr<float>();
    *step += 1.0f;
    const double t = *step;
    const double bc1 = beta1 > 0 ? -std::expm1(t * std::log(beta1)) : 1.0;
    const double bc2_sqrt = beta2 > 0 ? std::sqrt(-std::expm1(t * std::log(beta2))) : 1.0;
    const int64_t numel = p[i].numel();
    if (numel == 0) continue;
    params.push_back(Param{p[i].data_ptr<float>(), g[i].data_ptr<float>(), m[i].data_ptr(), v[i].data_ptr<float>(),
                           rows[i], numel / rows[i], total, static_cast<float>(1.0 - lr * weight_decay[i]),
                           static_cast<float>(bc1 / lr), static_cast<float>(bc2_sqrt)});
    total += numel;
  }
  if (params.empty()) return;
  const float w1 = static_cast<float>(1.0 - beta1), w2 = static_cast<float>(1.0 - beta2);
  const float feps = static_cast<float>(eps);
  const bool bf16 = m[0].scalar_type() == at::kBFloat16;
  // grain: below 2**16 elements (~1 MB moved) a second thread costs more than it saves
  at::parallel_for(0, total, 1 << 16, [&](int64_t begin, int64_t end) {
    if (bf16) {
      update_range<uint16_t>(params, begin, end, w1, w2, feps);
    } else {
      update_range<float>(params, begin, end, w1, w2, feps);
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lightning_adam_mini, lib) {
  lib.def(
      "row_step_(Tensor(a!)[] p, Tensor[] g, Tensor(b!)[] m, Tensor(c!)[] v, Tensor(d!)[] steps, int[] rows, "
      "Tensor lr, float beta1, float beta2, float eps, float[] weight_decay) -> ()");
}

TORCH_LIBRARY_IMPL(lightning_adam_mini, CPU, lib) { lib.impl("row_step_", &row_step_); }
