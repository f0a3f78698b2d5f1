// Per-point, per-edge and per-segment math of the online superpoints, written once for every path:
// the CPU kernels (superpoints.cpp, sp_refine.h) call these in their OpenMP loops, the parallel
// port (sp_parallel*.h) in its for_each functors on the host and, compiled by nvcc, on the GPU.
// Every function is SP_HD and touches only what its arguments point at. The CPU's float results
// stay those of the code before the port: the operation order is the original one, and the CUDA
// build runs with -fmad=false --prec-div=true --prec-sqrt=true so that the device reproduces the
// same bits wherever IEEE fixes them (acos / cos in sym3_eigvec are the exception: CUDA's double
// versions may differ from glibc's in the last bit).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sp_hd.h"

namespace bqnet_sp {

constexpr int kCoordBits = 21;  // bits per axis in a packed key
constexpr int64_t kMaxCoord = (int64_t(1) << kCoordBits) - 16;  // headroom for window offsets
constexpr int kMaxK = 32;  // largest neighbour count a point keeps

// Where the spacing estimate starts (host only; superpoints.cpp and the parallel port): the first grid cell,
// an upper bound of the spacing for clouds on lines, planes or volumes; the squared distance under
// which two points count as duplicates; the sample size; the largest extent.
struct SpacingStart {
  double emax, cell, eps2;
  int64_t m;
};
inline SpacingStart spacing_start(const double* ext, int64_t n) {
  const double e0 = std::max(ext[0], 1e-9), e1 = std::max(ext[1], 1e-9), e2 = std::max(ext[2], 1e-9);
  const double emax = std::max({e0, e1, e2});
  const double cell = std::max({std::cbrt(e0 * e1 * e2 / double(n)),
                                std::sqrt(std::max({e0 * e1, e0 * e2, e1 * e2}) / double(n)), emax / double(n)});
  return {emax, cell, std::pow(1e-7 * emax, 2), std::min<int64_t>(n, 4096)};
}

SP_HD inline uint64_t pack(int64_t x, int64_t y, int64_t z) {
  return (uint64_t(x) << (2 * kCoordBits)) | (uint64_t(y) << kCoordBits) | uint64_t(z);
}

// Calls f(j) for every point j in the cells at Chebyshev ring exactly r around point i's cell, on a
// grid of side `cell` keyed by pack(cell coordinates + 4) (+4: rings below 0 stay valid), whose cell
// c holds order[start[c] .. start[c + 1]); `cells.find(key)` is a cell's index or -1. The CPU's hashed
// grid and the port's sorted one both enumerate through here, so their candidates come in one order.
template <class Cells, class F>
SP_HD inline void for_each_ring_point(const float* P, int64_t i, int r, double cell, const Cells& cells,
                                      const int64_t* start, const int32_t* order, F&& f) {
  const double inv = 1.0 / cell;
  const int64_t x = int64_t(P[3 * i] * inv) + 4, y = int64_t(P[3 * i + 1] * inv) + 4,
                z = int64_t(P[3 * i + 2] * inv) + 4;
  for (int dx = -r; dx <= r; ++dx)
    for (int dy = -r; dy <= r; ++dy)
      for (int dz = -r; dz <= r; ++dz) {
        if ((dx < 0 ? -dx : dx) != r && (dy < 0 ? -dy : dy) != r && (dz < 0 ? -dz : dz) != r)
          continue;  // inside the ring: no offset reaches r
        if (x + dx < 0 || y + dy < 0 || z + dz < 0) continue;
        const int32_t c = cells.find(pack(x + dx, y + dy, z + dz));
        if (c < 0) continue;
        for (int64_t q = start[c]; q < start[c + 1]; ++q) f(order[q]);
      }
}

// std::min / std::max and their initializer-list forms, usable on the device (same results: the
// first of equal values wins, as in std::min_element / std::max_element).
template <class T>
SP_HD inline T sp_min(T a, T b) { return (b < a) ? b : a; }
template <class T>
SP_HD inline T sp_max(T a, T b) { return (a < b) ? b : a; }
template <class T>
SP_HD inline T sp_min3(T a, T b, T c) {
  T m = a;
  if (b < m) m = b;
  if (c < m) m = c;
  return m;
}
template <class T>
SP_HD inline T sp_max3(T a, T b, T c) {
  T m = a;
  if (m < b) m = b;
  if (m < c) m = c;
  return m;
}

SP_HD inline void cross3(const double* u, const double* v, double* w) {
  w[0] = u[1] * v[2] - u[2] * v[1];
  w[1] = u[2] * v[0] - u[0] * v[2];
  w[2] = u[0] * v[1] - u[1] * v[0];
}

// Index of the longest of three 3-vectors (the first on ties) and its squared length.
SP_HD inline int longest3(const double* const* vs, double& sq) {
  int best = 0;
  sq = -1.0;
  for (int i = 0; i < 3; ++i) {
    const double n = vs[i][0] * vs[i][0] + vs[i][1] * vs[i][1] + vs[i][2] * vs[i][2];
    if (n > sq) {
      sq = n;
      best = i;
    }
  }
  return best;
}

// Eigenvector of the symmetric 3x3 matrix a = (a00, a11, a22, a01, a02, a12) for its smallest
// (want_largest = false) or largest eigenvalue. Closed form (trigonometric eigenvalues, then the
// cross product of two rows of A - lambda I); degenerate cases fall back to a fixed direction so
// the result is always a unit vector and deterministic.
SP_HD inline void sym3_eigvec(const double* a_in, bool want_largest, double* out) {
  const double tr = a_in[0] + a_in[1] + a_in[2];
  const double s = fabs(tr) > 0 ? 1.0 / fabs(tr) : 1.0;  // scale to trace 1 for conditioning
  const double a00 = a_in[0] * s, a11 = a_in[1] * s, a22 = a_in[2] * s;
  const double a01 = a_in[3] * s, a02 = a_in[4] * s, a12 = a_in[5] * s;
  const double p1 = a01 * a01 + a02 * a02 + a12 * a12;
  const double q = (a00 + a11 + a22) / 3.0;
  double lam;
  if (p1 < 1e-30) {
    lam = want_largest ? sp_max3(a00, a11, a22) : sp_min3(a00, a11, a22);
  } else {
    const double p2 = (a00 - q) * (a00 - q) + (a11 - q) * (a11 - q) + (a22 - q) * (a22 - q) + 2.0 * p1;
    const double p = sqrt(p2 / 6.0);
    const double b00 = (a00 - q) / p, b11 = (a11 - q) / p, b22 = (a22 - q) / p;
    const double b01 = a01 / p, b02 = a02 / p, b12 = a12 / p;
    double r = 0.5 * (b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02));
    r = sp_min(1.0, sp_max(-1.0, r));
    const double phi = acos(r) / 3.0;
    lam = want_largest ? q + 2.0 * p * cos(phi) : q + 2.0 * p * cos(phi + 2.0943951023931957);
  }
  const double r0[3] = {a00 - lam, a01, a02};
  const double r1[3] = {a01, a11 - lam, a12};
  const double r2[3] = {a02, a12, a22 - lam};
  double c[3][3];
  cross3(r0, r1, c[0]);
  cross3(r0, r2, c[1]);
  cross3(r1, r2, c[2]);
  const double* cs[3] = {c[0], c[1], c[2]};
  double best_n;
  const int best = longest3(cs, best_n);
  if (best_n > 1e-24) {
    const double inv = 1.0 / sqrt(best_n);
    for (int k = 0; k < 3; ++k) out[k] = c[best][k] * inv;
    return;
  }
  // Rank <= 1: any unit vector orthogonal to the largest row of A - lambda I.
  const double* rows[3] = {r0, r1, r2};
  double bn;
  const int br = longest3(rows, bn);
  if (bn < 1e-24) {  // isotropic or empty: no preferred direction
    out[0] = 0.0;
    out[1] = 0.0;
    out[2] = 1.0;
    return;
  }
  const double* v = rows[br];
  const double ax = fabs(v[0]), ay = fabs(v[1]), az = fabs(v[2]);
  const double e[3] = {double(ax <= ay && ax <= az), double(ay < ax && ay <= az), double(az < ax && az < ay)};
  double w[3];
  cross3(v, e, w);
  const double inv = 1.0 / sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
  for (int k = 0; k < 3; ++k) out[k] = w[k] * inv;
}

