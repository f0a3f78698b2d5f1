// The CUDA oversegmentation: the parallel port (csrc/sp_parallel_run.h and the headers it
// includes, the same code the host backend runs in bqnet_model._C.oversegment_parallel) on the
// CUDA backend (sp_backend_cuda.cuh). No torch header here: the binding (bindings_cuda.cpp)
// converts tensors, picks the stream and the allocator. Built by setup.py into bqnet_model._C_cuda
// with -fmad=false --prec-div=true --prec-sqrt=true (float bits as on the host) and
// --extended-lambda (the loop bodies are __host__ __device__ lambdas).

#include <cuda_runtime.h>

#include "../sp_parallel_run.h"
#include "sp_backend_cuda.cuh"
#include "superpoints_cuda.h"

namespace bqnet_sp {
namespace cuda {

void oversegment_device(const float* xyz, const uint8_t* rgb, const float* normals, int64_t n, const par::Params& p,
                        int64_t* labels, float* normals_out, double* stats, void* stream, AllocFn alloc,
                        FreeFn release) {
  par::CudaBackend be;
  be.stream = static_cast<cudaStream_t>(stream);
  if (alloc && release) {
    be.allocator.alloc = alloc;
    be.allocator.release = release;
  }
  par::oversegment(be, xyz, rgb, normals, n, p, labels, normals_out, stats);
}

}  // namespace cuda
}  // namespace bqnet_sp
