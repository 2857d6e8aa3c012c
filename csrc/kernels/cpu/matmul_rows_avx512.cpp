// AVX-512 VNNI row-lane dots for two tokens or more (batched decode, prefill, the tokens of a MoE
// expert): Q4_0, Q5_0, Q8_0 and Q4_K weights, 16 rows at a time with one row per 32-bit lane of a
// zmm. Built with the AVX-512 flags; entered only after use_avx512().
//
// Why lanes = rows. A one-row dot keeps a block's 32 codes in one vector, so every token then
// spends a vpdpbusd, a convert and an FMA with a broadcast scale on that block: 4 tokens cost
// about 4x one token's vector work, and a core stops keeping up with memory from 2 tokens on
// (Q5_0 4480x15360, 2 threads: 1.8 ms at 1 token, 5.1 ms at 2 with the AVX2 multi-token dots).
// Here the 16 rows' blocks are transposed in registers so that vector g holds bytes 4g..4g+3 of
// each row's block in that row's lane. A token's block is then 8 vpdpbusd against its own 4-byte
// groups broadcast from memory, and one convert and FMA serve 16 rows; the sums land one row per
// lane, ready to store with no horizontal reduction. The transpose is paid once for all tokens.
// On Zen 4 a zmm product issues at half the ymm rate (the same products a cycle), so 16 rows a
// vector rather than 8 only halves the work around the products and the activations' reads:
// 0.91x / 0.89x the time at 4 / 8 tokens for Q5_0 (15360x4480), 0.91x / 0.83x for Q4_K
// (4480x16384), 2 threads from DRAM.
//
// The activations come interleaved by block (BlockA8R, groups of up to 8 tokens, made once per
// call): one pointer reaches every token's block, and a group of 2 tokens is 80 bytes a block, not
// 8 tokens' 320 (whose unused bytes pushed a row's activations out of L1: 1120x3936 Q5_0 at 2
// tokens took 2.1x one token's time, against 1.5x with the group packed). Integer sums are exact
// and the same as the other kernels' (u8 codes x s8 activations): each starts at the zero point's
// term corr = -zero * sum(a) (Q8_0's signed codes are biased by 128 to unsigned, so its zero is
// 128) and gains 32 products of at most 255 * 127. Only the order of the float additions differs.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_impl.h"

namespace edgenano::kern {

namespace {

constexpr int kAhead = 1024;  // bytes of each row prefetched ahead of its loads

constexpr int kRows = 16;  // rows a group: one per 32-bit lane of a zmm

template <int KIND>  // 0 Q8_0, 1 Q4_0, 2 Q5_0
struct Fmt;
template <>
struct Fmt<0> {
  using B = BlockQ8_0;
};
template <>
struct Fmt<1> {
  using B = BlockQ4_0;
};
template <>
struct Fmt<2> {
  using B = BlockQ5_0;
};

// 16 bytes of rows k, k + 4, k + 8, k + 12 in the four 128-bit lanes.
inline __m512i load4x128(const uint8_t *p, const size_t (&o)[kRows], int k, size_t off) {
  const auto ld = [&](int r) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + o[r] + off));
  };
  __m512i v = _mm512_castsi128_si512(ld(k));
  v = _mm512_inserti32x4(v, ld(k + 4), 1);
  v = _mm512_inserti32x4(v, ld(k + 8), 2);
  return _mm512_inserti32x4(v, ld(k + 12), 3);
}

// 16 bytes at byte offset off of the block at p + o[k] of each of the 16 rows, transposed: lane k
// of out[g] is dword g of row k (the 4x4 dword transpose inside each 128-bit lane).
inline void load_t16(const uint8_t *p, const size_t (&o)[kRows], size_t off, __m512i (&out)[4]) {
  __m512i r[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) r[k] = load4x128(p, o, k, off);
  const __m512i a = _mm512_unpacklo_epi32(r[0], r[1]), b = _mm512_unpackhi_epi32(r[0], r[1]);
  const __m512i c = _mm512_unpacklo_epi32(r[2], r[3]), d = _mm512_unpackhi_epi32(r[2], r[3]);
  out[0] = _mm512_unpacklo_epi64(a, c);
  out[1] = _mm512_unpackhi_epi64(a, c);
  out[2] = _mm512_unpacklo_epi64(b, d);
  out[3] = _mm512_unpackhi_epi64(b, d);
}

