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
  for (int64_t i = 0; i < n; ++i) {
    const int m = std::min<int>(normal_knn, ncnt[i]);
    double mean[3] = {P[3 * i], P[3 * i + 1], P[3 * i + 2]};
    for (int q = 0; q < m; ++q)
      for (int k = 0; k < 3; ++k) mean[k] += P[3 * size_t(nbr[size_t(i) * K + q]) + k];
    for (int k = 0; k < 3; ++k) mean[k] /= double(m + 1);
    double cov[6] = {0, 0, 0, 0, 0, 0};
    for (int q = -1; q < m; ++q) {
      const int64_t j = q < 0 ? i : nbr[size_t(i) * K + q];
      const double x = P[3 * j] - mean[0], y = P[3 * j + 1] - mean[1], z = P[3 * j + 2] - mean[2];
      cov[0] += x * x;
      cov[1] += y * y;
      cov[2] += z * z;
      cov[3] += x * y;
      cov[4] += x * z;
      cov[5] += y * z;
    }
    double e[3];
    sym3_eigvec(cov, false, e);
    for (int k = 0; k < 3; ++k) vn[3 * i + k] = float(e[k]);
    // Rayleigh quotient of the unit eigenvector = the smallest eigenvalue.
    const double lam = cov[0] * e[0] * e[0] + cov[1] * e[1] * e[1] + cov[2] * e[2] * e[2] +
                       2.0 * (cov[3] * e[0] * e[1] + cov[4] * e[0] * e[2] + cov[5] * e[1] * e[2]);
    const double tr = cov[0] + cov[1] + cov[2];
    var[i] = tr > 0 ? float(std::max(0.0, lam) / tr) : 0.0f;
  }
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
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = i;
    float bv = var[i];
    const int m = std::min<int>(pick, ncnt[i]);
    for (int q = 0; q < m; ++q) {
      const int64_t j = nbr[size_t(i) * K + q];
      if (var[j] < bv) {
        bv = var[j];
        best = j;
      }
    }
    for (int k = 0; k < 3; ++k) out[3 * i + k] = vn[3 * best + k];
  }
  return out;
}

// Per-segment moments (count, sum xyz, sum of products, sum rgb), summed sequentially in point
// order so that they do not depend on the thread count.
constexpr int kStat = 13;
inline void segment_moments(const float* P, const uint8_t* C, int64_t n, const std::vector<int32_t>& lab,
                            int32_t S, std::vector<double>& acc) {
  acc.assign(size_t(S) * kStat, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double* a = &acc[size_t(lab[i]) * kStat];
    const double x = P[3 * i], y = P[3 * i + 1], z = P[3 * i + 2];
    a[0] += 1.0;
    a[1] += x;
    a[2] += y;
    a[3] += z;
    a[4] += x * x;
    a[5] += y * y;
    a[6] += z * z;
    a[7] += x * y;
    a[8] += x * z;
    a[9] += y * z;
    if (C) {
      a[10] += C[3 * i];
      a[11] += C[3 * i + 1];
      a[12] += C[3 * i + 2];
    }
  }
}

