// Element-wise math for the CPU selective scan, written so that loops over channels vectorise
// (no libm calls, no branches): exp, log1p, softplus, sigmoid and SiLU in float32.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mambaseg_cpu {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}

// exp(x), relative error below 3e-7 (measured 2.3e-7) on [-87, 88]; 0 below -87 (exp(-87) ~ 1.6e-38, so no subnormal
// results), and exp(88) above 88. The clamps are separate selects, which compile to vector min / max
// (a nested conditional became a branch, and a scalar loop, in AVX2 builds).
inline float fast_exp(float x) {
  const bool underflow = x < -87.0f;
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting rounds to the nearest integer
  float n = (x * 1.4426950409f + round_magic) - round_magic;
  float g = x - n * 0.693145751953125f;  // Cody-Waite: ln 2 in two parts keeps g exact
  g = g - n * 1.428606765330187e-06f;    // |g| <= ln2 / 2
  float p = 1.0f / 720.0f;
  p = p * g + 1.0f / 120.0f;
  p = p * g + 1.0f / 24.0f;
  p = p * g + 1.0f / 6.0f;
  p = p * g + 0.5f;
  p = p * g + 1.0f;
  p = p * g + 1.0f;
  float scale = bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  return underflow ? 0.0f : p * scale;
}

// log(1 + y) for y in [0, 1]: 2 atanh(s) with s = y / (2 + y) in [0, 1/3], a series in s^2 with
// relative error below 1e-7. Plain arithmetic, so loops calling it vectorise.
inline float log1p_unit(float y) {
  float s = y / (2.0f + y);
  float s2 = s * s;
  float p = 2.0f / 15.0f;
  p = p * s2 + 2.0f / 13.0f;
  p = p * s2 + 2.0f / 11.0f;
  p = p * s2 + 2.0f / 9.0f;
  p = p * s2 + 2.0f / 7.0f;
  p = p * s2 + 2.0f / 5.0f;
  p = p * s2 + 2.0f / 3.0f;
  p = p * s2 + 2.0f;
  return p * s;
}

// log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|)); above x = 17 the second term is below float32's
// resolution of x, so this equals x there, like mamba_ssm's cut-off at 20.
inline float softplus(float x) { return (x > 0.0f ? x : 0.0f) + log1p_unit(fast_exp(-std::fabs(x))); }

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

inline float silu(float x) { return x * sigmoid(x); }

// d silu(x) / dx
inline float silu_grad(float x) {
  float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

}  // namespace mambaseg_cpu
