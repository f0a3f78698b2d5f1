// Stages 1-4 of the parallel port (sp_parallel.h says how the backends work): bounding box and
// shift, spacing estimate, kNN on the hashed grid, normals, edges with weights, and the stable sort
// of the edges by weight (stage 5a). Each mirrors the CPU stage of superpoints.cpp and gives the same values:
// the bounding box by order-free min / max, the spacing as the same median, the kNN as the same K
// smallest (distance, index) pairs, the edges in the same order (a scan of per-point counts), the
// sort stable like the CPU's radix sort (ties in edge order).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sp_parallel.h"

namespace bqnet_sp {
namespace par {

// Minimum corner and extent of the cloud (float32 xyz), and the shifted copy pts = xyz - lo.
// Throws when a coordinate is not finite.
template <class B>
void shift_to_corner(B& be, const float* P0, int64_t n, float* pts, double* lo, double* ext) {
  Buf<B, uint32_t> mm(be, 7);  // 3 min keys, 3 max keys, a "not finite" flag
  uint32_t init[7] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0u, 0u, 0u, 0u};
  be.from_host(mm.p(), init, sizeof(init));
  uint32_t* m = mm.p();
  // T strided lanes reduce locally, then 7 atomics each: not n atomics on 7 addresses.
  const int64_t T = n < 65536 ? n : 65536;
  be.for_each(T, SP_FN(int64_t t) {
    uint32_t lo_k[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu}, hi_k[3] = {0u, 0u, 0u}, bad = 0u;
    for (int64_t i = t; i < n; i += T)
      for (int k = 0; k < 3; ++k) {
        const float v = P0[3 * i + k];
        if (!finite_float(v)) {
          bad = 1u;
          continue;
        }
        lo_k[k] = sp_min(lo_k[k], ordered_key(v));
        hi_k[k] = sp_max(hi_k[k], ordered_key(v));
      }
    for (int k = 0; k < 3; ++k) {
      atomic_min_u32(&m[k], lo_k[k]);
      atomic_max_u32(&m[3 + k], hi_k[k]);
    }
    if (bad) atomic_max_u32(&m[6], 1u);
  });
  uint32_t h[7];
  be.to_host(h, m, sizeof(h));
  if (h[6]) throw std::invalid_argument("xyz contains NaN or Inf; clean the cloud first");
  for (int k = 0; k < 3; ++k) {
    lo[k] = double(ordered_value(h[k]));
    ext[k] = double(ordered_value(h[3 + k])) - lo[k];
  }
  const double l0 = lo[0], l1 = lo[1], l2 = lo[2];
  be.for_each(n, SP_FN(int64_t i) {
    pts[3 * i] = float(double(P0[3 * i]) - l0);
    pts[3 * i + 1] = float(double(P0[3 * i + 1]) - l1);
    pts[3 * i + 2] = float(double(P0[3 * i + 2]) - l2);
  });
}

// The CPU's estimate_spacing (superpoints.cpp): median distance of a strided sample to its nearest
// neighbour farther than eps, on grids whose cell doubles while most samples find none in one ring.
template <class B>
double estimate_spacing(B& be, const float* P, int64_t n, const double* ext) {
  const SpacingStart ss = spacing_start(ext, n);
  const double emax = ss.emax, eps2 = ss.eps2;
  const int64_t m = ss.m;
  double cell = ss.cell;
  Buf<B, float> d(be, m);
  Buf<B, int64_t> found(be, m), pos(be, m + 1);
  Buf<B, uint32_t> key(be, m);
  Buf<B, int32_t> val(be, m);
  float* dp = d.p();
  int64_t* fp = found.p();
  int64_t* ps = pos.p();
  uint32_t* kp = key.p();
  int32_t* vp = val.p();
  for (int attempt = 0; attempt < 24; ++attempt) {
    Grid<B> g = build_grid(be, P, n, cell);
    const GridView gv = g.view();
    const float cell2 = float(cell * cell);
    be.for_each(m, SP_FN(int64_t s) {
      const int64_t i = s * n / m;
      float best = bits_float(0x7f800000u);  // +inf
      for (int r = 0; r <= 1; ++r)
        gv.ring(P, i, r, [&](int32_t j) {
          const float q = dist2(P, i, j);
          if (q > eps2 && q < best) best = q;
        });
      // exact: nothing nearer hides outside the ring
      dp[s] = best <= cell2 ? sqrtf(best) : -1.0f;
      fp[s] = best <= cell2 ? 1 : 0;
    });
    const int64_t nf = compact_positions(be, fp, ps, m);
    if (2 * nf >= m || cell > 4 * emax) {
      if (nf == 0) return cell;  // a single location (all duplicates): any scale works
      be.for_each(m, SP_FN(int64_t s) {
        if (fp[s]) {
          kp[ps[s]] = float_bits(dp[s]);
          vp[ps[s]] = int32_t(s);
        }
      });
      be.sort_pairs(kp, vp, nf, 32);
      return double(bits_float(get(be, kp + nf / 2)));
    }
    cell *= 2.0;
  }
  return cell;
}

// Per point its K nearest within max_edge * s (nbr: K ids per point, nearest first, -1 beyond
// ncnt[i]); the CPU's ring-by-ring search with the same stopping rule. Returns the ring limit.
template <class B>
int knn_search(B& be, const float* P, int64_t n, double s, double max_edge, int K, int32_t* nbr, uint8_t* ncnt) {
  const double cell = 3.0 * s;
  Grid<B> g = build_grid(be, P, n, cell);
  const GridView gv = g.view();
  const float rmax2 = float(max_edge * s) * float(max_edge * s);
  const int rings = int(std::ceil(max_edge * s / cell));
  const double reach = max_edge * s;
  be.for_each(n, SP_FN(int64_t i) {
    TopK top(K);
    for (int r = 0; r <= 1; ++r)
      gv.ring(P, i, r, [&](int32_t j) {
        if (j == i) return;
        const float d = dist2(P, i, j);
        if (d <= rmax2) top.offer(d, j);
      });
    double face = cell;
    for (int k = 0; k < 3; ++k) {
      const double f = double(P[3 * i + k]) - floor(double(P[3 * i + k]) / cell) * cell;
      face = sp_min3(face, f, cell - f);
    }
    for (int r = 2; r <= rings; ++r) {
      const double cov = (r - 1) * cell + face;
      if (top.count == K && double(top.d2[K - 1]) <= cov * cov) break;
      if ((r - 1) * cell + face >= reach) break;  // everything within max_edge is in
      gv.ring(P, i, r, [&](int32_t j) {
        const float d = dist2(P, i, j);
        if (d <= rmax2) top.offer(d, j);
      });
    }
    ncnt[i] = uint8_t(top.count);
    for (int t = 0; t < K; ++t) nbr[i * K + t] = t < top.count ? top.id[t] : -1;
  });
  return rings;
}

// Stage 3: the caller's normals scaled to unit length, or PCA normals then the flattest pick.
template <class B>
void point_normals(B& be, const float* P, const float* NI, int64_t n, const int32_t* nbr, const uint8_t* ncnt, int K,
                   int normal_knn, int normal_pick, float* vn) {
  if (NI) {
    be.for_each(n, SP_FN(int64_t i) { unit_normal(NI, i, vn); });
    return;
  }
  Buf<B, float> var(be, n), raw(be, 3 * n);
  float* vr = var.p();
  float* rw = raw.p();
  float* first = normal_pick > 0 ? rw : vn;
  be.for_each(n, SP_FN(int64_t i) { pca_point(P, nbr, ncnt, K, normal_knn, i, first, vr); });
  if (normal_pick > 0) be.for_each(n, SP_FN(int64_t i) { pick_point(nbr, ncnt, K, normal_pick, rw, vr, i, vn); });
}

// Weighted edges in emission order (point order, then neighbour order); sort_edges sorts them.
template <class B>
struct Edges {
  Buf<B, int32_t> a, b;
  Buf<B, float> w;
  int64_t n = 0;
};

template <class B>
Edges<B> build_edges(B& be, const float* P, const uint8_t* C, const float* vn, int64_t n, const int32_t* nbr,
                     const uint8_t* ncnt, int K, int kg, float cw, float ow) {
  Buf<B, int64_t> deg(be, n), off(be, n + 1);
  int64_t* dg = deg.p();
  int64_t* of = off.p();
  be.for_each(n, SP_FN(int64_t i) {
    const int m = sp_min<int>(kg, ncnt[i]);
    int64_t c = 0;
    for (int q = 0; q < m; ++q) c += emits_edge(nbr, ncnt, K, kg, i, nbr[i * K + q]) ? 1 : 0;
    dg[i] = c;
  });
  Edges<B> E;
  E.n = be.scan(dg, of, n);
  if (E.n >= (int64_t(1) << 31) - 1) throw std::invalid_argument("too many graph edges (" + std::to_string(E.n) + ")");
  const int64_t ne = E.n;
  E.a = Buf<B, int32_t>(be, ne);
  E.b = Buf<B, int32_t>(be, ne);
  E.w = Buf<B, float>(be, ne);
  int32_t* pa = E.a.p();
  int32_t* pb = E.b.p();
  float* pw = E.w.p();
  be.for_each(n, SP_FN(int64_t i) {
    const int m = sp_min<int>(kg, ncnt[i]);
    int64_t e = of[i];
    for (int q = 0; q < m; ++q) {
      const int64_t j = nbr[i * K + q];
      if (!emits_edge(nbr, ncnt, K, kg, i, j)) continue;
      pa[e] = int32_t(i);
      pb[e] = int32_t(j);
      pw[e] = edge_weight(P, C, vn, cw, ow, i, j);
      ++e;
    }
  });
  return E;
}

// Stage 5a: the edges sorted by weight, stably (ties keep the emission order, as the CPU's radix sort).
template <class B>
void sort_edges(B& be, Edges<B>& E) {
  const int64_t ne = E.n;
  Buf<B, uint32_t> key(be, ne);
  Buf<B, int32_t> idx(be, ne), sa(be, ne), sb(be, ne);
  Buf<B, float> sw(be, ne);
  uint32_t* pk = key.p();
  int32_t* px = idx.p();
  const int32_t* pa = E.a.p();
  const int32_t* pb = E.b.p();
  const float* pw = E.w.p();
  be.for_each(ne, SP_FN(int64_t e) {
    pk[e] = float_bits(pw[e]);
    px[e] = int32_t(e);
  });
  be.sort_pairs(pk, px, ne, 32);
  int32_t* qa = sa.p();
  int32_t* qb = sb.p();
  float* qw = sw.p();
  be.for_each(ne, SP_FN(int64_t e) {
    const int32_t o = px[e];
    qa[e] = pa[o];
    qb[e] = pb[o];
    qw[e] = pw[o];
  });
  E.a.swap(sa);
  E.b.swap(sb);
  E.w.swap(sw);
}

}  // namespace par
}  // namespace bqnet_sp
