// bqnet_model._C_cuda: the torch bindings of the CUDA oversegmentation (superpoints_cuda.cu) and of the
// farthest point sampling (fps_cuda.cu). The oversegmentation takes
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
#include "fps_cuda.h"
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

namespace bqnet_fps {
namespace {

// xyz float32 (B, S, 3) CUDA, lengths int64 (B,) on its device with every value in [1, S] (the real
// points of each row; the rest is padding), n >= 1 seeds -> (B, n) int64 on that device. The value
// check of lengths reads two numbers back (one sync); the kernel then runs on the current stream.
// Known bug: on the H200 (torch 2.11, 2026-12-01) every error raised by this function (a TORCH_CHECK
// with or without values in its message, or a std::runtime_error) killed the process with SIGSEGV,
// while the oversegmentation's errors in this same module raised; the cause is not found. Python
// reaches it only through bqnet_model.model.query_sampling.fps_cuda_kernel(), which makes these checks
// first, so no bad call gets here.
torch::Tensor farthest_point_sample_cuda(const torch::Tensor& xyz, const torch::Tensor& lengths, int64_t n) {
  TORCH_CHECK(xyz.is_cuda() && xyz.dim() == 3 && xyz.size(2) == 3 && xyz.scalar_type() == torch::kFloat32,
              "xyz must be a float32 CUDA tensor of shape (B, S, 3), got ", xyz.scalar_type(), " ", xyz.sizes(),
              " on ", xyz.device());
  const int64_t B = xyz.size(0), S = xyz.size(1);
  TORCH_CHECK(S >= 1 && S <= int64_t(0x7fffffff) / 3, "xyz must have between 1 and ", int64_t(0x7fffffff) / 3,
              " points per row, got ", S);
  TORCH_CHECK(B <= int64_t(0x7fffffff), "too many rows: ", B);
  TORCH_CHECK(n >= 1 && n <= int64_t(0x7fffffff), "n (seeds per row) must be in [1, 2^31 - 1], got ", n);
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B && lengths.scalar_type() == torch::kInt64 &&
                  lengths.device() == xyz.device(),
              "lengths must be an int64 tensor of shape (", B, ",) on xyz's device (", xyz.device(), "), got ",
              lengths.scalar_type(), " ", lengths.sizes(), " on ", lengths.device());
  const c10::cuda::CUDAGuard guard(xyz.device());
  auto out = torch::empty({B, n}, xyz.options().dtype(torch::kInt64));
  if (B == 0) return out;
  const auto range = torch::aminmax(lengths);
  const int64_t lo = std::get<0>(range).item<int64_t>(), hi = std::get<1>(range).item<int64_t>();
  TORCH_CHECK(lo >= 1 && hi <= S, "lengths must lie in [1, ", S, "] (real points per row, padding after them), got [",
              lo, ", ", hi, "]");
  const torch::Tensor xyz_c = xyz.contiguous(), len_c = lengths.contiguous();
  const int device = xyz.device().index();
  torch::Tensor scratch;
  try {
    if (!cuda::fps_fits_shared(S, device)) scratch = torch::empty({B, S}, xyz.options());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
    pybind11::gil_scoped_release no_gil;
    cuda::fps_device(xyz_c.data_ptr<float>(), len_c.data_ptr<int64_t>(), B, S, n, out.data_ptr<int64_t>(),
                     scratch.defined() ? scratch.data_ptr<float>() : nullptr, device, static_cast<void*>(stream));
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "bqnet_model._C_cuda: ", e.what());
  }
  return out;
}

}  // namespace
}  // namespace bqnet_fps

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "bqnet_model CUDA kernels (csrc/cuda/): the GPU oversegmentation and farthest point sampling";
  m.def("oversegment", &bqnet_sp::oversegment_cuda,
        "Superpoints of a CUDA point cloud (the parallel port, Boruvka merges); returns (labels int64 (N,) CUDA, "
        "normals float32 (N, 3) CUDA, stats float64 (15,) CPU).",
        py::arg("xyz"), py::arg("rgb") = py::none(), py::arg("normals") = py::none(), py::arg("spacing"),
        py::arg("k_thresh"), py::arg("min_size"), py::arg("max_size"), py::arg("color_weight"),
        py::arg("offset_weight"), py::arg("knn"), py::arg("normal_knn"), py::arg("max_edge"), py::arg("normal_pick"),
        py::arg("refine_iters"), py::arg("refine_plane_weight"), py::arg("refine_color_weight"),
        py::arg("merge_plane_rms"), py::arg("merge_plane_cos"), py::arg("merge_color"), py::arg("merge_max_size"),
        py::arg("merge") = "boruvka");
  m.def("farthest_point_sample", &bqnet_fps::farthest_point_sample_cuda,
        "Farthest point sampling by the pointnet2 kernel's rules (bqnet_model.model.query_sampling."
        "farthest_point_sample's indices) in one launch; xyz float32 (B, S, 3) CUDA, lengths int64 (B,) real "
        "points per row (padding after them), n seeds; returns int64 (B, n) on xyz's device.",
        py::arg("xyz"), py::arg("lengths"), py::arg("n"));
}
