// The parallel port of the online superpoints (merge = "boruvka" semantics), written once over a
// backend B: the same code runs on the host (sp_backend_host.h: OpenMP loops, compiled by g++ into
// bqnet_model._C as oversegment_parallel, which is how the tests here check the GPU port's logic)
// and on a CUDA device (csrc/cuda/sp_backend_cuda.cuh: one kernel per loop, CUB sort and scan,
// compiled by nvcc into bqnet_model._C_cuda). A backend provides:
//   alloc / release            raw memory where its loops run;
//   for_each(n, f)             f(i) for i in [0, n), in parallel, order unspecified;
//   scan(in, out, n)           out[0] = 0, out[i + 1] = in[0] + ... + in[i] (int64); returns out[n];
//   sort_pairs(key, val, n, b) stable ascending sort by the low b bits of key, val travelling along;
//   fill / copy / to_host / from_host / sync.
// The loop bodies are SP_HD lambdas (or sp_point_math.h functions) that write only their own slots
// or go through the order-free atomics of sp_hd.h, and every sum of floats runs in a fixed order
// (per segment, over its points sorted by index): the labels are a function of the input alone,
// equal on both backends wherever the float bits are (sp_point_math.h says where they may not be).
// Host round trips: the scalars a data-dependent loop needs (counts after a scan, "anything merged",
// "pointer jumping changed something") and the spacing. This file: buffers, grid, dense renumbering,
// segment moments; sp_parallel_graph.h: stages 1-4; sp_parallel_merge.h: stages 5-6; sp_parallel_run.h:
// the driver.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <utility>

#include "sp_point_math.h"

// A loop body for B::for_each: host and device under nvcc (extended lambda), a plain lambda under g++.
#define SP_FN [=] SP_HD

