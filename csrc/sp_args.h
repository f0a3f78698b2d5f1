// Argument checks of the oversegmentation entry points (superpoints.cpp, superpoints_parallel.cpp and
// the CUDA binding, csrc/cuda/bindings_cuda.cpp): one set of messages for every path.
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

}  // namespace bqnet_sp
