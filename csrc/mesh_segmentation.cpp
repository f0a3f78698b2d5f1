// Graph segmentation kernels on given graphs: Felzenszwalb-Huttenlocher on any weighted edge list,
// and ScanNet-style segmentation of a triangle mesh.
//
// Why a mesh path: when the map is a mesh (ScanNet's *_vh_clean_2.ply), the superpoints the
// original BQNet/IPDN pipeline uses are those of ScanNet's segmentator: FH on the mesh edges,
// weighted by the difference of vertex normals, with convex creases made cheaper (their weight is
// squared) so that segments break at concave junctions (object on floor) rather than across the
// rounded convex parts of an object. Facts of that method (ScanNet's Segmentator README and
// source, read for reference): vertex normal = mean of the unit normals of the faces around the
// vertex (not renormalised); three edges per face (i1 i2, i1 i3, i3 i2), shared edges repeated;
// weight 1 - n_a . n_b, squared when n_b . (p_b - p_a) > 0; FH with threshold k / |C| (|C| in
// vertices), then segments below segMinVerts join across the edges in weight order.
// Ours sorts with a stable sort (ties keep face order), so exact ties may resolve differently.

#include <torch/extension.h>

#include "kernels.h"
#include "sp_common.h"

namespace bqnet_sp {

// Sorted-edge Felzenszwalb merge -> dense labels (int64) and their count: the step the point graph
// and the mesh graph share.
static std::tuple<torch::Tensor, int64_t> felzenszwalb_labels(std::vector<int32_t>& ea, std::vector<int32_t>& eb,
                                                              std::vector<float>& ew, int64_t num_nodes,
                                                              double k_thresh, int64_t min_size, int64_t num_threads) {
  const int nt = int(std::max<int64_t>(1, num_threads));
  sort_edge_arrays(ea, eb, ew, nt);
  UnionFind uf{int32_t(num_nodes), float(k_thresh)};
  fh_merge(uf, ea, eb, ew, float(k_thresh), min_size);
  int32_t ns = 0;
  const std::vector<int32_t> lab = dense_components(uf, ns);
  auto out = torch::empty({num_nodes}, torch::kInt64);
  std::copy(lab.begin(), lab.end(), out.data_ptr<int64_t>());
  return {out, int64_t(ns)};
}

std::tuple<torch::Tensor, int64_t> segment_graph(const torch::Tensor& a, const torch::Tensor& b,
                                                 const torch::Tensor& w, int64_t num_nodes, double k_thresh,
                                                 int64_t min_size, int64_t num_threads) {
  TORCH_CHECK(a.dim() == 1 && b.dim() == 1 && w.dim() == 1, "edges must be 1-D");
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(0) == w.size(0), "edge arrays differ in length");
  TORCH_CHECK(a.scalar_type() == torch::kInt32 && b.scalar_type() == torch::kInt32, "edge ends must be int32");
  TORCH_CHECK(w.scalar_type() == torch::kFloat32, "edge weights must be float32");
  TORCH_CHECK(num_nodes > 0 && num_nodes < (int64_t(1) << 31) - 1, "num_nodes out of range: ", num_nodes);
  TORCH_CHECK(k_thresh >= 0 && std::isfinite(k_thresh), "k_thresh must be finite and >= 0");
  const int64_t ne = a.size(0);
  TORCH_CHECK(ne < (int64_t(1) << 31) - 1, "too many edges (", ne, ")");
  const auto ac = a.contiguous(), bc = b.contiguous(), wc = w.contiguous();
  const int32_t* A = ac.data_ptr<int32_t>();
  const int32_t* B = bc.data_ptr<int32_t>();
  const float* W = wc.data_ptr<float>();
  std::vector<int32_t> ea(A, A + ne), eb(B, B + ne);
  std::vector<float> ew(ne);
  for (int64_t i = 0; i < ne; ++i) {
    TORCH_CHECK(A[i] >= 0 && A[i] < num_nodes && B[i] >= 0 && B[i] < num_nodes, "edge ", i, " has an end outside 0..",
                num_nodes - 1);
    TORCH_CHECK(std::isfinite(W[i]), "edge ", i, " has weight ", W[i], " (need a finite weight)");
    ew[i] = W[i] > 0.0f ? W[i] : 0.0f;  // negative (rounding) and -0.0 -> +0.0: the radix sort needs >= 0
  }
  return felzenszwalb_labels(ea, eb, ew, num_nodes, k_thresh, min_size, num_threads);
}

