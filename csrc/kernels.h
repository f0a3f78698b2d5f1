// Entry points of the csrc kernels, bound into bqnet_model._C by bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <string>
#include <tuple>

namespace bqnet_sp {

// Online superpoints of a point cloud (superpoints.cpp); see bqnet_model/superpoints.py.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> oversegment(
    const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb, const c10::optional<torch::Tensor>& normals,
    double spacing, double k_thresh, int64_t min_size, int64_t max_size, double color_weight, double offset_weight,
    int64_t knn, int64_t normal_knn, double max_edge, int64_t normal_pick, int64_t refine_iters,
    double refine_plane_weight, double refine_color_weight, double merge_plane_rms, double merge_plane_cos,
    double merge_color, int64_t merge_max_size, const std::string& merge, int64_t num_threads);

// The parallel port of oversegment (superpoints_parallel.cpp, the kernels of the CUDA build) on the
// host: same arguments and outputs; always the Borůvka merges.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> oversegment_parallel(
    const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb, const c10::optional<torch::Tensor>& normals,
    double spacing, double k_thresh, int64_t min_size, int64_t max_size, double color_weight, double offset_weight,
    int64_t knn, int64_t normal_knn, double max_edge, int64_t normal_pick, int64_t refine_iters,
    double refine_plane_weight, double refine_color_weight, double merge_plane_rms, double merge_plane_cos,
    double merge_color, int64_t merge_max_size, const std::string& merge, int64_t num_threads,
    bool strict_memory);

// FH on a given weighted edge list (mesh_segmentation.cpp): (dense labels int64 (V,), S).
std::tuple<torch::Tensor, int64_t> segment_graph(const torch::Tensor& a, const torch::Tensor& b,
                                                 const torch::Tensor& w, int64_t num_nodes, double k_thresh,
                                                 int64_t min_size, int64_t num_threads);

// ScanNet-style FH segmentation of a triangle mesh (mesh_segmentation.cpp): (labels int64 (V,), S).
std::tuple<torch::Tensor, int64_t> segment_mesh(const torch::Tensor& verts, const torch::Tensor& faces,
                                                double k_thresh, int64_t min_size, int64_t num_threads);

}  // namespace bqnet_sp
