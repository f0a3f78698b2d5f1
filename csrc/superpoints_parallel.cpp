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
  const CloudInputs in = check_cloud_inputs(xyz, rgb, normals, /*on_cuda=*/false);
  const int64_t n = in.n;
  check_oversegment_args(spacing, k_thresh, min_size, max_size, color_weight, offset_weight, knn, normal_knn, max_edge,
                         normal_pick, refine_iters, refine_plane_weight, refine_color_weight, merge_plane_rms,
                         merge_plane_cos, merge_color, merge_max_size, merge);
  const torch::Tensor &xyz_c = in.xyz, &rgb_c = in.rgb, &nrm_c = in.normals;
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
