// The driver of the parallel port (sp_parallel.h says how the backends work): the stages of
// superpoints.cpp with merge = "boruvka" semantics, over backend B, on raw pointers (no torch, so
// that nvcc compiles it without the ATen headers). Inputs and outputs live in B's memory (device
// memory for the CUDA backend); stats come back on the host.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sp_parallel.h"
#include "sp_parallel_graph.h"
#include "sp_params.h"
#include "sp_parallel_merge.h"

namespace bqnet_sp {
namespace par {

// sp_boruvka_coplanar.h boruvka_merge_coplanar: `rounds` rounds of the per-edge coplanar test on
// the statistics before the round, the accepted edges joined by coplanar_hook_rounds. Returns the
// new dense label count; *sub the sub-rounds that merged.
template <class B>
int32_t merge_coplanar(B& be, const float* P, const uint8_t* C, int64_t n, int32_t* lab, int32_t S, const int32_t* ea,
                       const int32_t* eb, int64_t ne, double s, double rms_max, double cos_min, double color_max,
                       int64_t max_size, int rounds, int* sub) {
  *sub = 0;
  Buf<B, int64_t> flag(be, ne), pos(be, ne + 1);
  Buf<B, int32_t> cross(be, ne), cross2(be, ne);
  int64_t* fl = flag.p();
  int64_t* ps = pos.p();
  {
    int32_t* cr = cross.p();
    be.for_each(ne, SP_FN(int64_t e) { fl[e] = lab[ea[e]] != lab[eb[e]] ? 1 : 0; });
    const int64_t nc = compact_positions(be, fl, ps, ne);
    be.for_each(ne, SP_FN(int64_t e) {
      if (fl[e]) cr[ps[e]] = int32_t(e);
    });
    int64_t ncross = nc;  // flag / pos are reused over the (shorter) cross list
    const double var_max = (rms_max * s) * (rms_max * s), col2 = color_max * color_max;
    const bool color = C != nullptr;
    for (int r = 0; r < rounds && S > 1 && ncross > 0; ++r) {
      Buf<B, double> acc(be, int64_t(S) * kStat), nrm(be, 3 * int64_t(S));
      double* ac = acc.p();
      double* nm = nrm.p();
      segment_moments(be, P, C, n, lab, S, ac);
      fill(be, nm, 3 * int64_t(S), 0.0);
      be.for_each(S, SP_FN(int64_t g) {
        if (ac[g * kStat] > 0) segment_normal(&ac[g * kStat], &nm[3 * g]);
      });
      const int32_t* cq = cross.p();
      be.for_each(ncross, SP_FN(int64_t q) {
        const int32_t e = cq[q];
        const int32_t ga = lab[ea[e]], gb = lab[eb[e]];
        fl[q] = coplanar_pair(&ac[int64_t(ga) * kStat], &ac[int64_t(gb) * kStat], &nm[3 * int64_t(ga)],
                              &nm[3 * int64_t(gb)], color, cos_min, col2, var_max)
                    ? 1
                    : 0;
      });
      Live<B> live(be, ncross);
      live.n = compact_positions(be, fl, ps, ncross);
      int32_t* la = live.a.p();
      int32_t* lb = live.b.p();
      be.for_each(ncross, SP_FN(int64_t q) {
        if (!fl[q]) return;
        la[ps[q]] = lab[ea[cq[q]]];
        lb[ps[q]] = lab[eb[cq[q]]];
      });
      Buf<B, int32_t> seg(be, S), size(be, S);
      int32_t* sg = seg.p();
      int32_t* sz = size.p();
      be.for_each(S, SP_FN(int64_t g) {
        sg[g] = int32_t(g);
        sz[g] = int32_t(ac[g * kStat]);
      });
      const int merged = coplanar_hook_rounds(be, S, sg, sz, live, max_size);
      if (merged == 0) break;
      *sub += merged;
      be.for_each(n, SP_FN(int64_t v) { lab[v] = sg[lab[v]]; });
      S = renumber_dense(be, lab, n, S);
      be.for_each(ncross, SP_FN(int64_t q) { fl[q] = lab[ea[cq[q]]] != lab[eb[cq[q]]] ? 1 : 0; });
      const int64_t kept = compact_positions(be, fl, ps, ncross);
      int32_t* c2 = cross2.p();
      be.for_each(ncross, SP_FN(int64_t q) {
        if (fl[q]) c2[ps[q]] = cq[q];
      });
      cross.swap(cross2);
      ncross = kept;
    }
  }
  return S;
}

// sp_refine.h refine_segments: `iters` Jacobi rounds of the boundary exchange.
template <class B>
void refine_segments(B& be, const float* P, const uint8_t* C, int64_t n, const float* vn, const int32_t* nbr,
                     const uint8_t* ncnt, int K, int kg, double s, int iters, double plane_w, double color_w,
                     Buf<B, int32_t>& lab, int32_t S) {
  Buf<B, double> acc(be, int64_t(S) * kStat), cen(be, 3 * int64_t(S)), nrm(be, 3 * int64_t(S)),
      col(be, 3 * int64_t(S));
  Buf<B, int32_t> next(be, n);
  double* ac = acc.p();
  double* ce = cen.p();
  double* nm = nrm.p();
  double* co = col.p();
  fill(be, ce, 3 * int64_t(S), 0.0);
  fill(be, nm, 3 * int64_t(S), 0.0);
  fill(be, co, 3 * int64_t(S), 0.0);
  const double inv_s = 1.0 / s, cw = color_w / 255.0;
  for (int it = 0; it < iters; ++it) {
    const int32_t* lb = lab.p();
    int32_t* nx = next.p();
    segment_moments(be, P, C, n, lb, S, ac);
    be.for_each(S, SP_FN(int64_t g) {
      if (ac[g * kStat] > 0) segment_plane(&ac[g * kStat], &ce[3 * g], &nm[3 * g], &co[3 * g]);
    });
    be.for_each(n, SP_FN(int64_t i) {
      nx[i] = exchange_pick(P, C, vn, nbr, ncnt, K, kg, lb, ce, nm, co, plane_w, inv_s, cw, i);
    });
    lab.swap(next);
  }
}

// The whole oversegmentation. xyz (n, 3) float32, rgb (n, 3) uint8 or null, normals (n, 3) float32
// or null, all in B's memory; labels_out (n) int64 and normals_out (n, 3) float32 there too.
// Throws std::invalid_argument for clouds the CPU path refuses (same messages).
template <class B>
void oversegment(B& be, const float* xyz, const uint8_t* rgb, const float* normals, int64_t n, const Params& p,
                 int64_t* labels_out, float* normals_out, double* stats) {
  using Clk = std::chrono::steady_clock;
  auto ms = [&](Clk::time_point t0) {
    be.sync();
    return std::chrono::duration<double, std::milli>(Clk::now() - t0).count();
  };
  const auto t_start = Clk::now();
  if (n <= 0 || n >= (int64_t(1) << 31) - 1) throw std::invalid_argument("point count out of range: " + std::to_string(n));
  if (p.knn < 1 || p.knn > kMaxK || p.normal_knn < 2 || p.normal_knn > kMaxK || p.normal_pick < 0 ||
      p.normal_pick > kMaxK)
    throw std::invalid_argument("knn / normal_knn out of range");
  // ---- 1. shift to the minimum corner, spacing
  auto t0 = Clk::now();
  Buf<B, float> pts(be, 3 * n);
  float* P = pts.p();
  double lo[3], ext[3];
  shift_to_corner(be, xyz, n, P, lo, ext);
  const double emax = std::max({ext[0], ext[1], ext[2]});
  double s = p.spacing > 0 ? p.spacing : (n > 1 ? estimate_spacing(be, P, n, ext) : 1.0);
  s = std::max(s, 1e-6 * std::max(emax, 1e-3));  // never a zero scale (all points duplicates)
  const double cell = 3.0 * s;
  if (!(emax / cell < double(kMaxCoord) - 8))
    throw std::invalid_argument("cloud extent " + std::to_string(emax) + " m is over " + std::to_string(kMaxCoord) +
                                " grid cells of 3 x the point spacing (" + std::to_string(s) +
                                " m): split or downsample the cloud");
  const double t_spacing = ms(t0);
  // ---- 2. grid + kNN
  t0 = Clk::now();
  const int K = int(std::max(p.knn, p.normal_knn));
  Buf<B, int32_t> nbr(be, n * K);
  Buf<B, uint8_t> ncnt(be, n);
  const int rings = knn_search(be, P, n, s, p.max_edge, K, nbr.p(), ncnt.p());
  const double t_knn = ms(t0);
  // ---- 3. normals
  t0 = Clk::now();
  float* vn = normals_out;
  point_normals(be, P, normals, n, nbr.p(), ncnt.p(), K, int(p.normal_knn), int(p.normal_pick), vn);
  const double t_normals = ms(t0);
  // ---- 4. edges, 5a. sort
  t0 = Clk::now();
  const int kg = int(p.knn);
  const float cw = float(p.color_weight) / 255.0f, ow = float(p.offset_weight / (2.0 * s));
  Edges<B> E = build_edges(be, P, rgb, vn, n, nbr.p(), ncnt.p(), K, kg, cw, ow);
  const int64_t ne = E.n;
  const double t_edges = ms(t0);
  t0 = Clk::now();
  sort_edges(be, E);
  const double t_sort = ms(t0);
  // ---- 5. merge
  t0 = Clk::now();
  Buf<B, int32_t> lab(be, n);
  const int merge_rounds = boruvka_fh_merge(be, n, lab.p(), E.a.p(), E.b.p(), E.w.p(), ne, float(p.k_thresh),
                                            p.min_size, p.max_size);
  const double t_merge = ms(t0);
  // ---- 6-7. coplanar merge, boundary exchange, dense labels
  t0 = Clk::now();
  int32_t ns = renumber_dense(be, lab.p(), n, int32_t(n));
  int coplanar_rounds = 0;
  if (p.merge_plane_rms > 0 && ns > 1)
    ns = merge_coplanar(be, P, rgb, n, lab.p(), ns, E.a.p(), E.b.p(), ne, s, p.merge_plane_rms, p.merge_plane_cos,
                        p.merge_color, p.merge_max_size, 2, &coplanar_rounds);
  if (p.refine_iters > 0 && ns > 1) {
    refine_segments(be, P, rgb, n, vn, nbr.p(), ncnt.p(), K, kg, s, int(p.refine_iters), p.refine_plane_weight,
                    p.refine_color_weight, lab, ns);
    ns = enforce_min_size(be, lab.p(), n, ns, E.a.p(), E.b.p(), E.w.p(), ne, p.min_size);
  }
  const double t_refine = ms(t0);
  t0 = Clk::now();
  const int32_t* lp = lab.p();
  be.for_each(n, SP_FN(int64_t i) { labels_out[i] = lp[i]; });
  const double t_lab = ms(t0);
  const double vals[kNumStats] = {double(ne), double(ns), s,        t_spacing,    t_knn,
                                  t_normals,  t_edges,    t_sort,   t_merge,      t_refine,
                                  t_lab,      ms(t_start), double(rings), double(merge_rounds), double(coplanar_rounds)};
  for (int i = 0; i < kNumStats; ++i) stats[i] = vals[i];
}

}  // namespace par
}  // namespace bqnet_sp
