// AVX-512 VNNI decode dots (built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni on top of the
// AVX2 flags; entered only after use_avx512()). The kernel table is the AVX2 one with the
// one-token dots of the types users' q4_k_m files are made of (Q4_0, Q5_0, Q4_K, Q5_K, Q6_K)
// replaced (Q8_0's stays AVX2's, see below), and Q8_0's int8 panels (matmul_quads_avx512.cpp): decode streams every weight byte once per token, and on a core that reads
// ~10 GB/s the AVX2 dots' unpacking ran out of vector ports before the memory ran out of bytes.
//
// What changes: 64 values per instruction instead of 32, and the VNNI dot products fuse the
// two-step integer multiply-add (maddubs + madd, then an add) into one instruction:
// vpdpbusd (u8 x s8, groups of 4 into i32) for Q4_0 / Q5_0, and maddubs + vpdpwssd (i16 x i16
// scale, pairs into i32) for the K types' per-sub-block scales. The integer sums are the AVX2
// kernels' exactly (no saturation: the bounds are in each kernel); only the order of the float
// additions across blocks differs. Several-token calls keep the AVX2 kernels.
//
// Every helper here is in an anonymous namespace and matmul_avx2.h is not included: an inline
// function compiled here may hold AVX-512 instructions, and the linker keeps one copy of an inline
// function for the whole program, which the AVX2 kernels would then call on CPUs without AVX-512.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_impl.h"

namespace edgenano::kern {

namespace {

constexpr int kPrefetch = 2048;  // bytes ahead of the weight loads, as the AVX2 dots

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline __m256i loadu(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// The 8 six-bit scales and mins of a Q4_K/Q5_K block (as ggml/quants.cpp unpacks them), one byte
// each, in two 64-bit words: computed in registers, because bytes stored one by one and read back
// as a word stall the load (a failed store-to-load forward) twice per block.
inline void k_scales(const uint8_t *s, uint64_t &sc, uint64_t &m) {
  uint32_t a, b, c;
  std::memcpy(&a, s, 4);
  std::memcpy(&b, s + 4, 4);
  std::memcpy(&c, s + 8, 4);
  const uint32_t lo6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, top2 = 0x30303030;
  sc = uint64_t(a & lo6) | uint64_t((c & lo4) | ((a >> 2) & top2)) << 32;
  m = uint64_t(b & lo6) | uint64_t(((c >> 4) & lo4) | ((b >> 2) & top2)) << 32;
}

// ---- *_0 types: 256-bit vectors (two more ports than 512-bit ones on these cores), 8 blocks
// per step ----
//
// Codes u are unsigned: Q4_0 / Q5_0 nibbles (Q5_0's fifth bits added under a mask loaded
// straight from qh). Q8_0 keeps the AVX2 dot: its codes need no unpacking, and this kernel on
// codes biased to unsigned gained little or lost (one Zen 4 core, in L2: 36 against 34 GB/s; in
// the model on Emerald Rapids 2-10% slower). sum(w*a) = sum(u*a) - zero * sum(a), and
// sum(a) * d_a is the activation block's s, so the zero points cost a scalar FMA per block, on
// 8 independent chains. vpdpbusd sums 4 products of at most 255 * 127 into an i32: exact. Each
// block's scale d_w * d_a is made in scalar registers and broadcast from there. On Zen 4 (one
// core, 256 rows of 4480 in L2) that ran Q5_0 at 19.8 GB/s and Q4_0 at 20.0, against 14.6 / 13.5
// with the 8 blocks' scales gathered (three vpgatherdd a step) and 16.3 / 14.9 with them stored
// and broadcast back by loads.

template <int KIND>  // 1 Q4_0, 2 Q5_0
struct Q0;
// 16 bytes of nibbles -> low nibbles in bytes 0..15, high in 16..31: the bytes broadcast to both
// halves by the load itself, the upper half's 64-bit lanes shifted by 4 (a byte takes its high
// nibble; what comes in from the next byte is masked off). No shuffle-port instruction, where an
// insert would take one per block.
inline __m256i nibbles32(const uint8_t *p) {
  const __m256i v =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
  return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)),
                          _mm256_set1_epi8(0x0f));
}
template <>
struct Q0<1> {
  using B = BlockQ4_0;
  static constexpr float kZero = 8.f;
  static __m256i codes(const B &b) { return nibbles32(b.qs); }
};
template <>
struct Q0<2> {
  using B = BlockQ5_0;
  static constexpr float kZero = 16.f;
  static __m256i codes(const B &b) {
    // The mask register loaded straight from qh (a load-port instruction; from a general
    // register it would take the shuffle port). qh sits at byte 2 of the block: a memcpy, not
    // a cast to __mmask32 *, which UBSan flags as misaligned; GCC still emits kmovd k, m32.
    const __m256i u = nibbles32(b.qs);
    uint32_t qh;
    std::memcpy(&qh, b.qh, sizeof qh);
    return _mm256_mask_add_epi8(u, _cvtu32_mask32(qh), u, _mm256_set1_epi8(16));
  }
};

