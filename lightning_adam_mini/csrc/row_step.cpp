// One pass per row: Adam-mini's step for a parameter whose blocks are runs of whole rows.
//
// p, g: contiguous [rows, cols] float32 (a block is one row of the view); m: the same, float32 or
// bfloat16 (math in float32, stored rounded, and the rounded value used, as the eager step does);
// v: [rows] float32.
// For each row, while it is in cache: s = mean(g^2); v = v + (1 - beta2) (s - v);
// d = (sqrt(v) / bc2_sqrt + eps) * bc1 / lr; then per element p = p * decay;
// m = m + (1 - beta1) (g - m); p = p - m / d. Reads p, g, m once and writes p, m once.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>

// bf16 <-> fp32 by bit operations (round to nearest even, as torch rounds; no NaN special case:
// a NaN m stays NaN), so that the inner loop vectorizes.
static inline float load_m(const float* m, int64_t k) { return m[k]; }
static inline float load_m(const uint16_t* m, int64_t k) {
  const uint32_t bits = static_cast<uint32_t>(m[k]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
static inline float store_m(float* m, int64_t k, float x) { return m[k] = x; }
static inline float store_m(uint16_t* m, int64_t k, float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  m[k] = static_cast<uint16_t>(bits >> 16);
  return load_m(m, k);
}

template <typename M>
void row_step_impl(at::Tensor p, at::Tensor g, at::Tensor m, at::Tensor v, double lr, double beta1,
                   double beta2, double eps, double decay, double bc1, double bc2_sqrt) {
  const int64_t rows = v.numel();
  const int64_t cols = rows ? p.numel() / rows : 0;
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  M* mp = static_cast<M*>(m.data_ptr());
  float* vp = v.data_ptr<float>();
  const float w1 = static_cast<float>(1.0 - beta1), w2 = static_cast<float>(1.0 - beta2);
  const float fdecay = static_cast<float>(decay), feps = static_cast<float>(eps);
  const float scale = static_cast<float>(bc1 / lr), fbc2 = static_cast<float>(bc2_sqrt);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* pr = pp + r * cols;
      const float* gr = gp + r * cols;
      M* mr = mp + r * cols;
      double acc = 0.0;
      float part[16] = {0};
      int64_t j = 0;
      for (; j + 16 <= cols; j += 16) {
#pragma omp simd
        for (int k = 0; k < 16; ++k) part[k] += gr[j + k] * gr[j + k];
      }
      for (; j < cols; ++j) acc += static_cast<double>(gr[j]) * gr[j];
      for (int k = 0; k < 16; ++k) acc += part[k];
      const float mean = cols ? static_cast<float>(acc / cols) : 0.0f;
      const float vr = vp[r] + w2 * (mean - vp[r]);
      vp[r] = vr;
      const float inv_d = 1.0f / ((std::sqrt(vr) / fbc2 + feps) * scale);
#pragma omp simd
      for (int64_t k = 0; k < cols; ++k) {
        const float mo = load_m(mr, k);
        const float mk = store_m(mr, k, mo + w1 * (gr[k] - mo));  // the stored (rounded) value
        pr[k] = pr[k] * fdecay - mk * inv_d;
      }
    }
  });
}

void row_step_(at::Tensor p, at::Tensor g, at::Tensor m, at::Tensor v, double lr, double beta1,
               double beta2, double eps, double decay, double bc1, double bc2_sqrt) {
  TORCH_CHECK(p.is_contiguous() && g.is_contiguous() && m.is_contiguous() && v.is_contiguous(),
              "row_step_: tensors must be contiguous");
  TORCH_CHECK(p.scalar_type() == at::kFloat && g.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "row_step_: p, g and v must be float32");
  if (m.scalar_type() == at::kFloat) {
    row_step_impl<float>(p, g, m, v, lr, beta1, beta2, eps, decay, bc1, bc2_sqrt);
  } else {
    TORCH_CHECK(m.scalar_type() == at::kBFloat16, "row_step_: m must be float32 or bfloat16");
    row_step_impl<uint16_t>(p, g, m, v, lr, beta1, beta2, eps, decay, bc1, bc2_sqrt);
  }
}

TORCH_LIBRARY_FRAGMENT(lightning_adam_mini, lib) {
  lib.def(
      "row_step_(Tensor(a!) p, Tensor g, Tensor(b!) m, Tensor(c!) v, float lr, float beta1, float beta2, "
      "float eps, float decay, float bc1, float bc2_sqrt) -> ()");
}

TORCH_LIBRARY_IMPL(lightning_adam_mini, CPU, lib) { lib.impl("row_step_", &row_step_); }