// Covariance (a00, a11, a22, a01, a02, a12) and mean of a moment record with a[0] > 0 points.
inline void moments_cov(const double* a, double* cov, double* mean) {
  const double inv = 1.0 / a[0];
  for (int k = 0; k < 3; ++k) mean[k] = a[1 + k] * inv;
  cov[0] = a[4] * inv - mean[0] * mean[0];
  cov[1] = a[5] * inv - mean[1] * mean[1];
  cov[2] = a[6] * inv - mean[2] * mean[2];
  cov[3] = a[7] * inv - mean[0] * mean[1];
  cov[4] = a[8] * inv - mean[0] * mean[2];
  cov[5] = a[9] * inv - mean[1] * mean[2];
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
      if (a[0] <= 0) continue;
      const double inv = 1.0 / a[0];
      double cov[6], mean[3];
      moments_cov(a, cov, mean);
      const double mx = mean[0], my = mean[1], mz = mean[2];
      double e[3];
      sym3_eigvec(cov, false, e);
      cen[3 * size_t(g)] = mx;
      cen[3 * size_t(g) + 1] = my;
      cen[3 * size_t(g) + 2] = mz;
      for (int k = 0; k < 3; ++k) {
        nrm[3 * size_t(g) + k] = e[k];
        col[3 * size_t(g) + k] = a[10 + k] * inv;
      }
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* ni = &vn[3 * i];
      auto cost = [&](int32_t g) {
        const double* c = &cen[3 * size_t(g)];
        const double* m = &nrm[3 * size_t(g)];
        double w = 1.0 - std::abs(ni[0] * m[0] + ni[1] * m[1] + ni[2] * m[2]);
        w += plane_w * inv_s *
             std::abs((P[3 * i] - c[0]) * m[0] + (P[3 * i + 1] - c[1]) * m[1] + (P[3 * i + 2] - c[2]) * m[2]);
        if (C && cw > 0) {
          const double* r = &col[3 * size_t(g)];
          const double dr = C[3 * i] - r[0], dg = C[3 * i + 1] - r[1], db = C[3 * i + 2] - r[2];
          w += cw * std::sqrt(dr * dr + dg * dg + db * db);
        }
        return w;
      };
      int32_t best = lab[i];
      const int m = std::min<int>(kg, ncnt[i]);
      bool inside = true;  // every neighbour in the point's own segment: nothing to choose from
      for (int q = 0; q < m && inside; ++q) inside = lab[nbr[size_t(i) * K + q]] == best;
      if (inside) {
        next[i] = best;
        continue;
      }
      double bc = cost(best);
      for (int q = 0; q < m; ++q) {
        const int32_t g = lab[nbr[size_t(i) * K + q]];
        if (g == best) continue;
        const double c = cost(g);
        if (c < bc) {
          bc = c;
          best = g;
        }
      }
      next[i] = best;
    }
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
    if (a[0] <= 0) continue;
    double cov[6], mean[3];
    moments_cov(a, cov, mean);
    sym3_eigvec(cov, false, &nrm[3 * size_t(g)]);
  }
  const int64_t nc = int64_t(cross.size());
  accept.assign(static_cast<size_t>(nc), 0);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t q = 0; q < nc; ++q) {
    const int32_t e = cross[size_t(q)];
    const int32_t ga = lab[size_t(ea[e])], gb = lab[size_t(eb[e])];
    const double* a = &acc[size_t(ga) * kStat];
    const double* b = &acc[size_t(gb) * kStat];
    if (a[0] < 3 || b[0] < 3) continue;  // no plane of its own
    const double* na = &nrm[3 * size_t(ga)];
    const double* nb = &nrm[3 * size_t(gb)];
    if (std::abs(na[0] * nb[0] + na[1] * nb[1] + na[2] * nb[2]) <= cos_min) continue;
    if (C) {
      double d2 = 0;
      for (int k = 0; k < 3; ++k) {
        const double d = a[10 + k] / a[0] - b[10 + k] / b[0];
        d2 += d * d;
      }
      if (d2 >= col2) continue;
    }
    // Variance of the union along either segment's normal: an upper bound of the union's smallest
    // eigenvalue, close to it for parallel planes, with no eigen-solve per edge.
    double u[kStat], c[6], mean[3];
    for (int k = 0; k < 10; ++k) u[k] = a[k] + b[k];
    moments_cov(u, c, mean);
    auto along = [&](const double* v) {
      return c[0] * v[0] * v[0] + c[1] * v[1] * v[1] + c[2] * v[2] * v[2] +
             2.0 * (c[3] * v[0] * v[1] + c[4] * v[0] * v[2] + c[5] * v[1] * v[2]);
    };
    accept[size_t(q)] = std::min(along(na), along(nb)) < var_max;
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
