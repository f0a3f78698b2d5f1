// The entry point of the CUDA oversegmentation (superpoints_cuda.cu), callable from a g++-compiled
// binding (bindings_cuda.cpp) without CUDA or CUB headers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../sp_params.h"

namespace bqnet_sp {
namespace cuda {

// Device allocator hooks (both null: cudaMallocAsync); stream is a cudaStream_t.
using AllocFn = void* (*)(size_t bytes, void* stream);
using FreeFn = void (*)(void* ptr);

// xyz (n, 3) float32, rgb (n, 3) uint8 or null, normals (n, 3) float32 or null, labels (n) int64,
// normals_out (n, 3) float32: device pointers; stats: kNumStats doubles on the host. Throws
// std::invalid_argument for clouds the CPU path refuses, std::runtime_error for CUDA errors.
void oversegment_device(const float* xyz, const uint8_t* rgb, const float* normals, int64_t n, const par::Params& p,
                        int64_t* labels, float* normals_out, double* stats, void* stream, AllocFn alloc,
                        FreeFn release);

}  // namespace cuda
}  // namespace bqnet_sp
