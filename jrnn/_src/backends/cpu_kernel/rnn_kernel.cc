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

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <sched.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
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

// x in every lane. Not `vf{} + x`: that is a scalar add (0 + x is not x for x = -0) and a
// register broadcast per call, two extra uops beside each row's FMAs in the micro-kernel; a
// broadcast is one load uop when x comes from memory.
inline vf splat(float x) {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(__i386__))
  return (vf)_mm512_set1_ps(x);
#elif defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
  return (vf)_mm256_set1_ps(x);
#else
  vf v;
  for (int l = 0; l < V; ++l) v[l] = x;
  return v;
#endif
}

// Software prefetches into L2 (the data is used within the step, after the GEMM).
inline void prefetch_read(const void* p) { __builtin_prefetch(p, 0, 2); }
inline void prefetch_write(const void* p) { __builtin_prefetch(p, 1, 2); }

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

// On request (JRNN_CPU_HUGEPAGES=1), asks the kernel to back a large output buffer with
// transparent huge pages before the loop first writes it. XLA allocates big buffers afresh per
// call, and a [t, b, 4h] buffer of 4 KiB pages costs one page fault per 4 KiB on first touch;
// with THP in "madvise" mode this makes it one per 2 MiB. The advice covers the 2 MiB-aligned
// range around the buffer: it never changes data, and a 2 MiB range that already holds 4 KiB
// pages (a neighbouring buffer in use) keeps them. Off by default: where the host reclaims the
// guest's free memory (VMs with free page reporting), a fresh 2 MiB page is often one the host
// must back again, and a step that faults one stalls the other threads at the step barrier.
void advise_huge(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool on = [] {
    const char* env = std::getenv("JRNN_CPU_HUGEPAGES");
    return env && env[0] == '1';
  }();
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (!on || p == nullptr || bytes < 2 * kHuge) return;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes + kHuge - 1) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only
#else
  (void)p;
  (void)bytes;
#endif
}

// Before a call's time loop: the huge-page advice (on request, above), then the pages of the
// call's large output buffers faulted in, split over the threads (madvise MADV_POPULATE_WRITE,
// Linux 5.14+: the kernel maps each page as a write would, without touching the data). XLA
// allocates these buffers afresh per call; faulting them inside the loop costs a trap per 4 KiB
// page in whichever thread first writes it, while the other threads wait at the step barrier.
// JRNN_CPU_PREFAULT=0 turns it off; a kernel without the advice (EINVAL) turns it off for the
// process.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
std::atomic<bool> g_populate{true};

struct Span {
  char* lo;
  char* hi;
};

template <typename F>
void run_items(int nt, int64_t phases, int64_t np, F&& f);

