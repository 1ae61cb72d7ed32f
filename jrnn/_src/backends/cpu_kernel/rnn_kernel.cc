// jrnn's CPU scan kernel: whole-sequence RNN time loops as XLA FFI custom calls.
//
// One call runs every time step of one layer and direction (and, under vmap, of every
// independent problem stacked on the leading axes):
//
//   jrnn_rnn_fwd: per step, the recurrent GEMM h_{t-1} W_hh and the cell's gate math fused:
//     W_hh is packed once per call into panels (for every k, the NG gate columns of V hidden
//     units side by side); the work item of a step is one panel: it multiplies the full h_{t-1}
//     by the panel, applies the gates to the accumulators while they are in registers and writes
//     its units of h_t. Threads claim items in order; a step's items start once the previous
//     step's are all done (one counter, no per-thread barrier).
//   jrnn_rnn_bwd: the reverse loop. Per step and panel of hidden units: the previous step's dz
//     times the panel of W_hh^T (packed once per call) gives the carry cotangent of these units,
//     then the pointwise gate derivatives (from the saved activated gates) give this step's dz.
//     dW_hh is one big GEMM outside (jnp.einsum).
//
// Cells (attribute `cell`): 0 LSTM (gates i, f, g, o), 1 GRU reset-after (r, z, n),
// 2 Elman tanh, 3 Elman relu, 4 the lecture's seed cell (y = relu, s = tanh; its `extra` output
// columns come first in the gate width). Everything is float32.
//
// The vector width V and the register blocking come from the compile flags (-march=native):
// 16 lanes with AVX-512F, else 8 (AVX2/FMA or whatever the compiler maps 32-byte vectors to).

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int V = 16;
constexpr int NREG = 32;
#else
constexpr int V = 8;
constexpr int NREG = 16;
#endif

typedef float vf __attribute__((vector_size(V * 4)));
typedef float vfu __attribute__((vector_size(V * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(V * 4)));

// Rows of the register block for NG gate vectors: NG * MB accumulators + NG weights + 1.
template <int NG>
constexpr int mb_max() {
  return std::min(12, (NREG - NG - 2) / NG);
}

inline vf splat(float x) { return vf{} + x; }

inline vf loadp(const float* p, int n) {
  if (n == V) return (vf)(*(const vfu*)p);
  vf v = {};
  std::memcpy(&v, p, sizeof(float) * n);
  return v;
}

inline void storep(float* p, vf v, int n) {
  if (n == V) {
    *(vfu*)p = v;
    return;
  }
  std::memcpy(p, &v, sizeof(float) * n);
}

inline vf vsel(vi m, vf a, vf b) { return m ? a : b; }

// exp for float32 vectors (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree 6 polynomial).
// NaN propagates; the argument is clamped to [-87, 88] (results stay normal, no overflow).
inline vf vexp(vf x) {
  x = vsel(x > 88.0f, splat(88.0f), x);
  x = vsel(x < -87.0f, splat(-87.0f), x);
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x * 1.44269504088896341f + magic) - magic;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &e, sizeof(vf));
  return p * scale;
}

inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// tanh: Cephes' odd polynomial for |x| < 0.625, else 1 - 2 / (exp(2|x|) + 1) with the sign.
inline vf vtanh(vf x) {
  vi bits;
  std::memcpy(&bits, &x, sizeof(vf));
  vi sign = bits & (int32_t)0x80000000;
  vi absbits = bits & 0x7fffffff;
  vf a;
  std::memcpy(&a, &absbits, sizeof(vf));
  vf z = x * x;
  vf small = splat(-5.70498872745e-3f);
  small = small * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = small * z * x + x;
  vf large = 1.0f - 2.0f / (vexp(a + a) + 1.0f);
  vi lbits;
  std::memcpy(&lbits, &large, sizeof(vf));
  lbits = lbits | sign;
  std::memcpy(&large, &lbits, sizeof(vf));
  return vsel(a < 0.625f, small, large);
}

inline vf vrelu(vf x) { return vsel(x < 0.0f, splat(0.0f), x); }

// ------------------------------------------------------------------ threads

// Persistent workers; the calling thread is thread 0. One call at a time.
class Pool {
 public:
  void run(int nt, const std::function<void(int)>& job) {
    if (nt <= 1) {
      job(0);
      return;
    }
    std::lock_guard<std::mutex> call(call_mu_);
    while ((int)workers_.size() < nt - 1) {
      int id = (int)workers_.size() + 1;
      workers_.emplace_back([this, id] { loop(id); });
      workers_.back().detach();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      active_ = nt;
      pending_.store(nt - 1, std::memory_order_release);
      ++generation_;
    }
    cv_.notify_all();
    job(0);
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < 4000) {
        __builtin_ia32_pause();
      } else {
        sched_yield();
      }
    }
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (id >= active_) continue;
        job = job_;
      }
      (*job)(id);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  int active_ = 0;
  uint64_t generation_ = 0;
  std::atomic<int> pending_{0};
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: detached workers outlive static teardown
  return *p;
}