// ---- Q8_0, Q4_0, Q5_0: 32-value blocks ----

// The 16 rows' codes of one block as unsigned bytes, transposed: lane k of v[g] = values 4g..4g+3
// of row k (Q8_0's biased by 128). head holds the first 16 bytes of each row's block, transposed.
template <int KIND>
inline void codes16(const uint8_t *p, const size_t (&o)[kRows], const __m512i (&head)[4],
                    __m512i (&v)[8]) {
  using B = typename Fmt<KIND>::B;
  if constexpr (KIND == 0) {
    __m512i lo[4], hi[4];
    load_t16(p, o, offsetof(B, qs), lo);
    load_t16(p, o, offsetof(B, qs) + 16, hi);
    const __m512i bias = _mm512_set1_epi8(char(0x80));
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      v[g] = _mm512_xor_si512(lo[g], bias);
      v[g + 4] = _mm512_xor_si512(hi[g], bias);
    }
  } else {
    __m512i q[4];
    load_t16(p, o, offsetof(B, qs), q);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      v[g] = _mm512_and_si512(q[g], m4);                            // values 4g..: low nibbles
      v[g + 4] = _mm512_and_si512(_mm512_srli_epi16(q[g], 4), m4);  // 16+4g..: high nibbles
    }
    if constexpr (KIND == 2) {
      // qh of each row in its lane (its bytes 2..5: from the header's dwords 0 and 1); byte j
      // of lane k in v[g] wants bit (4g + j) of qh: its byte (4g + j) / 8 copied to the 4 bytes,
      // tested against 1 << ((4g + j) % 8).
      static_assert(offsetof(B, qh) == 2, "Q5_0: d, then qh");
      const __m512i qh = _mm512_or_si512(_mm512_srli_epi32(head[0], 16),  // qh bytes 0..1
                                         _mm512_slli_epi32(head[1], 16));  // qh bytes 2..3
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const char b = char(g / 2);
        const int m = g % 2 ? 0x80402010 : 0x08040201;
        const __m512i sel = _mm512_shuffle_epi8(
            qh, _mm512_broadcast_i32x4(_mm_setr_epi8(b, b, b, b, 4 + b, 4 + b, 4 + b, 4 + b, 8 + b,
                                                     8 + b, 8 + b, 8 + b, 12 + b, 12 + b, 12 + b,
                                                     12 + b)));
        const __mmask64 k = _mm512_test_epi8_mask(sel, _mm512_set1_epi32(m));
        v[g] = _mm512_mask_add_epi8(v[g], k, v[g], _mm512_set1_epi8(16));
      }
    }
  }
}

// The same from pack_rows16's layout: block i of the group at p, its 16 scales then its dwords
// as 64-byte vectors, Q8_0's codes already biased. Q5_0's high bits come reordered: bit 8j + g of
// a lane's word is that of value 4g + j, so one shift brings the 4 of v[g] to bit 4 of its bytes.
template <int KIND>
inline __m512 codes16_packed(const uint8_t *p, __m512i (&v)[8]) {
  const auto ld = [p](int k) { return _mm512_loadu_si512(p + 32 + 64 * k); };
  if constexpr (KIND == 0) {
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) v[g] = ld(g);
  } else {
    constexpr int q0 = KIND == 2 ? 1 : 0;  // Q5_0: the high bits are dword 0
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const __m512i q = ld(q0 + g);
      v[g] = _mm512_and_si512(q, m4);
      v[g + 4] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    }
    if constexpr (KIND == 2) {
      const __m512i qh = ld(0), b4 = _mm512_set1_epi8(0x10);
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const __m512i h = g < 4 ? _mm512_slli_epi32(qh, 4 - g) : _mm512_srli_epi32(qh, g - 4);
        v[g] = _mm512_ternarylogic_epi32(v[g], h, b4, 0xF8);  // v | (h & 0x10)
      }
    }
  }
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}

