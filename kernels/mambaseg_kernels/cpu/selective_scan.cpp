// Selective scan (Mamba-1) on the CPU: forward and backward over float32 contiguous tensors.
//
// Dimension letters: b batch, d channels, l sequence length, n state size, g groups of B/C,
// w lanes (channels of one block, processed together as a vector).
//
// Work is split into blocks of up to kLanes channels of one batch element that never straddle a
// B or C group; blocks run in parallel (at::parallel_for), each sequentially over l with its state
// x (n, w) kept in a small buffer. Inputs are transposed tile by tile to (steps, w) so that every
// inner loop runs across channels and vectorises. The forward saves the state every kChunk steps;
// the backward recomputes a chunk's states from its checkpoint, then walks the chunk backwards.
// Reductions over channels or batch go through per-block buffers summed in a fixed order, so the
// gradients are bit-identical from run to run.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "scan_math.h"

namespace mambaseg_cpu {
// Internal linkage: builds for several instruction-set levels can be loaded in one process, and none may
// resolve a call to another's copy of a function.
namespace {

constexpr int64_t kLanes = 32;   // channels per block
constexpr int64_t kChunk = 256;  // steps between saved states
constexpr int64_t kTile = 64;    // steps per transposed tile in the forward

struct Problem {
  int64_t batch, dim, length, dstate;
  int64_t groups_b, groups_c;  // 0 when B (or C) is constant (d, n)
  bool softplus;
  const float* u;
  const float* delta;
  const float* A;
  const float* B;
  const float* C;
  const float* D;           // nullable
  const float* z;           // nullable
  const float* delta_bias;  // nullable

  int64_t chunks() const { return (length + kChunk - 1) / kChunk; }
};

struct Block {
  int64_t b, c0, nc;   // batch element, first channel, channels in the block (<= kLanes)
  int64_t gb, gc;      // B and C group of these channels (0 when constant)
  int64_t slot_b, slot_c;  // ordinal of the block among the blocks of its (b, group)
};

struct BlockPlan {
  std::vector<Block> blocks;
  int64_t slots_b, slots_c;  // blocks per (b, group) of B and of C
};

// Blocks of at most kLanes channels inside segments that lie within one B group and one C group.
BlockPlan plan_blocks(const Problem& p) {
  int64_t per_group_b = p.groups_b ? p.dim / p.groups_b : p.dim;
  int64_t per_group_c = p.groups_c ? p.dim / p.groups_c : p.dim;
  int64_t segment = std::gcd(per_group_b, per_group_c);
  int64_t blocks_per_segment = (segment + kLanes - 1) / kLanes;
  BlockPlan plan;
  plan.slots_b = per_group_b / segment * blocks_per_segment;
  plan.slots_c = per_group_c / segment * blocks_per_segment;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t s0 = 0; s0 < p.dim; s0 += segment) {
      for (int64_t i = 0; i < blocks_per_segment; ++i) {
        Block blk;
        blk.b = b;
        blk.c0 = s0 + i * kLanes;
        blk.nc = std::min(kLanes, s0 + segment - blk.c0);
        blk.gb = blk.c0 / per_group_b;
        blk.gc = blk.c0 / per_group_c;
        blk.slot_b = (s0 - blk.gb * per_group_b) / segment * blocks_per_segment + i;
        blk.slot_c = (s0 - blk.gc * per_group_c) / segment * blocks_per_segment + i;
        plan.blocks.push_back(blk);
      }
    }
  }
  return plan;
}

// Per-block copies of the (d, n) parameters, transposed to (n, w) and zero-padded.
struct BlockParams {
  std::vector<float> A, B, C;  // (n, w); B and C only when constant
  std::vector<float> D, bias;  // (w)

