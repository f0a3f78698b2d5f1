// Online superpoints: Felzenszwalb-Huttenlocher segmentation of a point cloud on its k-nearest-
// neighbour graph, at the scale the cloud itself shows, then a local boundary exchange
// (bqnet_model/superpoints.py explains why each term is there). Stages, each data-parallel except
// the sequential merge (the CUDA port, csrc/sp_parallel*.h + csrc/cuda/, keeps the same structure:
// hashed grid, per-point kNN, per-edge weights, sort, Borůvka merge, per-point exchange; the
// per-element math is shared through sp_point_math.h):
//   1. spacing s = median distance from a strided sample of points to their nearest distinct
//      neighbour, found on a coarse hashed grid whose cell is an upper bound of the spacing;
//   2. hashed grid of cell 3 s (points counting-sorted by cell); per point its K nearest
//      neighbours within max_edge * s (rings of cells searched outward until the K-th distance
//      is inside the searched radius), ties broken by point index;
//   3. per-point normal: PCA of the point and its normal_knn nearest neighbours, then the normal
//      of the flattest such neighbourhood among the point's and its normal_pick nearest (or the
//      caller's normals, used as given);
//   4. graph = symmetric union of each point's knn nearest; weight = (1 - |n_i . n_j|)
//      + color_weight * ||c_i - c_j|| + offset_weight * (|d . n_i| + |d . n_j|) / (2 s);
//   5. stable radix sort by weight, FH merge (sizes in points), optional size cap, then segments
//      below min_size join across their lightest edge; sequential, or (merge = "boruvka") its
//      parallel form in rounds of data-parallel loops (sp_boruvka.h), the one a CUDA port runs;
//   6. coplanar merge (adjacent segments whose union is one plane of one colour join; 2 rounds;
//      merge = "boruvka": joined in sub-rounds of data-parallel loops, sp_boruvka_coplanar.h),
//      then refine_iters rounds of boundary exchange (each point moves to the neighbouring segment whose
//      plane, centroid and mean colour fit it best; sp_refine.h), min_size enforced again;
//   7. dense labels 0..S-1 numbered in order of each segment's first point.
// Every parallel loop writes only its own slots and every sum runs in a fixed order: labels do not
// depend on the thread count. The binding releases the GIL for the whole call.

#include <torch/extension.h>

#include <limits>
#include <string>

#include "kernels.h"
#include "sp_args.h"
#include "sp_boruvka.h"
#include "sp_boruvka_coplanar.h"
#include "sp_common.h"
#include "sp_refine.h"

namespace bqnet_sp {
namespace {

// Points counting-sorted by hashed grid cell: cell c holds order[start[c] .. start[c + 1]).
struct PointGrid {
  double cell = 0;
  KeyMap map;
  std::vector<int64_t> start;
  std::vector<int32_t> order;
  std::vector<int32_t> pcell;  // per point: its cell id

