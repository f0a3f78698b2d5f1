// Borůvka-style Felzenszwalb-Huttenlocher merge: the parallel form of fh_merge (sp_common.h) and of
// enforce_min_size (sp_refine.h) that a CUDA port can run (SuperpointParams.merge = "boruvka"). FH
// walks the sorted edges one by one and is inherently sequential; here every round is a fixed
// sequence of data-parallel loops (one CUDA kernel each) over the live edges or over the segments,
// whose only shared writes are order-free atomics (min, max, add):
//   1. per live edge: both end segments take the minimum of the edge's key (weight bits, then edge
//      position) over their candidate edges (atomic min; ties broken by position: deterministic);
//      FH candidates are the edges that pass FH's predicate w <= min(Int(A) + k/|A|, Int(B) + k/|B|)
//      (and the size cap) now; min-size candidates are the edges of segments below min_size;
//   2. per segment: a pick hooks the segment onto the other end;
//   3. per segment: mutual hooks (A and B picked the same edge: with distinct keys the only cycles
//      a lightest-edge graph has) are broken towards the smaller id;
//   4. pointer jumping (double-buffered) until every segment points at its tree's root;
//   5. per segment: size added and Int (largest accepted weight) maxed into the root (atomics);
//   6. per node: segment = root; per edge: edges now inside one segment dropped (stable compaction:
//      a scan, then a scatter, so positions keep the sorted order).
// Rounds repeat until none merges. The labels depend on the edge list alone, never on the thread
// count or on which thread wins an atomic.
//
// Why buckets: all merges of a round are judged on the sizes before the round, and a segment takes
// only its lightest candidate. Over the whole graph at once this departs from FH: the FH phase merges
// chains that FH, seeing A+B grown before it tests B-C, would refuse (fewer segments on the denser
// scans), and the min-size phase grows every small segment in lockstep until all cross min_size
// together (smaller segments, many more of them), where FH's pass lets the first ones to cross
// keep absorbing their small neighbours. Running the rounds over growing prefixes of the
// weight-sorted edges (kBuckets of them, the live edges carried from one prefix to the next)
// restores FH's light-edges-first order coarsely; docs/benchmarks/superpoints.md has the sweep.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "sp_common.h"
#include "sp_hd.h"
#include "sp_refine.h"