template <int KIND>
float dot_q0(const uint8_t *w, const BlockA8 *a, int64_t n) {
  using Q = Q0<KIND>;
  using B = typename Q::B;
  auto *b = reinterpret_cast<const B *>(w);
  const int64_t nb = n / QK;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  float zt8[8] = {};  // the zero point's terms, one chain per block of a step
  int64_t i = 0;
  for (; i + 8 <= nb; i += 8) {
    const char *p = reinterpret_cast<const char *>(b + i);
    for (int k = 0; k < int(8 * sizeof(B)); k += 64) _mm_prefetch(p + kPrefetch + k, _MM_HINT_T0);
    float sc[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const float dw = h2f(b[i + j].d);
      sc[j] = dw * a[i + j].d;
      zt8[j] += dw * a[i + j].s;
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i s =
          _mm256_dpbusd_epi32(_mm256_setzero_si256(), Q::codes(b[i + j]), loadu(a[i + j].qs));
      acc[j & 3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(sc[j]), acc[j & 3]);
    }
  }
  float zt = 0.f;
  for (int j = 0; j < 8; ++j) zt += zt8[j];
  for (; i < nb; ++i) {
    const float dw = h2f(b[i].d);
    const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), Q::codes(b[i]), loadu(a[i].qs));
    acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * a[i].d), acc[0]);
    zt += dw * a[i].s;
  }
  const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  return hsum(sum) - Q::kZero * zt;
}

// ---- K types: a 256-value block in four 512-bit vectors; scales as i16 through vpdpwssd ----

// Q4_K / Q5_K: 64 bytes of nibbles hold chunks c, c+1: low nibbles = sub-blocks 2c | 2c+2, high =
// 2c+1 | 2c+3 (32 values each). maddubs words are at most 2 * 31 * 127; times a 6-bit scale and
// summed in pairs by vpdpwssd: exact in i32 over the block (256 * 31 * 127 * 63 < 2^31).
template <bool Q5>
float dot_k45_512(const uint8_t *w, const BlockA8K *a, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = reinterpret_cast<const B *>(w);
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch + 128, _MM_HINT_T0);
    uint64_t s8, m8;
    k_scales(b[i].scales, s8, m8);
    const __m256i bs = _mm256_madd_epi16(loadu(a[i].bsums), _mm256_set1_epi16(1));  // 8 sums
    const __m256i mins = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(m8)));
    accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(bs, mins)),
                           _mm256_set1_ps(h2f(b[i].dmin) * a[i].d), accm);
    // The 8 scales as i16 words 0..7, then broadcast per 256-bit half: sub-blocks (j, j + 2).
    const __m512i scw = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(s8))));
    __m512i sumi = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int p = 0; p < 2; ++p) {  // chunks 2p, 2p+1 = sub-blocks 4p .. 4p+3
      const __m512i q = _mm512_loadu_si512(b[i].qs + 64 * p);
      __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      if constexpr (Q5) {
        // qh bit j of byte k = fifth bit of value k of sub-block j.
        const __m256i hb = loadu(b[i].qh);
        const __m512i h2 = _mm512_inserti64x4(_mm512_castsi256_si512(hb), hb, 1);
        const __m512i one = _mm512_set1_epi8(1);
        const __m512i sh_lo =
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(short(4 * p))),
                               _mm256_set1_epi16(short(4 * p + 2)), 1);
        const __m512i sh_hi = _mm512_add_epi16(sh_lo, _mm512_set1_epi16(1));
        lo = _mm512_or_si512(
            lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h2, sh_lo), one), 4));
        hi = _mm512_or_si512(
            hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h2, sh_hi), one), 4));
      }
      const __m512i a0 = _mm512_loadu_si512(a[i].qs + 128 * p);       // sub-blocks 4p, 4p+1
      const __m512i a1 = _mm512_loadu_si512(a[i].qs + 128 * p + 64);  // 4p+2, 4p+3
      const __m512i alo = _mm512_shuffle_i64x2(a0, a1, _MM_SHUFFLE(1, 0, 1, 0));
      const __m512i ahi = _mm512_shuffle_i64x2(a0, a1, _MM_SHUFFLE(3, 2, 3, 2));
      // Scales: words 0..15 = sc[4p] (lo) / sc[4p+1] (hi), words 16..31 = sc[4p+2] / sc[4p+3].
      const __m512i s_lo =
          _mm512_permutexvar_epi16(_mm512_inserti64x4(_mm512_set1_epi16(short(4 * p)),
                                                      _mm256_set1_epi16(short(4 * p + 2)), 1),
                                   scw);
      const __m512i s_hi =
          _mm512_permutexvar_epi16(_mm512_inserti64x4(_mm512_set1_epi16(short(4 * p + 1)),
                                                      _mm256_set1_epi16(short(4 * p + 3)), 1),
                                   scw);
      sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lo, alo), s_lo);
      sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(hi, ahi), s_hi);
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(h2f(b[i].d) * a[i].d), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum(accm);
}