// The cores this process may run on (taskset / cgroup cpusets), else the hardware's count.
int usable_cores() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  return (int)std::max(1u, std::thread::hardware_concurrency());
}

// Threads for a step of `fmas` multiply-adds split over `panels` panels.
int num_threads(int64_t fmas, int64_t panels) {
  static const int hw = usable_cores();
  int nt = hw;
  if (const char* env = std::getenv("JRNN_CPU_THREADS")) {
    int v = std::atoi(env);
    if (v > 0) return (int)std::max<int64_t>(1, std::min<int64_t>(v, panels));
  }
  if (fmas < (1 << 16)) nt = 1;
  return (int)std::max<int64_t>(1, std::min<int64_t>(nt, panels));
}

float* alloc_floats(size_t n) {
  size_t bytes = ((std::max<size_t>(n, 1) * sizeof(float)) + 63) / 64 * 64;
  return static_cast<float*>(std::aligned_alloc(64, bytes));
}

// ------------------------------------------------------------------ micro-kernel

// acc[g][r] = sum_k a[r][k] * panel[k][g][:] for rows r < MB (row pointers `a`), k < K.
template <int NG, int MB>
inline void micro(const float* const* a, int64_t K, const float* panel, vf (&acc)[NG][MB]) {
  for (int g = 0; g < NG; ++g)
    for (int r = 0; r < MB; ++r) acc[g][r] = vf{};
  const float* w = panel;
  for (int64_t k = 0; k < K; ++k, w += NG * V) {
    vf wv[NG];
    for (int g = 0; g < NG; ++g) wv[g] = *(const vf*)(w + g * V);
    for (int r = 0; r < MB; ++r) {
      vf hv = splat(a[r][k]);
      for (int g = 0; g < NG; ++g) acc[g][r] += wv[g] * hv;
    }
  }
}

// Calls f.template operator()<MB>(r0) over row blocks covering [0, B), largest blocks first.
template <int NG, typename F>
inline void row_blocks(int64_t B, F&& f) {
  constexpr int M = mb_max<NG>();
  int64_t r = 0;
  for (; r + M <= B; r += M) f.template operator()<M>(r);
  if constexpr (M > 4)
    for (; r + 4 <= B; r += 4) f.template operator()<4>(r);
  if constexpr (M > 2)
    for (; r + 2 <= B; r += 2) f.template operator()<2>(r);
  for (; r < B; ++r) f.template operator()<1>(r);
}

// ------------------------------------------------------------------ problem description

enum Cell { kLstm = 0, kGru = 1, kElmanTanh = 2, kElmanRelu = 3, kSeed = 4 };

inline int gates_of(int cell) {
  return cell == kLstm ? 4 : cell == kGru ? 3 : 1;
}

// Saved-activation width per unit row: LSTM i,f,g,o; GRU r,z,n,hn; Elman h; seed y|s.
inline int64_t saved_width(int cell, int64_t H, int64_t E) {
  switch (cell) {
    case kLstm: return 4 * H;
    case kGru: return 4 * H;
    case kSeed: return E + H;
    default: return H;
  }
}

struct Dims {
  int64_t G = 1, T = 0, B = 0, H = 0, GW = 0, E = 0, O = 0;
};

// ------------------------------------------------------------------ scheduling

// The work of a call is a sequence of phases (packing, then one per time step), each split into
// `np` items (panels of V hidden units). Threads claim items in order from one counter; an item
// of phase k starts once every item of phases < k is complete (one counter of completed items).
// No thread waits for a particular other thread: on a loaded machine, whichever threads run
// make progress, and a step only waits for the items already claimed.
struct Schedule {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> completed{0};
};

inline void wait_until(const std::atomic<int64_t>& c, int64_t target) {
  for (int spin = 0; c.load(std::memory_order_acquire) < target; ++spin) {
    if (spin < 4000) {
      __builtin_ia32_pause();
    } else {
      sched_yield();
    }
  }
}

// Runs f(phase, item) for every phase < phases and item < np, phases in order.
template <typename F>
void run_items(int nt, int64_t phases, int64_t np, F&& f) {
  Schedule sch;
  const int64_t total = phases * np;
  std::function<void(int)> job = [&](int) {
    for (;;) {
      const int64_t i = sch.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= total) return;
      const int64_t ph = i / np;
      wait_until(sch.completed, ph * np);
      f(ph, i % np);
      sch.completed.fetch_add(1, std::memory_order_release);
    }
  };
  pool().run(nt, job);
}

// ------------------------------------------------------------------ forward

struct FwdArgs {
  const float *xp, *w, *bh, *h0, *c0;
  const uint8_t *mask, *resets;
  float *ys, *hT, *cT, *hs, *cs, *hin, *cin, *sv;
  bool has_bh, want_carries, want_save;
  int cell;
  bool reverse;
};

