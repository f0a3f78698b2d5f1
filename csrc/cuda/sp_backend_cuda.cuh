// The CUDA backend of the parallel port (csrc/sp_parallel.h lists what a backend provides): every
// for_each is one kernel launch on the caller's stream (a thread per element), scan and sort_pairs
// are CUB's (DeviceScan::InclusiveSum; DeviceRadixSort::SortPairs, which is stable, like the host
// backend's std::stable_sort), memory comes from the allocator the binding passes in (torch's
// caching allocator) or, without one, from cudaMallocAsync on the stream. to_host is the only
// synchronising call: the scalars a data-dependent loop needs (sp_parallel.h). Errors throw
// std::runtime_error naming the call.
#pragma once

#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../sp_hd.h"

namespace bqnet_sp {
namespace par {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

template <class F>
__global__ void for_each_kernel(int64_t n, F f) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}

// Where device memory comes from: alloc(bytes, stream as void*) / release(ptr); null = cudaMallocAsync.
struct DeviceAllocator {
  void* (*alloc)(size_t bytes, void* stream) = nullptr;
  void (*release)(void* ptr) = nullptr;
};

struct CudaBackend {
  cudaStream_t stream = nullptr;
  DeviceAllocator allocator;

  void* alloc(size_t bytes) {
    if (allocator.alloc) {
      void* p = allocator.alloc(bytes, static_cast<void*>(stream));
      if (!p) throw std::runtime_error("device allocation of " + std::to_string(bytes) + " bytes failed");
      return p;
    }
    void* p = nullptr;
    cuda_check(cudaMallocAsync(&p, bytes, stream), "cudaMallocAsync");
    return p;
  }
  void release(void* p) {  // called from destructors: never throws
    if (allocator.release)
      allocator.release(p);
    else
      cudaFreeAsync(p, stream);
  }

  template <class F>
  void for_each(int64_t n, const F& f) {
    if (n <= 0) return;
    constexpr int kThreads = 256;
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    for_each_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(n, f);
    cuda_check(cudaGetLastError(), "kernel launch");
  }

  int64_t scan(const int64_t* in, int64_t* out, int64_t n) {
    cuda_check(cudaMemsetAsync(out, 0, sizeof(int64_t), stream), "cudaMemsetAsync");
    if (n > 0) {
      size_t bytes = 0;
      cuda_check(cub::DeviceScan::InclusiveSum(nullptr, bytes, in, out + 1, static_cast<int>(n), stream),
                 "DeviceScan (size)");
      void* tmp = alloc(bytes + 16);
      const cudaError_t e = cub::DeviceScan::InclusiveSum(tmp, bytes, in, out + 1, static_cast<int>(n), stream);
      release(tmp);
      cuda_check(e, "DeviceScan");
    }
    int64_t total = 0;
    to_host(&total, out + n, sizeof(total));
    return total;
  }

  template <class K>
  void sort_pairs(K* key, int32_t* val, int64_t n, int bits) {
    if (n <= 1) return;
    K* k2 = static_cast<K*>(alloc(sizeof(K) * size_t(n)));
    int32_t* v2 = static_cast<int32_t*>(alloc(sizeof(int32_t) * size_t(n)));
    size_t bytes = 0;
    const int ni = static_cast<int>(n);
    cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, bytes, key, k2, val, v2, ni, 0, bits, stream);
    if (e == cudaSuccess) {
      void* tmp = alloc(bytes + 16);
      e = cub::DeviceRadixSort::SortPairs(tmp, bytes, key, k2, val, v2, ni, 0, bits, stream);
      release(tmp);
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(key, k2, sizeof(K) * size_t(n), cudaMemcpyDeviceToDevice, stream);
    if (e == cudaSuccess) e = cudaMemcpyAsync(val, v2, sizeof(int32_t) * size_t(n), cudaMemcpyDeviceToDevice, stream);
    release(k2);
    release(v2);
    cuda_check(e, "DeviceRadixSort");
  }

  void copy(void* dst, const void* src, size_t bytes) {
    if (bytes) cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
  }
  void to_host(void* dst, const void* src, size_t bytes) {
    cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync (to host)");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  }
  // Synchronous: the source is often a host stack variable.
  void from_host(void* dst, const void* src, size_t bytes) {
    cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (from host)");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  }
  void sync() { cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }
};

}  // namespace par
}  // namespace bqnet_sp
