// The parallel form of merge_coplanar (sp_refine.h), used with SuperpointParams.merge = "boruvka" so
// that one switch selects a merge path without sequential stage. The coplanar test itself is already
// per edge (coplanar_accept, shared with the sequential form); what is sequential there is joining
// the accepted edges in edge order under the size cap. Here each coplanar round joins them in
// sub-rounds of data-parallel loops (one CUDA kernel each), whose only shared writes are order-free
// atomics (min, add):
//   1. per live accepted edge (segment ids a != b, union within max_size): both ends take the
//      minimum edge position (atomic min): each segment proposes its earliest, i.e. lightest,
//      coplanar neighbour, as the sequential walk would join it first;
//   2. per segment: the pick; a mutual pair (with distinct keys the only cycle such picks form)
//      keeps the smaller id as the receiver;
//   3. with a cap: star hooking. A segment hooks only onto a receiver (a segment that proposes
//      nothing, or the smaller end of a mutual pair); every receiver sums the sizes of its proposers
//      (atomic add) and takes their smallest key (atomic min): if all fit under max_size they all
//      hook, else only the earliest one. A chain A -> B -> C waits: A's proposal is judged again
//      in the next sub-round against B's grown union, as the sequential walk judges each edge
//      against the union grown so far, so no union ever exceeds the cap. Without a cap every pick
//      hooks and pointer jumping (double-buffered) flattens the trees;
//   4. per segment: size into the root (atomic add); per edge: edges inside one segment dropped
//      (stable compaction).
// Sub-rounds repeat until none merges; then the statistics are re-accumulated for the next coplanar
// round (same number of rounds as the sequential form). The labels depend on the edge list alone,
// never on the thread count or on which thread wins an atomic.
#pragma once

#include <omp.h>

#include <cstdint>
#include <vector>

#include "sp_boruvka.h"
#include "sp_refine.h"

namespace bqnet_sp {

// Sub-rounds of propose / hook / contract over the live segment edges (a, b in segment ids, in
// edge order) until one merges nothing; seg[g] = the root of segment g, size at the roots (points).
// Returns the number of sub-rounds that merged.
inline int coplanar_hook_rounds(std::vector<int32_t>& seg, std::vector<int32_t>& size, std::vector<int32_t>& la,
                                std::vector<int32_t>& lb, int64_t max_size, int nt) {
  const int32_t S = int32_t(seg.size());
  std::vector<uint64_t> best(S), first(S);
  std::vector<int32_t> pick(S), hook(S), hook2(S), extra(S);
  std::vector<int64_t> keep_at;
  int rounds = 0;
  while (!la.empty()) {
    const int64_t ne = int64_t(la.size());
    std::fill(best.begin(), best.end(), kNoEdge);
    // 1. per edge: proposals (earliest edge) into both end segments.
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e) {
      const int32_t a = seg[la[e]], b = seg[lb[e]];
      if (a == b || (max_size > 0 && int64_t(size[a]) + size[b] > max_size)) continue;
      atomic_min_u64(&best[a], uint64_t(e));
      atomic_min_u64(&best[b], uint64_t(e));
    }
    // 2. per segment: its pick (roots only are ever proposed to).
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t r = 0; r < S; ++r) {
      pick[r] = r;
      if (best[r] == kNoEdge) continue;
      const int64_t e = int64_t(best[r]);
      const int32_t a = seg[la[e]], b = seg[lb[e]];
      pick[r] = a == r ? b : a;
    }
    // mutual pairs: the smaller id receives.
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t r = 0; r < S; ++r) {
      const int32_t p = pick[r];
      hook[r] = (p != r && pick[p] == r && r < p) ? r : p;
    }
    int64_t merged = 0;
    if (max_size > 0) {
      // 3. star hooking under the cap: proposers onto receivers only, all if they fit, else the earliest.
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int32_t r = 0; r < S; ++r) {
        extra[r] = 0;
        first[r] = kNoEdge;
      }
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int32_t r = 0; r < S; ++r) {
        const int32_t t = hook[r];
        if (t == r || hook[t] != t) continue;
        __atomic_fetch_add(&extra[t], size[r], __ATOMIC_RELAXED);
        atomic_min_u64(&first[t], best[r]);
      }
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : merged)
      for (int32_t r = 0; r < S; ++r) {
        const int32_t t = hook[r];
        const bool ok = t != r && hook[t] == t && (int64_t(size[t]) + extra[t] <= max_size || first[t] == best[r]);
        hook2[r] = ok ? t : r;
        merged += ok;
      }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : merged)
      for (int32_t r = 0; r < S; ++r) {
        hook2[r] = hook[r];
        merged += hook[r] != r;
      }
      pointer_jump(hook, hook2, S, nt);  // hook2[r] becomes the root of r's tree
    }
    if (merged == 0) break;
    ++rounds;
    // 4. sizes into the roots; every segment to its root; compaction of the live edges.
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t r = 0; r < S; ++r)
      if (hook2[r] != r) __atomic_fetch_add(&size[hook2[r]], size[r], __ATOMIC_RELAXED);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t g = 0; g < S; ++g) seg[g] = hook2[seg[g]];
    keep_at.assign(size_t(ne) + 1, 0);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e) keep_at[e + 1] = seg[la[e]] != seg[lb[e]];
    for (int64_t e = 0; e < ne; ++e) keep_at[e + 1] += keep_at[e];  // a prefix scan on the GPU
    std::vector<int32_t> na(keep_at[ne]), nb(keep_at[ne]);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ne; ++e)
      if (keep_at[e + 1] != keep_at[e]) {
        na[keep_at[e]] = la[e];
        nb[keep_at[e]] = lb[e];
      }
    la.swap(na);
    lb.swap(nb);
  }
  return rounds;
}