  BlockParams(const Problem& p, const Block& blk)
      : A(p.dstate * kLanes, 0.f), B(p.dstate * kLanes, 0.f), C(p.dstate * kLanes, 0.f), D(kLanes, 0.f),
        bias(kLanes, 0.f) {
    for (int64_t c = 0; c < blk.nc; ++c) {
      int64_t ch = blk.c0 + c;
      for (int64_t n = 0; n < p.dstate; ++n) {
        A[n * kLanes + c] = p.A[ch * p.dstate + n];
        if (!p.groups_b) B[n * kLanes + c] = p.B[ch * p.dstate + n];
        if (!p.groups_c) C[n * kLanes + c] = p.C[ch * p.dstate + n];
      }
      if (p.D) D[c] = p.D[ch];
      if (p.delta_bias) bias[c] = p.delta_bias[ch];
    }
  }
};

// Start of the per-step B (or C) rows of this block: (n, l) with row stride l.
inline const float* grouped_rows(const Problem& p, const float* m, int64_t groups, int64_t b, int64_t g) {
  return groups ? m + (b * groups + g) * p.dstate * p.length : nullptr;
}

// Copies steps [t0, t0 + steps) of this block's rows of a (b, d, l) tensor into a (steps, w) tile.
void load_tile(const Problem& p, const Block& blk, const float* src, int64_t t0, int64_t steps, float* tile) {
  for (int64_t c = 0; c < blk.nc; ++c) {
    const float* row = src + (blk.b * p.dim + blk.c0 + c) * p.length + t0;
    for (int64_t t = 0; t < steps; ++t) tile[t * kLanes + c] = row[t];
  }
}

// The inverse of load_tile: a (steps, w) tile into this block's rows of a (b, d, l) tensor.
void store_tile(const Problem& p, const Block& blk, const float* tile, int64_t t0, int64_t steps, float* dst) {
  for (int64_t c = 0; c < blk.nc; ++c) {
    float* row = dst + (blk.b * p.dim + blk.c0 + c) * p.length + t0;
    for (int64_t t = 0; t < steps; ++t) row[t] = tile[t * kLanes + c];
  }
}

// Loads steps [t0, t0 + steps) of this block as (steps, w) tiles: raw delta (with bias), dt (after
// softplus), u, and z when given. The element-wise math runs on the contiguous tiles so it vectorises.
void load_steps(const Problem& p, const Block& blk, const BlockParams& bp, int64_t t0, int64_t steps, float* raw,
                float* dt, float* u, float* z) {
  load_tile(p, blk, p.delta, t0, steps, raw);
  load_tile(p, blk, p.u, t0, steps, u);
  if (p.z) load_tile(p, blk, p.z, t0, steps, z);
  const float* bias = bp.bias.data();
  const bool use_softplus = p.softplus;
  for (int64_t t = 0; t < steps; ++t) {
    float* raw_t = raw + t * kLanes;
    float* dt_t = dt + t * kLanes;
#pragma omp simd
    for (int64_t c = 0; c < kLanes; ++c) raw_t[c] += bias[c];
    if (use_softplus) {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dt_t[c] = softplus(raw_t[c]);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dt_t[c] = raw_t[c];
    }
  }
}

// Copies steps [t0, t0 + steps) of per-step B (or C) rows (n, l) to a (steps, n) tile; reading the n
// rows step by step instead would touch n lines l floats apart, which alias in the L1 cache.
void load_rows(const Problem& p, const float* rows, int64_t t0, int64_t steps, float* tile) {
  if (!rows) return;
  for (int64_t n = 0; n < p.dstate; ++n) {
    const float* row = rows + n * p.length + t0;
    for (int64_t t = 0; t < steps; ++t) tile[t * p.dstate + n] = row[t];
  }
}

// The inverse of load_rows: a (steps, n) tile into steps [t0, t0 + steps) of rows (n, l).
void store_rows(const Problem& p, const float* tile, int64_t t0, int64_t steps, float* rows) {
  if (!rows) return;
  for (int64_t n = 0; n < p.dstate; ++n) {
    float* row = rows + n * p.length + t0;
    for (int64_t t = 0; t < steps; ++t) row[t] = tile[t * p.dstate + n];
  }
}