// Rows at w + o[k] (rows past the real ones repeat the last) against NT tokens' activations,
// interleaved by block (a[i * NT + t]); out[t] = the 16 dots of token t. P: a whole group in
// pack_rows16's layout at w (o unused).
template <int KIND, bool P, int NT>
void rows16(const uint8_t *w, const size_t (&o)[kRows], const BlockA8R *a, int64_t nb,
            const uint8_t *next, bool first, __m512 (&out)[NT]) {
  using B = typename Fmt<KIND>::B;
  __m512 acc[NT];
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i, a += NT) {
    const uint8_t *p = w + size_t(i) * sizeof(B);
    // The next 16 rows are one contiguous run of memory: stream it into L2 at this group's pace
    // (its 16 x sizeof(B) bytes per block), so no group starts on 16 cold rows. The group itself
    // was fetched so by the one before; the first of a work item (and a tail) by its own rows'
    // prefetches. (Rows 3-5 KB apart are as many streams, which the hardware prefetcher did not
    // keep fed from DRAM: 2 / 4 / 8 sequences of widths/4 9B-v2 Q4_K_M decoded 0.85x / 1.29x /
    // 1.73x one sequence's tokens a second with the rows' prefetches alone.) Into L2, not L1: a
    // prefetch to L1 holds one of the core's few L1 miss buffers for a whole DRAM latency, which
    // capped this stream at about 15 GB/s a core on Zen 4 (Q8_0 15360x4480, 2 threads: 0.61-0.76x
    // the time at 1 to 4 tokens with the L2 hint).
    if (next) {
      const char *q = reinterpret_cast<const char *>(next) + size_t(i) * kRows * sizeof(B);
#pragma GCC unroll 16
      for (size_t b = 0; b < kRows * sizeof(B); b += 64) _mm_prefetch(q + b, _MM_HINT_T1);
    }
    __m512i v[8];
    __m512 dw;
    if constexpr (P) {
      // One contiguous run: the group's own stream ahead into L1 where nothing fetched it.
      const uint8_t *q = w + size_t(i) * kRows * sizeof(B);
      if (!next || first) {
#pragma GCC unroll 16
        for (size_t b = 0; b < kRows * sizeof(B); b += 64)
          _mm_prefetch(reinterpret_cast<const char *>(q) + 4 * kAhead + b, _MM_HINT_T0);
      }
      dw = codes16_packed<KIND>(q, v);
    } else {
      if ((!next || first) && (i & 1) == 0) {
#pragma GCC unroll 16
        for (int k = 0; k < kRows; ++k)
          _mm_prefetch(reinterpret_cast<const char *>(p + o[k]) + kAhead, _MM_HINT_T0);
      }
      // The first 16 bytes of each row's block, transposed as the codes are: the f16 scale d is
      // the low half of dword 0 (Q5_0's qh follows it). Plain loads and shuffles, not gathers: two
      // vpgatherdd a block-row (d, qh) held about a third of the Q5_0 kernel's perf samples on Zen
      // 4 (0.86x / 0.90x the time at 2 / 4 tokens without them).
      __m512i head[4];
      load_t16(p, o, 0, head);
      codes16<KIND>(p, o, head, v);
      dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head[0]));
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const BlockA8R &x = a[t];
      // The zero point's term starts the sum: exact, and no float work per token for it. Four
      // chains of 2 vpdpbusd: with two chains of 4, 4 / 8 tokens ran 4-7% slower (Zen 4, in L2).
      __m512i s[4] = {_mm512_set1_epi32(x.corr), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        int32_t q4;
        std::memcpy(&q4, x.qs + 4 * g, sizeof q4);
        s[g & 3] = _mm512_dpbusd_epi32(s[g & 3], v[g], _mm512_set1_epi32(q4));
      }
      const __m512i sum =
          _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw, _mm512_set1_ps(x.d)),
                               acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// Token t's 16 sums to y rows [r0, r0 + nr).
template <int NT>
inline void store_rows(const DotArgs &a, const __m512 (&out)[NT], int t0, int64_t r0, int nr) {
  const __mmask16 m = __mmask16((1u << nr) - 1);
  for (int t = 0; t < NT; ++t) {
    float *y = a.y + int64_t(t0 + t) * a.ldy + r0;
    const __m512 v = a.acc ? _mm512_add_ps(out[t], _mm512_maskz_loadu_ps(m, y)) : out[t];
    _mm512_mask_storeu_ps(y, m, v);
  }
}

// The 16 rows after the group at r0, when they are whole (nullptr: none, or a tail).
inline const uint8_t *next_group(const DotArgs &a, int64_t r0) {
  return r0 + 2 * kRows <= a.nrows ? a.w + size_t(r0 + kRows) * a.row_bytes : nullptr;
}