// Phase 0 packs item `it`'s panel (and sets its units of the first carry); phase s + 1 runs
// step s (in processing order) of that panel. Items: unit panels, then extra-column panels.
template <int NG>
void fwd_item(const Dims& d, const FwdArgs& a, float* packed, float* hbuf, float* cbuf,
              int64_t phase, int64_t it) {
  const int64_t T = d.T, B = d.B, H = d.H, GW = d.GW, E = d.E, O = d.O;
  const int64_t npu = (H + V - 1) / V;
  const int64_t S = saved_width(a.cell, H, E);
  const bool lstm = a.cell == kLstm;
  float* packed_e = packed + npu * H * NG * V;
  if (phase == 0) {
    if (it < npu) {  // unit panel p: [k][g][lane]
      const int64_t p = it;
      float* dst = packed + p * H * NG * V;
      for (int64_t k = 0; k < H; ++k)
        for (int g = 0; g < NG; ++g)
          for (int l = 0; l < V; ++l) {
            int64_t u = p * V + l;
            dst[(k * NG + g) * V + l] = u < H ? a.w[k * GW + E + g * H + u] : 0.0f;
          }
      // The carry entering the first step (a reset there restarts from carry0 as well).
      const int64_t u0 = p * V, nv = std::min<int64_t>(V, H - u0);
      for (int64_t b = 0; b < B; ++b) {
        std::memcpy(hbuf + b * H + u0, a.h0 + b * H + u0, nv * sizeof(float));
        if (lstm) std::memcpy(cbuf + b * H + u0, a.c0 + b * H + u0, nv * sizeof(float));
      }
    } else {  // extra panel q: [k][lane]
      const int64_t q = it - npu;
      float* dst = packed_e + q * H * V;
      for (int64_t k = 0; k < H; ++k)
        for (int l = 0; l < V; ++l) {
          int64_t e = q * V + l;
          dst[k * V + l] = e < E ? a.w[k * GW + e] : 0.0f;
        }
    }
    return;
  }
  const int64_t s = phase - 1;
  const int64_t t = a.reverse ? T - 1 - s : s;
  const bool last = s == T - 1;
  const int64_t tn = a.reverse ? t - 1 : t + 1;  // next step processed
  const float* hcur = hbuf + (s & 1) * B * H;
  float* hnext = hbuf + ((s + 1) & 1) * B * H;
  const float* xt = a.xp + t * B * GW;
  const uint8_t* mt = a.mask + t * B;
  const uint8_t* rn = last ? nullptr : a.resets + tn * B;
  if (it >= npu) {  // the seed cell's output columns: y = relu(z), no carry
    const int64_t q = it - npu;
    const int64_t e0 = q * V;
    const int nv = (int)std::min<int64_t>(V, E - e0);
    const float* panel = packed_e + q * H * V;
    row_blocks<1>(B, [&]<int MB>(int64_t r0) {
      const float* rows[MB];
      for (int r = 0; r < MB; ++r) rows[r] = hcur + (r0 + r) * H;
      vf acc[1][MB];
      micro<1, MB>(rows, H, panel, acc);
      for (int r = 0; r < MB; ++r) {
        const int64_t b = r0 + r;
        vf y = vrelu(acc[0][r] + loadp(xt + b * GW + e0, nv));
        if (a.want_save) storep(a.sv + (t * B + b) * S + e0, y, nv);
        storep(a.ys + (t * B + b) * O + e0, mt[b] ? y : vf{}, nv);
      }
    });
    return;
  }
  const int64_t p = it;
  const int64_t u0 = p * V;
  const int nv = (int)std::min<int64_t>(V, H - u0);
  const float* panel = packed + p * H * NG * V;
  row_blocks<NG>(B, [&]<int MB>(int64_t r0) {
    const float* rows[MB];
    for (int r = 0; r < MB; ++r) rows[r] = hcur + (r0 + r) * H;
    vf acc[NG][MB];
    micro<NG, MB>(rows, H, panel, acc);
    for (int r = 0; r < MB; ++r) {
      const int64_t b = r0 + r;
      const float* x = xt + b * GW + E + u0;
      const bool m = mt[b] != 0;
      const vf hp = loadp(hcur + b * H + u0, nv);
      vf hn, cn = {}, cp = {}, y;
      float* sv = a.want_save ? a.sv + (t * B + b) * S + E + u0 : nullptr;
      if (a.cell == kLstm) {
        cp = loadp(cbuf + b * H + u0, nv);
        vf i = vsigmoid(acc[0][r] + loadp(x, nv));
        vf f = vsigmoid(acc[1 % NG][r] + loadp(x + H, nv));
        vf g = vtanh(acc[2 % NG][r] + loadp(x + 2 * H, nv));
        vf o = vsigmoid(acc[3 % NG][r] + loadp(x + 3 * H, nv));
        vf c = f * cp + i * g;
        vf h = o * vtanh(c);
        if (sv) {
          storep(sv, i, nv);
          storep(sv + H, f, nv);
          storep(sv + 2 * H, g, nv);
          storep(sv + 3 * H, o, nv);
        }
        hn = m ? h : hp;
        cn = m ? c : cp;
        y = m ? h : vf{};
      } else if (a.cell == kGru) {
        vf br = {}, bz = {}, bn = {};
        if (a.has_bh) {
          br = loadp(a.bh + u0, nv);
          bz = loadp(a.bh + H + u0, nv);
          bn = loadp(a.bh + 2 * H + u0, nv);
        }
        vf hr = acc[0][r] + br, hz = acc[1 % NG][r] + bz, hnn = acc[2 % NG][r] + bn;
        vf rg = vsigmoid(loadp(x, nv) + hr);
        vf zg = vsigmoid(loadp(x + H, nv) + hz);
        vf ng = vtanh(loadp(x + 2 * H, nv) + rg * hnn);
        vf h = ng + zg * (hp - ng);
        if (sv) {
          storep(sv, rg, nv);
          storep(sv + H, zg, nv);
          storep(sv + 2 * H, ng, nv);
          storep(sv + 3 * H, hnn, nv);
        }
        hn = m ? h : hp;
        y = m ? h : vf{};
      } else {
        vf z = acc[0][r] + loadp(x, nv);
        vf h = a.cell == kElmanRelu ? vrelu(z) : vtanh(z);
        if (sv) storep(sv, h, nv);
        hn = m ? h : hp;
        y = m ? h : vf{};
      }
      if (a.cell != kSeed) storep(a.ys + (t * B + b) * O + u0, y, nv);
      if (a.want_carries) {
        storep(a.hs + (t * B + b) * H + u0, hn, nv);
        if (lstm) storep(a.cs + (t * B + b) * H + u0, cn, nv);
      }
      if (a.want_save) {
        storep(a.hin + (t * B + b) * H + u0, hp, nv);
        if (lstm) storep(a.cin + (t * B + b) * H + u0, cp, nv);
      }
      if (last) {
        storep(a.hT + b * H + u0, hn, nv);
        if (lstm) storep(a.cT + b * H + u0, cn, nv);
      } else {
        const bool rs = rn[b] != 0;
        storep(hnext + b * H + u0, rs ? loadp(a.h0 + b * H + u0, nv) : hn, nv);
        if (lstm) storep(cbuf + b * H + u0, rs ? loadp(a.c0 + b * H + u0, nv) : cn, nv);
      }
    }
  });
}