// One step of the recurrence for all n and lanes: x = exp(dt A) x + dt u B; y += <x, C>.
// b_step and c_step are this step's (n) values of per-step B and C.
template <bool VarB, bool VarC>
inline void step(const Problem& p, const BlockParams& bp, const float* b_step, const float* c_step, const float* dt,
                 const float* u, const float* x_prev, float* x_next, float* y) {
  float du[kLanes], acc[kLanes];  // dt u, and the sum over n kept out of y so that it stays in registers
#pragma omp simd
  for (int64_t c = 0; c < kLanes; ++c) {
    du[c] = dt[c] * u[c];
    acc[c] = 0.f;
  }
  for (int64_t n = 0; n < p.dstate; ++n) {
    const float* a_row = bp.A.data() + n * kLanes;
    const float* b_row = bp.B.data() + n * kLanes;
    const float* c_row = bp.C.data() + n * kLanes;
    float b_n = VarB ? b_step[n] : 0.f;
    float c_n = VarC ? c_step[n] : 0.f;
    const float* xp = x_prev + n * kLanes;
    float* xn = x_next + n * kLanes;
#pragma omp simd
    for (int64_t c = 0; c < kLanes; ++c) {
      float bv = VarB ? b_n : b_row[c];
      float cv = VarC ? c_n : c_row[c];
      float x = fast_exp(dt[c] * a_row[c]) * xp[c] + du[c] * bv;
      xn[c] = x;
      acc[c] += x * cv;
    }
  }
#pragma omp simd
  for (int64_t c = 0; c < kLanes; ++c) y[c] += acc[c];
}

template <bool VarB, bool VarC>
void forward_block(const Problem& p, const Block& blk, float* out, float* last_state, float* checkpoints) {
  BlockParams bp(p, blk);
  std::vector<float> x(p.dstate * kLanes, 0.f);
  std::vector<float> raw(kTile * kLanes, 0.f), dt(kTile * kLanes, 0.f), u(kTile * kLanes, 0.f),
      z(kTile * kLanes, 0.f), y(kTile * kLanes, 0.f), b_tile(kTile * p.dstate), c_tile(kTile * p.dstate);
  const float* rows_b = grouped_rows(p, p.B, p.groups_b, blk.b, blk.gb);
  const float* rows_c = grouped_rows(p, p.C, p.groups_c, blk.b, blk.gc);
  const bool gated = p.z != nullptr;
  for (int64_t t0 = 0; t0 < p.length; t0 += kTile) {
    int64_t steps = std::min(kTile, p.length - t0);
    if (checkpoints && t0 % kChunk == 0) {
      for (int64_t c = 0; c < blk.nc; ++c) {
        float* saved = checkpoints + ((blk.b * p.dim + blk.c0 + c) * p.chunks() + t0 / kChunk) * p.dstate;
        for (int64_t n = 0; n < p.dstate; ++n) saved[n] = x[n * kLanes + c];
      }
    }
    load_steps(p, blk, bp, t0, steps, raw.data(), dt.data(), u.data(), z.data());
    load_rows(p, rows_b, t0, steps, b_tile.data());
    load_rows(p, rows_c, t0, steps, c_tile.data());
    std::fill(y.begin(), y.end(), 0.f);
    for (int64_t t = 0; t < steps; ++t) {
      step<VarB, VarC>(p, bp, b_tile.data() + t * p.dstate, c_tile.data() + t * p.dstate, dt.data() + t * kLanes,
                       u.data() + t * kLanes, x.data(), x.data(), y.data() + t * kLanes);
    }
    const float* d_skip = bp.D.data();
    for (int64_t t = 0; t < steps; ++t) {
      float* y_t = y.data() + t * kLanes;
      const float* u_t = u.data() + t * kLanes;
      const float* z_t = z.data() + t * kLanes;
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) y_t[c] += d_skip[c] * u_t[c];
      if (gated) {
#pragma omp simd
        for (int64_t c = 0; c < kLanes; ++c) y_t[c] *= silu(z_t[c]);
      }
    }
    store_tile(p, blk, y.data(), t0, steps, out);
  }
  for (int64_t c = 0; c < blk.nc; ++c) {
    for (int64_t n = 0; n < p.dstate; ++n) last_state[(blk.b * p.dim + blk.c0 + c) * p.dstate + n] = x[n * kLanes + c];
  }
}

