// Shared pieces of the csrc kernels (superpoints.cpp, mesh_segmentation.cpp): a hash map from
// packed integer keys to dense ids (the key packing and the closed-form 3x3 symmetric eigenvector are in
// sp_point_math.h, shared with the CUDA port), a stable parallel
// radix sort of edge weights, a union-find, a clock. Header-only (inline) so that every kernel
// file compiles on its own; nothing here touches torch.
#pragma once

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "sp_point_math.h"

namespace bqnet_sp {

inline uint64_t mix64(uint64_t k) {  // splitmix64 finalizer: spreads packed keys over the table
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ULL;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebULL;
  k ^= k >> 31;
  return k;
}

// Open-addressing hash map from block key to block id (ids 0, 1, ... in insertion order).
class KeyMap {
 public:
  KeyMap() { reset(1024); }

  int32_t find(uint64_t key) const {
    size_t i = mix64(key) & mask_;
    while (true) {
      const int32_t v = vals_[i];
      if (v < 0) return -1;
      if (keys_[i] == key) return v;
      i = (i + 1) & mask_;
    }
  }

  // Returns (id, inserted).
  std::pair<int32_t, bool> find_or_insert(uint64_t key) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    size_t i = mix64(key) & mask_;
    while (true) {
      const int32_t v = vals_[i];
      if (v < 0) {
        keys_[i] = key;
        vals_[i] = size_;
        return {size_++, true};
      }
      if (keys_[i] == key) return {v, false};
      i = (i + 1) & mask_;
    }
  }

  int32_t size() const { return size_; }

 private:
  void reset(size_t cap) {
    keys_.assign(cap, 0);
    vals_.assign(cap, -1);
    mask_ = cap - 1;
    size_ = 0;
  }
  void grow() {
    std::vector<uint64_t> old_keys;
    std::vector<int32_t> old_vals;
    old_keys.swap(keys_);
    old_vals.swap(vals_);
    const int32_t n = size_;
    reset(old_keys.size() * 2);
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_vals[i] < 0) continue;
      size_t j = mix64(old_keys[i]) & mask_;
      while (vals_[j] >= 0) j = (j + 1) & mask_;
      keys_[j] = old_keys[i];
      vals_[j] = old_vals[i];
    }
    size_ = n;
  }

  std::vector<uint64_t> keys_;
  std::vector<int32_t> vals_;
  size_t mask_ = 0;
  int32_t size_ = 0;
};

// Stable LSD radix sort of edge ids by the bit pattern of non-negative float weights (which orders
// like the floats themselves). Keys travel with the ids (no random reads). Each pass is parallel
// over contiguous chunks: chunk t's elements of digit d land after those of chunks < t, exactly
// where a sequential stable pass puts them, so the result (ties in edge-id order) is independent
// of the thread count.
inline std::vector<int32_t> sort_edges(const std::vector<float>& w, int nt) {
  const int64_t n = int64_t(w.size());
  std::vector<uint32_t> key(n), key_tmp(n);
  std::memcpy(key.data(), w.data(), size_t(n) * sizeof(float));
  std::vector<int32_t> idx(n), idx_tmp(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = int32_t(i);
  constexpr int kBits = 8;
  constexpr uint32_t kRadix = 1u << kBits;
  const int T = int(std::max<int64_t>(1, std::min<int64_t>(nt, n / 65536 + 1)));
  std::vector<int64_t> bounds(T + 1);
  for (int t = 0; t <= T; ++t) bounds[t] = n * t / T;
  std::vector<int64_t> hist(size_t(T) * kRadix);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(hist.begin(), hist.end(), 0);
#pragma omp parallel for num_threads(T) schedule(static, 1)
    for (int t = 0; t < T; ++t) {
      int64_t* h = &hist[size_t(t) * kRadix];
      for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) ++h[(key[i] >> shift) & (kRadix - 1)];
    }
    int64_t sum = 0;
    bool trivial = false;
    for (uint32_t d = 0; d < kRadix; ++d) {
      int64_t digit_total = 0;
      for (int t = 0; t < T; ++t) {
        const int64_t c = hist[size_t(t) * kRadix + d];
        hist[size_t(t) * kRadix + d] = sum;
        sum += c;
        digit_total += c;
      }
      trivial |= digit_total == n;
    }
    if (trivial) continue;  // every key has the same digit: the pass would not move anything
#pragma omp parallel for num_threads(T) schedule(static, 1)
    for (int t = 0; t < T; ++t) {
      int64_t* h = &hist[size_t(t) * kRadix];
      for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) {
        const int64_t o = h[(key[i] >> shift) & (kRadix - 1)]++;
        key_tmp[o] = key[i];
        idx_tmp[o] = idx[i];
      }
    }
    key.swap(key_tmp);
    idx.swap(idx_tmp);
  }
  return idx;
}