template <typename R>
void prepare_outputs(std::initializer_list<R*> results, int nt) {
  for (R* r : results) advise_huge((*r)->untyped_data(), (*r)->size_bytes());
#if defined(__linux__)
  static const bool on = [] {
    const char* env = std::getenv("JRNN_CPU_PREFAULT");
    return !(env && env[0] == '0');
  }();
  if (!on || !g_populate.load(std::memory_order_relaxed)) return;
  constexpr size_t kPage = 4096, kChunk = size_t{1} << 21;
  std::vector<Span> chunks;
  for (R* r : results) {
    void* p = (*r)->untyped_data();
    const size_t bytes = (*r)->size_bytes();
    if (p == nullptr || bytes < kChunk) continue;
    char* lo = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(p) & ~(kPage - 1));
    char* end = static_cast<char*>(p) + bytes;
    for (; lo < end; lo += kChunk) chunks.push_back({lo, std::min(lo + kChunk, end)});
  }
  if (chunks.empty()) return;
  run_items(nt, 1, (int64_t)chunks.size(), [&](int64_t, int64_t i) {
    if (!g_populate.load(std::memory_order_relaxed)) return;
    const Span c = chunks[i];
    if (madvise(c.lo, c.hi - c.lo, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
      g_populate.store(false, std::memory_order_relaxed);
  });
#else
  (void)nt;
#endif
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
// `np` items (panels of V hidden units). Every thread owns a fixed contiguous range of items and
// claims them first, phase after phase: the panels a thread packed stay in its core's cache for
// every step (with a shared counter, a panel would move between cores from step to step and
// each step would re-read W_hh from the last-level cache). A thread whose own items of a phase
// are all claimed takes the unclaimed ones of the other ranges, so on a loaded machine whichever
// threads run make progress; an item of phase k starts once every item of phases < k is
// complete (one counter of completed items). No thread waits for a particular other thread.
constexpr int kMaxThreads = 64;

struct alignas(64) Range {
  std::atomic<int64_t> claimed{0};  // items of this range claimed, over all phases
  int64_t lo = 0, n = 0;            // the range's first item and size
};

struct Schedule {
  Range ranges[kMaxThreads];
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

// Claims the next unclaimed item of range r in phase ph; -1 when none is left.
inline int64_t claim(Range& r, int64_t ph) {
  const int64_t end = (ph + 1) * r.n;
  int64_t v = r.claimed.load(std::memory_order_relaxed);
  while (v < end) {
    if (r.claimed.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) {
      return r.lo + v % r.n;
    }
  }
  return -1;
}

// Runs f(phase, item) for every phase < phases and item < np, phases in order.
template <typename F>
void run_items(int nt, int64_t phases, int64_t np, F&& f) {
  nt = std::max(1, std::min(nt, kMaxThreads));
  Schedule sch;
  for (int j = 0; j < nt; ++j) {
    sch.ranges[j].lo = np * j / nt;
    sch.ranges[j].n = np * (j + 1) / nt - sch.ranges[j].lo;
  }
  std::function<void(int)> job = [&](int id) {
    for (int64_t ph = 0; ph < phases; ++ph) {
      wait_until(sch.completed, ph * np);
      for (int k = 0; k < nt; ++k) {  // own range first, then the others in turn
        Range& r = sch.ranges[(id + k) % nt];
        if (r.n == 0) continue;
        for (int64_t it; (it = claim(r, ph)) >= 0;) {
          f(ph, it);
          sch.completed.fetch_add(1, std::memory_order_release);
        }
      }
    }
  };
  pool().run(nt, job);
}

// ------------------------------------------------------------------ forward

// The table row of an index: one outside [0, rows) reads the last row, the NaN row the caller
// appends (so the kernel never reads outside the table, whatever the indices hold).
inline int64_t table_row(int32_t i, int64_t rows) {
  return i >= 0 && i < rows ? (int64_t)i : rows - 1;
}

struct FwdArgs {
  const float *xp, *w, *bh, *h0, *c0;
  const int32_t* idx;  // token mode: xp is a table [rows, g] and step t, row b reads idx[t, b]
  int64_t rows;
  const uint8_t *mask, *resets;
  float *ys, *hT, *cT, *hs, *cs, *hin, *cin, *sv;
  bool has_bh, want_carries, want_save;
  int cell;
  bool reverse;

  // The projected input of step t, row b: a row of xp, or of the table (an index outside
  // [0, rows) reads the last row, which the caller fills with NaN).
  const float* x_row(int64_t t, int64_t b, int64_t B, int64_t GW) const {
    if (!idx) return xp + (t * B + b) * GW;
    return xp + table_row(idx[t * B + b], rows) * GW;
  }
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
        vf y = vrelu(acc[0][r] + loadp(a.x_row(t, b, B, GW) + e0, nv));
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
      const float* x = a.x_row(t, b, B, GW) + E + u0;
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
  const int32_t* idx;  // token mode: dz of step t, row b is also added to dtable[idx[t, b]]
  float* dtable;       // [rows, g] or null; dxp may then be null (the GRU does not need it)
  int64_t rows;
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

// dcarry_in = dz_t W^T + direct terms for the NU unit vectors of panel p (units p NU V ...);
// then the resets of step t route it to carry0.
template <int NU>
void bwd_carry_in(const Dims& d, const BwdArgs& a, const float* packed, const BwdState& st,
                  int64_t t, int64_t p) {
  const int64_t B = d.B, H = d.H, GW = d.GW;
  const bool lstm = a.cell == kLstm;
  const float* dz = (a.cell == kGru ? a.dhp : a.dxp) + t * B * GW;
  const uint8_t* rt = a.resets + t * B;
  const float* panel = packed + p * GW * NU * V;
  row_blocks<NU>(B, [&]<int MB>(int64_t r0) {
    const float* rows[MB];
    for (int r = 0; r < MB; ++r) rows[r] = dz + (r0 + r) * GW;
    vf acc[NU][MB];
    micro<NU, MB>(rows, GW, panel, acc);
    for (int j = 0; j < NU; ++j) {
      const int64_t u0 = (p * NU + j) * V;
      if (u0 >= H) break;
      const int nv = (int)std::min<int64_t>(V, H - u0);
      for (int r = 0; r < MB; ++r) {
        const int64_t b = r0 + r, o = b * H + u0;
        vf gh = acc[j][r] + loadp(st.pdh + o, nv);
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
    }
  });
}

// Prefetches what bwd_pointwise reads and writes for step t, units [ub, ue): rows one [b]
// apart, which the hardware prefetcher does not follow.
void bwd_prefetch(const Dims& d, const BwdArgs& a, int64_t t, int64_t ub, int64_t ue) {
  const int64_t B = d.B, H = d.H, GW = d.GW, E = d.E, O = d.O;
  const int64_t S = saved_width(a.cell, H, E);
  const int nsv = a.cell == kLstm || a.cell == kGru ? 4 : 1;
  const int ng = gates_of(a.cell);
  const int64_t off = a.cell == kSeed ? E : 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t tb = t * B + b;
    for (int64_t u0 = ub; u0 < ue; u0 += V) {
      for (int g = 0; g < nsv; ++g) prefetch_read(a.sv + tb * S + off + g * H + u0);
      if (a.cell == kLstm) prefetch_read(a.cin + tb * H + u0);
      if (a.cell == kGru) prefetch_read(a.hin + tb * H + u0);
      if (a.cell != kSeed) prefetch_read(a.dys + tb * O + u0);
      if (a.dxp)
        for (int g = 0; g < ng; ++g) prefetch_write(a.dxp + tb * GW + E + g * H + u0);
    }
  }
}

// The gate derivatives of step t for the unit vector at u0: writes dz (dxp, and dhp for the GRU).
void bwd_pointwise(const Dims& d, const BwdArgs& a, const BwdState& st, int64_t t, int64_t u0) {
  const int64_t B = d.B, H = d.H, GW = d.GW, E = d.E, O = d.O;
  const int64_t S = saved_width(a.cell, H, E);
  const bool lstm = a.cell == kLstm, gru = a.cell == kGru;
  const uint8_t* mt = a.mask + t * B;
  const int nv = (int)std::min<int64_t>(V, H - u0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * H + u0, tb = t * B + b;
    vf gh = loadp(st.dh + o, nv), gc = lstm ? loadp(st.dc + o, nv) : vf{};
    if (a.has_dcarries) {
      gh += loadp(a.dhs + tb * H + u0, nv);
      if (lstm) gc += loadp(a.dcs + tb * H + u0, nv);
    }
    float* dxrow = a.dxp ? a.dxp + tb * GW + E + u0 : nullptr;
    // The table gradient is accumulated here only when dxp is not kept (the GRU); otherwise
    // from dxp after the loop (bwd_item's last phase), off the step-to-step chain.
    float* trow = nullptr;
    if (a.dtable && !a.dxp) {
      trow = a.dtable + table_row(a.idx[tb], a.rows) * GW + E + u0;
    }
    // dz of gate g: into dxp, and added into the token's row of the table gradient.
    auto put = [&](int g, vf v) {
      if (dxrow) storep(dxrow + g * H, v, nv);
      if (trow) storep(trow + g * H, loadp(trow + g * H, nv) + v, nv);
    };
    float* dhp = gru ? a.dhp + tb * GW + u0 : nullptr;
    const int ng = gates_of(a.cell);
    if (!mt[b]) {  // padding: the carry passes through, nothing reaches the gates
      for (int g = 0; g < ng; ++g) {
        if (dxrow) storep(dxrow + g * H, vf{}, nv);
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
      put(0, dct * g * i * (1.0f - i));
      put(1, dct * cp * f * (1.0f - f));
      put(2, dct * i * (1.0f - g * g));
      put(3, gh * tc * og * (1.0f - og));
      storep(st.pdh + o, vf{}, nv);
      storep(st.pdc + o, dct * f, nv);
    } else if (gru) {
      vf r = loadp(sv, nv), z = loadp(sv + H, nv), n = loadp(sv + 2 * H, nv),
         hn = loadp(sv + 3 * H, nv);
      vf hp = loadp(a.hin + tb * H + u0, nv);
      vf dnp = gh * (1.0f - z) * (1.0f - n * n);
      vf dzz = gh * (hp - n) * z * (1.0f - z);
      vf dzr = dnp * hn * r * (1.0f - r);
      put(0, dzr);
      put(1, dzz);
      put(2, dnp);
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
      put(0, dz);
      storep(st.pdh + o, vf{}, nv);
    }
  }
}

// Panel p covers the NU unit vectors (p NU + j) V, j < NU. Phase 0 packs panel p of W^T
// ([k < GW][j][lane] = W[(p NU + j) V + lane][k]) and sets its state; phase s + 1 (s < T) runs
// reverse step s: dz of the previous one times W^T, then the gates of this one; phase T + 1
// gives the cotangent of carry0.
template <int NU>
void bwd_item(const Dims& d, const BwdArgs& a, float* packed, const BwdState& st, int64_t phase,
              int64_t p) {
  const int64_t T = d.T, B = d.B, H = d.H, GW = d.GW;
  const bool lstm = a.cell == kLstm;
  const int64_t ub = p * NU * V, ue = std::min<int64_t>(H, ub + NU * V);
  if (phase == 0) {
    float* dst = packed + p * GW * NU * V;
    for (int64_t k = 0; k < GW; ++k)
      for (int l = 0; l < NU * V; ++l) {
        const int64_t u = ub + l;
        dst[k * NU * V + l] = u < H ? a.w[u * GW + k] : 0.0f;
      }
    const int ng = gates_of(a.cell);
    for (int64_t r = 0; a.dtable && r < a.rows; ++r)
      for (int g = 0; g < ng; ++g)
        std::memset(a.dtable + r * GW + d.E + g * H + ub, 0, (ue - ub) * sizeof(float));
    for (int64_t b = 0; b < B; ++b) {
      const size_t n = (ue - ub) * sizeof(float);
      std::memcpy(st.dh + b * H + ub, a.dhT + b * H + ub, n);
      std::memset(st.ah + b * H + ub, 0, n);
      if (lstm) {
        std::memcpy(st.dc + b * H + ub, a.dcT + b * H + ub, n);
        std::memset(st.ac + b * H + ub, 0, n);
      }
    }
    return;
  }
  // Reverse step s processes forward step t(s); the previous one processed is t(s - 1).
  auto t_of = [&](int64_t s) { return a.reverse ? s : T - 1 - s; };
  const int64_t s = phase - 1;
  if (s < T) bwd_prefetch(d, a, t_of(s), ub, ue);  // read by the pointwise part below
  if (s > 0) bwd_carry_in<NU>(d, a, packed, st, t_of(s - 1), p);
  if (s < T) {
    for (int64_t u0 = ub; u0 < ue; u0 += V) bwd_pointwise(d, a, st, t_of(s), u0);
    return;
  }
  if (a.dtable && a.dxp) {  // token mode: add every step's dz of these units into its row
    const int ng = gates_of(a.cell);
    for (int64_t tb = 0; tb < T * B; ++tb) {
      if (!a.mask[tb]) continue;
      float* row = a.dtable + table_row(a.idx[tb], a.rows) * GW + d.E;
      const float* dz = a.dxp + tb * GW + d.E;
      for (int g = 0; g < ng; ++g)
        for (int64_t u0 = ub; u0 < ue; u0 += V) {
          const int nv = (int)std::min<int64_t>(V, H - u0);
          const int64_t c = g * H + u0;
          storep(row + c, loadp(row + c, nv) + loadp(dz + c, nv), nv);
        }
    }
  }
  for (int64_t b = 0; b < B; ++b) {  // s == T: the carry entering the first step
    for (int64_t u0 = ub; u0 < ue; u0 += V) {
      const int64_t o = b * H + u0, nv = std::min<int64_t>(V, H - u0);
      storep(a.dh0 + o, loadp(st.dh + o, nv) + loadp(st.ah + o, nv), nv);
      if (lstm) storep(a.dc0 + o, loadp(st.dc + o, nv) + loadp(st.ac + o, nv), nv);
    }
  }
}

// Unit vectors per backward panel: the most (4, 2 or 1) that still gives every thread at least
// two panels a step. More vectors per panel reuse each broadcast of dz over more FMAs.
int bwd_vectors(int64_t H, int nt) {
  const int64_t nvec = (H + V - 1) / V;
  for (int nu : {4, 2}) {
    if ((nvec + nu - 1) / nu >= 2 * nt) return nu;
  }
  return 1;
}

// The seed cell's output columns: dz_y = dy * relu'(z), for every step (no recurrence).
void bwd_extra(const Dims& d, const BwdArgs& a) {
  const int64_t T = d.T, B = d.B, GW = d.GW, E = d.E, O = d.O;
  const int64_t S = saved_width(a.cell, d.H, E);
  for (int64_t r = 0; a.dtable && r < a.rows; ++r)
    std::memset(a.dtable + r * GW, 0, E * sizeof(float));
  for (int64_t tb = 0; tb < T * B; ++tb) {
    float* dx = a.dxp + tb * GW;
    const float* y = a.sv + tb * S;
    const float* dy = a.dys + tb * O;
    const bool m = a.mask[tb] != 0;
    for (int64_t e = 0; e < E; ++e) dx[e] = (m && y[e] > 0.0f) ? dy[e] : 0.0f;
    if (a.dtable && m) {
      float* row = a.dtable + table_row(a.idx[tb], a.rows) * GW;
      for (int64_t e = 0; e < E; ++e) row[e] += dx[e];
    }
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

using S32 = ffi::Buffer<ffi::S32>;

// T and B come from the mask [..., t, b]; H and the gate width from w [..., h, g]. xp is either
// [..., t, b, g] (idx empty) or, in token mode, a table [..., rows, g] read through idx.
ffi::Error make_dims(const F32& xp, const S32& idx, const F32& w, const U8& mask, int cell,
                     int64_t extra, Dims* d, int64_t* rows) {
  auto xd = xp.dimensions();
  auto wd = w.dimensions();
  auto md = mask.dimensions();
  if (xd.size() < 2 || wd.size() < 2 || md.size() < 2)
    return ffi::Error::InvalidArgument(
        "jrnn cpu kernel: xp must be [..., t, b, g] or [..., rows, g], w [..., h, g], "
        "mask [..., t, b]");
  if (cell < 0 || cell > 4) return ffi::Error::InvalidArgument("jrnn cpu kernel: unknown cell");
  d->T = md[md.size() - 2];
  d->B = md[md.size() - 1];
  d->GW = xd[xd.size() - 1];
  d->H = wd[wd.size() - 2];
  d->E = cell == kSeed ? extra : 0;
  d->O = cell == kSeed ? extra : d->H;
  if (wd[wd.size() - 1] != d->GW || d->GW != d->E + gates_of(cell) * d->H)
    return ffi::Error::InvalidArgument("jrnn cpu kernel: gate width mismatch");
  d->G = 1;
  for (size_t i = 0; i + 2 < md.size(); ++i) d->G *= md[i];
  if (count(w) != d->G * d->H * d->GW)
    return ffi::Error::InvalidArgument("jrnn cpu kernel: w must have the mask's leading dims");
  *rows = 0;
  if (count(idx) == 0) {
    if (count(xp) != d->G * d->T * d->B * d->GW)
      return ffi::Error::InvalidArgument("jrnn cpu kernel: xp must be [..., t, b, g]");
  } else {
    *rows = xd[xd.size() - 2];
    if (count(idx) != d->G * d->T * d->B || count(xp) != d->G * *rows * d->GW || *rows < 1)
      return ffi::Error::InvalidArgument(
          "jrnn cpu kernel: token mode needs idx [..., t, b] and a table [..., rows >= 1, g]");
  }
  return ffi::Error::Success();
}

ffi::Error FwdImpl(F32 xp, S32 idx, F32 w, F32 bh, F32 h0, F32 c0, U8 mask, U8 resets, R32 ys,
                   R32 hT, R32 cT, R32 hs, R32 cs, R32 hin, R32 cin, R32 sv, int32_t cell,
                   int64_t extra, bool reverse) {
  Dims d;
  int64_t rows = 0;
  if (auto err = make_dims(xp, idx, w, mask, cell, extra, &d, &rows); !err.success()) return err;
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
  prepare_outputs<R32>({&ys, &hs, &cs, &hin, &cin, &sv}, nt);
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
    a.xp = xp.typed_data() + g * (rows ? rows : T * B) * GW;
    a.idx = rows ? idx.typed_data() + g * T * B : nullptr;
    a.rows = rows;
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

ffi::Error BwdImpl(F32 w, F32 sv, F32 hin, F32 cin, U8 mask, U8 resets, S32 idx, F32 dys,
                   F32 dhs, F32 dcs, F32 dhT, F32 dcT, R32 dxp, R32 dhp, R32 dh0, R32 dc0,
                   R32 dtable, int32_t cell, int64_t extra, bool reverse) {
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
  // Token mode (idx given): the table gradient [rows, g] is accumulated here; dxp is still
  // written unless it was asked for with no elements (the GRU's dz for W_hh is dhp).
  const bool tokens = count(idx) != 0;
  const auto td = dtable->dimensions();
  const int64_t rows = tokens && td.size() >= 2 ? td[td.size() - 2] : 0;
  // An empty dxp ([0], or [G.., 0] under vmap) where [t, b, g] has elements: not wanted.
  const bool want_dxp = count(*dxp) == G * T * B * GW;
  if (tokens && (rows < 1 || !fits(count(*dtable), G, rows * GW, false) ||
                 !fits(count(idx), G, T * B, false)))
    return ffi::Error::InvalidArgument("jrnn_rnn_bwd: token mode needs idx [t, b], dtable [rows, g]");
  if (!want_dxp && (!tokens || !gru || d.E))
    return ffi::Error::InvalidArgument("jrnn_rnn_bwd: only the GRU's token mode may skip dxp");
  bool ok = fits(count(sv), G, T * B * S, false) && fits(count(hin), G, T * B * H, false) &&
            fits(count(cin), G, T * B * HC, false) && fits(count(mask), G, T * B, false) &&
            fits(count(resets), G, T * B, false) && fits(count(dys), G, T * B * O, false) &&
            fits(count(dhs), G, T * B * H, true) &&
            fits(count(dcs), G, has_dcarries ? T * B * HC : 0, false) &&
            fits(count(dhT), G, B * H, false) && fits(count(dcT), G, B * HC, false) &&
            fits(count(*dxp), G, T * B * GW, !want_dxp) &&
            fits(count(*dhp), G, gru ? T * B * GW : 0, false) &&
            fits(count(*dh0), G, B * H, false) && fits(count(*dc0), G, B * HC, false);
  if (!ok) return ffi::Error::InvalidArgument("jrnn_rnn_bwd: buffer sizes do not match");
  if (G == 0) return ffi::Error::Success();
  if (tokens && (T == 0 || B == 0)) std::memset(dtable->typed_data(), 0, count(*dtable) * 4);
  const int nt = num_threads(B * H * GW, (H + V - 1) / V);
  prepare_outputs<R32>({&dxp, &dhp}, nt);
  const int nu = bwd_vectors(H, nt);
  const int64_t npu = (H + nu * V - 1) / (nu * V);
  float* packed = alloc_floats(npu * GW * nu * V);
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
    a.dxp = want_dxp ? dxp->typed_data() + g * T * B * GW : nullptr;
    a.dhp = gru ? dhp->typed_data() + g * T * B * GW : nullptr;
    a.idx = tokens ? idx.typed_data() + g * T * B : nullptr;
    a.dtable = tokens ? dtable->typed_data() + g * rows * GW : nullptr;
    a.rows = rows;
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
      switch (nu) {
        case 4: bwd_item<4>(d, a, packed, st, phase, p); break;
        case 2: bwd_item<2>(d, a, packed, st, phase, p); break;
        default: bwd_item<1>(d, a, packed, st, phase, p); break;
      }
    });
  }
  std::free(packed);
  std::free(state);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRnnFwd, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // xp [t, b, g], or the table [rows, g]
                                  .Arg<S32>()  // idx [t, b] (token mode) or [0]
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
                                  .Arg<S32>()  // idx [t, b] (token mode) or [0]
                                  .Arg<F32>()  // dys [t, b, o]
                                  .Arg<F32>()  // dhs [t, b, h] or [0]
                                  .Arg<F32>()  // dcs
                                  .Arg<F32>()  // dhT [b, h]
                                  .Arg<F32>()  // dcT
                                  .Ret<F32>()  // dxp [t, b, g] (or [0]: GRU token mode)
                                  .Ret<F32>()  // dhp [t, b, g] (GRU) or [0]
                                  .Ret<F32>()  // dh0
                                  .Ret<F32>()  // dc0
                                  .Ret<F32>()  // dtable [rows, g] (token mode) or [0]
                                  .Attr<int32_t>("cell")
                                  .Attr<int64_t>("extra")
                                  .Attr<bool>("reverse"));
