// Stages 5-6 of the parallel port (sp_parallel.h says how the backends work): the Borůvka FH merge
// over weight-order buckets with the size cap and the min-size phase (the loops of sp_boruvka.h,
// one for_each each), the Borůvka coplanar merge (sp_boruvka_coplanar.h), the boundary exchange
// (sp_refine.h refine_segments) and the min-size clean-up after it. Same rounds, same keys, same
// tie breaks as the CPU's merge = "boruvka", so the same segments.
#pragma once

#include <cstdint>

#include "sp_parallel.h"

namespace bqnet_sp {
namespace par {

constexpr int kBucketCount = 16;  // = kBuckets of sp_boruvka.h (weight-order prefixes)
constexpr uint64_t kNone = ~uint64_t(0);

// Pointer jumping (double-buffered) over the forest in hook2 until no entry changes; on return
// hook2[r] is the root of r's tree (the two buffers may have been swapped). Two jumps per read of
// the flag: a jump over a converged forest changes nothing, so the extra one costs a kernel, not a
// result, and the host waits half as often.
template <class B>
void pointer_jump(B& be, Buf<B, int32_t>& hook, Buf<B, int32_t>& hook2, int64_t n, int32_t* flag) {
  for (;;) {
    put(be, flag, int32_t(0));
    for (int k = 0; k < 2; ++k) {
      int32_t* h = hook.p();
      const int32_t* h2 = hook2.p();
      be.for_each(n, SP_FN(int64_t r) {
        const int32_t v = h2[h2[r]];
        h[r] = v;
        if (v != h2[r]) set_flag(flag);
      });
      hook.swap(hook2);
    }
    if (!get(be, flag)) return;
  }
}

// Live edges (segment-graph or point-graph ends, weights) with room for cap entries.
template <class B>
struct Live {
  Buf<B, int32_t> a, b;
  Buf<B, float> w;
  int64_t n = 0;
  Live(B& be, int64_t cap) : a(be, cap), b(be, cap), w(be, cap) {}
};

// Drops the live edges whose ends are in one segment (seg maps an end to its segment), keeping the
// order: keep flags, a scan, a scatter into tmp, then the two swap.
template <class B>
void compact_live(B& be, Live<B>& live, Live<B>& tmp, const int32_t* seg, Buf<B, int64_t>& keep,
                  Buf<B, int64_t>& pos, bool with_w) {
  const int64_t ne = live.n;
  const int32_t* ea = live.a.p();
  const int32_t* eb = live.b.p();
  const float* ew = live.w.p();
  int32_t* ta = tmp.a.p();
  int32_t* tb = tmp.b.p();
  float* tw = tmp.w.p();
  int64_t* kp = keep.p();
  int64_t* ps = pos.p();
  be.for_each(ne, SP_FN(int64_t e) { kp[e] = seg[ea[e]] != seg[eb[e]] ? 1 : 0; });
  tmp.n = compact_positions(be, kp, ps, ne);
  be.for_each(ne, SP_FN(int64_t e) {
    if (!kp[e]) return;
    ta[ps[e]] = ea[e];
    tb[ps[e]] = eb[e];
    if (with_w) tw[ps[e]] = ew[e];
  });
  std::swap(live, tmp);
}

// sp_boruvka.h boruvka_rounds: pick / hook / jump / contract until a round merges nothing. seg,
// size, int_bits over nodes (segment roots hold size and Int). Returns the rounds that merged.
template <class B>
int boruvka_rounds(B& be, int64_t nn, int32_t* seg, int32_t* size, uint32_t* int_bits, Live<B>& live, Live<B>& tmp,
                   Buf<B, int64_t>& keep, Buf<B, int64_t>& pos, bool fh, float k, int64_t min_size, int64_t max_size) {
  Buf<B, uint64_t> best(be, nn);
  Buf<B, int32_t> hook(be, nn), hook2(be, nn), flag(be, 1);
  Buf<B, uint32_t> acc(be, nn);
  uint64_t* bs = best.p();
  uint32_t* ac = acc.p();
  int32_t* fl = flag.p();
  int rounds = 0;
  while (live.n > 0) {
    const int64_t ne = live.n;
    const int32_t* ea = live.a.p();
    const int32_t* eb = live.b.p();
    const float* ew = live.w.p();
    fill(be, bs, nn, kNone);
    be.for_each(ne, SP_FN(int64_t e) {  // 1. candidate keys into both end segments
      const int32_t a = seg[ea[e]], b = seg[eb[e]];
      if (a == b) return;
      const float w = ew[e];
      const uint64_t key = (uint64_t(float_bits(w)) << 32) | uint64_t(e);
      if (fh) {
        const float ta = bits_float(int_bits[a]) + k / float(size[a]);
        const float tb = bits_float(int_bits[b]) + k / float(size[b]);
        if (w <= ta && w <= tb && (max_size == 0 || int64_t(size[a]) + size[b] <= max_size)) {
          atomic_min_u64(&bs[a], key);
          atomic_min_u64(&bs[b], key);
        }
      } else {
        if (size[a] < min_size) atomic_min_u64(&bs[a], key);
        if (size[b] < min_size) atomic_min_u64(&bs[b], key);
      }
    });
    put(be, fl, int32_t(0));
    int32_t* h = hook.p();
    be.for_each(nn, SP_FN(int64_t r) {  // 2. a pick hooks its segment onto the other end
      h[r] = int32_t(r);
      ac[r] = 0;
      if (bs[r] == kNone) return;
      const int64_t e = int64_t(bs[r] & 0xffffffffu);
      const int32_t a = seg[ea[e]], b = seg[eb[e]];
      h[r] = a == r ? b : a;
      ac[r] = uint32_t(bs[r] >> 32);
      set_flag(fl);
    });
    if (!get(be, fl)) break;
    ++rounds;
    int32_t* h2 = hook2.p();
    be.for_each(nn, SP_FN(int64_t r) {  // 3. mutual hooks broken towards the smaller id
      const int32_t t = h[r];
      h2[r] = (t != r && h[t] == r && r < t) ? int32_t(r) : t;
    });
    pointer_jump(be, hook, hook2, nn, fl);  // 4.
    const int32_t* root = hook2.p();
    be.for_each(nn, SP_FN(int64_t r) {  // 5. size and Int into the root
      const int32_t t = root[r];
      if (t == r) return;
      atomic_add_i32(&size[t], size[r]);
      atomic_max_u32(&int_bits[t], sp_max(int_bits[r], ac[r]));
    });
    be.for_each(nn, SP_FN(int64_t v) { seg[v] = root[seg[v]]; });  // 6. new segments, live edges
    compact_live(be, live, tmp, seg, keep, pos, true);
  }
  return rounds;
}

// sp_boruvka.h boruvka_bucketed: the rounds over growing prefixes of the sorted edges (ea, eb, ew
// in backend memory), the live edges carried ahead of the new ones.
template <class B>
int boruvka_bucketed(B& be, int64_t nn, int32_t* seg, int32_t* size, uint32_t* int_bits, const int32_t* ea,
                     const int32_t* eb, const float* ew, int64_t ne, bool fh, float k, int64_t min_size,
                     int64_t max_size) {
  Live<B> live(be, ne), tmp(be, ne);
  Buf<B, int64_t> keep(be, ne), pos(be, ne + 1);
  int rounds = 0;
  for (int j = 1; j <= kBucketCount; ++j) {
    const int64_t lo = ne * (j - 1) / kBucketCount, hi = ne * j / kBucketCount;
    if (hi > lo) {
      be.copy(live.a.p() + live.n, ea + lo, sizeof(int32_t) * size_t(hi - lo));
      be.copy(live.b.p() + live.n, eb + lo, sizeof(int32_t) * size_t(hi - lo));
      be.copy(live.w.p() + live.n, ew + lo, sizeof(float) * size_t(hi - lo));
      live.n += hi - lo;
    }
    rounds += boruvka_rounds(be, nn, seg, size, int_bits, live, tmp, keep, pos, fh, k, min_size, max_size);
  }
  return rounds;
}

// sp_boruvka.h boruvka_fh_merge over the points: seg[v] = v's segment root. Returns rounds.
template <class B>
int boruvka_fh_merge(B& be, int64_t n, int32_t* seg, const int32_t* ea, const int32_t* eb, const float* ew, int64_t ne,
                     float k, int64_t min_size, int64_t max_size) {
  Buf<B, int32_t> size(be, n);
  Buf<B, uint32_t> ib(be, n);
  int32_t* sz = size.p();
  uint32_t* ip = ib.p();
  be.for_each(n, SP_FN(int64_t v) {
    seg[v] = int32_t(v);
    sz[v] = 1;
    ip[v] = 0;
  });
  int rounds = boruvka_bucketed(be, n, seg, sz, ip, ea, eb, ew, ne, true, k, min_size, max_size);
  if (min_size > 1) rounds += boruvka_bucketed(be, n, seg, sz, ip, ea, eb, ew, ne, false, k, min_size, 0);
  return rounds;
}

// sp_boruvka.h boruvka_enforce_min_size: segments of lab below min_size join across their lightest
// edge (segment graph of the relabelled point edges). Returns the dense label count.
template <class B>
int32_t enforce_min_size(B& be, int32_t* lab, int64_t n, int32_t num_labels, const int32_t* ea, const int32_t* eb,
                         const float* ew, int64_t ne, int64_t min_size) {
  if (min_size > 1) {
    Buf<B, int32_t> seg(be, num_labels), size(be, num_labels), sa(be, ne), sb(be, ne);
    Buf<B, uint32_t> ib(be, num_labels);
    int32_t* sg = seg.p();
    int32_t* sz = size.p();
    uint32_t* ip = ib.p();
    int32_t* pa = sa.p();
    int32_t* pb = sb.p();
    be.for_each(num_labels, SP_FN(int64_t g) {
      sg[g] = int32_t(g);
      sz[g] = 0;
      ip[g] = 0;
    });
    be.for_each(n, SP_FN(int64_t i) { atomic_add_i32(&sz[lab[i]], 1); });
    be.for_each(ne, SP_FN(int64_t e) {
      pa[e] = lab[ea[e]];
      pb[e] = lab[eb[e]];
    });
    boruvka_bucketed(be, num_labels, sg, sz, ip, pa, pb, ew, ne, false, 0.0f, min_size, 0);
    be.for_each(n, SP_FN(int64_t i) { lab[i] = sg[lab[i]]; });
  }
  return renumber_dense(be, lab, n, num_labels);
}

// sp_boruvka_coplanar.h coplanar_hook_rounds: propose / hook / contract over the accepted segment
// edges (live a, b in segment ids) until a sub-round merges nothing. Returns the sub-rounds.
template <class B>
int coplanar_hook_rounds(B& be, int32_t S, int32_t* seg, int32_t* size, Live<B>& live, int64_t max_size) {
  Live<B> tmp(be, live.n);
  Buf<B, int64_t> keep(be, live.n), pos(be, live.n + 1);
  Buf<B, uint64_t> best(be, S), first(be, S);
  Buf<B, int32_t> pick(be, S), hook(be, S), hook2(be, S), extra(be, S), flag(be, 1);
  uint64_t* bs = best.p();
  uint64_t* fs = first.p();
  int32_t* pk = pick.p();
  int32_t* ex = extra.p();
  int32_t* fl = flag.p();
  int rounds = 0;
  while (live.n > 0) {
    const int64_t ne = live.n;
    const int32_t* la = live.a.p();
    const int32_t* lb = live.b.p();
    fill(be, bs, S, kNone);
    be.for_each(ne, SP_FN(int64_t e) {  // 1. proposals (earliest edge) into both ends
      const int32_t a = seg[la[e]], b = seg[lb[e]];
      if (a == b || (max_size > 0 && int64_t(size[a]) + size[b] > max_size)) return;
      atomic_min_u64(&bs[a], uint64_t(e));
      atomic_min_u64(&bs[b], uint64_t(e));
    });
    be.for_each(S, SP_FN(int64_t r) {  // 2. picks
      pk[r] = int32_t(r);
      if (bs[r] == kNone) return;
      const int64_t e = int64_t(bs[r]);
      const int32_t a = seg[la[e]], b = seg[lb[e]];
      pk[r] = a == r ? b : a;
    });
    int32_t* h = hook.p();
    be.for_each(S, SP_FN(int64_t r) {  // mutual pairs: the smaller id receives
      const int32_t p = pk[r];
      h[r] = (p != r && pk[p] == r && r < p) ? int32_t(r) : p;
    });
    put(be, fl, int32_t(0));
    if (max_size > 0) {  // 3. star hooking under the cap
      int32_t* h2 = hook2.p();
      be.for_each(S, SP_FN(int64_t r) {
        ex[r] = 0;
        fs[r] = kNone;
      });
      be.for_each(S, SP_FN(int64_t r) {
        const int32_t t = h[r];
        if (t == r || h[t] != t) return;
        atomic_add_i32(&ex[t], size[r]);
        atomic_min_u64(&fs[t], bs[r]);
      });
      be.for_each(S, SP_FN(int64_t r) {
        const int32_t t = h[r];
        const bool ok = t != r && h[t] == t && (int64_t(size[t]) + ex[t] <= max_size || fs[t] == bs[r]);
        h2[r] = ok ? t : int32_t(r);
        if (ok) set_flag(fl);
      });
      if (!get(be, fl)) break;
    } else {
      int32_t* h2 = hook2.p();
      be.for_each(S, SP_FN(int64_t r) {
        h2[r] = h[r];
        if (h[r] != r) set_flag(fl);
      });
      if (!get(be, fl)) break;
      pointer_jump(be, hook, hook2, S, fl);
    }
    ++rounds;
    const int32_t* root = hook2.p();
    be.for_each(S, SP_FN(int64_t r) {  // 4. sizes into the roots, segments to their roots
      if (root[r] != r) atomic_add_i32(&size[root[r]], size[r]);
    });
    be.for_each(S, SP_FN(int64_t g) { seg[g] = root[seg[g]]; });
    compact_live(be, live, tmp, seg, keep, pos, false);
  }
  return rounds;
}

}  // namespace par
}  // namespace bqnet_sp
