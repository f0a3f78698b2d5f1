// Online superpoints: Felzenszwalb-Huttenlocher graph segmentation of a point cloud on a voxel grid.
//
// Why: the original BQNet/IPDN pipeline reads ScanNet's mesh superpoints; a robot only has a
// point cloud, so we segment the cloud itself (docs/design.md section 2). Stages:
//   1. voxelize (sparse block grid: a hash of 8^3-cell blocks, dense cells inside a block, so that
//      neighbour lookups stay cache-local); voxel ids in spatial order (blocks by key, then cells);
//   2. per-voxel point moments; normals by PCA of all raw points in a (2r+1)^3 window of cells
//      (or the principal direction of the given per-point normals inside the voxel);
//   3. graph: each voxel links to its nearest occupied cells (complete distance shells until at
//      least k are found, within a Chebyshev radius); the graph is the symmetric union;
//   4. edge weight = (1 - |n_i . n_j|) + color_weight * ||c_i - c_j|| / 255 (mean voxel colours);
//   5. stable LSD radix sort of edges by weight (parallel), FH merge with threshold k / |C|
//      (|C| in voxels), optional size cap, then segments below min_size merge along their
//      lightest edge;
//   6. dense labels 0..S-1 in order of each segment's first voxel, broadcast to points.
// Every parallel loop writes only its own output slots, so results do not depend on thread count.
// The Python binding releases the GIL for the whole call (no Python object is touched inside), so
// a worker thread can segment while the main thread drives the GPU (Segmenter.prepare's overlap).

#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace bqnet_sp {
namespace {

constexpr int kCoordBits = 21;                         // bits per axis in a packed key
constexpr int64_t kMaxCoord = (int64_t(1) << kCoordBits) - 16;  // headroom for window offsets
constexpr int kBlockShift = 3;                         // 8^3 cells per block
constexpr int kBlockMask = (1 << kBlockShift) - 1;
constexpr int kBlockCells = 1 << (3 * kBlockShift);

inline uint64_t pack(int64_t x, int64_t y, int64_t z) {
  return (uint64_t(x) << (2 * kCoordBits)) | (uint64_t(y) << kCoordBits) | uint64_t(z);
}

inline uint64_t mix64(uint64_t k) {  // splitmix64 finalizer: spreads packed keys over the table
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ULL;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebULL;
  k ^= k >> 31;
  return k;
}

// Open-addressing hash map from block key to block id (ids 0, 1, ... in insertion order).
class BlockMap {
 public:
  BlockMap() { reset(1024); }

  int32_t find(uint64_t key) const {
    size_t i = mix64(key) & mask_;
    while (true) {
      const int32_t v = vals_[i];
      if (v < 0) return -1;
      if (keys_[i] == key) return v;
      i = (i + 1) & mask_;
    }
  }

  // Returns (id, inserted).
  std::pair<int32_t, bool> find_or_insert(uint64_t key) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    size_t i = mix64(key) & mask_;
    while (true) {
      const int32_t v = vals_[i];
      if (v < 0) {
        keys_[i] = key;
        vals_[i] = size_;
        return {size_++, true};
      }
      if (keys_[i] == key) return {v, false};
      i = (i + 1) & mask_;
    }
  }

  int32_t size() const { return size_; }

 private:
  void reset(size_t cap) {
    keys_.assign(cap, 0);
    vals_.assign(cap, -1);
    mask_ = cap - 1;
    size_ = 0;
  }
  void grow() {
    std::vector<uint64_t> old_keys;
    std::vector<int32_t> old_vals;
    old_keys.swap(keys_);
    old_vals.swap(vals_);
    const int32_t n = size_;
    reset(old_keys.size() * 2);
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_vals[i] < 0) continue;
      size_t j = mix64(old_keys[i]) & mask_;
      while (vals_[j] >= 0) j = (j + 1) & mask_;
      keys_[j] = old_keys[i];
      vals_[j] = old_vals[i];
    }
    size_ = n;
  }

  std::vector<uint64_t> keys_;
  std::vector<int32_t> vals_;
  size_t mask_ = 0;
  int32_t size_ = 0;
};

// Sparse voxel grid: blocks of 8^3 cells found by hashing, dense cell -> voxel id inside.
struct SparseGrid {
  BlockMap blocks;
  std::vector<uint64_t> block_keys;  // by block id
  std::vector<int32_t> cells;        // num_blocks * kBlockCells, voxel id or -1

