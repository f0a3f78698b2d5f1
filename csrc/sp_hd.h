// SP_HD and the order-free atomics of the superpoint kernels, for both compilers: the per-element
// functions of the oversegmentation are written once and compiled by g++ (the CPU paths and the
// host backend of the parallel port, csrc/sp_parallel*.h) and by nvcc (the CUDA backend,
// csrc/cuda/). Under nvcc SP_HD is __host__ __device__ and the atomics are CUDA's; under g++ it is
// empty and they are the __atomic builtins. Only min, max, add and a flag store: each has one
// result whatever order the threads reach it in, which is why the labels are deterministic.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define SP_HD __host__ __device__
#else
#define SP_HD
#endif

namespace bqnet_sp {

SP_HD inline uint32_t float_bits(float w) {  // non-negative floats order like their bit patterns
#ifdef __CUDA_ARCH__
  return __float_as_uint(w);
#else
  uint32_t u;
  std::memcpy(&u, &w, sizeof(u));
  return u;
#endif
}

SP_HD inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float w;
  std::memcpy(&w, &u, sizeof(w));
  return w;
#endif
}

// An unsigned key that orders like the float itself, negative values included (for min / max).
SP_HD inline uint32_t ordered_key(float v) {
  const uint32_t u = float_bits(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
SP_HD inline float ordered_value(uint32_t k) { return bits_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
SP_HD inline bool finite_float(float v) { return (float_bits(v) & 0x7f800000u) != 0x7f800000u; }

SP_HD inline void atomic_min_u64(uint64_t* p, uint64_t v) {
#ifdef __CUDA_ARCH__
  atomicMin(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
#else
  uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

SP_HD inline void atomic_max_u32(uint32_t* p, uint32_t v) {
#ifdef __CUDA_ARCH__
  atomicMax(reinterpret_cast<unsigned int*>(p), static_cast<unsigned int>(v));
#else
  uint32_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

SP_HD inline void atomic_min_u32(uint32_t* p, uint32_t v) {
#ifdef __CUDA_ARCH__
  atomicMin(reinterpret_cast<unsigned int*>(p), static_cast<unsigned int>(v));
#else
  uint32_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

SP_HD inline void atomic_min_i32(int32_t* p, int32_t v) {
#ifdef __CUDA_ARCH__
  atomicMin(reinterpret_cast<int*>(p), static_cast<int>(v));
#else
  int32_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

SP_HD inline void atomic_add_i32(int32_t* p, int32_t v) {
#ifdef __CUDA_ARCH__
  atomicAdd(reinterpret_cast<int*>(p), static_cast<int>(v));
#else
  __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

SP_HD inline void atomic_add_i64(int64_t* p, int64_t v) {
#ifdef __CUDA_ARCH__
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
#else
  __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

// Sets *p = 1 (every writer writes the same value: a flag a data-dependent loop reads back).
SP_HD inline void set_flag(int32_t* p) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<volatile int*>(p) = 1;
#else
  __atomic_store_n(p, 1, __ATOMIC_RELAXED);
#endif
}

}  // namespace bqnet_sp