namespace bqnet_sp {
namespace par {

// Memory of n elements of T owned through backend B (moves, never copies). Loop bodies capture the
// raw pointer p(), never the buffer.
template <class B, class T>
class Buf {
 public:
  Buf() = default;
  Buf(B& be, int64_t n) : be_(&be), n_(n) {
    p_ = static_cast<T*>(be.alloc(sizeof(T) * size_t(n > 0 ? n : 0) + 16));
  }
  ~Buf() {
    if (p_) be_->release(p_);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept { swap(o); }
  Buf& operator=(Buf&& o) noexcept {
    swap(o);
    return *this;
  }
  void swap(Buf& o) noexcept {
    std::swap(be_, o.be_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
  }
  T* p() const { return p_; }
  int64_t size() const { return n_; }

 private:
  B* be_ = nullptr;
  T* p_ = nullptr;
  int64_t n_ = 0;
};

template <class B, class T>
T get(B& be, const T* p) {  // one value back to the host
  T v;
  be.to_host(&v, p, sizeof(T));
  return v;
}

// One value written by a one-lane kernel, not copied from the host: on CUDA a copy from pageable host
// memory waits for the stream first, and the merge loops reset their flag every round.
template <class B, class T>
void put(B& be, T* p, T v) {
  be.for_each(1, SP_FN(int64_t) { *p = v; });
}

template <class B, class T>
void fill(B& be, T* p, int64_t n, T v) {
  be.for_each(n, SP_FN(int64_t i) { p[i] = v; });
}

// Positions of the kept entries (keep[i] in {0, 1}) in a stable compaction: pos[i] for kept i;
// returns how many are kept. pos has n + 1 entries.
template <class B>
int64_t compact_positions(B& be, const int64_t* keep, int64_t* pos, int64_t n) {
  if (n == 0) return 0;
  return be.scan(keep, pos, n);
}

// Points counting-sorted by hashed cell: cell c (keys sorted) holds order[start[c] .. start[c + 1]),
// its points in index order (the sort is stable). Cells are found by binary search over their
// sorted keys. Which id a cell gets differs from the CPU's first-seen numbering; nothing depends on
// it (the kNN keeps the K smallest (distance, index) pairs, a total order).
struct GridView {
  double cell;
  const uint64_t* ukeys;
  const int64_t* start;
  const int32_t* order;
  int32_t ncell;

  SP_HD int32_t find(uint64_t key) const {
    int32_t lo = 0, hi = ncell;
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (ukeys[mid] < key)
        lo = mid + 1;
      else
        hi = mid;
    }
    return (lo < ncell && ukeys[lo] == key) ? lo : -1;
  }

  // Calls f(j) for every point j in the cells at Chebyshev ring exactly r around point i's cell
  // (for_each_ring_point, shared with the CPU's PointGrid::ring: the same cell order).
  template <class F>
  SP_HD void ring(const float* P, int64_t i, int r, F&& f) const {
    for_each_ring_point(P, i, r, cell, *this, start, order, f);
  }
};

template <class B>
struct Grid {
  Buf<B, uint64_t> ukeys;
  Buf<B, int64_t> start;
  Buf<B, int32_t> order;
  int32_t ncell = 0;
  double cell = 0;
  GridView view() const { return {cell, ukeys.p(), start.p(), order.p(), ncell}; }
};

template <class B>
Grid<B> build_grid(B& be, const float* P, int64_t n, double cell) {
  Grid<B> g;
  g.cell = cell;
  Buf<B, uint64_t> key(be, n);
  g.order = Buf<B, int32_t>(be, n);
  uint64_t* k = key.p();
  int32_t* ord = g.order.p();
  const double inv = 1.0 / cell;
  be.for_each(n, SP_FN(int64_t i) {
    const int64_t x = int64_t(P[3 * i] * inv), y = int64_t(P[3 * i + 1] * inv), z = int64_t(P[3 * i + 2] * inv);
    k[i] = pack(x + 4, y + 4, z + 4);  // +4: rings below 0 stay valid
    ord[i] = int32_t(i);
  });
  be.sort_pairs(k, ord, n, 64);
  Buf<B, int64_t> head(be, n), pos(be, n + 1);
  int64_t* h = head.p();
  int64_t* ps = pos.p();
  be.for_each(n, SP_FN(int64_t i) { h[i] = (i == 0 || k[i] != k[i - 1]) ? 1 : 0; });
  g.ncell = int32_t(compact_positions(be, h, ps, n));
  g.ukeys = Buf<B, uint64_t>(be, g.ncell);
  g.start = Buf<B, int64_t>(be, int64_t(g.ncell) + 1);
  uint64_t* uk = g.ukeys.p();
  int64_t* st = g.start.p();
  be.for_each(n, SP_FN(int64_t i) {
    if (h[i]) {
      uk[ps[i]] = k[i];
      st[ps[i]] = i;
    }
  });
  put(be, st + g.ncell, n);
  return g;
}

// Dense labels 0..S-1 numbered in order of each label's first point (lab holds ids < num_labels);
// returns S. The first point of each label by atomic min, then a scan over "i is its label's first".
template <class B>
int32_t renumber_dense(B& be, int32_t* lab, int64_t n, int32_t num_labels) {
  Buf<B, int32_t> first(be, num_labels);
  Buf<B, int64_t> head(be, n), pos(be, n + 1);
  int32_t* f = first.p();
  int64_t* h = head.p();
  int64_t* ps = pos.p();
  const int32_t big = 0x7fffffff;
  fill(be, f, num_labels, big);
  be.for_each(n, SP_FN(int64_t i) { atomic_min_i32(&f[lab[i]], int32_t(i)); });
  be.for_each(n, SP_FN(int64_t i) { h[i] = f[lab[i]] == int32_t(i) ? 1 : 0; });
  const int64_t ns = compact_positions(be, h, ps, n);
  be.for_each(n, SP_FN(int64_t i) { lab[i] = int32_t(ps[f[lab[i]]]); });
  return int32_t(ns);
}

// Per-segment moments (kStat doubles per segment, acc of S * kStat) summed over each segment's
// points in index order, as the CPU's sequential segment_moments sums them: points sorted (stably)
// by label, then one loop per segment.
template <class B>
void segment_moments(B& be, const float* P, const uint8_t* C, int64_t n, const int32_t* lab, int32_t S, double* acc) {
  Buf<B, uint32_t> key(be, n);
  Buf<B, int32_t> ord(be, n);
  Buf<B, int64_t> cnt(be, S), start(be, int64_t(S) + 1);
  uint32_t* k = key.p();
  int32_t* o = ord.p();
  int64_t* c = cnt.p();
  int64_t* st = start.p();
  fill(be, c, S, int64_t(0));
  be.for_each(n, SP_FN(int64_t i) {
    k[i] = uint32_t(lab[i]);
    o[i] = int32_t(i);
    atomic_add_i64(&c[lab[i]], 1);
  });
  int bits = 1;
  while (bits < 32 && (uint64_t(1) << bits) < uint64_t(S)) ++bits;
  be.sort_pairs(k, o, n, bits);
  be.scan(c, st, S);
  be.for_each(S, SP_FN(int64_t g) {
    double* a = &acc[g * kStat];
    for (int t = 0; t < kStat; ++t) a[t] = 0.0;
    for (int64_t q = st[g]; q < st[g + 1]; ++q) moments_add(a, P, C, o[q]);
  });
}

}  // namespace par
}  // namespace bqnet_sp
