// Farthest point sampling in one launch: one block per batch row, n - 1 steps inside the kernel.
//
// The torch version (bqnet_model/model/query_sampling.py, farthest_point_sample) loops over the n
// steps from the host, three kernels a step: on a GPU that loop is bound by launches, not by
// arithmetic. This kernel returns the same indices by running the pointnet2 kernel's rules
// literally rather than through the torch version's key-ordered argmax:
//   * the first seed is index 0; the running distance of a point starts at 1e10 (float32);
//   * a row of m real points (m = lengths[b]; the slots after it are padding, never read) runs with
//     T = min(512, 2^floor(log2 m)) threads; thread t owns the points k = t, t + T, ... and keeps,
//     scanning them in order, its FIRST largest running distance (strict >);
//   * the threads are then reduced pairwise, t with t + T/2, then t + T/4, ..., keeping the lower
//     slot on ties; slot 0's point is the next seed;
//   * the squared distance is (dx*dx + dy*dy) + dz*dz in float32, each step rounded on its own
//     (__fmul_rn / __fadd_rn / __fsub_rn are never contracted into fused multiply-adds, whatever
//     -fmad says), so every device gives the bits the torch version's separate elementwise ops give;
//   * a point with x*x + y*y + z*z <= 1e-3 (the float32 sum compared in double) is never scanned:
//     its thread skips it, so it is chosen only through the fallback of a thread that saw nothing
//     above -1 (index 0), exactly as when the pointnet2 kernel runs out of choosable points.
// Coordinates must be finite: with NaN the two implementations are not specified to agree.
//
// Memory: each thread only ever touches the running distances of its own points, so they need no
// synchronisation; they live in shared memory when a row fits (S floats), else in a global scratch
// row. The reduction goes through shared memory down to 32 slots, then one warp finishes it with
// shuffles (the same pairings, so the same winner), which halves the block barriers per step.

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "fps_cuda.h"