// ------------------------------------------------------------------ backward

struct BwdArgs {
  const float *w, *sv, *hin, *cin;
  const uint8_t *mask, *resets;
  const float *dys, *dhs, *dcs, *dhT, *dcT;
  float *dxp, *dhp, *dh0, *dc0;
  bool has_dcarries;
  int cell;
  bool reverse;
};

// Per-unit state of the reverse loop, [b][h] each: dh, dc (the carry cotangent after the step
// being processed); pdh, pdc (what reaches the carry entering the step besides dz W^T: direct
// terms, or everything at padding); ah, ac (the cotangent routed to carry0 by resets).
struct BwdState {
  float *dh, *dc, *pdh, *pdc, *ah, *ac;
};

// dcarry_in = dz_t W^T + direct terms for panel p; then the resets of step t route it to carry0.
void bwd_carry_in(const Dims& d, const BwdArgs& a, const float* packed, const BwdState& st,
                  int64_t t, int64_t p) {
  const int64_t B = d.B, H = d.H, GW = d.GW;
  const bool lstm = a.cell == kLstm;
  const float* dz = (a.cell == kGru ? a.dhp : a.dxp) + t * B * GW;
  const uint8_t* rt = a.resets + t * B;
  const int64_t u0 = p * V;
  const int nv = (int)std::min<int64_t>(V, H - u0);
  const float* panel = packed + p * GW * V;
  row_blocks<1>(B, [&]<int MB>(int64_t r0) {
    const float* rows[MB];
    for (int r = 0; r < MB; ++r) rows[r] = dz + (r0 + r) * GW;
    vf acc[1][MB];
    micro<1, MB>(rows, GW, panel, acc);
    for (int r = 0; r < MB; ++r) {
      const int64_t b = r0 + r, o = b * H + u0;
      vf gh = acc[0][r] + loadp(st.pdh + o, nv);
      vf gc = lstm ? loadp(st.pdc + o, nv) : vf{};
      if (rt[b]) {
        storep(st.ah + o, loadp(st.ah + o, nv) + gh, nv);
        gh = vf{};
        if (lstm) {
          storep(st.ac + o, loadp(st.ac + o, nv) + gc, nv);
          gc = vf{};
        }
      }
      storep(st.dh + o, gh, nv);
      if (lstm) storep(st.dc + o, gc, nv);
    }
  });
}