// Each group of 16 rows (the last one partial; rows past it: the last row again, at byte offsets
// o[k]) against the tokens in groups of 8 (the last one T % 8), A activations of BS-value blocks:
// kernel(NT, P, w, o, act, blocks, next, first, out) with NT and P (the group packed) as
// std::integral_constant, then the group's sums stored.
template <class A, int BS, class Kernel>
void dot_rows(const DotArgs &a, Kernel kernel) {
  using std::integral_constant;
  for (int64_t r0 = 0; r0 < a.nrows; r0 += kRows) {
    const int nr = int(std::min<int64_t>(kRows, a.nrows - r0));
    size_t o[kRows];
    for (int k = 0; k < kRows; ++k) o[k] = size_t(std::min(k, nr - 1)) * a.row_bytes;
    const uint8_t *w = a.w + size_t(r0) * a.row_bytes;
    const bool packed = a.packed && nr == kRows;
    const auto run = [&](auto nt, int t0) {
      constexpr int NT = decltype(nt)::value;
      const auto *act = reinterpret_cast<const A *>(a.act + size_t(t0 / 8) * a.act_stride);
      __m512 out[NT];
      if (packed)
        kernel(nt, integral_constant<bool, true>(), w, o, act, a.n / BS, next_group(a, r0),
               r0 == 0, out);
      else
        kernel(nt, integral_constant<bool, false>(), w, o, act, a.n / BS, next_group(a, r0),
               r0 == 0, out);
      store_rows<NT>(a, out, t0, r0, nr);
    };
    int t0 = 0;
    for (; t0 + 8 <= a.T; t0 += 8) run(integral_constant<int, 8>(), t0);
    switch (a.T - t0) {
      case 1: run(integral_constant<int, 1>(), t0); break;
      case 2: run(integral_constant<int, 2>(), t0); break;
      case 3: run(integral_constant<int, 3>(), t0); break;
      case 4: run(integral_constant<int, 4>(), t0); break;
      case 5: run(integral_constant<int, 5>(), t0); break;
      case 6: run(integral_constant<int, 6>(), t0); break;
      case 7: run(integral_constant<int, 7>(), t0); break;
      default: break;
    }
  }
}

// ---- Q4_K: the same over 256-value blocks of 8 sub-blocks with 6-bit scales and minimums ----
//
// Per row and block the header (d, dmin and the 12 packed bytes of scales and minimums: 16
// bytes, 4 dwords a lane) is loaded and transposed as the codes are, and unpacked in the lanes as
// ggml does. A sub-block's integer sum (u4 codes x s8, at most 32 * 15 * 127) times its scale
// (<= 63) stays in i32 over the block (8 * 60960 * 63 < 2^31); the
// minimums' term sum_j m_j S_j (S_j = the activations' sum over sub-block j) takes 4 vpdpwssd on
// 16-bit pairs (m_j, m_j+2) against (S_j, S_j+2) made with the activations.
// P: a whole group in pack_rows16's layout at w: block i's 36 dwords as 64-byte vectors (the
// header's 4, then the codes' 32).
template <bool P, int NT>
void rows16_q4k(const uint8_t *w, const size_t (&o)[kRows], const BlockA8KR *a,
               int64_t nb, const uint8_t *next, bool first, __m512 (&out)[NT]) {
  __m512 acc[NT];
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f), lo6 = _mm512_set1_epi8(0x3f),
                top2 = _mm512_set1_epi8(0x30), words = _mm512_set1_epi32(0x00ff00ff),
                ff = _mm512_set1_epi32(0xff);
  for (int64_t i = 0; i < nb; ++i, a += NT) {
    const uint8_t *p = w + size_t(i) * sizeof(BlockQ4_K);
    if (next) {  // as rows16: the next group's contiguous bytes into L2 at this group's pace
      const char *q = reinterpret_cast<const char *>(next) + size_t(i) * kRows * sizeof(BlockQ4_K);
#pragma GCC unroll 36
      for (size_t b = 0; b < kRows * sizeof(BlockQ4_K); b += 64) _mm_prefetch(q + b, _MM_HINT_T1);
    }
    const uint8_t *pk = w + size_t(i) * kRows * sizeof(BlockQ4_K);  // P: the block's vectors
    const auto vec = [pk](int k) { return _mm512_loadu_si512(pk + 64 * k); };
    if (!next || first) {
      if constexpr (P) {
#pragma GCC unroll 36
        for (size_t b = 0; b < kRows * sizeof(BlockQ4_K); b += 64)
          _mm_prefetch(reinterpret_cast<const char *>(pk) + 4 * kAhead + b, _MM_HINT_T0);
      } else {
#pragma GCC unroll 16
        for (int k = 0; k < kRows; ++k) {
          _mm_prefetch(reinterpret_cast<const char *>(p + o[k]) + kAhead, _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char *>(p + o[k]) + kAhead + 64, _MM_HINT_T0);
        }
      }
    }
    static_assert(offsetof(BlockQ4_K, qs) == 16, "Q4_K: 16 bytes of d, dmin and scales");
    __m512i head[4];
    if constexpr (P) {
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) head[k] = vec(k);
    } else {
      load_t16(p, o, 0, head);
    }
    const __m512i g0 = head[0], g1 = head[1], g2 = head[2], g3 = head[3];
    const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g0));
    const __m512 dmw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g0, 16)));
    const __m512i sc_lo = _mm512_and_si512(g1, lo6);  // scale bytes 0..3, then 4..7
    const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(g3, m4),
                                          _mm512_and_si512(_mm512_srli_epi32(g1, 2), top2));
    const __m512i mn_lo = _mm512_and_si512(g2, lo6);
    const __m512i mn_hi =
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(g3, 4), m4),
                        _mm512_and_si512(_mm512_srli_epi32(g2, 2), top2));
    const __m512i mp[4] = {_mm512_and_si512(mn_lo, words),
                           _mm512_and_si512(_mm512_srli_epi32(mn_lo, 8), words),
                           _mm512_and_si512(mn_hi, words),
                           _mm512_and_si512(_mm512_srli_epi32(mn_hi, 8), words)};
    // The minimums' term first, so that nothing of it stays live over the codes (registers:
    // with NT = 4, the sums, the accumulators and the codes come near all 32).
    __m512i tot[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      tot[t] = _mm512_setzero_si512();
      __m512i mins = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q)
        mins = _mm512_dpwssd_epi32(mins, mp[q], _mm512_set1_epi32(a[t].msum[q]));
      acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins),
                                _mm512_mul_ps(dmw, _mm512_set1_ps(a[t].d)), acc[t]);
    }
