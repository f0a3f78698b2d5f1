// Argument checks of the oversegmentation entry points (superpoints.cpp, superpoints_parallel.cpp and
// the CUDA binding, csrc/cuda/bindings_cuda.cpp): one set of messages for every path, the input
// tensors' checks included.
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <string>

#include "sp_point_math.h"

namespace bqnet_sp {

inline void check_oversegment_args(double spacing, double k_thresh, int64_t min_size, int64_t max_size,
                                   double color_weight, double offset_weight, int64_t knn, int64_t normal_knn,
                                   double max_edge, int64_t normal_pick, int64_t refine_iters,
                                   double refine_plane_weight, double refine_color_weight, double merge_plane_rms,
                                   double merge_plane_cos, double merge_color, int64_t merge_max_size,
                                   const std::string& merge) {
  TORCH_CHECK(spacing >= 0 && std::isfinite(spacing), "spacing must be >= 0 (0 = estimate)");
  TORCH_CHECK(k_thresh >= 0 && std::isfinite(k_thresh), "k_thresh must be finite and >= 0");
  TORCH_CHECK(min_size >= 0 && max_size >= 0, "min_size and max_size must be >= 0");
  TORCH_CHECK(color_weight >= 0 && offset_weight >= 0, "color_weight and offset_weight must be >= 0");
  TORCH_CHECK(knn >= 1 && knn <= kMaxK && normal_knn >= 2 && normal_knn <= kMaxK, "knn / normal_knn out of range");
  TORCH_CHECK(max_edge > 0 && std::isfinite(max_edge), "max_edge must be > 0");
  TORCH_CHECK(normal_pick >= 0 && normal_pick <= kMaxK, "normal_pick must be in [0, ", kMaxK, "]");
  TORCH_CHECK(refine_iters >= 0 && refine_iters <= 100, "refine_iters must be in [0, 100]");
  TORCH_CHECK(refine_plane_weight >= 0 && std::isfinite(refine_plane_weight) && refine_color_weight >= 0 &&
                  std::isfinite(refine_color_weight),
              "refine_plane_weight and refine_color_weight must be finite and >= 0");
  TORCH_CHECK(merge_plane_rms >= 0 && std::isfinite(merge_plane_rms) && merge_color >= 0 && std::isfinite(merge_color),
              "merge_plane_rms and merge_color must be finite and >= 0");
  TORCH_CHECK(merge_plane_cos >= 0 && merge_plane_cos <= 1, "merge_plane_cos must be in [0, 1]");
  TORCH_CHECK(merge_max_size >= 0, "merge_max_size must be >= 0");
  TORCH_CHECK(merge == "fh" || merge == "boruvka",
              "merge must be 'fh' (sequential FH) or 'boruvka' (its parallel form), got '", merge, "'");
}

// The cloud's tensors, checked and contiguous; rgb / normals undefined when not given.
struct CloudInputs {
  torch::Tensor xyz, rgb, normals;
  int64_t n = 0;
};

// xyz float32 (N, 3) on the CPU (on_cuda false) or a CUDA device; rgb uint8 (N, 3) and normals float32
// (N, 3) optional, on xyz's device.
inline CloudInputs check_cloud_inputs(const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb,
                                      const c10::optional<torch::Tensor>& normals, bool on_cuda) {
  TORCH_CHECK(xyz.dim() == 2 && xyz.size(1) == 3 && xyz.scalar_type() == torch::kFloat32 &&
                  (on_cuda ? xyz.is_cuda() : xyz.device().is_cpu()),
              "xyz must be a float32 ", on_cuda ? "CUDA" : "CPU", " tensor of shape (N, 3)");
  CloudInputs in;
  in.n = xyz.size(0);
  TORCH_CHECK(in.n > 0 && in.n < (int64_t(1) << 31) - 1, "point count out of range: ", in.n);
  const char* where = on_cuda ? " on xyz's device" : "";
  in.xyz = xyz.contiguous();
  if (rgb.has_value() && rgb->defined()) {
    TORCH_CHECK(rgb->dim() == 2 && rgb->size(0) == in.n && rgb->size(1) == 3 && rgb->scalar_type() == torch::kUInt8 &&
                    rgb->device() == xyz.device(),
                "rgb must be uint8 of shape (N, 3)", where);
    in.rgb = rgb->contiguous();
  }
  if (normals.has_value() && normals->defined()) {
    TORCH_CHECK(normals->dim() == 2 && normals->size(0) == in.n && normals->size(1) == 3 &&
                    normals->scalar_type() == torch::kFloat32 && normals->device() == xyz.device(),
                "normals must be float32 of shape (N, 3)", where);
    in.normals = normals->contiguous();
  }
  return in;
}

}  // namespace bqnet_sp