std::tuple<torch::Tensor, int64_t> segment_mesh(const torch::Tensor& verts, const torch::Tensor& faces,
                                                double k_thresh, int64_t min_size, int64_t num_threads) {
  TORCH_CHECK(verts.dim() == 2 && verts.size(1) == 3 && verts.scalar_type() == torch::kFloat32,
              "vertices must be float32 (V, 3)");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3 && faces.scalar_type() == torch::kInt32,
              "faces must be int32 (F, 3) triangles");
  const int64_t nv = verts.size(0), nf = faces.size(0);
  TORCH_CHECK(nv > 0 && nv < (int64_t(1) << 31) - 1, "vertex count out of range: ", nv);
  TORCH_CHECK(3 * nf < (int64_t(1) << 31) - 1, "too many faces (", nf, ")");
  const auto vc = verts.contiguous(), fc = faces.contiguous();
  const float* P = vc.data_ptr<float>();
  const int32_t* F = fc.data_ptr<int32_t>();
  for (int64_t i = 0; i < 3 * nf; ++i)
    TORCH_CHECK(F[i] >= 0 && F[i] < nv, "face ", i / 3, " refers to vertex ", F[i], " of ", nv);
  // Vertex normal: mean of the unit normals of its faces (degenerate faces add a zero vector).
  std::vector<double> nsum(3 * size_t(nv), 0.0);
  std::vector<int32_t> cnt(nv, 0);
  for (int64_t f = 0; f < nf; ++f) {
    const int32_t* t = F + 3 * f;
    const float* p1 = P + 3 * size_t(t[0]);
    const float* p2 = P + 3 * size_t(t[1]);
    const float* p3 = P + 3 * size_t(t[2]);
    const double u[3] = {double(p2[0]) - p1[0], double(p2[1]) - p1[1], double(p2[2]) - p1[2]};
    const double v[3] = {double(p3[0]) - p1[0], double(p3[1]) - p1[1], double(p3[2]) - p1[2]};
    double c[3] = {u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]};
    const double len = std::sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    for (int k = 0; k < 3; ++k) c[k] = len > 0 ? c[k] / len : 0.0;
    for (int j = 0; j < 3; ++j) {
      ++cnt[t[j]];
      for (int k = 0; k < 3; ++k) nsum[3 * size_t(t[j]) + k] += c[k];
    }
  }
  std::vector<float> nrm(3 * size_t(nv), 0.0f);
  for (int64_t v = 0; v < nv; ++v)
    if (cnt[v] > 0)
      for (int k = 0; k < 3; ++k) nrm[3 * v + k] = float(nsum[3 * v + k] / cnt[v]);
  // Three edges per face, weighted by the normal difference; convex creases (the far vertex's
  // normal points away from the near one) squared, i.e. made cheaper to merge across.
  std::vector<int32_t> ea(3 * nf), eb(3 * nf);
  std::vector<float> ew(3 * nf);
  for (int64_t f = 0; f < nf; ++f) {
    const int32_t* t = F + 3 * f;
    const int32_t ends[3][2] = {{t[0], t[1]}, {t[0], t[2]}, {t[2], t[1]}};
    for (int j = 0; j < 3; ++j) {
      const int32_t a = ends[j][0], b = ends[j][1];
      const float* na = &nrm[3 * size_t(a)];
      const float* nb = &nrm[3 * size_t(b)];
      double d[3] = {double(P[3 * size_t(b)]) - P[3 * size_t(a)], double(P[3 * size_t(b) + 1]) - P[3 * size_t(a) + 1],
                     double(P[3 * size_t(b) + 2]) - P[3 * size_t(a) + 2]};
      const double dot = double(na[0]) * nb[0] + double(na[1]) * nb[1] + double(na[2]) * nb[2];
      const double side = nb[0] * d[0] + nb[1] * d[1] + nb[2] * d[2];  // sign only: no need to normalise d
      double ww = 1.0 - dot;
      if (side > 0) ww *= ww;
      ea[3 * f + j] = a;
      eb[3 * f + j] = b;
      ew[3 * f + j] = ww > 0 ? float(ww) : 0.0f;
    }
  }
  return felzenszwalb_labels(ea, eb, ew, nv, k_thresh, min_size, num_threads);
}

}  // namespace bqnet_sp