  static inline int local_index(int64_t x, int64_t y, int64_t z) {
    return int(((x & kBlockMask) << (2 * kBlockShift)) | ((y & kBlockMask) << kBlockShift) | (z & kBlockMask));
  }

  int32_t insert(int64_t x, int64_t y, int64_t z, int32_t next_id) {
    const uint64_t key = pack(x >> kBlockShift, y >> kBlockShift, z >> kBlockShift);
    auto [bid, inserted] = blocks.find_or_insert(key);
    if (inserted) {
      cells.resize(cells.size() + kBlockCells, -1);
      block_keys.push_back(key);
    }
    int32_t& slot = cells[size_t(bid) * kBlockCells + local_index(x, y, z)];
    if (slot < 0) slot = next_id;
    return slot;
  }

  // Renumbers voxels in spatial order (blocks by key, cells inside a block in x, y, z order) so
  // that neighbouring voxels sit close in memory. Returns old id -> new id; fills coords (3 per
  // voxel, new ids).
  std::vector<int32_t> renumber(int32_t nv, std::vector<int32_t>& coords) {
    const int32_t nb = blocks.size();
    std::vector<int32_t> border(nb);
    for (int32_t b = 0; b < nb; ++b) border[b] = b;
    std::sort(border.begin(), border.end(), [&](int32_t a, int32_t b) { return block_keys[a] < block_keys[b]; });
    std::vector<int32_t> remap(nv);
    coords.resize(3 * size_t(nv));
    const uint64_t m = (uint64_t(1) << kCoordBits) - 1;
    int32_t next = 0;
    for (int32_t b : border) {
      int32_t* c = &cells[size_t(b) * kBlockCells];
      const uint64_t key = block_keys[b];
      const int64_t bx = int64_t(key >> (2 * kCoordBits)) << kBlockShift;
      const int64_t by = int64_t((key >> kCoordBits) & m) << kBlockShift;
      const int64_t bz = int64_t(key & m) << kBlockShift;
      for (int l = 0; l < kBlockCells; ++l) {
        if (c[l] < 0) continue;
        remap[c[l]] = next;
        c[l] = next;
        coords[3 * size_t(next)] = int32_t(bx + (l >> (2 * kBlockShift)));
        coords[3 * size_t(next) + 1] = int32_t(by + ((l >> kBlockShift) & kBlockMask));
        coords[3 * size_t(next) + 2] = int32_t(bz + (l & kBlockMask));
        ++next;
      }
    }
    return remap;
  }
};

// Lookups around one voxel: the 27 blocks around the voxel's block are resolved lazily once.
// Valid for window radii up to the block side (8 cells).
class Neighbourhood {
 public:
  explicit Neighbourhood(const SparseGrid& g) : g_(g) {}

  // Voxels are numbered block by block, so consecutive calls mostly keep the resolved blocks.
  void center(int64_t x, int64_t y, int64_t z) {
    const int64_t bx = x >> kBlockShift, by = y >> kBlockShift, bz = z >> kBlockShift;
    if (bx == bx_ && by == by_ && bz == bz_) return;
    bx_ = bx;
    by_ = by;
    bz_ = bz;
    bid_.fill(-2);
  }

  int32_t voxel(int64_t x, int64_t y, int64_t z) {
    if (x < 0 || y < 0 || z < 0) return -1;
    const int64_t bx = x >> kBlockShift, by = y >> kBlockShift, bz = z >> kBlockShift;
    const int slot = int((bx - bx_ + 1) * 9 + (by - by_ + 1) * 3 + (bz - bz_ + 1));
    int32_t b = bid_[slot];
    if (b == -2) {
      b = g_.blocks.find(pack(bx, by, bz));
      bid_[slot] = b;
    }
    if (b < 0) return -1;
    return g_.cells[size_t(b) * kBlockCells + SparseGrid::local_index(x, y, z)];
  }

 private:
  const SparseGrid& g_;
  int64_t bx_ = -1, by_ = -1, bz_ = -1;  // no block yet
  std::array<int32_t, 27> bid_{};
};

struct Offset {
  int dx, dy, dz, d2;
};