// The gate derivatives of step t for panel p's units: writes dz (dxp, and dhp for the GRU).
void bwd_pointwise(const Dims& d, const BwdArgs& a, const BwdState& st, int64_t t, int64_t p) {
  const int64_t B = d.B, H = d.H, GW = d.GW, E = d.E, O = d.O;
  const int64_t S = saved_width(a.cell, H, E);
  const bool lstm = a.cell == kLstm, gru = a.cell == kGru;
  const uint8_t* mt = a.mask + t * B;
  const int64_t u0 = p * V;
  const int nv = (int)std::min<int64_t>(V, H - u0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * H + u0, tb = t * B + b;
    vf gh = loadp(st.dh + o, nv), gc = lstm ? loadp(st.dc + o, nv) : vf{};
    if (a.has_dcarries) {
      gh += loadp(a.dhs + tb * H + u0, nv);
      if (lstm) gc += loadp(a.dcs + tb * H + u0, nv);
    }
    float* dx = a.dxp + tb * GW + E + u0;
    float* dhp = gru ? a.dhp + tb * GW + u0 : nullptr;
    const int ng = gates_of(a.cell);
    if (!mt[b]) {  // padding: the carry passes through, nothing reaches the gates
      for (int g = 0; g < ng; ++g) {
        storep(dx + g * H, vf{}, nv);
        if (dhp) storep(dhp + g * H, vf{}, nv);
      }
      storep(st.pdh + o, gh, nv);
      if (lstm) storep(st.pdc + o, gc, nv);
      continue;
    }
    const float* sv = a.sv + tb * S + u0;
    if (a.cell != kSeed) gh += loadp(a.dys + tb * O + u0, nv);
    if (lstm) {
      vf i = loadp(sv, nv), f = loadp(sv + H, nv), g = loadp(sv + 2 * H, nv),
         og = loadp(sv + 3 * H, nv);
      vf cp = loadp(a.cin + tb * H + u0, nv);
      vf tc = vtanh(f * cp + i * g);
      vf dct = gc + gh * og * (1.0f - tc * tc);
      storep(dx, dct * g * i * (1.0f - i), nv);
      storep(dx + H, dct * cp * f * (1.0f - f), nv);
      storep(dx + 2 * H, dct * i * (1.0f - g * g), nv);
      storep(dx + 3 * H, gh * tc * og * (1.0f - og), nv);
      storep(st.pdh + o, vf{}, nv);
      storep(st.pdc + o, dct * f, nv);
    } else if (gru) {
      vf r = loadp(sv, nv), z = loadp(sv + H, nv), n = loadp(sv + 2 * H, nv),
         hn = loadp(sv + 3 * H, nv);
      vf hp = loadp(a.hin + tb * H + u0, nv);
      vf dnp = gh * (1.0f - z) * (1.0f - n * n);
      vf dzz = gh * (hp - n) * z * (1.0f - z);
      vf dzr = dnp * hn * r * (1.0f - r);
      storep(dx, dzr, nv);
      storep(dx + H, dzz, nv);
      storep(dx + 2 * H, dnp, nv);
      storep(dhp, dzr, nv);
      storep(dhp + H, dzz, nv);
      storep(dhp + 2 * H, dnp * r, nv);
      storep(st.pdh + o, gh * z, nv);
    } else {
      vf h = loadp(a.cell == kSeed ? sv + E : sv, nv);
      vf dz;
      if (a.cell == kElmanRelu) {
        dz = vsel(h > 0.0f, gh, vf{});
      } else {
        dz = gh * (1.0f - h * h);
      }
      storep(dx, dz, nv);
      storep(st.pdh + o, vf{}, nv);
    }
  }
}

// Phase 0 packs panel p of W^T ([k < GW][lane] = W[p V + lane][k]) and sets its state; phase
// s + 1 (s < T) runs reverse step s: dz of the previous one times W^T, then the gates of this
// one; phase T + 1 gives the cotangent of carry0.
void bwd_item(const Dims& d, const BwdArgs& a, float* packed, const BwdState& st, int64_t phase,
              int64_t p) {
  const int64_t T = d.T, B = d.B, H = d.H, GW = d.GW;
  const bool lstm = a.cell == kLstm;
  const int64_t u0 = p * V, nv = std::min<int64_t>(V, H - u0);
  if (phase == 0) {
    float* dst = packed + p * GW * V;
    for (int l = 0; l < V; ++l) {
      int64_t u = p * V + l;
      for (int64_t k = 0; k < GW; ++k) dst[k * V + l] = u < H ? a.w[u * GW + k] : 0.0f;
    }
    for (int64_t b = 0; b < B; ++b) {
      const size_t n = nv * sizeof(float);
      std::memcpy(st.dh + b * H + u0, a.dhT + b * H + u0, n);
      std::memset(st.ah + b * H + u0, 0, n);
      if (lstm) {
        std::memcpy(st.dc + b * H + u0, a.dcT + b * H + u0, n);
        std::memset(st.ac + b * H + u0, 0, n);
      }
    }
    return;
  }
  // Reverse step s processes forward step t(s); the previous one processed is t(s - 1).
  auto t_of = [&](int64_t s) { return a.reverse ? s : T - 1 - s; };
  const int64_t s = phase - 1;
  if (s > 0) bwd_carry_in(d, a, packed, st, t_of(s - 1), p);
  if (s < T) {
    bwd_pointwise(d, a, st, t_of(s), p);
    return;
  }
  for (int64_t b = 0; b < B; ++b) {  // s == T: the carry entering the first step
    const int64_t o = b * H + u0;
    storep(a.dh0 + o, loadp(st.dh + o, nv) + loadp(st.ah + o, nv), nv);
    if (lstm) storep(a.dc0 + o, loadp(st.dc + o, nv) + loadp(st.ac + o, nv), nv);
  }
}