  void build(const float* P, int64_t n, double cell_size) {
    cell = cell_size;
    map = KeyMap();
    pcell.resize(n);
    const double inv = 1.0 / cell;
    for (int64_t i = 0; i < n; ++i) {  // sequential: cell ids in first-seen order, deterministic
      const int64_t x = int64_t(P[3 * i] * inv), y = int64_t(P[3 * i + 1] * inv), z = int64_t(P[3 * i + 2] * inv);
      pcell[i] = map.find_or_insert(pack(x + 4, y + 4, z + 4)).first;  // +4: rings below 0 stay valid
    }
    const int32_t nc = map.size();
    start.assign(size_t(nc) + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++start[pcell[i] + 1];
    for (int32_t c = 0; c < nc; ++c) start[c + 1] += start[c];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    order.resize(n);
    for (int64_t i = 0; i < n; ++i) order[fill[pcell[i]]++] = int32_t(i);
  }

  // Calls f(j) for every point j in the cells at Chebyshev ring exactly r around point i's cell.
  template <class F>
  void ring(const float* P, int64_t i, int r, F&& f) const {
    for_each_ring_point(P, i, r, cell, map, start.data(), order.data(), f);
  }
};

// Median distance of a strided sample to its nearest neighbour farther than eps (exact duplicates
// say nothing about the spacing). The first grid's cell bounds the spacing from above for clouds
// on lines, planes or volumes; it doubles while most samples find no neighbour in one ring.
double estimate_spacing(const float* P, int64_t n, const double* ext, int nt) {
  const SpacingStart st = spacing_start(ext, n);
  const double emax = st.emax, eps2 = st.eps2;
  const int64_t m = st.m;
  double cell = st.cell;
  for (int attempt = 0; attempt < 24; ++attempt) {
    PointGrid g;
    g.build(P, n, cell);
    std::vector<float> d(m, -1.0f);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t s = 0; s < m; ++s) {
      const int64_t i = s * n / m;
      float best = std::numeric_limits<float>::infinity();
      for (int r = 0; r <= 1; ++r)
        g.ring(P, i, r, [&](int32_t j) {
          const float q = dist2(P, i, j);
          if (q > eps2 && q < best) best = q;
        });
      if (best <= float(cell * cell)) d[s] = std::sqrt(best);  // exact: nothing nearer hides outside the ring
    }
    std::vector<float> found;
    for (float v : d)
      if (v >= 0) found.push_back(v);
    if (2 * found.size() >= size_t(m) || cell > 4 * emax) {
      if (found.empty()) return cell;  // a single location (all duplicates): any scale works
      std::nth_element(found.begin(), found.begin() + found.size() / 2, found.end());
      return double(found[found.size() / 2]);
    }
    cell *= 2.0;
  }
  return cell;
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> oversegment(
    const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb, const c10::optional<torch::Tensor>& normals,
    double spacing, double k_thresh, int64_t min_size, int64_t max_size, double color_weight, double offset_weight,
    int64_t knn, int64_t normal_knn, double max_edge, int64_t normal_pick, int64_t refine_iters,
    double refine_plane_weight, double refine_color_weight, double merge_plane_rms, double merge_plane_cos,
    double merge_color, int64_t merge_max_size, const std::string& merge, int64_t num_threads) {
  const auto t_start = Clock::now();
  const CloudInputs in = check_cloud_inputs(xyz, rgb, normals, /*on_cuda=*/false);
  const int64_t n = in.n;
  check_oversegment_args(spacing, k_thresh, min_size, max_size, color_weight, offset_weight, knn, normal_knn, max_edge,
                         normal_pick, refine_iters, refine_plane_weight, refine_color_weight, merge_plane_rms,
                         merge_plane_cos, merge_color, merge_max_size, merge);
  const bool boruvka = merge == "boruvka";
  const bool has_rgb = in.rgb.defined();
  const bool has_normals = in.normals.defined();
  const torch::Tensor &xyz_c = in.xyz, &rgb_c = in.rgb, &nrm_c = in.normals;
  const int nt = int(std::max<int64_t>(1, num_threads));
  const float* P0 = xyz_c.data_ptr<float>();

  // ---- 1. shift to the minimum corner, spacing ------------------------------------------------
  auto t0 = Clock::now();
  double lo[3], hi[3];
  for (int k = 0; k < 3; ++k) {
    lo[k] = std::numeric_limits<double>::infinity();
    hi[k] = -lo[k];
  }
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) {
      const double v = P0[3 * i + k];
      TORCH_CHECK(std::isfinite(v), "xyz contains NaN or Inf; clean the cloud first");
      lo[k] = std::min(lo[k], v);
      hi[k] = std::max(hi[k], v);
    }
  std::vector<float> pts(3 * size_t(n));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) pts[3 * i + k] = float(double(P0[3 * i + k]) - lo[k]);
  const float* P = pts.data();
  const double ext[3] = {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
  const double emax = std::max({ext[0], ext[1], ext[2]});
  double s = spacing > 0 ? spacing : (n > 1 ? estimate_spacing(P, n, ext, nt) : 1.0);
  s = std::max(s, 1e-6 * std::max(emax, 1e-3));  // never a zero scale (all points duplicates)
  const double cell = 3.0 * s;
  TORCH_CHECK(emax / cell < double(kMaxCoord) - 8, "cloud extent ", emax, " m is over ", kMaxCoord,
              " grid cells of 3 x the point spacing (", s, " m): split or downsample the cloud");
  const double t_spacing = ms_since(t0);

  // ---- 2. grid + kNN --------------------------------------------------------------------------
  t0 = Clock::now();
  PointGrid grid;
  grid.build(P, n, cell);
  const int K = int(std::max(knn, normal_knn));
  const float rmax2 = float(max_edge * s) * float(max_edge * s);
  const int rings = int(std::ceil(max_edge * s / cell));
  std::vector<int32_t> nbr(size_t(n) * K, -1);
  std::vector<uint8_t> ncnt(n, 0);
  const int32_t ncell = grid.map.size();
  // One task per occupied cell: its 27 neighbouring cells are looked up once for all its points.
  // A point's search is final once its K-th distance lies within the cube already searched
  // (ring r covers r * cell plus the point's distance to its own cell's nearest face); the few
  // points not final after ring 1 search further rings alone.
#pragma omp parallel num_threads(nt)
  {
    std::vector<int32_t> cand;
#pragma omp for schedule(dynamic, 64)
    for (int32_t c = 0; c < ncell; ++c) {
      const int64_t p0 = grid.start[c], p1 = grid.start[c + 1];
      cand.clear();
      grid.ring(P, grid.order[p0], 0, [&](int32_t j) { cand.push_back(j); });
      grid.ring(P, grid.order[p0], 1, [&](int32_t j) { cand.push_back(j); });
      for (int64_t q = p0; q < p1; ++q) {
        const int64_t i = grid.order[q];
        TopK top(K);
        for (const int32_t j : cand) {
          if (j == i) continue;
          const float d = dist2(P, i, j);
          if (d <= rmax2) top.offer(d, j);
        }
        double face = cell;
        for (int k = 0; k < 3; ++k) {
          const double f = double(P[3 * i + k]) - std::floor(double(P[3 * i + k]) / cell) * cell;
          face = std::min({face, f, cell - f});
        }
        for (int r = 2; r <= rings; ++r) {
          const double cov = (r - 1) * cell + face;
          if (top.count == K && double(top.d2[K - 1]) <= cov * cov) break;
          if ((r - 1) * cell + face >= max_edge * s) break;  // everything within max_edge is in
          grid.ring(P, i, r, [&](int32_t j) {
            const float d = dist2(P, i, j);
            if (d <= rmax2) top.offer(d, j);
          });
        }
        ncnt[i] = uint8_t(top.count);
        for (int t = 0; t < top.count; ++t) nbr[size_t(i) * K + t] = top.id[t];
      }
    }
  }
  const double t_knn = ms_since(t0);

  // ---- 3. normals -----------------------------------------------------------------------------
  t0 = Clock::now();
  std::vector<float> vn(3 * size_t(n));
  if (has_normals) {
    const float* NI = nrm_c.data_ptr<float>();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) unit_normal(NI, i, vn.data());
  } else {
    std::vector<float> var(n);
    pca_normals(P, n, nbr, ncnt, K, int(normal_knn), vn, var, nt);
    if (normal_pick > 0) vn = pick_flattest_normals(n, nbr, ncnt, K, int(normal_pick), vn, var, nt);
  }
  const double t_normals = ms_since(t0);