// Cube of radius r without the centre, sorted by squared length, ties in scan order (stable).
std::vector<Offset> window_offsets(int r) {
  std::vector<Offset> out;
  for (int dx = -r; dx <= r; ++dx)
    for (int dy = -r; dy <= r; ++dy)
      for (int dz = -r; dz <= r; ++dz)
        if (dx || dy || dz) out.push_back({dx, dy, dz, dx * dx + dy * dy + dz * dz});
  std::stable_sort(out.begin(), out.end(), [](const Offset& a, const Offset& b) { return a.d2 < b.d2; });
  return out;
}

// Eigenvector of the symmetric 3x3 matrix a = (a00, a11, a22, a01, a02, a12) for its smallest
// (want_largest = false) or largest eigenvalue. Closed form (trigonometric eigenvalues, then the
// cross product of two rows of A - lambda I); degenerate cases fall back to a fixed direction so
// the result is always a unit vector and deterministic.
void sym3_eigvec(const double* a_in, bool want_largest, double* out) {
  const double tr = a_in[0] + a_in[1] + a_in[2];
  const double s = std::abs(tr) > 0 ? 1.0 / std::abs(tr) : 1.0;  // scale to trace 1 for conditioning
  const double a00 = a_in[0] * s, a11 = a_in[1] * s, a22 = a_in[2] * s;
  const double a01 = a_in[3] * s, a02 = a_in[4] * s, a12 = a_in[5] * s;
  const double p1 = a01 * a01 + a02 * a02 + a12 * a12;
  const double q = (a00 + a11 + a22) / 3.0;
  double lam;
  if (p1 < 1e-30) {
    lam = want_largest ? std::max({a00, a11, a22}) : std::min({a00, a11, a22});
  } else {
    const double p2 = (a00 - q) * (a00 - q) + (a11 - q) * (a11 - q) + (a22 - q) * (a22 - q) + 2.0 * p1;
    const double p = std::sqrt(p2 / 6.0);
    const double b00 = (a00 - q) / p, b11 = (a11 - q) / p, b22 = (a22 - q) / p;
    const double b01 = a01 / p, b02 = a02 / p, b12 = a12 / p;
    double r = 0.5 * (b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02));
    r = std::min(1.0, std::max(-1.0, r));
    const double phi = std::acos(r) / 3.0;
    lam = want_largest ? q + 2.0 * p * std::cos(phi) : q + 2.0 * p * std::cos(phi + 2.0943951023931957);
  }
  const double r0[3] = {a00 - lam, a01, a02};
  const double r1[3] = {a01, a11 - lam, a12};
  const double r2[3] = {a02, a12, a22 - lam};
  auto cross = [](const double* u, const double* v, double* w) {
    w[0] = u[1] * v[2] - u[2] * v[1];
    w[1] = u[2] * v[0] - u[0] * v[2];
    w[2] = u[0] * v[1] - u[1] * v[0];
  };
  // Index of the longest of three 3-vectors (the first on ties) and its squared length.
  auto longest = [](const double* const* vs, double& sq) {
    int best = 0;
    sq = -1.0;
    for (int i = 0; i < 3; ++i) {
      const double n = vs[i][0] * vs[i][0] + vs[i][1] * vs[i][1] + vs[i][2] * vs[i][2];
      if (n > sq) {
        sq = n;
        best = i;
      }
    }
    return best;
  };
  double c[3][3];
  cross(r0, r1, c[0]);
  cross(r0, r2, c[1]);
  cross(r1, r2, c[2]);
  const double* cs[3] = {c[0], c[1], c[2]};
  double best_n;
  const int best = longest(cs, best_n);
  if (best_n > 1e-24) {
    const double inv = 1.0 / std::sqrt(best_n);
    for (int k = 0; k < 3; ++k) out[k] = c[best][k] * inv;
    return;
  }
  // Rank <= 1: any unit vector orthogonal to the largest row of A - lambda I.
  const double* rows[3] = {r0, r1, r2};
  double bn;
  const int br = longest(rows, bn);
  if (bn < 1e-24) {  // isotropic or empty: no preferred direction
    out[0] = 0.0;
    out[1] = 0.0;
    out[2] = 1.0;
    return;
  }
  const double* v = rows[br];
  const double ax = std::abs(v[0]), ay = std::abs(v[1]), az = std::abs(v[2]);
  const double e[3] = {double(ax <= ay && ax <= az), double(ay < ax && ay <= az), double(az < ax && az < ay)};
  double w[3];
  cross(v, e, w);
  const double inv = 1.0 / std::sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
  for (int k = 0; k < 3; ++k) out[k] = w[k] * inv;
}