// The seed cell's output columns: dz_y = dy * relu'(z), for every step (no recurrence).
void bwd_extra(const Dims& d, const BwdArgs& a) {
  const int64_t T = d.T, B = d.B, GW = d.GW, E = d.E, O = d.O;
  const int64_t S = saved_width(a.cell, d.H, E);
  for (int64_t tb = 0; tb < T * B; ++tb) {
    float* dx = a.dxp + tb * GW;
    const float* y = a.sv + tb * S;
    const float* dy = a.dys + tb * O;
    const bool m = a.mask[tb] != 0;
    for (int64_t e = 0; e < E; ++e) dx[e] = (m && y[e] > 0.0f) ? dy[e] : 0.0f;
  }
}

// ------------------------------------------------------------------ FFI handlers

using F32 = ffi::Buffer<ffi::F32>;
using U8 = ffi::Buffer<ffi::U8>;
using R32 = ffi::ResultBuffer<ffi::F32>;

int64_t count_of(const ffi::AnyBuffer::Dimensions& dims) {
  int64_t n = 1;
  for (auto v : dims) n *= v;
  return n;
}

template <typename B>
int64_t count(const B& b) {
  return count_of(b.dimensions());
}

// Checks that a buffer holds G groups of `per` floats each (or, when optional, of none).
bool fits(int64_t n, int64_t G, int64_t per, bool optional) {
  return n == G * per || (optional && n == 0);
}

ffi::Error make_dims(const F32& xp, const F32& w, int cell, int64_t extra, Dims* d) {
  auto xd = xp.dimensions();
  auto wd = w.dimensions();
  if (xd.size() < 3 || wd.size() < 2)
    return ffi::Error::InvalidArgument("jrnn cpu kernel: xp must be [..., t, b, g], w [..., h, g]");
  if (cell < 0 || cell > 4) return ffi::Error::InvalidArgument("jrnn cpu kernel: unknown cell");
  d->T = xd[xd.size() - 3];
  d->B = xd[xd.size() - 2];
  d->GW = xd[xd.size() - 1];
  d->H = wd[wd.size() - 2];
  d->E = cell == kSeed ? extra : 0;
  d->O = cell == kSeed ? extra : d->H;
  if (wd[wd.size() - 1] != d->GW || d->GW != d->E + gates_of(cell) * d->H)
    return ffi::Error::InvalidArgument("jrnn cpu kernel: gate width mismatch");
  d->G = 1;
  for (size_t i = 0; i + 3 < xd.size(); ++i) d->G *= xd[i];
  if (count(w) != d->G * d->H * d->GW)
    return ffi::Error::InvalidArgument("jrnn cpu kernel: w must have xp's leading dims");
  return ffi::Error::Success();
}