SP_HD inline float dist2(const float* P, int64_t i, int64_t j) {
  const float dx = P[3 * i] - P[3 * j], dy = P[3 * i + 1] - P[3 * j + 1], dz = P[3 * i + 2] - P[3 * j + 2];
  return dx * dx + dy * dy + dz * dz;
}

// The K nearest (distance, then index) among candidates offered one by one: a total order, so
// the result does not depend on the order of the offers.
struct TopK {
  int k, count = 0;
  float d2[kMaxK];
  int32_t id[kMaxK];
  SP_HD explicit TopK(int k_) : k(k_) {}
  SP_HD void offer(float d, int32_t j) {
    if (count == k && (d > d2[k - 1] || (d == d2[k - 1] && j > id[k - 1]))) return;
    int p = count < k ? count++ : k - 1;
    while (p > 0 && (d2[p - 1] > d || (d2[p - 1] == d && id[p - 1] > j))) {
      d2[p] = d2[p - 1];
      id[p] = id[p - 1];
      --p;
    }
    d2[p] = d;
    id[p] = j;
  }
};

// The caller's normal of point i, scaled to unit length (0 for a zero vector).
SP_HD inline void unit_normal(const float* NI, int64_t i, float* vn) {
  const double a = NI[3 * i], b = NI[3 * i + 1], c = NI[3 * i + 2];
  const double l = sqrt(a * a + b * b + c * c);
  const double inv = l > 0 ? 1.0 / l : 0.0;
  vn[3 * i] = float(a * inv);
  vn[3 * i + 1] = float(b * inv);
  vn[3 * i + 2] = float(c * inv);
}

