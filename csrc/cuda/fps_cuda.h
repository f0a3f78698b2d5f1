// The entry point of the CUDA farthest point sampling (fps_cuda.cu), callable from the g++-compiled
// binding (bindings_cuda.cpp) without CUDA headers. The rules are those of
// bqnet_model.model.query_sampling.farthest_point_sample (the pointnet2 kernel's), which the kernel
// reproduces index for index.
#pragma once

#include <cstdint>

namespace bqnet_fps {
namespace cuda {

// Whether one row's running distances (S floats) fit the shared memory of a block on `device`;
// when not, fps_device needs a (B, S) float32 scratch buffer in global memory.
bool fps_fits_shared(int64_t S, int device);

// xyz (B, S, 3) float32, lengths (B) int64 (real points of each row, each in [1, S]; the rest of the
// row is padding), out (B, n) int64, scratch (B, S) float32 or null when fps_fits_shared: device
// pointers on `device`; stream is a cudaStream_t. One block per row. Throws std::runtime_error for
// CUDA errors (launch or configuration), std::invalid_argument for sizes out of range.
void fps_device(const float* xyz, const int64_t* lengths, int64_t B, int64_t S, int64_t n, int64_t* out,
                float* scratch, int device, void* stream);

}  // namespace cuda
}  // namespace bqnet_fps