// Gradient outputs of one backward call; per-block partial sums are reduced afterwards.
struct Grads {
  float *du, *ddelta, *dz;      // (b, d, l); dz nullable
  float *dA_part, *dD_part, *dbias_part;  // (b, d, n), (b, d), (b, d): summed over b later
  float *dB_const_part, *dC_const_part;   // (b, d, n) when B / C are constant
  float *dB_slots, *dC_slots;             // (b, g, slots, n, l) when B / C vary per step
  int64_t slots_b, slots_c;
};

template <bool VarB, bool VarC>
void backward_block(const Problem& p, const Block& blk, const float* checkpoints, const float* dout, const Grads& g) {
  BlockParams bp(p, blk);
  const int64_t N = p.dstate;
  const int64_t lane_steps = kChunk * kLanes;
  std::vector<float> raw(lane_steps, 0.f), dt(lane_steps, 0.f), u(lane_steps, 0.f), z(lane_steps, 0.f),
      y(lane_steps, 0.f), dy(lane_steps, 0.f), du(lane_steps, 0.f), ddt(lane_steps, 0.f), dz(lane_steps, 0.f);
  std::vector<float> b_tile(kChunk * N), c_tile(kChunk * N), db_tile(kChunk * N), dc_tile(kChunk * N);
  std::vector<float> xs((kChunk + 1) * N * kLanes, 0.f);  // states before and after each step of the chunk
  std::vector<float> h_carry(N * kLanes, 0.f);            // a_{t+1} * h_{t+1}
  std::vector<float> dA(N * kLanes, 0.f), dB(N * kLanes, 0.f), dC(N * kLanes, 0.f), dD(kLanes, 0.f),
      dbias(kLanes, 0.f);
  const float* rows_b = grouped_rows(p, p.B, p.groups_b, blk.b, blk.gb);
  const float* rows_c = grouped_rows(p, p.C, p.groups_c, blk.b, blk.gc);
  float* slot_b = VarB ? g.dB_slots + ((blk.b * p.groups_b + blk.gb) * g.slots_b + blk.slot_b) * N * p.length : nullptr;
  float* slot_c = VarC ? g.dC_slots + ((blk.b * p.groups_c + blk.gc) * g.slots_c + blk.slot_c) * N * p.length : nullptr;
  const bool gated = p.z != nullptr;
  const bool use_softplus = p.softplus;

  for (int64_t k = p.chunks() - 1; k >= 0; --k) {
    int64_t s0 = k * kChunk;
    int64_t steps = std::min(kChunk, p.length - s0);
    load_steps(p, blk, bp, s0, steps, raw.data(), dt.data(), u.data(), z.data());
    load_rows(p, rows_b, s0, steps, b_tile.data());
    load_rows(p, rows_c, s0, steps, c_tile.data());
    load_tile(p, blk, dout, s0, steps, dy.data());
    for (int64_t c = 0; c < blk.nc; ++c) {
      const float* saved = checkpoints + ((blk.b * p.dim + blk.c0 + c) * p.chunks() + k) * N;
      for (int64_t n = 0; n < N; ++n) xs[n * kLanes + c] = saved[n];
    }
    std::fill(y.begin(), y.end(), 0.f);
    for (int64_t t = 0; t < steps; ++t) {
      step<VarB, VarC>(p, bp, b_tile.data() + t * N, c_tile.data() + t * N, dt.data() + t * kLanes,
                       u.data() + t * kLanes, xs.data() + t * N * kLanes, xs.data() + (t + 1) * N * kLanes,
                       y.data() + t * kLanes);
    }
    // Through the gate and the skip: dy (in place of dout), dz, dD, and du's skip part.
    const float* d_skip = bp.D.data();
    for (int64_t t = 0; t < steps; ++t) {
      float* dy_t = dy.data() + t * kLanes;
      const float* u_t = u.data() + t * kLanes;
      if (gated) {
        const float* y_t = y.data() + t * kLanes;
        const float* z_t = z.data() + t * kLanes;
        float* dz_t = dz.data() + t * kLanes;
#pragma omp simd
        for (int64_t c = 0; c < kLanes; ++c) {
          float full = y_t[c] + d_skip[c] * u_t[c];
          dz_t[c] = dy_t[c] * full * silu_grad(z_t[c]);
          dy_t[c] *= silu(z_t[c]);
        }
      }
      float* du_t = du.data() + t * kLanes;
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) {
        dD[c] += dy_t[c] * u_t[c];
        du_t[c] = dy_t[c] * d_skip[c];
      }
    }
    std::fill(ddt.begin(), ddt.end(), 0.f);
    for (int64_t t = steps - 1; t >= 0; --t) {
      const float* dt_t = dt.data() + t * kLanes;
      const float* u_t = u.data() + t * kLanes;
      const float* dy_t = dy.data() + t * kLanes;
      float* du_t = du.data() + t * kLanes;
      float* ddt_t = ddt.data() + t * kLanes;
      for (int64_t n = 0; n < N; ++n) {
        const float* a_row = bp.A.data() + n * kLanes;
        const float* b_row = bp.B.data() + n * kLanes;
        const float* c_row = bp.C.data() + n * kLanes;
        float b_step = VarB ? b_tile[t * N + n] : 0.f;
        float c_step = VarC ? c_tile[t * N + n] : 0.f;
        const float* x_prev = xs.data() + (t * N + n) * kLanes;
        const float* x_now = xs.data() + ((t + 1) * N + n) * kLanes;
        float* carry = h_carry.data() + n * kLanes;
        float* dA_n = dA.data() + n * kLanes;
        float* dB_n = dB.data() + n * kLanes;
        float* dC_n = dC.data() + n * kLanes;
        float sum_db = 0.f, sum_dc = 0.f;
#pragma omp simd reduction(+ : sum_db, sum_dc)
        for (int64_t c = 0; c < kLanes; ++c) {
          float bv = VarB ? b_step : b_row[c];
          float cv = VarC ? c_step : c_row[c];
          float h = dy_t[c] * cv + carry[c];
          float a = fast_exp(dt_t[c] * a_row[c]);
          float ha = h * x_prev[c] * a;
          float db = h * dt_t[c] * u_t[c];
          float dc = dy_t[c] * x_now[c];
          ddt_t[c] += ha * a_row[c] + h * bv * u_t[c];
          du_t[c] += h * bv * dt_t[c];
          dA_n[c] += ha * dt_t[c];
          if (VarB) sum_db += db; else dB_n[c] += db;
          if (VarC) sum_dc += dc; else dC_n[c] += dc;
          carry[c] = a * h;
        }
        if (VarB) db_tile[t * N + n] = sum_db;
        if (VarC) dc_tile[t * N + n] = sum_dc;
      }
    }
    store_rows(p, db_tile.data(), s0, steps, slot_b);
    store_rows(p, dc_tile.data(), s0, steps, slot_c);
    for (int64_t t = 0; t < steps; ++t) {
      float* ddt_t = ddt.data() + t * kLanes;
      const float* raw_t = raw.data() + t * kLanes;
      if (use_softplus) {
#pragma omp simd
        for (int64_t c = 0; c < kLanes; ++c) ddt_t[c] *= sigmoid(raw_t[c]);
      }
#pragma omp simd
      for (int64_t c = 0; c < kLanes; ++c) dbias[c] += ddt_t[c];
    }
    store_tile(p, blk, ddt.data(), s0, steps, g.ddelta);
    store_tile(p, blk, du.data(), s0, steps, g.du);
    if (g.dz) store_tile(p, blk, dz.data(), s0, steps, g.dz);
  }
  for (int64_t c = 0; c < blk.nc; ++c) {
    int64_t bc = blk.b * p.dim + blk.c0 + c;
    for (int64_t n = 0; n < N; ++n) {
      g.dA_part[bc * N + n] = dA[n * kLanes + c];
      if (!VarB) g.dB_const_part[bc * N + n] = dB[n * kLanes + c];
      if (!VarC) g.dC_const_part[bc * N + n] = dC[n * kLanes + c];
    }
    g.dD_part[bc] = dD[c];
    g.dbias_part[bc] = dbias[c];
  }
}

