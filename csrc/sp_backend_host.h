// The host backend of the parallel port (sp_parallel.h lists what a backend provides): memory is
// malloc'd, for_each is an OpenMP parallel for, scan is sequential, sort_pairs is a stable sort
// (std::stable_sort of positions by key, which is what CUB's radix sort computes on the device).
// Compiled by g++ into bqnet_model._C (superpoints_parallel.cpp), so that the kernels of the CUDA
// port run, and are tested, on a machine without a GPU. strict = true emulates device memory: every
// buffer is its own mmap, inaccessible (PROT_NONE) except while a backend call runs, so driver code
// that reads or writes a buffer on the host, which would crash on a GPU, faults here too (the
// tests run it in a subprocess).
#pragma once

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <numeric>
#include <utility>
#include <vector>

namespace bqnet_sp {
namespace par {

struct HostBackend {
  int nt = 1;
  bool strict = false;

  void* alloc(size_t bytes) {
    if (!strict) {
      void* p = std::malloc(bytes);
      if (!p) throw std::bad_alloc();
      return p;
    }
    const size_t page = size_t(sysconf(_SC_PAGESIZE)), len = (bytes + page - 1) / page * page;
    void* p = mmap(nullptr, len, open_ > 0 ? PROT_READ | PROT_WRITE : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    live_.emplace_back(p, len);
    return p;
  }
  void release(void* p) {
    if (!strict) return std::free(p);
    for (size_t i = 0; i < live_.size(); ++i)
      if (live_[i].first == p) {
        munmap(p, live_[i].second);
        live_[i] = live_.back();
        live_.pop_back();
        return;
      }
  }

  // Opens every buffer for the duration of one backend call (strict mode).
  struct Open {
    HostBackend& be;
    explicit Open(HostBackend& b) : be(b) {
      if (be.strict && be.open_++ == 0) be.protect(PROT_READ | PROT_WRITE);
    }
    ~Open() {
      if (be.strict && --be.open_ == 0) be.protect(PROT_NONE);
    }
  };
  void protect(int prot) {
    for (const auto& b : live_)
      if (mprotect(b.first, b.second, prot) != 0) throw std::runtime_error("mprotect failed");
  }

  template <class F>
  void for_each(int64_t n, const F& f) {
    const Open open(*this);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) f(i);
  }

  int64_t scan(const int64_t* in, int64_t* out, int64_t n) {
    const Open open(*this);
    out[0] = 0;
    for (int64_t i = 0; i < n; ++i) out[i + 1] = out[i] + in[i];
    return out[n];
  }

  // Stable ascending sort of (key, val) pairs by the low `bits` bits of key.
  template <class K>
  void sort_pairs(K* key, int32_t* val, int64_t n, int bits) {
    if (n <= 1) return;
    const Open open(*this);
    const K mask = bits >= int(8 * sizeof(K)) ? ~K(0) : K((K(1) << bits) - 1);
    std::vector<int64_t> ord(static_cast<size_t>(n));
    std::iota(ord.begin(), ord.end(), int64_t(0));
    std::stable_sort(ord.begin(), ord.end(), [&](int64_t a, int64_t b) { return (key[a] & mask) < (key[b] & mask); });
    std::vector<K> k2(static_cast<size_t>(n));
    std::vector<int32_t> v2(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      k2[size_t(i)] = key[ord[size_t(i)]];
      v2[size_t(i)] = val[ord[size_t(i)]];
    }
    std::memcpy(key, k2.data(), sizeof(K) * size_t(n));
    std::memcpy(val, v2.data(), sizeof(int32_t) * size_t(n));
  }

  void copy(void* dst, const void* src, size_t bytes) {
    const Open open(*this);
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }
  void from_host(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }
  void sync() {}

 private:
  std::vector<std::pair<void*, size_t>> live_;  // strict mode: the mapped buffers
  int open_ = 0;
};

}  // namespace par
}  // namespace bqnet_sp
