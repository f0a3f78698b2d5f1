// The local, data-parallel steps of the online superpoints (superpoints.cpp) around the FH merge:
// the choice of each point's normal among its neighbours' PCA planes (before), the coplanar merge,
// the boundary exchange and the min_size clean-up (after). Header-only, like sp_common.h; nothing
// here touches torch.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "sp_common.h"

namespace bqnet_sp {

// Per point: PCA normal of the point with its m nearest (m = min(normal_knn, count)) and the
// surface variation lambda_min / trace of that neighbourhood (0 = flat, 1/3 = isotropic).
// nbr holds K neighbour ids per point (nearest first), ncnt how many are valid.
inline void pca_normals(const float* P, int64_t n, const std::vector<int32_t>& nbr, const std::vector<uint8_t>& ncnt,
                        int K, int normal_knn, std::vector<float>& vn, std::vector<float>& var, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) pca_point(P, nbr.data(), ncnt.data(), K, normal_knn, i, vn.data(), var.data());
}

// Each point takes the normal of the flattest neighbourhood among its own and those of its
// `pick` nearest neighbours (first in distance order on ties). A point next to a crease has a
// neighbourhood that straddles both faces and a normal between them, which lowers the weight of
// every edge across the crease; a neighbour a little farther inside one face has a clean plane.
inline std::vector<float> pick_flattest_normals(int64_t n, const std::vector<int32_t>& nbr,
                                                const std::vector<uint8_t>& ncnt, int K, int pick,
                                                const std::vector<float>& vn, const std::vector<float>& var, int nt) {
  std::vector<float> out(3 * size_t(n));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) pick_point(nbr.data(), ncnt.data(), K, pick, vn.data(), var.data(), i, out.data());
  return out;
}

// Per-segment moments (moments_add: count, sum xyz, sum of products, sum rgb), summed sequentially in
// point order so that they do not depend on the thread count.
inline void segment_moments(const float* P, const uint8_t* C, int64_t n, const std::vector<int32_t>& lab,
                            int32_t S, std::vector<double>& acc) {
  acc.assign(size_t(S) * kStat, 0.0);
  for (int64_t i = 0; i < n; ++i) moments_add(&acc[size_t(lab[i]) * kStat], P, C, i);
}

// Boundary exchange after the merge: `iters` Jacobi rounds in which every point moves to the
// segment, among its own and those of its kg nearest neighbours, that fits it best:
//   cost = (1 - |n_p . n_S|) + plane_w * |(p - c_S) . n_S| / s + color_w * ||c_p - rgb_S|| / 255
// with c_S, n_S the segment's centroid and PCA plane normal and rgb_S its mean colour (own
// segment first, so ties keep the point where it is). FH decides boundaries edge by edge on
// noisy point normals; a segment's plane, fitted to all its points, is a much steadier witness
// of which side a boundary point belongs to. Segment statistics are summed sequentially (double)
// and each point decides alone, so the labels do not depend on the thread count. A segment can
// lose all its points (its id is then unused) or split; callers renumber densely.
inline void refine_segments(const float* P, const uint8_t* C, int64_t n, const std::vector<float>& vn,
                            const std::vector<int32_t>& nbr, const std::vector<uint8_t>& ncnt, int K, int kg,
                            double s, int iters, double plane_w, double color_w, std::vector<int32_t>& lab,
                            int32_t num_segments, int nt) {
  const int32_t S = num_segments;
  std::vector<double> acc;
  std::vector<double> cen(3 * size_t(S)), nrm(3 * size_t(S)), col(3 * size_t(S));
  std::vector<int32_t> next(lab.size());
  const double inv_s = 1.0 / s, cw = color_w / 255.0;
  for (int it = 0; it < iters; ++it) {
    segment_moments(P, C, n, lab, S, acc);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t g = 0; g < S; ++g) {
      const double* a = &acc[size_t(g) * kStat];
      if (a[0] > 0) segment_plane(a, &cen[3 * size_t(g)], &nrm[3 * size_t(g)], &col[3 * size_t(g)]);
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i)
      next[i] = exchange_pick(P, C, vn.data(), nbr.data(), ncnt.data(), K, kg, lab.data(), cen.data(), nrm.data(),
                              col.data(), plane_w, inv_s, cw, i);
    lab.swap(next);
  }
}

// Dense labels 0..S-1 numbered in order of each label's first point; returns S.
inline int32_t renumber_dense(std::vector<int32_t>& lab, int32_t num_labels) {
  std::vector<int32_t> id(size_t(num_labels), -1);
  int32_t ns = 0;
  for (int32_t& v : lab) {
    int32_t& d = id[size_t(v)];
    if (d < 0) d = ns++;
    v = d;
  }
  return ns;
}