ffi::Error FwdImpl(F32 xp, F32 w, F32 bh, F32 h0, F32 c0, U8 mask, U8 resets, R32 ys, R32 hT,
                   R32 cT, R32 hs, R32 cs, R32 hin, R32 cin, R32 sv, int32_t cell, int64_t extra,
                   bool reverse) {
  Dims d;
  if (auto err = make_dims(xp, w, cell, extra, &d); !err.success()) return err;
  const int64_t G = d.G, T = d.T, B = d.B, H = d.H, GW = d.GW, O = d.O;
  const int64_t HC = cell == kLstm ? H : 0;
  const int64_t S = saved_width(cell, H, d.E);
  const bool want_carries = count(*hs) != 0;
  const bool want_save = count(*sv) != 0;
  const bool has_bh = count(bh) != 0;
  bool ok = fits(count(bh), G, GW, true) && fits(count(h0), G, B * H, false) &&
            fits(count(c0), G, B * HC, false) && fits(count(mask), G, T * B, false) &&
            fits(count(resets), G, T * B, false) && fits(count(*ys), G, T * B * O, false) &&
            fits(count(*hT), G, B * H, false) && fits(count(*cT), G, B * HC, false) &&
            fits(count(*hs), G, T * B * H, true) && fits(count(*cs), G, T * B * HC, true) &&
            fits(count(*hin), G, want_save ? T * B * H : 0, false) &&
            fits(count(*cin), G, want_save ? T * B * HC : 0, false) &&
            fits(count(*sv), G, T * B * S, true) &&
            (!want_carries || fits(count(*cs), G, T * B * HC, false));
  if (!ok) return ffi::Error::InvalidArgument("jrnn_rnn_fwd: buffer sizes do not match");
  if (G == 0) return ffi::Error::Success();
  const int ng = gates_of(cell);
  const int64_t npu = (H + V - 1) / V, npe = (d.E + V - 1) / V;
  const int nt = num_threads(B * H * GW, npu);
  float* packed = alloc_floats((npu * ng + npe) * H * V);
  float* hbuf = alloc_floats(2 * B * H);
  float* cbuf = alloc_floats(B * H);
  if (!packed || !hbuf || !cbuf) {
    std::free(packed);
    std::free(hbuf);
    std::free(cbuf);
    return ffi::Error::Internal("jrnn_rnn_fwd: out of memory");
  }
  for (int64_t g = 0; g < G; ++g) {
    FwdArgs a;
    a.xp = xp.typed_data() + g * T * B * GW;
    a.w = w.typed_data() + g * H * GW;
    a.bh = has_bh ? bh.typed_data() + g * GW : nullptr;
    a.h0 = h0.typed_data() + g * B * H;
    a.c0 = c0.typed_data() + g * B * HC;
    a.mask = mask.typed_data() + g * T * B;
    a.resets = resets.typed_data() + g * T * B;
    a.ys = ys->typed_data() + g * T * B * O;
    a.hT = hT->typed_data() + g * B * H;
    a.cT = cT->typed_data() + g * B * HC;
    a.hs = want_carries ? hs->typed_data() + g * T * B * H : nullptr;
    a.cs = want_carries ? cs->typed_data() + g * T * B * HC : nullptr;
    a.hin = want_save ? hin->typed_data() + g * T * B * H : nullptr;
    a.cin = want_save ? cin->typed_data() + g * T * B * HC : nullptr;
    a.sv = want_save ? sv->typed_data() + g * T * B * S : nullptr;
    a.has_bh = has_bh;
    a.want_carries = want_carries;
    a.want_save = want_save;
    a.cell = cell;
    a.reverse = reverse;
    if (T == 0 || B == 0) {
      std::memcpy(a.hT, a.h0, B * H * sizeof(float));
      if (HC) std::memcpy(a.cT, a.c0, B * HC * sizeof(float));
      continue;
    }
    run_items(nt, T + 1, npu + npe, [&](int64_t phase, int64_t it) {
      switch (ng) {
        case 4: fwd_item<4>(d, a, packed, hbuf, cbuf, phase, it); break;
        case 3: fwd_item<3>(d, a, packed, hbuf, cbuf, phase, it); break;
        default: fwd_item<1>(d, a, packed, hbuf, cbuf, phase, it); break;
      }
    });
  }
  std::free(packed);
  std::free(hbuf);
  std::free(cbuf);
  return ffi::Error::Success();
}