namespace bqnet_sp {

constexpr int kBuckets = 16;  // weight-order prefixes of the Borůvka merge (sweep in the benchmarks)

// Pointer jumping (double-buffered) over a forest given as `hook2` (each entry its parent, roots
// their own): each pass reads hook2 and writes hook, then the two swap, until no entry changes.
// On return hook2[r] is the root of r's tree; hook holds the pass before (scratch).
inline void pointer_jump(std::vector<int32_t>& hook, std::vector<int32_t>& hook2, int32_t n, int nt) {
  for (bool changed = true; changed;) {
    changed = false;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(|| : changed)
    for (int32_t r = 0; r < n; ++r) {
      const int32_t h = hook2[hook2[r]];
      hook[r] = h;
      changed = changed || h != hook2[r];
    }
    hook.swap(hook2);
  }
}

constexpr uint64_t kNoEdge = std::numeric_limits<uint64_t>::max();

// Segments of the Borůvka merge over n graph nodes: seg[v] = the root node of v's segment; at the
// roots, size (summed node sizes) and Int (bits of the largest accepted internal weight).
struct BoruvkaState {
  std::vector<int32_t> seg, size;
  std::vector<uint32_t> int_bits;
  explicit BoruvkaState(const std::vector<int32_t>& node_size)
      : seg(node_size.size()), size(node_size), int_bits(node_size.size(), 0) {
    for (size_t v = 0; v < seg.size(); ++v) seg[v] = int32_t(v);
  }
};

// Edges (a, b, w) still between two segments, in sorted order.
struct LiveEdges {
  std::vector<int32_t> a, b;
  std::vector<float> w;
};

enum class BoruvkaRule { kFH, kSmall };

// Rounds of pick / hook / jump / contract over the live edges until a round merges nothing; the
// live list is compacted as it goes. kFH: FH's predicate with constant k (max_size > 0: a pair whose
// union would exceed it is refused; a chain of such pairs can still exceed it). kSmall: segments
// below min_size join across their lightest edge. Returns the number of rounds that merged.
inline int boruvka_rounds(BoruvkaState& st, LiveEdges& live, BoruvkaRule rule, float k, int64_t min_size,
                          int64_t max_size, int nt) {
  const int32_t n = int32_t(st.seg.size());
  std::vector<uint64_t> best(n);
  std::vector<int32_t> hook(n), hook2(n);
  std::vector<uint32_t> acc_bits(n);
  std::vector<int64_t> keep_at;
  auto thr = [&](int32_t r) { return bits_float(st.int_bits[r]) + k / float(st.size[r]); };
  int rounds = 0;
  while (!live.a.empty()) {
    const int64_t ne = int64_t(live.a.size());
    const int32_t* ea = live.a.data();
    const int32_t* eb = live.b.data();
    const float* ew = live.w.data();
    std::fill(best.begin(), best.end(), kNoEdge);
    // 1. per edge: candidate keys into the end segments.
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e) {
      const int32_t a = st.seg[ea[e]], b = st.seg[eb[e]];
      if (a == b) continue;
      const float w = ew[e];
      const uint64_t key = (uint64_t(float_bits(w)) << 32) | uint64_t(e);
      if (rule == BoruvkaRule::kFH) {
        if (w <= thr(a) && w <= thr(b) && (max_size == 0 || int64_t(st.size[a]) + st.size[b] <= max_size)) {
          atomic_min_u64(&best[a], key);
          atomic_min_u64(&best[b], key);
        }
      } else {
        if (st.size[a] < min_size) atomic_min_u64(&best[a], key);
        if (st.size[b] < min_size) atomic_min_u64(&best[b], key);
      }
    }
    // 2. per segment root: hook onto the other end of its pick.
    int64_t merged = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : merged)
    for (int32_t r = 0; r < n; ++r) {
      hook[r] = r;
      acc_bits[r] = 0;
      if (best[r] == kNoEdge) continue;  // also every non-root: only roots are picked for
      const int64_t e = int64_t(best[r] & 0xffffffffu);
      const int32_t a = st.seg[ea[e]], b = st.seg[eb[e]];
      hook[r] = a == r ? b : a;
      acc_bits[r] = uint32_t(best[r] >> 32);
      ++merged;
    }
    if (merged == 0) break;
    ++rounds;
    // 3. per segment: mutual hooks broken towards the smaller id.
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t r = 0; r < n; ++r) {
      const int32_t h = hook[r];
      hook2[r] = (h != r && hook[h] == r && r < h) ? r : h;
    }
    // 4. pointer jumping: hook2[r] becomes the root of r's tree.
    pointer_jump(hook, hook2, n, nt);
    // 5. per segment that hooked: size and Int into its root (the root's own Int stays in the max;
    // the edge of a mutual pair reaches the root through the partner that hooked).
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t r = 0; r < n; ++r) {
      const int32_t root = hook2[r];
      if (root == r) continue;
      __atomic_fetch_add(&st.size[root], st.size[r], __ATOMIC_RELAXED);
      atomic_max_u32(&st.int_bits[root], std::max(st.int_bits[r], acc_bits[r]));
    }
    // 6. per node: new segment; per edge: compaction of the edges still between two segments.
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t v = 0; v < n; ++v) st.seg[v] = hook2[st.seg[v]];
    keep_at.assign(size_t(ne) + 1, 0);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e) keep_at[e + 1] = st.seg[ea[e]] != st.seg[eb[e]];
    for (int64_t e = 0; e < ne; ++e) keep_at[e + 1] += keep_at[e];  // a prefix scan on the GPU
    LiveEdges next;
    next.a.resize(keep_at[ne]);
    next.b.resize(keep_at[ne]);
    next.w.resize(keep_at[ne]);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e)
      if (keep_at[e + 1] != keep_at[e]) {
        next.a[keep_at[e]] = ea[e];
        next.b[keep_at[e]] = eb[e];
        next.w[keep_at[e]] = ew[e];
      }
    live = std::move(next);
  }
  return rounds;
}