// Stable LSD radix sort of edge ids by the bit pattern of non-negative float weights (which orders
// like the floats themselves). Keys travel with the ids (no random reads). Each pass is parallel
// over contiguous chunks: chunk t's elements of digit d land after those of chunks < t, exactly
// where a sequential stable pass puts them, so the result (ties in edge-id order) is independent
// of the thread count.
std::vector<int32_t> sort_edges(const std::vector<float>& w, int nt) {
  const int64_t n = int64_t(w.size());
  std::vector<uint32_t> key(n), key_tmp(n);
  std::memcpy(key.data(), w.data(), size_t(n) * sizeof(float));
  std::vector<int32_t> idx(n), idx_tmp(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = int32_t(i);
  constexpr int kBits = 8;
  constexpr uint32_t kRadix = 1u << kBits;
  const int T = int(std::max<int64_t>(1, std::min<int64_t>(nt, n / 65536 + 1)));
  std::vector<int64_t> bounds(T + 1);
  for (int t = 0; t <= T; ++t) bounds[t] = n * t / T;
  std::vector<int64_t> hist(size_t(T) * kRadix);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(hist.begin(), hist.end(), 0);
#pragma omp parallel for num_threads(T) schedule(static, 1)
    for (int t = 0; t < T; ++t) {
      int64_t* h = &hist[size_t(t) * kRadix];
      for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) ++h[(key[i] >> shift) & (kRadix - 1)];
    }
    int64_t sum = 0;
    bool trivial = false;
    for (uint32_t d = 0; d < kRadix; ++d) {
      int64_t digit_total = 0;
      for (int t = 0; t < T; ++t) {
        const int64_t c = hist[size_t(t) * kRadix + d];
        hist[size_t(t) * kRadix + d] = sum;
        sum += c;
        digit_total += c;
      }
      trivial |= digit_total == n;
    }
    if (trivial) continue;  // every key has the same digit: the pass would not move anything
#pragma omp parallel for num_threads(T) schedule(static, 1)
    for (int t = 0; t < T; ++t) {
      int64_t* h = &hist[size_t(t) * kRadix];
      for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) {
        const int64_t o = h[(key[i] >> shift) & (kRadix - 1)]++;
        key_tmp[o] = key[i];
        idx_tmp[o] = idx[i];
      }
    }
    key.swap(key_tmp);
    idx.swap(idx_tmp);
  }
  return idx;
}

struct UnionFind {
  std::vector<int32_t> parent, size;
  std::vector<float> thresh;
  explicit UnionFind(int32_t n, float k) : parent(n), size(n, 1), thresh(n, k) {
    for (int32_t i = 0; i < n; ++i) parent[i] = i;
  }
  int32_t find(int32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];  // path halving
      x = parent[x];
    }
    return x;
  }
  // Union by size; ties: the smaller id becomes the root (deterministic).
  int32_t join(int32_t a, int32_t b) {
    if (size[a] < size[b] || (size[a] == size[b] && b < a)) std::swap(a, b);
    parent[b] = a;
    size[a] += size[b];
    return a;
  }
};

using Clock = std::chrono::steady_clock;
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