namespace bqnet_fps {
namespace cuda {
namespace {

constexpr int kMaxThreads = 512;       // pointnet2's per-block thread cap
constexpr int kWarp = 32;
constexpr float kStartDist = 1e10f;
constexpr double kOriginRadius2 = 1e-3;  // FPS_ORIGIN_RADIUS2 in query_sampling.py
constexpr float kSkipped = -1.0f;        // running distance of a near-origin point: never scanned

// The thread layout of a row of m >= 1 real points: the largest power of two <= m, at most 512.
__host__ __device__ inline int layout_threads(int m) {
  int t = 1;
  while (t < kMaxThreads && 2 * t <= m) t *= 2;
  return t;
}

__device__ __forceinline__ float sq_sum(float x, float y, float z) {
  return __fadd_rn(__fadd_rn(__fmul_rn(x, x), __fmul_rn(y, y)), __fmul_rn(z, z));
}

template <bool kSharedDist>
__global__ void __launch_bounds__(kMaxThreads)
    fps_kernel(const float* __restrict__ xyz, const int64_t* __restrict__ lengths, int S, int n,
               float* __restrict__ scratch, int64_t* __restrict__ out) {
  extern __shared__ float shared_dist[];
  __shared__ float slot_dist[kMaxThreads];
  __shared__ int slot_idx[kMaxThreads];
  __shared__ int chosen[2];  // double-buffered: step j writes chosen[j & 1] while laggards read the other

  const int t = threadIdx.x;
  const int64_t row = blockIdx.x;
  const int m = static_cast<int>(lengths[row]);  // in [1, S]: the binding checks
  const int T = layout_threads(m);
  const float* __restrict__ p = xyz + row * S * 3;
  float* __restrict__ dist = kSharedDist ? shared_dist : scratch + row * S;
  int64_t* __restrict__ seeds = out + row * n;

  if (t < T) {
    for (int k = t; k < m; k += T) {
      const double mag = static_cast<double>(sq_sum(p[3 * k], p[3 * k + 1], p[3 * k + 2]));
      dist[k] = mag <= kOriginRadius2 ? kSkipped : kStartDist;
    }
  }
  if (t == 0) seeds[0] = 0;
  int old = 0;
  for (int j = 1; j < n; ++j) {
    const float x1 = p[3 * old], y1 = p[3 * old + 1], z1 = p[3 * old + 2];
    float best = -1.0f;
    int best_k = 0;
    if (t < T) {
      for (int k = t; k < m; k += T) {
        const float dk = dist[k];
        if (dk == kSkipped) continue;  // real distances are >= 0: only near-origin points hold -1
        const float d = sq_sum(__fsub_rn(p[3 * k], x1), __fsub_rn(p[3 * k + 1], y1), __fsub_rn(p[3 * k + 2], z1));
        const float d2 = fminf(d, dk);
        dist[k] = d2;
        if (d2 > best) {
          best = d2;
          best_k = k;
        }
      }
    }
    if (T > kWarp) {  // T is the same for the whole block: the barriers below are uniform
      slot_dist[t] = best;
      slot_idx[t] = best_k;
      __syncthreads();
      for (int half = T / 2; half >= kWarp; half /= 2) {
        if (t < half && slot_dist[t + half] > slot_dist[t]) {
          slot_dist[t] = slot_dist[t + half];
          slot_idx[t] = slot_idx[t + half];
        }
        __syncthreads();
      }
      if (t < kWarp) {
        best = slot_dist[t];
        best_k = slot_idx[t];
      }
    }
    if (t < kWarp) {  // the whole first warp: blockDim >= 32
      for (int half = (T < kWarp ? T : kWarp) / 2; half >= 1; half /= 2) {
        const float other = __shfl_down_sync(0xffffffffu, best, half);
        const int other_k = __shfl_down_sync(0xffffffffu, best_k, half);
        if (other > best) {  // lanes >= half read garbage, but only lanes < half matter
          best = other;
          best_k = other_k;
        }
      }
      if (t == 0) {
        chosen[j & 1] = best_k;
        seeds[j] = best_k;
      }
    }
    __syncthreads();
    old = chosen[j & 1];
  }
}

// Static shared memory of the shared-distance kernel, so that the dynamic part is sized exactly.
size_t static_shared_bytes() {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, fps_kernel<true>) != cudaSuccess) {
    cudaGetLastError();
    return sizeof(float) * kMaxThreads + sizeof(int) * (kMaxThreads + 2);
  }
  return attr.sharedSizeBytes;
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("farthest_point_sample: ") + what + ": " + cudaGetErrorString(err));
  }
}

}  // namespace

bool fps_fits_shared(int64_t S, int device) {
  int optin = 0;
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  return S * static_cast<int64_t>(sizeof(float)) + static_cast<int64_t>(static_shared_bytes()) <= optin;
}

void fps_device(const float* xyz, const int64_t* lengths, int64_t B, int64_t S, int64_t n, int64_t* out,
                float* scratch, int device, void* stream) {
  if (B < 0 || B > 0x7fffffff || S < 1 || S > 0x7fffffff / 3 || n < 1 || n > 0x7fffffff) {
    throw std::invalid_argument("farthest_point_sample: sizes out of range (B " + std::to_string(B) + ", S " +
                                std::to_string(S) + ", n " + std::to_string(n) + ")");
  }
  if (B == 0) return;
  const bool shared = fps_fits_shared(S, device);
  if (!shared && scratch == nullptr) {
    throw std::invalid_argument("farthest_point_sample: a row of " + std::to_string(S) +
                                " points needs the global scratch buffer (fps_fits_shared is false)");
  }
  // At least one warp (the shuffle reduction uses all of warp 0), and the largest layout a row can have.
  int block = layout_threads(static_cast<int>(S < kMaxThreads ? S : kMaxThreads));
  if (block < kWarp) block = kWarp;
  const auto st = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(B));
  if (shared) {
    const size_t bytes = static_cast<size_t>(S) * sizeof(float);
    check(cudaFuncSetAttribute(fps_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    fps_kernel<true><<<grid, block, bytes, st>>>(xyz, lengths, static_cast<int>(S), static_cast<int>(n), nullptr, out);
  } else {
    fps_kernel<false><<<grid, block, 0, st>>>(xyz, lengths, static_cast<int>(S), static_cast<int>(n), scratch, out);
  }
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace cuda
}  // namespace bqnet_fps