// Q6_K: half h of 128 values: ql[64h..64h+64] low nibbles = values 0..63, high = 64..127; the two
// high bits of value 32s + k in qh[32h + k] bits 2s, 2s+1. Codes u = q + 32 (0..63): maddubs words
// at most 2 * 63 * 127, times int8 scales (one per 16 values) summed by vpdpwssd: exact.
float dot_q6_k_512(const uint8_t *w, const BlockA8K *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  __m512 acc = _mm512_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
  // Word j of a 64-value product belongs to the 16 values j / 8 of it: scale index 4q + j / 8.
  const __m512i widx0 =
      _mm512_set_epi64(0x0003000300030003, 0x0003000300030003, 0x0002000200020002,
                       0x0002000200020002, 0x0001000100010001, 0x0001000100010001, 0, 0);
  const __m512i four = _mm512_set1_epi16(4);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch + 128, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch + 192, _MM_HINT_T0);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales));
    const __m512i scw = _mm512_castsi256_si512(sc16);  // 16 scales as words 0..15
    // The zero point: codes are q + 32, so subtract 32 * sum_j scale_j * bsum_j.
    const __m256i zero_terms = _mm256_madd_epi16(sc16, loadu(a[i].bsums));
    __m512i sumi = _mm512_castsi256_si512(
        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(zero_terms, 5)));
    sumi = _mm512_inserti64x4(sumi, _mm256_setzero_si256(), 1);
    __m512i widx = widx0;
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m512i l = _mm512_loadu_si512(b[i].ql + 64 * h);
      const __m256i qh = loadu(b[i].qh + 32 * h);
      const __m512i qh01 =
          _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      const __m512i qh23 = _mm512_srli_epi16(qh01, 4);
      const __m512i u0 = _mm512_or_si512(_mm512_and_si512(l, m4),
                                         _mm512_slli_epi16(_mm512_and_si512(qh01, m3), 4));
      const __m512i u1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                         _mm512_slli_epi16(_mm512_and_si512(qh23, m3), 4));
      const __m512i s0 = _mm512_permutexvar_epi16(widx, scw);
      widx = _mm512_add_epi16(widx, four);
      const __m512i s1 = _mm512_permutexvar_epi16(widx, scw);
      widx = _mm512_add_epi16(widx, four);
      sumi = _mm512_dpwssd_epi32(
          sumi, _mm512_maddubs_epi16(u0, _mm512_loadu_si512(a[i].qs + 128 * h)), s0);
      sumi = _mm512_dpwssd_epi32(
          sumi, _mm512_maddubs_epi16(u1, _mm512_loadu_si512(a[i].qs + 128 * h + 64)), s1);
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(h2f(b[i].d) * a[i].d), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// One token: these dots; several: the AVX2 table's kernels.
template <class A, float (*F)(const uint8_t *, const A *, int64_t), int TI>
void rows_or_avx2(const DotArgs &a) {
  if (a.T == 1) return rows<A, F>(a);
  avx2_kernels().dot[TI](a);
}

KernelTable make_table() {
  KernelTable t = avx2_kernels();
  t.dot[I_Q4_0] = rows_or_avx2<BlockA8, dot_q0<1>, I_Q4_0>;
  t.dot[I_Q5_0] = rows_or_avx2<BlockA8, dot_q0<2>, I_Q5_0>;
  t.dot_rows[I_Q8_0] = dot_rows_q8_0;
  t.dot_rows[I_Q4_0] = dot_rows_q4_0;
  t.dot_rows[I_Q5_0] = dot_rows_q5_0;
  t.dot_rows[I_Q4_K] = dot_rows_q4_k;
  t.dot[I_Q4_K] = rows_or_avx2<BlockA8K, dot_k45_512<false>, I_Q4_K>;
  t.dot[I_Q5_K] = rows_or_avx2<BlockA8K, dot_k45_512<true>, I_Q5_K>;
  t.dot[I_Q6_K] = rows_or_avx2<BlockA8K, dot_q6_k_512, I_Q6_K>;
  t.quad_gemm[I_Q8_0] = quad_gemm_q8_vnni;
  t.quad_gemm[I_Q4_0] = quad_gemm_q4_0_vnni;
  t.quad_gemm[I_Q5_0] = quad_gemm_q5_0_vnni;
  return t;
}

}  // namespace

const KernelTable &avx512_kernels() {
  static const KernelTable t = make_table();
  return t;
}

}  // namespace edgenano::kern