// Point i: PCA normal of the point with its m nearest (m = min(normal_knn, count)) into vn and the
// surface variation lambda_min / trace of that neighbourhood (0 = flat, 1/3 = isotropic) into var.
// nbr holds K neighbour ids per point (nearest first), ncnt how many are valid.
SP_HD inline void pca_point(const float* P, const int32_t* nbr, const uint8_t* ncnt, int K, int normal_knn, int64_t i,
                            float* vn, float* var) {
  const int m = sp_min<int>(normal_knn, ncnt[i]);
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
  var[i] = tr > 0 ? float(sp_max(0.0, lam) / tr) : 0.0f;
}

// Point i takes the normal of the flattest neighbourhood among its own and those of its `pick`
// nearest (first in distance order on ties): written to out.
SP_HD inline void pick_point(const int32_t* nbr, const uint8_t* ncnt, int K, int pick, const float* vn,
                             const float* var, int64_t i, float* out) {
  int64_t best = i;
  float bv = var[i];
  const int m = sp_min<int>(pick, ncnt[i]);
  for (int q = 0; q < m; ++q) {
    const int64_t j = nbr[size_t(i) * K + q];
    if (var[j] < bv) {
      bv = var[j];
      best = j;
    }
  }
  for (int k = 0; k < 3; ++k) out[3 * i + k] = vn[3 * best + k];
}

// Whether point i emits its graph edge to neighbour j (one of its kg nearest): when j > i or i is
// not among j's kg nearest, so that each undirected edge is emitted once.
SP_HD inline bool emits_edge(const int32_t* nbr, const uint8_t* ncnt, int K, int kg, int64_t i, int64_t j) {
  if (j > i) return true;
  const int m = sp_min<int>(kg, ncnt[j]);
  for (int q = 0; q < m; ++q)
    if (nbr[size_t(j) * K + q] == i) return false;
  return true;
}

// Weight of edge (i, j): normal change, colour distance (cw = color_weight / 255; C may be null),
// offset along both normals (ow = offset_weight / (2 s)); never negative.
SP_HD inline float edge_weight(const float* P, const uint8_t* C, const float* vn, float cw, float ow, int64_t i,
                               int64_t j) {
  const float* ni = &vn[3 * i];
  const float* nj = &vn[3 * j];
  float w = 1.0f - fabsf(ni[0] * nj[0] + ni[1] * nj[1] + ni[2] * nj[2]);
  if (C && cw > 0) {
    const float dr = float(C[3 * i]) - C[3 * j], dg = float(C[3 * i + 1]) - C[3 * j + 1],
                db = float(C[3 * i + 2]) - C[3 * j + 2];
    w += cw * sqrtf(dr * dr + dg * dg + db * db);
  }
  if (ow > 0) {
    const float dx = P[3 * j] - P[3 * i], dy = P[3 * j + 1] - P[3 * i + 1], dz = P[3 * j + 2] - P[3 * i + 2];
    w += ow * (fabsf(dx * ni[0] + dy * ni[1] + dz * ni[2]) + fabsf(dx * nj[0] + dy * nj[1] + dz * nj[2]));
  }
  return w > 0.0f ? w : 0.0f;
}