#pragma GCC unroll 1
    for (int c = 0; c < 4; ++c) {
      __m512i q[8];
      if constexpr (P) {
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) q[g] = vec(4 + 8 * c + g);
      } else {
        __m512i lo[4], hi[4];
        load_t16(p, o, offsetof(BlockQ4_K, qs) + 32 * c, lo);
        load_t16(p, o, offsetof(BlockQ4_K, qs) + 32 * c + 16, hi);
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) q[g] = lo[g], q[g + 4] = hi[g];
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {  // sub-block 2c + h: low nibbles, then high
        const int j = 2 * c + h;
        const __m512i scw = j < 4 ? sc_lo : sc_hi;
        const __m512i sc = _mm512_and_si512(_mm512_srli_epi32(scw, 8 * (j % 4)), ff);
        __m512i v[8];
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g)
          v[g] = _mm512_and_si512(h ? _mm512_srli_epi16(q[g], 4) : q[g], m4);
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
          const int8_t *x = a[t].qs + 32 * j;
          __m512i s2[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 8
          for (int g = 0; g < 8; ++g) {
            int32_t q4;
            std::memcpy(&q4, x + 4 * g, sizeof q4);
            s2[g & 1] = _mm512_dpbusd_epi32(s2[g & 1], v[g], _mm512_set1_epi32(q4));
          }
          tot[t] = _mm512_add_epi32(tot[t], _mm512_mullo_epi32(_mm512_add_epi32(s2[0], s2[1]), sc));
        }
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512 da = _mm512_set1_ps(a[t].d);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[t]), _mm512_mul_ps(dw, da), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

template <int KIND>  // the kernel for each token count (nt's value)
void dot_rows_0(const DotArgs &a) {
  dot_rows<BlockA8R, QK>(a, [](auto nt, auto p, auto &&...args) {
    rows16<KIND, decltype(p)::value, decltype(nt)::value>(args...);
  });
}

}  // namespace

void dot_rows_q8_0(const DotArgs &a) { dot_rows_0<0>(a); }
void dot_rows_q4_0(const DotArgs &a) { dot_rows_0<1>(a); }
void dot_rows_q5_0(const DotArgs &a) { dot_rows_0<2>(a); }
void dot_rows_q4_k(const DotArgs &a) {
  dot_rows<BlockA8KR, QK_K>(a, [](auto nt, auto p, auto &&...args) {
    rows16_q4k<decltype(p)::value, decltype(nt)::value>(args...);
  });
}

}  // namespace edgenano::kern

