// Parameters and stats layout of the parallel port (sp_parallel_run.h), in a header of their own
// so that the bindings (csrc/superpoints_parallel.cpp, csrc/cuda/bindings_cuda.cpp) need none of
// the kernels.
#pragma once

#include <cstdint>

namespace bqnet_sp {
namespace par {

// SuperpointParams (bqnet_model/superpoint_params.py) less merge: the port always runs the
// Borůvka merges.
struct Params {
  double spacing, k_thresh;
  int64_t min_size, max_size;
  double color_weight, offset_weight;
  int64_t knn, normal_knn;
  double max_edge;
  int64_t normal_pick, refine_iters;
  double refine_plane_weight, refine_color_weight, merge_plane_rms, merge_plane_cos, merge_color;
  int64_t merge_max_size;
};

// Stats as the CPU kernel returns them (stats[0..14]: edges, segments, spacing, 9 stage times in
// ms, rings, merge rounds, coplanar sub-rounds).
constexpr int kNumStats = 15;

}  // namespace par
}  // namespace bqnet_sp
