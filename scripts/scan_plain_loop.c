/* The plain fused selective-scan forward that bench_scan.py times the CPU kernel against.
 *
 * Dimension letters: b batch, d channels, l sequence length, n state size. Inputs as Mamba uses them:
 * u, delta, z (b, d, l); A (d, n); B, C per step (b, n, l); D, delta_bias (d); out (b, d, l).
 * One (b, d) pair per loop iteration, in parallel over b * d with OpenMP, sequential over l, the state
 * x (n) on the stack; libm's expf and log1pf, no hand-written math. Built by bench_scan.py with
 * -O3 -march=<the kernel's ISA level> -fopenmp, without -ffast-math.
 */
#include <math.h>
#include <stdint.h>

#define MAX_STATE 256

int plain_scan_fwd(const float* u, const float* delta, const float* A, const float* B, const float* C,
                   const float* D, const float* z, const float* delta_bias, float* out, int64_t batch, int64_t dim,
                   int64_t length, int64_t dstate, int threads) {
  if (dstate > MAX_STATE) return 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t bd = 0; bd < batch * dim; ++bd) {
    int64_t b = bd / dim, d = bd % dim;
    const float* u_row = u + bd * length;
    const float* delta_row = delta + bd * length;
    const float* z_row = z + bd * length;
    const float* a_row = A + d * dstate;
    const float* b_rows = B + b * dstate * length;
    const float* c_rows = C + b * dstate * length;
    float* out_row = out + bd * length;
    float x[MAX_STATE] = {0.0f};
    for (int64_t t = 0; t < length; ++t) {
      float raw = delta_row[t] + delta_bias[d];
      float dt = raw > 20.0f ? raw : log1pf(expf(raw));
      float du = dt * u_row[t];
      float y = 0.0f;
      for (int64_t k = 0; k < dstate; ++k) {
        x[k] = expf(dt * a_row[k]) * x[k] + du * b_rows[k * length + t];
        y += c_rows[k * length + t] * x[k];
      }
      y += D[d] * u_row[t];
      float g = z_row[t];
      out_row[t] = y * g / (1.0f + expf(-g));
    }
  }
  return 0;
}