  // ---- 4. edges -------------------------------------------------------------------------------
  // Undirected edge (i, j) when j is among i's knn nearest or i among j's; i emits it when j > i
  // or i is not in j's list, so each edge appears once, in order of i.
  t0 = Clock::now();
  const int kg = int(knn);
  std::vector<int64_t> deg(size_t(n) + 1, 0);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int m = std::min<int>(kg, ncnt[i]);
    int64_t c = 0;
    for (int q = 0; q < m; ++q) {
      const int64_t j = nbr[size_t(i) * K + q];
      c += emits_edge(nbr.data(), ncnt.data(), K, kg, i, j);
    }
    deg[i + 1] = c;
  }
  for (int64_t i = 0; i < n; ++i) deg[i + 1] += deg[i];
  const int64_t ne = deg[n];
  TORCH_CHECK(ne < (int64_t(1) << 31) - 1, "too many graph edges (", ne, ")");
  std::vector<int32_t> ea(ne), eb(ne);
  std::vector<float> ew(ne);
  const uint8_t* C = has_rgb ? rgb_c.data_ptr<uint8_t>() : nullptr;
  const float cw = float(color_weight) / 255.0f, ow = float(offset_weight / (2.0 * s));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int m = std::min<int>(kg, ncnt[i]);
    int64_t e = deg[i];
    for (int q = 0; q < m; ++q) {
      const int64_t j = nbr[size_t(i) * K + q];
      if (!emits_edge(nbr.data(), ncnt.data(), K, kg, i, j)) continue;
      ea[e] = int32_t(i);
      eb[e] = int32_t(j);
      ew[e] = edge_weight(P, C, vn.data(), cw, ow, i, j);
      ++e;
    }
  }
  const double t_edges = ms_since(t0);

  // ---- 5. sort + merge ------------------------------------------------------------------------
  t0 = Clock::now();
  sort_edge_arrays(ea, eb, ew, nt);
  const double t_sort = ms_since(t0);
  t0 = Clock::now();
  UnionFind uf{int32_t(n), float(k_thresh)};
  int merge_rounds = 0;  // Borůvka rounds that merged (each a fixed sequence of parallel loops)
  if (boruvka)
    merge_rounds = boruvka_fh_merge(uf, ea, eb, ew, float(k_thresh), min_size, max_size, nt);
  else
    fh_merge(uf, ea, eb, ew, float(k_thresh), min_size, max_size);
  const double t_merge = ms_since(t0);

  // ---- 6-7. coplanar merge, boundary exchange, dense labels ----------------------------------------------------
  t0 = Clock::now();
  int32_t ns = 0;
  std::vector<int32_t> lab = dense_components(uf, ns);
  int coplanar_rounds = 0;  // merge = "boruvka": sub-rounds of the coplanar merge that merged
  if (merge_plane_rms > 0 && ns > 1)
    ns = boruvka ? boruvka_merge_coplanar(P, C, n, lab, ns, ea, eb, s, merge_plane_rms, merge_plane_cos, merge_color,
                                          merge_max_size, 2, nt, &coplanar_rounds)
                 : merge_coplanar(P, C, n, lab, ns, ea, eb, s, merge_plane_rms, merge_plane_cos, merge_color,
                                  merge_max_size, 2, nt);
  if (refine_iters > 0 && ns > 1) {
    refine_segments(P, C, n, vn, nbr, ncnt, K, kg, s, int(refine_iters), refine_plane_weight, refine_color_weight, lab,
                    ns, nt);
    ns = boruvka ? boruvka_enforce_min_size(lab, ns, ea, eb, ew, min_size, nt)
                 : enforce_min_size(lab, ns, ea, eb, min_size);
  }
  const double t_refine = ms_since(t0);
  t0 = Clock::now();
  auto labels_t = torch::empty({n}, torch::kInt64);
  std::copy(lab.begin(), lab.end(), labels_t.data_ptr<int64_t>());
  auto normals_t = torch::from_blob(vn.data(), {n, 3}, torch::kFloat32).clone();
  const double t_lab = ms_since(t0);

  auto stats = torch::empty({15}, torch::kFloat64);
  const double vals[15] = {double(ne),       double(ns),          s,     t_spacing, t_knn,
                           t_normals,        t_edges,             t_sort, t_merge,  t_refine,
                           t_lab,            ms_since(t_start),   double(rings), double(merge_rounds),
                           double(coplanar_rounds)};
  std::copy(vals, vals + 15, stats.data_ptr<double>());
  return {labels_t, normals_t, stats};
}

}  // namespace bqnet_sp