template <typename Fn>
void dispatch(const Problem& p, Fn&& fn) {
  bool var_b = p.groups_b > 0, var_c = p.groups_c > 0;
  if (var_b && var_c) fn(std::integral_constant<bool, true>{}, std::integral_constant<bool, true>{});
  else if (var_b) fn(std::integral_constant<bool, true>{}, std::integral_constant<bool, false>{});
  else if (var_c) fn(std::integral_constant<bool, false>{}, std::integral_constant<bool, true>{});
  else fn(std::integral_constant<bool, false>{}, std::integral_constant<bool, false>{});
}

void check_float_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan cpu kernel: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, "selective_scan cpu kernel: ", name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), "selective_scan cpu kernel: ", name, " must be contiguous");
}

const float* optional_data(const c10::optional<at::Tensor>& t, const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  check_float_contiguous(*t, name);
  return t->data_ptr<float>();
}

Problem make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                     const at::Tensor& C, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                     const c10::optional<at::Tensor>& delta_bias, bool softplus) {
  check_float_contiguous(u, "u");
  check_float_contiguous(delta, "delta");
  check_float_contiguous(A, "A");
  check_float_contiguous(B, "B");
  check_float_contiguous(C, "C");
  TORCH_CHECK(B.dim() == 2 || B.dim() == 4, "selective_scan cpu kernel: B must be (d, n) or (b, g, n, l)");
  TORCH_CHECK(C.dim() == 2 || C.dim() == 4, "selective_scan cpu kernel: C must be (d, n) or (b, g, n, l)");
  Problem p;
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.length = u.size(2);
  p.dstate = A.size(1);
  p.groups_b = B.dim() == 4 ? B.size(1) : 0;
  p.groups_c = C.dim() == 4 ? C.size(1) : 0;
  p.softplus = softplus;
  p.u = u.data_ptr<float>();
  p.delta = delta.data_ptr<float>();
  p.A = A.data_ptr<float>();
  p.B = B.data_ptr<float>();
  p.C = C.data_ptr<float>();
  p.D = optional_data(D, "D");
  p.z = optional_data(z, "z");
  p.delta_bias = optional_data(delta_bias, "delta_bias");
  return p;
}

