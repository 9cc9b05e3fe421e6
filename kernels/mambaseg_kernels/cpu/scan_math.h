// Element-wise math for the CPU selective scan, written so that loops over channels vectorise
// (no libm calls, no branches): exp, log, softplus, sigmoid and SiLU in float32.
#pragma once

#include <cstdint>
#include <cstring>

namespace mambaseg_cpu {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}

inline int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof(i));
  return i;
}

// exp(x), relative error below 2e-7 on [-87, 88]; inputs outside are clamped (exp(-87) ~ 1.6e-38).
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
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
  return p * scale;
}

// log(v) for normal v > 0: v = m * 2^e with m in [sqrt(1/2), sqrt(2)), log m from the atanh series.
inline float fast_log(float v) {
  int32_t bits = float_to_bits(v);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  e = high ? e + 1 : e;
  float s = (m - 1.0f) / (m + 1.0f);  // |s| <= 0.172
  float s2 = s * s;
  float p = 2.0f / 9.0f;
  p = p * s2 + 2.0f / 7.0f;
  p = p * s2 + 2.0f / 5.0f;
  p = p * s2 + 2.0f / 3.0f;
  p = p * s2 + 2.0f;
  return p * s + static_cast<float>(e) * 0.6931471806f;
}

// log(1 + exp(x)), with mamba_ssm's cut-off: x itself above 20.
inline float softplus(float x) {
  float positive = x > 0.0f ? x : 0.0f;
  float negative_abs = x > 0.0f ? -x : x;
  float sp = positive + fast_log(1.0f + fast_exp(negative_abs));
  return x > 20.0f ? x : sp;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

inline float silu(float x) { return x * sigmoid(x); }

// d silu(x) / dx
inline float silu_grad(float x) {
  float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

}  // namespace mambaseg_cpu
