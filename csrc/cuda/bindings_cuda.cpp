// bqnet_model._C_cuda: the torch binding of the CUDA oversegmentation (superpoints_cuda.cu). Takes
// CUDA tensors, runs on torch's current stream of their device, allocates scratch through torch's
// caching allocator (so the memory goes back to torch's pool), returns CUDA label and normal
// tensors and the stats on the host. Same arguments as bqnet_model._C.oversegment less num_threads;
// merge "fh" and "boruvka" both run the Borůvka merges (the GPU form of FH). Releases the GIL.

#include <torch/extension.h>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>
#include <tuple>

#include "../sp_args.h"
#include "superpoints_cuda.h"

namespace bqnet_sp {
namespace {

void* torch_alloc(size_t bytes, void* stream) {
  return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(bytes, static_cast<cudaStream_t>(stream));
}
void torch_free(void* p) { c10::cuda::CUDACachingAllocator::raw_delete(p); }

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> oversegment_cuda(
    const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb, const c10::optional<torch::Tensor>& normals,
    double spacing, double k_thresh, int64_t min_size, int64_t max_size, double color_weight, double offset_weight,
    int64_t knn, int64_t normal_knn, double max_edge, int64_t normal_pick, int64_t refine_iters,
    double refine_plane_weight, double refine_color_weight, double merge_plane_rms, double merge_plane_cos,
    double merge_color, int64_t merge_max_size, const std::string& merge) {
  const CloudInputs in = check_cloud_inputs(xyz, rgb, normals, /*on_cuda=*/true);  // ATen ops guard their device
  const int64_t n = in.n;
  check_oversegment_args(spacing, k_thresh, min_size, max_size, color_weight, offset_weight, knn, normal_knn, max_edge,
                         normal_pick, refine_iters, refine_plane_weight, refine_color_weight, merge_plane_rms,
                         merge_plane_cos, merge_color, merge_max_size, merge);
  const c10::cuda::CUDAGuard guard(xyz.device());
  const torch::Tensor &xyz_c = in.xyz, &rgb_c = in.rgb, &nrm_c = in.normals;
  const par::Params p{spacing,       k_thresh,   min_size,    max_size,     color_weight,
                      offset_weight, knn,        normal_knn,  max_edge,     normal_pick,
                      refine_iters,  refine_plane_weight, refine_color_weight, merge_plane_rms, merge_plane_cos,
                      merge_color,   merge_max_size};
  auto labels = torch::empty({n}, xyz.options().dtype(torch::kInt64));
  auto nrm_out = torch::empty({n, 3}, xyz.options());
  auto stats = torch::empty({par::kNumStats}, torch::TensorOptions().dtype(torch::kFloat64));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(xyz.device().index()).stream();
  try {
    pybind11::gil_scoped_release no_gil;
    cuda::oversegment_device(xyz_c.data_ptr<float>(), rgb_c.defined() ? rgb_c.data_ptr<uint8_t>() : nullptr,
                             nrm_c.defined() ? nrm_c.data_ptr<float>() : nullptr, n, p, labels.data_ptr<int64_t>(),
                             nrm_out.data_ptr<float>(), stats.data_ptr<double>(), static_cast<void*>(stream),
                             &torch_alloc, &torch_free);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "bqnet_model._C_cuda: ", e.what());
  }
  return {labels, nrm_out, stats};
}

}  // namespace
}  // namespace bqnet_sp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "bqnet_model CUDA kernels (csrc/cuda/): the GPU oversegmentation";
  m.def("oversegment", &bqnet_sp::oversegment_cuda,
        "Superpoints of a CUDA point cloud (the parallel port, Boruvka merges); returns (labels int64 (N,) CUDA, "
        "normals float32 (N, 3) CUDA, stats float64 (15,) CPU).",
        py::arg("xyz"), py::arg("rgb") = py::none(), py::arg("normals") = py::none(), py::arg("spacing"),
        py::arg("k_thresh"), py::arg("min_size"), py::arg("max_size"), py::arg("color_weight"),
        py::arg("offset_weight"), py::arg("knn"), py::arg("normal_knn"), py::arg("max_edge"), py::arg("normal_pick"),
        py::arg("refine_iters"), py::arg("refine_plane_weight"), py::arg("refine_color_weight"),
        py::arg("merge_plane_rms"), py::arg("merge_plane_cos"), py::arg("merge_color"), py::arg("merge_max_size"),
        py::arg("merge") = "boruvka");
}