// Moments (acc) of the S segments of lab and, per edge of cross (edge ids into ea / eb), whether
// its two segments pass the coplanar test of merge_coplanar: both have a plane (>= 3 points), the
// planes are parallel (|n_a . n_b| > cos_min), the mean colours are closer than color_max (with
// colour) and the union's variance along either normal is below (rms_max * s)^2. Each edge is
// tested on its own against the statistics before the round; the sequential and the parallel
// coplanar merge share it, and differ only in how the accepted edges are joined.
inline void coplanar_accept(const float* P, const uint8_t* C, int64_t n, const std::vector<int32_t>& lab, int32_t S,
                            const std::vector<int32_t>& ea, const std::vector<int32_t>& eb,
                            const std::vector<int32_t>& cross, double s, double rms_max, double cos_min,
                            double color_max, int nt, std::vector<double>& acc, std::vector<uint8_t>& accept) {
  std::vector<double> nrm;
  const double var_max = (rms_max * s) * (rms_max * s), col2 = color_max * color_max;
  segment_moments(P, C, n, lab, S, acc);
  nrm.assign(3 * size_t(S), 0.0);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int32_t g = 0; g < S; ++g) {
    const double* a = &acc[size_t(g) * kStat];
    if (a[0] > 0) segment_normal(a, &nrm[3 * size_t(g)]);
  }
  const int64_t nc = int64_t(cross.size());
  accept.assign(static_cast<size_t>(nc), 0);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t q = 0; q < nc; ++q) {
    const int32_t e = cross[size_t(q)];
    const int32_t ga = lab[size_t(ea[e])], gb = lab[size_t(eb[e])];
    accept[size_t(q)] = coplanar_pair(&acc[size_t(ga) * kStat], &acc[size_t(gb) * kStat], &nrm[3 * size_t(ga)],
                                      &nrm[3 * size_t(gb)], C != nullptr, cos_min, col2, var_max);
  }
}

// The edges of ea / eb between two segments of lab, in edge order.
inline std::vector<int32_t> cross_edges(const std::vector<int32_t>& lab, const std::vector<int32_t>& ea,
                                        const std::vector<int32_t>& eb) {
  std::vector<int32_t> cross;
  for (size_t e = 0; e < ea.size(); ++e)
    if (lab[size_t(ea[e])] != lab[size_t(eb[e])]) cross.push_back(int32_t(e));
  return cross;
}

// Coplanar merge after FH: `rounds` rounds in which adjacent segments (joined by a graph edge)
// join when their union is still one plane (RMS distance to the union's plane below rms_max * s,
// measured along either segment's normal), their own planes are parallel (|n_a . n_b| >
// cos_min) and their mean colours differ by less than color_max (0..255; ignored without colour), and the union holds at most
// max_size points (0 = any; joins in edge order stop at the cap). The size step of FH cuts every
// surface into pieces of about min_size points, walls and floors as finely as clutter; joining
// the pieces of one flat, uniformly coloured surface spends the segment budget where boundaries
// are. Each edge is tested on its own (parallel, coplanar_accept); accepted edges are joined in
// edge order, so chains along one plane merge within a round. Returns the new dense label count.
inline int32_t merge_coplanar(const float* P, const uint8_t* C, int64_t n, std::vector<int32_t>& lab, int32_t S,
                              const std::vector<int32_t>& ea, const std::vector<int32_t>& eb, double s,
                              double rms_max, double cos_min, double color_max, int64_t max_size, int rounds,
                              int nt) {
  std::vector<double> acc;
  // Only edges between two segments can join anything: keep those (in edge order), re-filtered
  // after every round, so that later rounds touch a shrinking list.
  std::vector<int32_t> cross = cross_edges(lab, ea, eb);
  std::vector<uint8_t> accept;
  for (int r = 0; r < rounds && S > 1 && !cross.empty(); ++r) {
    coplanar_accept(P, C, n, lab, S, ea, eb, cross, s, rms_max, cos_min, color_max, nt, acc, accept);
    const int64_t nc = int64_t(cross.size());
    std::vector<int32_t> cnt(static_cast<size_t>(S));
    for (int32_t g = 0; g < S; ++g) cnt[size_t(g)] = int32_t(acc[size_t(g) * kStat]);
    UnionFind uf(cnt, 0.0f);
    bool any = false;
    for (int64_t q = 0; q < nc; ++q) {
      if (!accept[size_t(q)]) continue;
      const int32_t e = cross[size_t(q)];
      const int32_t a = uf.find(lab[size_t(ea[e])]), b = uf.find(lab[size_t(eb[e])]);
      if (a != b && (max_size <= 0 || int64_t(uf.size[a]) + uf.size[b] <= max_size)) {
        uf.join(a, b);
        any = true;
      }
    }
    if (!any) break;
    for (int32_t& v : lab) v = uf.find(v);
    S = renumber_dense(lab, S);
    size_t kept = 0;
    for (const int32_t e : cross)
      if (lab[size_t(ea[e])] != lab[size_t(eb[e])]) cross[kept++] = e;
    cross.resize(kept);
  }
  return S;
}

// After the exchange a segment may have shrunk below min_size (or lost its points): segments
// under min_size join the neighbour across their lightest edge (edges in weight order), as in the
// merge's last step, so that min_size still holds. lab holds ids < num_labels; returns the count
// of dense labels 0..S-1 numbered in order of each segment's first point.
inline int32_t enforce_min_size(std::vector<int32_t>& lab, int32_t num_labels, const std::vector<int32_t>& ea,
                                const std::vector<int32_t>& eb, int64_t min_size) {
  std::vector<int32_t> cnt(size_t(num_labels), 0);
  for (const int32_t v : lab) ++cnt[size_t(v)];
  if (min_size > 1) {
    UnionFind uf(cnt, 0.0f);
    for (size_t e = 0; e < ea.size(); ++e) {
      const int32_t a = uf.find(lab[size_t(ea[e])]), b = uf.find(lab[size_t(eb[e])]);
      if (a != b && (uf.size[a] < min_size || uf.size[b] < min_size)) uf.join(a, b);
    }
    for (int32_t& v : lab) v = uf.find(v);
  }
  return renumber_dense(lab, num_labels);
}

}  // namespace bqnet_sp