// merge_coplanar in parallel form: same arguments, same coplanar test per round (coplanar_accept on
// the statistics before the round), joins by coplanar_hook_rounds instead of the walk in edge
// order. rounds_out (if given) receives the sub-rounds that merged. Returns the new dense label count.
inline int32_t boruvka_merge_coplanar(const float* P, const uint8_t* C, int64_t n, std::vector<int32_t>& lab,
                                      int32_t S, const std::vector<int32_t>& ea, const std::vector<int32_t>& eb,
                                      double s, double rms_max, double cos_min, double color_max, int64_t max_size,
                                      int rounds, int nt, int* rounds_out = nullptr) {
  std::vector<double> acc;
  std::vector<uint8_t> accept;
  std::vector<int32_t> cross = cross_edges(lab, ea, eb);
  int sub = 0;
  for (int r = 0; r < rounds && S > 1 && !cross.empty(); ++r) {
    coplanar_accept(P, C, n, lab, S, ea, eb, cross, s, rms_max, cos_min, color_max, nt, acc, accept);
    const int64_t nc = int64_t(cross.size());
    // accepted edges in segment ids, in edge order (a scan and a scatter on the GPU)
    std::vector<int64_t> at(size_t(nc) + 1, 0);
    for (int64_t q = 0; q < nc; ++q) at[q + 1] = at[q] + accept[size_t(q)];
    std::vector<int32_t> la(at[nc]), lb(at[nc]);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t q = 0; q < nc; ++q)
      if (accept[size_t(q)]) {
        const int32_t e = cross[size_t(q)];
        la[at[q]] = lab[size_t(ea[e])];
        lb[at[q]] = lab[size_t(eb[e])];
      }
    std::vector<int32_t> seg(static_cast<size_t>(S)), size(static_cast<size_t>(S));
    for (int32_t g = 0; g < S; ++g) {
      seg[size_t(g)] = g;
      size[size_t(g)] = int32_t(acc[size_t(g) * kStat]);
    }
    const int merged = coplanar_hook_rounds(seg, size, la, lb, max_size, nt);
    if (merged == 0) break;
    sub += merged;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t v = 0; v < lab.size(); ++v) lab[v] = seg[size_t(lab[v])];
    S = renumber_dense(lab, S);
    size_t kept = 0;
    for (const int32_t e : cross)
      if (lab[size_t(ea[e])] != lab[size_t(eb[e])]) cross[kept++] = e;
    cross.resize(kept);
  }
  if (rounds_out) *rounds_out = sub;
  return S;
}

}  // namespace bqnet_sp