ffi::Error BwdImpl(F32 w, F32 sv, F32 hin, F32 cin, U8 mask, U8 resets, F32 dys, F32 dhs,
                   F32 dcs, F32 dhT, F32 dcT, R32 dxp, R32 dhp, R32 dh0, R32 dc0, int32_t cell,
                   int64_t extra, bool reverse) {
  Dims d;
  {
    auto wd = w.dimensions();
    auto sd = sv.dimensions();
    if (wd.size() < 2 || sd.size() < 3 || cell < 0 || cell > 4)
      return ffi::Error::InvalidArgument("jrnn_rnn_bwd: bad ranks or cell");
    d.H = wd[wd.size() - 2];
    d.GW = wd[wd.size() - 1];
    d.T = sd[sd.size() - 3];
    d.B = sd[sd.size() - 2];
    d.E = cell == kSeed ? extra : 0;
    d.O = cell == kSeed ? extra : d.H;
    if (d.GW != d.E + gates_of(cell) * d.H)
      return ffi::Error::InvalidArgument("jrnn_rnn_bwd: gate width mismatch");
    d.G = 1;
    for (size_t i = 0; i + 2 < wd.size(); ++i) d.G *= wd[i];
  }
  const int64_t G = d.G, T = d.T, B = d.B, H = d.H, GW = d.GW, O = d.O;
  const int64_t HC = cell == kLstm ? H : 0;
  const int64_t S = saved_width(cell, H, d.E);
  const bool gru = cell == kGru;
  const bool has_dcarries = count(dhs) != 0;
  bool ok = fits(count(sv), G, T * B * S, false) && fits(count(hin), G, T * B * H, false) &&
            fits(count(cin), G, T * B * HC, false) && fits(count(mask), G, T * B, false) &&
            fits(count(resets), G, T * B, false) && fits(count(dys), G, T * B * O, false) &&
            fits(count(dhs), G, T * B * H, true) &&
            fits(count(dcs), G, has_dcarries ? T * B * HC : 0, false) &&
            fits(count(dhT), G, B * H, false) && fits(count(dcT), G, B * HC, false) &&
            fits(count(*dxp), G, T * B * GW, false) &&
            fits(count(*dhp), G, gru ? T * B * GW : 0, false) &&
            fits(count(*dh0), G, B * H, false) && fits(count(*dc0), G, B * HC, false);
  if (!ok) return ffi::Error::InvalidArgument("jrnn_rnn_bwd: buffer sizes do not match");
  if (G == 0) return ffi::Error::Success();
  const int64_t npu = (H + V - 1) / V;
  const int nt = num_threads(B * H * GW, npu);
  float* packed = alloc_floats(npu * GW * V);
  float* state = alloc_floats(6 * B * H);
  if (!packed || !state) {
    std::free(packed);
    std::free(state);
    return ffi::Error::Internal("jrnn_rnn_bwd: out of memory");
  }
  for (int64_t g = 0; g < G; ++g) {
    BwdArgs a;
    a.w = w.typed_data() + g * H * GW;
    a.sv = sv.typed_data() + g * T * B * S;
    a.hin = hin.typed_data() + g * T * B * H;
    a.cin = cin.typed_data() + g * T * B * HC;
    a.mask = mask.typed_data() + g * T * B;
    a.resets = resets.typed_data() + g * T * B;
    a.dys = dys.typed_data() + g * T * B * O;
    a.dhs = has_dcarries ? dhs.typed_data() + g * T * B * H : nullptr;
    a.dcs = has_dcarries ? dcs.typed_data() + g * T * B * HC : nullptr;
    a.dhT = dhT.typed_data() + g * B * H;
    a.dcT = dcT.typed_data() + g * B * HC;
    a.dxp = dxp->typed_data() + g * T * B * GW;
    a.dhp = gru ? dhp->typed_data() + g * T * B * GW : nullptr;
    a.dh0 = dh0->typed_data() + g * B * H;
    a.dc0 = dc0->typed_data() + g * B * HC;
    a.has_dcarries = has_dcarries;
    a.cell = cell;
    a.reverse = reverse;
    if (B == 0) continue;
    if (d.E) bwd_extra(d, a);
    const BwdState st{state, state + B * H, state + 2 * B * H, state + 3 * B * H,
                      state + 4 * B * H, state + 5 * B * H};
    run_items(nt, T + 2, npu, [&](int64_t phase, int64_t p) {
      bwd_item(d, a, packed, st, phase, p);
    });
  }
  std::free(packed);
  std::free(state);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRnnFwd, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // xp [t, b, g]
                                  .Arg<F32>()  // w_hh [h, g]
                                  .Arg<F32>()  // b_hh [g] (GRU) or [0]
                                  .Arg<F32>()  // h0 [b, h]
                                  .Arg<F32>()  // c0 [b, h] (LSTM) or [b, 0]
                                  .Arg<U8>()   // mask [t, b]
                                  .Arg<U8>()   // resets [t, b]
                                  .Ret<F32>()  // ys [t, b, o]
                                  .Ret<F32>()  // hT
                                  .Ret<F32>()  // cT
                                  .Ret<F32>()  // hs: every step's h, or [0]
                                  .Ret<F32>()  // cs
                                  .Ret<F32>()  // hin: h entering every step (saved), or [0]
                                  .Ret<F32>()  // cin
                                  .Ret<F32>()  // saved activations, or [0]
                                  .Attr<int32_t>("cell")
                                  .Attr<int64_t>("extra")
                                  .Attr<bool>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRnnBwd, BwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // w_hh [h, g]
                                  .Arg<F32>()  // saved activations [t, b, s]
                                  .Arg<F32>()  // hin [t, b, h]
                                  .Arg<F32>()  // cin [t, b, h] or [t, b, 0]
                                  .Arg<U8>()   // mask
                                  .Arg<U8>()   // resets
                                  .Arg<F32>()  // dys [t, b, o]
                                  .Arg<F32>()  // dhs [t, b, h] or [0]
                                  .Arg<F32>()  // dcs
                                  .Arg<F32>()  // dhT [b, h]
                                  .Arg<F32>()  // dcT
                                  .Ret<F32>()  // dxp [t, b, g]
                                  .Ret<F32>()  // dhp [t, b, g] (GRU) or [0]
                                  .Ret<F32>()  // dh0
                                  .Ret<F32>()  // dc0
                                  .Attr<int32_t>("cell")
                                  .Attr<int64_t>("extra")
                                  .Attr<bool>("reverse"));