// Per-segment moments: count, sum xyz, sum of products, sum rgb (kStat doubles per segment).
constexpr int kStat = 13;
SP_HD inline void moments_add(double* a, const float* P, const uint8_t* C, int64_t i) {
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

// Covariance (a00, a11, a22, a01, a02, a12) and mean of a moment record with a[0] > 0 points.
SP_HD inline void moments_cov(const double* a, double* cov, double* mean) {
  const double inv = 1.0 / a[0];
  for (int k = 0; k < 3; ++k) mean[k] = a[1 + k] * inv;
  cov[0] = a[4] * inv - mean[0] * mean[0];
  cov[1] = a[5] * inv - mean[1] * mean[1];
  cov[2] = a[6] * inv - mean[2] * mean[2];
  cov[3] = a[7] * inv - mean[0] * mean[1];
  cov[4] = a[8] * inv - mean[0] * mean[2];
  cov[5] = a[9] * inv - mean[1] * mean[2];
}

// The plane normal of a segment's moment record (a[0] > 0).
SP_HD inline void segment_normal(const double* a, double* nrm) {
  double cov[6], mean[3];
  moments_cov(a, cov, mean);
  sym3_eigvec(cov, false, nrm);
}

// Centroid, plane normal and mean colour of a segment's moment record (a[0] > 0).
SP_HD inline void segment_plane(const double* a, double* cen, double* nrm, double* col) {
  const double inv = 1.0 / a[0];
  double cov[6], mean[3];
  moments_cov(a, cov, mean);
  double e[3];
  sym3_eigvec(cov, false, e);
  cen[0] = mean[0];
  cen[1] = mean[1];
  cen[2] = mean[2];
  for (int k = 0; k < 3; ++k) {
    nrm[k] = e[k];
    col[k] = a[10 + k] * inv;
  }
}

SP_HD inline double quad_form(const double* c, const double* v) {
  return c[0] * v[0] * v[0] + c[1] * v[1] * v[1] + c[2] * v[2] * v[2] +
         2.0 * (c[3] * v[0] * v[1] + c[4] * v[0] * v[2] + c[5] * v[1] * v[2]);
}

// The coplanar test of two adjacent segments (moment records a, b; plane normals na, nb): both
// have a plane (>= 3 points), the planes are parallel (|n_a . n_b| > cos_min), the mean colours
// are closer than sqrt(col2) (with colour) and the union's variance along either normal is below
// var_max (an upper bound of the union's smallest eigenvalue, close to it for parallel planes,
// with no eigen-solve per edge).
SP_HD inline bool coplanar_pair(const double* a, const double* b, const double* na, const double* nb, bool color,
                                double cos_min, double col2, double var_max) {
  if (a[0] < 3 || b[0] < 3) return false;  // no plane of its own
  if (fabs(na[0] * nb[0] + na[1] * nb[1] + na[2] * nb[2]) <= cos_min) return false;
  if (color) {
    double d2 = 0;
    for (int k = 0; k < 3; ++k) {
      const double d = a[10 + k] / a[0] - b[10 + k] / b[0];
      d2 += d * d;
    }
    if (d2 >= col2) return false;
  }
  double u[kStat], c[6], mean[3];
  for (int k = 0; k < 10; ++k) u[k] = a[k] + b[k];
  moments_cov(u, c, mean);
  return sp_min(quad_form(c, na), quad_form(c, nb)) < var_max;
}

// Boundary exchange for point i: the segment, among its own (lab[i]) and those of its kg nearest,
// with the least (1 - |n_p . n_S|) + plane_w * |(p - c_S) . n_S| / s + cw * ||c_p - rgb_S||
// (cw = color_weight / 255; own segment first, so ties keep the point where it is).
SP_HD inline int32_t exchange_pick(const float* P, const uint8_t* C, const float* vn, const int32_t* nbr,
                                   const uint8_t* ncnt, int K, int kg, const int32_t* lab, const double* cen,
                                   const double* nrm, const double* col, double plane_w, double inv_s, double cw,
                                   int64_t i) {
  const float* ni = &vn[3 * i];
  int32_t best = lab[i];
  const int m = sp_min<int>(kg, ncnt[i]);
  bool inside = true;  // every neighbour in the point's own segment: nothing to choose from
  for (int q = 0; q < m && inside; ++q) inside = lab[nbr[size_t(i) * K + q]] == best;
  if (inside) return best;
  double bc = 0;
  for (int q = -1; q < m; ++q) {
    const int32_t g = q < 0 ? best : lab[nbr[size_t(i) * K + q]];
    if (q >= 0 && g == best) continue;
    const double* c = &cen[3 * size_t(g)];
    const double* mv = &nrm[3 * size_t(g)];
    double w = 1.0 - fabs(ni[0] * mv[0] + ni[1] * mv[1] + ni[2] * mv[2]);
    w += plane_w * inv_s *
         fabs((P[3 * i] - c[0]) * mv[0] + (P[3 * i + 1] - c[1]) * mv[1] + (P[3 * i + 2] - c[2]) * mv[2]);
    if (C && cw > 0) {
      const double* r = &col[3 * size_t(g)];
      const double dr = C[3 * i] - r[0], dg = C[3 * i + 1] - r[1], db = C[3 * i + 2] - r[2];
      w += cw * sqrt(dr * dr + dg * dg + db * db);
    }
    if (q < 0 || w < bc) {
      bc = w;
      best = g;
    }
  }
  return best;
}

}  // namespace bqnet_sp