// Disjoint sets with per-set size (summed node sizes) and FH threshold.
struct UnionFind {
  std::vector<int32_t> parent, size;
  std::vector<float> thresh;
  explicit UnionFind(int32_t n, float k) : parent(n), size(n, 1), thresh(n, k) {
    for (int32_t i = 0; i < n; ++i) parent[i] = i;
  }
  UnionFind(const std::vector<int32_t>& node_size, float k)
      : parent(node_size.size()), size(node_size), thresh(node_size.size(), k) {
    for (size_t i = 0; i < parent.size(); ++i) parent[i] = int32_t(i);
  }
  int32_t find(int32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];  // path halving
      x = parent[x];
    }
    return x;
  }
  // Union by size; ties: the smaller id becomes the root (deterministic).
  int32_t join(int32_t a, int32_t b) {
    if (size[a] < size[b] || (size[a] == size[b] && b < a)) std::swap(a, b);
    parent[b] = a;
    size[a] += size[b];
    return a;
  }
};

using Clock = std::chrono::steady_clock;
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Felzenszwalb-Huttenlocher merge over edges already in non-decreasing weight order: components
// A, B join when w <= Int(A) + k / |A| and w <= Int(B) + k / |B| (|.| = summed node sizes; Int =
// the weight of the last edge that grew the component), then components below min_size join the
// neighbour across their lightest edge (first in order); max_size > 0 caps sizes in the FH phase.
// Sequential: the result is a function of the edge order alone (not of the union-find's choice of roots).
inline void fh_merge(UnionFind& uf, const std::vector<int32_t>& ea, const std::vector<int32_t>& eb,
                     const std::vector<float>& ew, float k, int64_t min_size, int64_t max_size = 0) {
  const int64_t ne = int64_t(ea.size());
  for (int64_t i = 0; i < ne; ++i) {
    const int32_t a = uf.find(ea[i]), b = uf.find(eb[i]);
    if (a == b) continue;
    const float w = ew[i];
    if (w <= uf.thresh[a] && w <= uf.thresh[b] &&
        (max_size == 0 || int64_t(uf.size[a]) + uf.size[b] <= max_size)) {
      const int32_t r = uf.join(a, b);
      uf.thresh[r] = w + k / float(uf.size[r]);
    }
  }
  if (min_size > 1) {
    for (int64_t i = 0; i < ne; ++i) {
      const int32_t a = uf.find(ea[i]), b = uf.find(eb[i]);
      if (a != b && (uf.size[a] < min_size || uf.size[b] < min_size)) uf.join(a, b);
    }
  }
}

// Sorts the edge arrays in place by weight (stable: ties keep their order), in parallel.
inline void sort_edge_arrays(std::vector<int32_t>& ea, std::vector<int32_t>& eb, std::vector<float>& ew, int nt) {
  const int64_t ne = int64_t(ea.size());
  if (ne == 0) return;
  const std::vector<int32_t> order = sort_edges(ew, nt);
  std::vector<int32_t> sa(ne), sb(ne);
  std::vector<float> sw(ne);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < ne; ++i) {
    const int32_t e = order[i];
    sa[i] = ea[e];
    sb[i] = eb[e];
    sw[i] = ew[e];
  }
  ea.swap(sa);
  eb.swap(sb);
  ew.swap(sw);
}

// Dense labels 0..S-1 numbered in order of each component's first node.
inline std::vector<int32_t> dense_components(UnionFind& uf, int32_t& num_segments) {
  const int32_t n = int32_t(uf.parent.size());
  std::vector<int32_t> seg_of_root(n, -1), out(n);
  int32_t ns = 0;
  for (int32_t v = 0; v < n; ++v) {
    int32_t& s = seg_of_root[uf.find(v)];
    if (s < 0) s = ns++;
    out[v] = s;
  }
  num_segments = ns;
  return out;
}

}  // namespace bqnet_sp