// boruvka_rounds over growing prefixes of the weight-sorted edges (ea, eb, ew): prefix j of
// kBuckets holds the lightest j / kBuckets of them; the edges still live after one prefix are
// carried to the next (ahead of the new, heavier ones, so positions stay in sorted order). The
// edges need not be sorted for correctness, only for the light-edges-first order. Returns the
// number of rounds that merged.
inline int boruvka_bucketed(BoruvkaState& st, const std::vector<int32_t>& ea, const std::vector<int32_t>& eb,
                            const std::vector<float>& ew, BoruvkaRule rule, float k, int64_t min_size,
                            int64_t max_size, int nt) {
  const int64_t ne = int64_t(ea.size());
  LiveEdges live;
  int rounds = 0;
  for (int j = 1; j <= kBuckets; ++j) {
    const int64_t lo = ne * (j - 1) / kBuckets, hi = ne * j / kBuckets;
    live.a.insert(live.a.end(), ea.begin() + lo, ea.begin() + hi);
    live.b.insert(live.b.end(), eb.begin() + lo, eb.begin() + hi);
    live.w.insert(live.w.end(), ew.begin() + lo, ew.begin() + hi);
    rounds += boruvka_rounds(st, live, rule, k, min_size, max_size, nt);
  }
  return rounds;
}

// fh_merge in parallel form, over the same sorted edges: FH rounds, then segments below min_size
// join across their lightest edge. Writes the segments into uf (parent = the segment's root node,
// sizes at the roots) so dense_components applies unchanged. Returns the rounds that merged (both
// phases; a bucket's final round, which finds nothing, is not counted).
inline int boruvka_fh_merge(UnionFind& uf, const std::vector<int32_t>& ea, const std::vector<int32_t>& eb,
                            const std::vector<float>& ew, float k, int64_t min_size, int64_t max_size, int nt) {
  BoruvkaState st(uf.size);
  int rounds = boruvka_bucketed(st, ea, eb, ew, BoruvkaRule::kFH, k, min_size, max_size, nt);
  if (min_size > 1) rounds += boruvka_bucketed(st, ea, eb, ew, BoruvkaRule::kSmall, k, min_size, 0, nt);
  uf.parent = st.seg;
  uf.size = st.size;
  return rounds;
}

// enforce_min_size (sp_refine.h) in parallel form, on the segment graph (nodes = labels, sizes in
// points; the point edges relabelled, so an edge inside one segment is simply never live): segments
// below min_size join across their lightest edge. Returns the new dense label count.
inline int32_t boruvka_enforce_min_size(std::vector<int32_t>& lab, int32_t num_labels, const std::vector<int32_t>& ea,
                                        const std::vector<int32_t>& eb, const std::vector<float>& ew,
                                        int64_t min_size, int nt) {
  if (min_size > 1) {
    std::vector<int32_t> cnt(static_cast<size_t>(num_labels), 0);
    for (const int32_t v : lab) ++cnt[size_t(v)];  // a histogram (atomic adds on the GPU)
    const int64_t ne = int64_t(ea.size());
    std::vector<int32_t> sa(ne), sb(ne);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e) {
      sa[e] = lab[size_t(ea[e])];
      sb[e] = lab[size_t(eb[e])];
    }
    BoruvkaState st(cnt);
    boruvka_bucketed(st, sa, sb, ew, BoruvkaRule::kSmall, 0.0f, min_size, 0, nt);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t v = 0; v < lab.size(); ++v) lab[v] = st.seg[size_t(lab[v])];
  }
  return renumber_dense(lab, num_labels);
}

}  // namespace bqnet_sp
