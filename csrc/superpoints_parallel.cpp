// bqnet_model._C.oversegment_parallel: the parallel port of the online superpoints (sp_parallel*.h,
// the kernels the CUDA build runs on the GPU) on the host backend (sp_backend_host.h). Same
// arguments and outputs as oversegment (superpoints.cpp); merge "fh" and "boruvka" both run the
// Borůvka merges (the port has no sequential merge). Its labels equal oversegment's with
// merge = "boruvka" (test/test_superpoints_parallel.py). strict_memory: buffers inaccessible to the
// host outside backend calls, as device memory is (sp_backend_host.h; a fault, not an error).

#include <torch/extension.h>

#include <stdexcept>
#include <string>

#include "kernels.h"
#include "sp_args.h"
#include "sp_backend_host.h"
#include "sp_parallel_run.h"

namespace bqnet_sp {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> oversegment_parallel(
    const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb, const c10::optional<torch::Tensor>& normals,
    double spacing, double k_thresh, int64_t min_size, int64_t max_size, double color_weight, double offset_weight,
    int64_t knn, int64_t normal_knn, double max_edge, int64_t normal_pick, int64_t refine_iters,
    double refine_plane_weight, double refine_color_weight, double merge_plane_rms, double merge_plane_cos,
    double merge_color, int64_t merge_max_size, const std::string& merge, int64_t num_threads,
    bool strict_memory) {
  TORCH_CHECK(xyz.dim() == 2 && xyz.size(1) == 3 && xyz.scalar_type() == torch::kFloat32 && xyz.device().is_cpu(),
              "xyz must be a float32 CPU tensor of shape (N, 3)");
  const int64_t n = xyz.size(0);
  TORCH_CHECK(n > 0 && n < (int64_t(1) << 31) - 1, "point count out of range: ", n);
  check_oversegment_args(spacing, k_thresh, min_size, max_size, color_weight, offset_weight, knn, normal_knn, max_edge,
                         normal_pick, refine_iters, refine_plane_weight, refine_color_weight, merge_plane_rms,
                         merge_plane_cos, merge_color, merge_max_size, merge);
  torch::Tensor xyz_c = xyz.contiguous(), rgb_c, nrm_c;
  if (rgb.has_value() && rgb->defined()) {
    TORCH_CHECK(rgb->dim() == 2 && rgb->size(0) == n && rgb->size(1) == 3 && rgb->scalar_type() == torch::kUInt8,
                "rgb must be uint8 of shape (N, 3)");
    rgb_c = rgb->contiguous();
  }
  if (normals.has_value() && normals->defined()) {
    TORCH_CHECK(normals->dim() == 2 && normals->size(0) == n && normals->size(1) == 3 &&
                    normals->scalar_type() == torch::kFloat32,
                "normals must be float32 of shape (N, 3)");
    nrm_c = normals->contiguous();
  }
  const par::Params p{spacing,      k_thresh,     min_size,           max_size,          color_weight,
                      offset_weight, knn,         normal_knn,         max_edge,          normal_pick,
                      refine_iters, refine_plane_weight, refine_color_weight, merge_plane_rms, merge_plane_cos,
                      merge_color,  merge_max_size};
  auto labels = torch::empty({n}, torch::kInt64);
  auto nrm_out = torch::empty({n, 3}, torch::kFloat32);
  auto stats = torch::empty({par::kNumStats}, torch::kFloat64);
  par::HostBackend be;
  be.nt = int(std::max<int64_t>(1, num_threads));
  be.strict = strict_memory;
  try {
    par::oversegment(be, xyz_c.data_ptr<float>(), rgb_c.defined() ? rgb_c.data_ptr<uint8_t>() : nullptr,
                     nrm_c.defined() ? nrm_c.data_ptr<float>() : nullptr, n, p, labels.data_ptr<int64_t>(),
                     nrm_out.data_ptr<float>(), stats.data_ptr<double>());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
  return {labels, nrm_out, stats};
}

}  // namespace bqnet_sp