std::vector<at::Tensor> selective_scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                           const at::Tensor& B, const at::Tensor& C,
                                           const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                           const c10::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                           bool keep_checkpoints) {
  Problem p = make_problem(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  auto opts = u.options();
  at::Tensor out = at::empty({p.batch, p.dim, p.length}, opts);
  at::Tensor last_state = at::zeros({p.batch, p.dim, p.dstate}, opts);
  at::Tensor checkpoints = keep_checkpoints ? at::empty({p.batch, p.dim, p.chunks(), p.dstate}, opts) : at::Tensor();
  BlockPlan plan = plan_blocks(p);
  float* ckpt = keep_checkpoints ? checkpoints.data_ptr<float>() : nullptr;
  dispatch(p, [&](auto var_b, auto var_c) {
    at::parallel_for(0, static_cast<int64_t>(plan.blocks.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        forward_block<decltype(var_b)::value, decltype(var_c)::value>(p, plan.blocks[i], out.data_ptr<float>(),
                                                                       last_state.data_ptr<float>(), ckpt);
      }
    });
  });
  return {out, last_state, checkpoints};
}

std::vector<at::Tensor> selective_scan_bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                           const at::Tensor& B, const at::Tensor& C,
                                           const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                           const c10::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                           const at::Tensor& checkpoints, const at::Tensor& dout) {
  Problem p = make_problem(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  check_float_contiguous(checkpoints, "checkpoints");
  check_float_contiguous(dout, "dout");
  TORCH_CHECK(checkpoints.numel() == p.batch * p.dim * p.chunks() * p.dstate,
              "selective_scan cpu kernel: checkpoints do not match the inputs");
  BlockPlan plan = plan_blocks(p);
  auto opts = u.options();
  at::Tensor du = at::empty_like(u), ddelta = at::empty_like(delta);
  at::Tensor dz = p.z ? at::empty_like(u) : at::Tensor();
  at::Tensor dA_part = at::zeros({p.batch, p.dim, p.dstate}, opts);
  at::Tensor dD_part = at::zeros({p.batch, p.dim}, opts), dbias_part = at::zeros({p.batch, p.dim}, opts);
  bool var_b = p.groups_b > 0, var_c = p.groups_c > 0;
  at::Tensor dB_buf = var_b ? at::empty({p.batch, p.groups_b, plan.slots_b, p.dstate, p.length}, opts)
                            : at::zeros({p.batch, p.dim, p.dstate}, opts);
  at::Tensor dC_buf = var_c ? at::empty({p.batch, p.groups_c, plan.slots_c, p.dstate, p.length}, opts)
                            : at::zeros({p.batch, p.dim, p.dstate}, opts);
  Grads g;
  g.du = du.data_ptr<float>();
  g.ddelta = ddelta.data_ptr<float>();
  g.dz = p.z ? dz.data_ptr<float>() : nullptr;
  g.dA_part = dA_part.data_ptr<float>();
  g.dD_part = dD_part.data_ptr<float>();
  g.dbias_part = dbias_part.data_ptr<float>();
  g.dB_const_part = var_b ? nullptr : dB_buf.data_ptr<float>();
  g.dC_const_part = var_c ? nullptr : dC_buf.data_ptr<float>();
  g.dB_slots = var_b ? dB_buf.data_ptr<float>() : nullptr;
  g.dC_slots = var_c ? dC_buf.data_ptr<float>() : nullptr;
  g.slots_b = plan.slots_b;
  g.slots_c = plan.slots_c;
  const float* ckpt = checkpoints.data_ptr<float>();
  const float* dout_ptr = dout.data_ptr<float>();
  dispatch(p, [&](auto vb, auto vc) {
    at::parallel_for(0, static_cast<int64_t>(plan.blocks.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        backward_block<decltype(vb)::value, decltype(vc)::value>(p, plan.blocks[i], ckpt, dout_ptr, g);
      }
    });
  });
  // Fixed-order reductions: over the batch for per-channel parameters, over slots for per-step B / C.
  // A sum over dimension 0 of a contiguous tensor adds the rows in order for every element.
  auto sum_leading = [](const at::Tensor& t) {
    at::Tensor acc = t.select(0, 0).clone();
    for (int64_t i = 1; i < t.size(0); ++i) acc.add_(t.select(0, i));
    return acc;
  };
  auto sum_slots = [](const at::Tensor& t) {  // (b, g, slots, n, l) -> (b, g, n, l)
    at::Tensor acc = t.select(2, 0).contiguous();
    for (int64_t i = 1; i < t.size(2); ++i) acc.add_(t.select(2, i));
    return acc;
  };
  at::Tensor dA = sum_leading(dA_part);
  at::Tensor dB = var_b ? sum_slots(dB_buf) : sum_leading(dB_buf);
  at::Tensor dC = var_c ? sum_slots(dC_buf) : sum_leading(dC_buf);
  at::Tensor dD = p.D ? sum_leading(dD_part) : at::Tensor();
  at::Tensor dbias = p.delta_bias ? sum_leading(dbias_part) : at::Tensor();
  return {du, ddelta, dA, dB, dC, dD, dz, dbias};
}

}  // namespace
}  // namespace mambaseg_cpu

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_fwd", &mambaseg_cpu::selective_scan_fwd, "Selective scan forward (CPU, float32)");
  m.def("selective_scan_bwd", &mambaseg_cpu::selective_scan_bwd, "Selective scan backward (CPU, float32)");
}