// Returns (labels int64 (N,), point_to_voxel int64 (N,), stats float64 (11,)):
// stats = [num_voxels, num_edges, num_segments, t_voxelize, t_sums, t_window (normals + neighbours),
//          t_edges, t_sort, t_merge, t_labels, t_total] (times in ms).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> oversegment(
    const torch::Tensor& xyz, const c10::optional<torch::Tensor>& rgb, const c10::optional<torch::Tensor>& normals,
    double voxel_size, double k_thresh, int64_t min_size, int64_t max_size, double color_weight,
    int64_t neighbor_radius, int64_t max_neighbors, int64_t normal_radius, int64_t num_threads) {
  const auto t_start = Clock::now();
  TORCH_CHECK(xyz.dim() == 2 && xyz.size(1) == 3, "xyz must have shape (N, 3), got ", xyz.sizes());
  TORCH_CHECK(xyz.scalar_type() == torch::kFloat32, "xyz must be float32");
  TORCH_CHECK(xyz.device().is_cpu(), "xyz must be a CPU tensor");
  const int64_t n = xyz.size(0);
  TORCH_CHECK(n > 0, "xyz is empty");
  TORCH_CHECK(n < (int64_t(1) << 31) - 1, "too many points (", n, ")");
  TORCH_CHECK(voxel_size > 0 && std::isfinite(voxel_size), "voxel_size must be positive, got ", voxel_size);
  TORCH_CHECK(k_thresh >= 0, "k_thresh must be >= 0");
  TORCH_CHECK(min_size >= 0 && max_size >= 0, "min_size and max_size must be >= 0");
  TORCH_CHECK(color_weight >= 0, "color_weight must be >= 0");
  TORCH_CHECK(neighbor_radius >= 1 && neighbor_radius <= 8, "neighbor_radius must be in [1, 8]");
  TORCH_CHECK(normal_radius >= 1 && normal_radius <= 8, "normal_radius must be in [1, 8]");
  TORCH_CHECK(max_neighbors >= 1, "max_neighbors must be >= 1");
  const bool has_rgb = rgb.has_value() && rgb->defined();
  const bool has_normals = normals.has_value() && normals->defined();
  torch::Tensor xyz_c = xyz.contiguous();
  torch::Tensor rgb_c, nrm_c;
  if (has_rgb) {
    TORCH_CHECK(rgb->dim() == 2 && rgb->size(0) == n && rgb->size(1) == 3, "rgb must have shape (N, 3)");
    TORCH_CHECK(rgb->scalar_type() == torch::kUInt8, "rgb must be uint8");
    rgb_c = rgb->contiguous();
  }
  if (has_normals) {
    TORCH_CHECK(normals->dim() == 2 && normals->size(0) == n && normals->size(1) == 3,
                "normals must have shape (N, 3)");
    TORCH_CHECK(normals->scalar_type() == torch::kFloat32, "normals must be float32");
    nrm_c = normals->contiguous();
  }
  const int nt = int(std::max<int64_t>(1, num_threads));
  const float* P = xyz_c.data_ptr<float>();

  // ---- 1. voxelize ---------------------------------------------------------------------------
  auto t0 = Clock::now();
  double lo[3] = {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity(),
                  std::numeric_limits<double>::infinity()};
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {  // min is order independent; one pass, memory bound
    for (int k = 0; k < 3; ++k) {
      const double v = P[3 * i + k];
      finite &= std::isfinite(v);
      lo[k] = std::min(lo[k], v);
    }
  }
  TORCH_CHECK(finite, "xyz contains NaN or Inf; clean the cloud first");
  const double inv_vs = 1.0 / voxel_size;
  std::vector<int32_t> pc(3 * n);  // per point cell coordinates
  int32_t max_cell = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(max : max_cell)
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) {
      const double c = std::floor((double(P[3 * i + k]) - lo[k]) * inv_vs);
      const int32_t ci = c < double(kMaxCoord) ? int32_t(c) : int32_t(kMaxCoord + 1);
      pc[3 * i + k] = ci;
      max_cell = std::max(max_cell, ci);
    }
  TORCH_CHECK(max_cell <= kMaxCoord, "cloud extent / voxel_size exceeds the grid limit (", kMaxCoord,
              " cells per axis)");
  SparseGrid grid;
  auto p2v_t = torch::empty({n}, torch::kInt64);
  int64_t* p2v = p2v_t.data_ptr<int64_t>();
  int32_t nv = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = grid.insert(pc[3 * i], pc[3 * i + 1], pc[3 * i + 2], nv);
    if (v == nv) ++nv;
    p2v[i] = v;
  }
  pc.clear();
  pc.shrink_to_fit();
  std::vector<int32_t> vc;  // voxel cell coordinates (3 per voxel)
  {
    const std::vector<int32_t> remap = grid.renumber(nv, vc);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) p2v[i] = remap[p2v[i]];
  }
  const double t_vox = ms_since(t0);

  // Per-voxel sums: count, sum x (3), sum x x^T (6) relative to the grid origin in double, colour,
  // sum n n^T (6) of given normals. Thread t owns a contiguous voxel range and adds its points in
  // point order, so sums are bitwise independent of the thread count.
  t0 = Clock::now();
  std::vector<int32_t> cnt(nv, 0);
  std::vector<double> m1(3 * size_t(nv), 0.0), m2(6 * size_t(nv), 0.0), col(has_rgb ? 3 * size_t(nv) : 0, 0.0),
      nn(has_normals ? 6 * size_t(nv) : 0, 0.0);
  const uint8_t* C = has_rgb ? rgb_c.data_ptr<uint8_t>() : nullptr;
  const float* N = has_normals ? nrm_c.data_ptr<float>() : nullptr;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int t = 0; t < nt; ++t) {
    const int64_t v0 = int64_t(nv) * t / nt, v1 = int64_t(nv) * (t + 1) / nt;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = p2v[i];
      if (v < v0 || v >= v1) continue;
      ++cnt[v];
      const double x = P[3 * i] - lo[0], y = P[3 * i + 1] - lo[1], z = P[3 * i + 2] - lo[2];
      double* a = &m1[3 * v];
      a[0] += x;
      a[1] += y;
      a[2] += z;
      double* b = &m2[6 * v];
      b[0] += x * x;
      b[1] += y * y;
      b[2] += z * z;
      b[3] += x * y;
      b[4] += x * z;
      b[5] += y * z;
      if (C)
        for (int k = 0; k < 3; ++k) col[3 * v + k] += C[3 * i + k];
      if (N) {
        const double u = N[3 * i], w = N[3 * i + 1], s = N[3 * i + 2];
        double* c = &nn[6 * v];
        c[0] += u * u;
        c[1] += w * w;
        c[2] += s * s;
        c[3] += u * w;
        c[4] += u * s;
        c[5] += w * s;
      }
    }
  }
  std::vector<float> vcol(has_rgb ? 3 * size_t(nv) : 0, 0.0f);
  if (C) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t v = 0; v < nv; ++v)
      for (int k = 0; k < 3; ++k) vcol[3 * v + k] = float(col[3 * v + k] / cnt[v] / 255.0);
  }
  std::vector<float> vn(3 * size_t(nv));
  if (has_normals) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t v = 0; v < nv; ++v) {
      double e[3];
      sym3_eigvec(&nn[6 * v], true, e);
      for (int k = 0; k < 3; ++k) vn[3 * v + k] = float(e[k]);
    }
  }
  const double t_sums = ms_since(t0);

  // ---- 2./3. one window pass per voxel: PCA normal and neighbour set -------------------------
  // Offsets of the cube of radius max(normal_radius, neighbor_radius), nearest first. Normals use
  // every occupied cell within Chebyshev normal_radius (raw-point moments summed, then PCA).
  // Voxel v's neighbour set N(v): occupied cells within Chebyshev neighbor_radius, nearest first,
  // whole distance shells until at least max_neighbors are found; shell[v] = the last shell's
  // squared length (the window's largest when fewer were found).
  t0 = Clock::now();
  const int rn = int(normal_radius), rg = int(neighbor_radius);
  const bool need_pca = !has_normals;
  const int normal_d2_max = need_pca ? 3 * rn * rn : 0;  // beyond this no normal offset remains
  const std::vector<Offset> win = window_offsets(std::max(need_pca ? rn : 0, rg));
  int graph_d2_max = 0;
  for (const Offset& o : win)
    if (std::max({std::abs(o.dx), std::abs(o.dy), std::abs(o.dz)}) <= rg) graph_d2_max = o.d2;
  std::vector<int32_t> shell(nv), ncount(nv);
  std::vector<std::vector<int32_t>> t_ids(nt);
  std::vector<std::vector<uint8_t>> t_d2(nt);
  // Chunk t = voxels [nv t / nt, nv (t + 1) / nt); one chunk per loop iteration, so the chunking
  // (and the neighbour lists' layout) never depends on how many threads OpenMP actually gives.
  std::vector<int64_t> t_v0(nt + 1);
  for (int t = 0; t <= nt; ++t) t_v0[t] = int64_t(nv) * t / nt;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int t = 0; t < nt; ++t) {
    const int64_t v0 = t_v0[t], v1 = t_v0[t + 1];
    std::vector<int32_t>& ids = t_ids[t];
    std::vector<uint8_t>& d2s = t_d2[t];
    ids.reserve(size_t(v1 - v0) * size_t(max_neighbors + 4));
    d2s.reserve(ids.capacity());
    Neighbourhood nb(grid);
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t x = vc[3 * v], y = vc[3 * v + 1], z = vc[3 * v + 2];
      nb.center(x, y, z);
      double s0 = cnt[v], s1[3], s2[6];
      for (int k = 0; k < 3; ++k) s1[k] = m1[3 * v + k];
      for (int k = 0; k < 6; ++k) s2[k] = m2[6 * v + k];
      int found = 0, last = 0;
      bool graph_done = false;
      for (const Offset& o : win) {
        if (!graph_done && (o.d2 > graph_d2_max || (found >= max_neighbors && o.d2 > last))) graph_done = true;
        if (graph_done && o.d2 > normal_d2_max) break;
        const int cheb = std::max({std::abs(o.dx), std::abs(o.dy), std::abs(o.dz)});
        const bool want_graph = !graph_done && cheb <= rg;
        const bool want_normal = need_pca && cheb <= rn;
        if (!want_graph && !want_normal) continue;
        const int32_t u = nb.voxel(x + o.dx, y + o.dy, z + o.dz);
        if (u < 0) continue;
        if (want_normal) {
          s0 += cnt[u];
          for (int k = 0; k < 3; ++k) s1[k] += m1[3 * size_t(u) + k];
          for (int k = 0; k < 6; ++k) s2[k] += m2[6 * size_t(u) + k];
        }
        if (want_graph) {
          ids.push_back(u);
          d2s.push_back(uint8_t(o.d2));
          ++found;
          last = o.d2;
        }
      }
      ncount[v] = found;
      shell[v] = found >= max_neighbors ? last : graph_d2_max;
      if (need_pca) {
        const double mx = s1[0] / s0, my = s1[1] / s0, mz = s1[2] / s0;
        const double cov[6] = {s2[0] / s0 - mx * mx, s2[1] / s0 - my * my, s2[2] / s0 - mz * mz,
                               s2[3] / s0 - mx * my, s2[4] / s0 - mx * mz, s2[5] / s0 - my * mz};
        double e[3];
        sym3_eigvec(cov, false, e);
        for (int k = 0; k < 3; ++k) vn[3 * v + k] = float(e[k]);
      }
    }
  }
  m1 = std::vector<double>();
  m2 = std::vector<double>();
  const double t_nrm = ms_since(t0);

  // ---- 4. edges and weights ------------------------------------------------------------------
  // Undirected edge set = {(u, v): u in N(v) or v in N(u)}; v emits (v, u) for u in N(v) when
  // u > v or v is not in N(u) (d2 > shell[u]), so every edge is emitted exactly once, in order of v.
  t0 = Clock::now();
  std::vector<int64_t> deg(size_t(nv) + 1, 0);
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int t = 0; t < nt; ++t) {
    const std::vector<int32_t>& ids = t_ids[t];
    const std::vector<uint8_t>& d2s = t_d2[t];
    size_t j = 0;
    for (int64_t v = t_v0[t]; v < t_v0[t + 1]; ++v) {
      int64_t c = 0;
      for (int q = 0; q < ncount[v]; ++q, ++j) c += (ids[j] > v || int32_t(d2s[j]) > shell[ids[j]]);
      deg[v + 1] = c;
    }
  }
  for (int64_t v = 0; v < nv; ++v) deg[v + 1] += deg[v];
  const int64_t ne = deg[nv];
  TORCH_CHECK(ne < (int64_t(1) << 31) - 1, "too many graph edges (", ne, ")");
  std::vector<int32_t> ea(ne), eb(ne);
  std::vector<float> ew(ne);
  const float cw = float(color_weight);
  const bool use_col = has_rgb && cw > 0.0f;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int t = 0; t < nt; ++t) {
    const std::vector<int32_t>& ids = t_ids[t];
    const std::vector<uint8_t>& d2s = t_d2[t];
    size_t j = 0;
    for (int64_t v = t_v0[t]; v < t_v0[t + 1]; ++v) {
      int64_t e = deg[v];
      const float* na = &vn[3 * v];
      for (int q = 0; q < ncount[v]; ++q, ++j) {
        const int32_t u = ids[j];
        if (!(u > v || int32_t(d2s[j]) > shell[u])) continue;
        const float* nu = &vn[3 * size_t(u)];
        float w = 1.0f - std::abs(na[0] * nu[0] + na[1] * nu[1] + na[2] * nu[2]);
        if (use_col) {
          const float* ca = &vcol[3 * v];
          const float* cu = &vcol[3 * size_t(u)];
          const float dr = ca[0] - cu[0], dg = ca[1] - cu[1], db = ca[2] - cu[2];
          w += cw * std::sqrt(dr * dr + dg * dg + db * db);
        }
        ea[e] = int32_t(v);
        eb[e] = u;
        ew[e] = w > 0.0f ? w : 0.0f;  // also maps -0.0 to +0.0 for the radix sort
        ++e;
      }
    }
  }
  t_ids = {};
  t_d2 = {};
  const double t_graph = ms_since(t0);

  // ---- 5. sort + merge -----------------------------------------------------------------------
  t0 = Clock::now();
  {
    // Gather edges into weight order so that both merge passes read memory sequentially.
    const std::vector<int32_t> order = ne > 0 ? sort_edges(ew, nt) : std::vector<int32_t>();
    std::vector<int32_t> sa(ne), sb(ne);
    std::vector<float> sw(ne);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < ne; ++i) {
      const int32_t e = order[i];
      sa[i] = ea[e];
      sb[i] = eb[e];
      sw[i] = ew[e];
    }
    ea.swap(sa);
    eb.swap(sb);
    ew.swap(sw);
  }
  const double t_sort = ms_since(t0);
  t0 = Clock::now();
  UnionFind uf(nv, float(k_thresh));
  const float kf = float(k_thresh);
  for (int64_t i = 0; i < ne; ++i) {
    const int32_t a = uf.find(ea[i]), b = uf.find(eb[i]);
    if (a == b) continue;
    const float w = ew[i];
    if (w <= uf.thresh[a] && w <= uf.thresh[b] &&
        (max_size == 0 || int64_t(uf.size[a]) + uf.size[b] <= max_size)) {
      const int32_t r = uf.join(a, b);
      uf.thresh[r] = w + kf / float(uf.size[r]);
    }
  }
  // Segments below min_size join the neighbour across their lightest edge (first in order).
  if (min_size > 1) {
    for (int64_t i = 0; i < ne; ++i) {
      const int32_t a = uf.find(ea[i]), b = uf.find(eb[i]);
      if (a != b && (uf.size[a] < min_size || uf.size[b] < min_size)) uf.join(a, b);
    }
  }
  const double t_merge = ms_since(t0);

  // ---- 6. dense labels -----------------------------------------------------------------------
  t0 = Clock::now();
  std::vector<int32_t> root(nv), seg_of_root(nv, -1), vlabel(nv);
  for (int32_t v = 0; v < nv; ++v) root[v] = uf.find(v);
  int32_t ns = 0;
  for (int32_t v = 0; v < nv; ++v) {
    int32_t& s = seg_of_root[root[v]];
    if (s < 0) s = ns++;
    vlabel[v] = s;
  }
  auto labels_t = torch::empty({n}, torch::kInt64);
  int64_t* L = labels_t.data_ptr<int64_t>();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) L[i] = vlabel[p2v[i]];
  const double t_lab = ms_since(t0);

  auto stats = torch::empty({11}, torch::kFloat64);
  double* st = stats.data_ptr<double>();
  const double vals[11] = {double(nv), double(ne), double(ns), t_vox, t_sums, t_nrm, t_graph, t_sort, t_merge,
                           t_lab, ms_since(t_start)};
  std::copy(vals, vals + 11, st);
  return {labels_t, p2v_t, stats};
}

}  // namespace bqnet_sp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "bqnet_model C++ kernels (csrc/)";
  m.def("oversegment", &bqnet_sp::oversegment,
        "Felzenszwalb graph oversegmentation of a point cloud on a voxel grid; returns "
        "(labels int64 (N,), point_to_voxel int64 (N,), stats float64 (11,)). Releases the GIL while it "
        "runs (it touches no Python object), so Segmenter.prepare can overlap it with the backbone.",
        // Arguments are converted with the GIL held; only the call itself runs without it. The
        // result does not depend on it (no shared state), so labels stay deterministic.
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        pybind11::arg("xyz"), pybind11::arg("rgb") = pybind11::none(), pybind11::arg("normals") = pybind11::none(),
        pybind11::arg("voxel_size"), pybind11::arg("k_thresh"), pybind11::arg("min_size"), pybind11::arg("max_size"),
        pybind11::arg("color_weight"), pybind11::arg("neighbor_radius"), pybind11::arg("max_neighbors"),
        pybind11::arg("normal_radius"), pybind11::arg("num_threads"));
}