// ---- pack_rows16 (repack.cpp's layout), the same bytes from the transposes above ----

namespace edgenano::kern {

namespace {

// Q5_0's high bits as packed: bit 8j + g = bit 4g + j of qh, in each lane. For each j the bits
// 4g + j (stride 4) are gathered into one byte by three shift-or-mask steps.
inline __m512i qh_pack16(__m512i qh) {
  __m512i r = _mm512_setzero_si512();
  for (int j = 0; j < 4; ++j) {
    __m512i x = _mm512_and_si512(_mm512_srli_epi32(qh, unsigned(j)), _mm512_set1_epi32(0x11111111));
    x = _mm512_and_si512(_mm512_or_si512(x, _mm512_srli_epi32(x, 3)), _mm512_set1_epi32(0x03030303));
    x = _mm512_and_si512(_mm512_or_si512(x, _mm512_srli_epi32(x, 6)), _mm512_set1_epi32(0x000F000F));
    x = _mm512_and_si512(_mm512_or_si512(x, _mm512_srli_epi32(x, 12)), _mm512_set1_epi32(0xFF));
    r = _mm512_or_si512(r, _mm512_slli_epi32(x, unsigned(8 * j)));
  }
  return r;
}

template <int TYPE>
void pack_groups(const uint8_t *src, uint8_t *dst, size_t rb, int64_t groups) {
  constexpr size_t bb = TYPE == T_Q8_0   ? sizeof(BlockQ8_0)
                        : TYPE == T_Q4_0 ? sizeof(BlockQ4_0)
                        : TYPE == T_Q5_0 ? sizeof(BlockQ5_0)
                                         : sizeof(BlockQ4_K);
  size_t o[kRows];
  for (int r = 0; r < kRows; ++r) o[r] = size_t(r) * rb;
  const int64_t nb = int64_t(rb / bb);
  const auto st = [](uint8_t *q, __m512i v) { _mm512_storeu_si512(q, v); };
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t *s = src + size_t(g) * kRows * rb;
    uint8_t *d = dst + size_t(g) * kRows * rb;
    for (int64_t i = 0; i < nb; ++i) {
      const uint8_t *p = s + size_t(i) * bb;
      uint8_t *q = d + size_t(i) * kRows * bb;
      __m512i v[4];
      if constexpr (TYPE == T_Q4_K) {
        for (int m = 0; m < 9; ++m) {  // dwords 4m..4m+3 of each row's block
          load_t16(p, o, size_t(16 * m), v);
          for (int k = 0; k < 4; ++k) st(q + 64 * (4 * m + k), v[k]);
        }
        continue;
      }
      load_t16(p, o, 0, v);  // the scale is the low half of dword 0
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(q), _mm512_cvtepi32_epi16(v[0]));
      size_t at = 32, off = 2;
      if constexpr (TYPE == T_Q5_0) {
        st(q + at, qh_pack16(_mm512_or_si512(_mm512_srli_epi32(v[0], 16),
                                             _mm512_slli_epi32(v[1], 16))));
        at += 64, off = 6;
      }
      for (int h = 0; h < (TYPE == T_Q8_0 ? 2 : 1); ++h, off += 16) {
        load_t16(p, o, off, v);
        for (int k = 0; k < 4; ++k, at += 64)
          st(q + at, TYPE == T_Q8_0 ? _mm512_xor_si512(v[k], _mm512_set1_epi8(char(0x80))) : v[k]);
      }
    }
  }
}

}  // namespace

void pack_groups_avx512(int type, const uint8_t *src, uint8_t *dst, size_t row_bytes,
                        int64_t groups) {
  switch (type) {
    case T_Q8_0: return pack_groups<T_Q8_0>(src, dst, row_bytes, groups);
    case T_Q4_0: return pack_groups<T_Q4_0>(src, dst, row_bytes, groups);
    case T_Q5_0: return pack_groups<T_Q5_0>(src, dst, row_bytes, groups);
    case T_Q4_K: return pack_groups<T_Q4_K>(src, dst, row_bytes, groups);
    default: break;
  }
}

}  // namespace edgenano::kern
