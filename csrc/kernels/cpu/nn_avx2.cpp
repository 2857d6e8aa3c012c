// AVX2/FMA/F16C vector primitives for the non-matmul kernels (built with -mavx2 -mfma -mf16c,
// entered only after use_avx2()); the algorithms themselves are in nn_impl.h.
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/nn_impl.h"
#include "kernels/cpu/simd_avx2.h"

namespace edgenano::kern {

namespace {

using avx2::hsum;

// e^x to about 1 ulp: x = n ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor polynomial,
// 2^n through the exponent bits; 0 below -87.3 (no denormals), clamped above 88.7.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  // 2^n in two factors so that n = 128 (x near 88.7) does not overflow the exponent field.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 s1 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, s1), s2), keep);
}

struct Avx2V {
  static float dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  static float sumsq(const float *x, int64_t n) { return dot(x, x, n); }
  static void axpy(float *y, float a, const float *x, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
  }
  // out[s] = q . x[s * ldx + (0, n)] for s < ns: 8 rows at a time against one load of q, their 8
  // sums reduced together by a tree of hadds (one reduction per 8 dots, not one each).
  static void dot_rows(const float *q, const float *x, int ns, int64_t ldx, int64_t n, float *out) {
    int s = 0;
    if (n % 8 == 0)
      for (; s + 8 <= ns; s += 8) {
        __m256 a[8];
        for (int k = 0; k < 8; ++k) a[k] = _mm256_setzero_ps();
        for (int64_t i = 0; i < n; i += 8) {
          const __m256 qv = _mm256_loadu_ps(q + i);
          for (int k = 0; k < 8; ++k)
            a[k] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x + (s + k) * ldx + i), a[k]);
        }
        const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
        const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
        const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
        // lanes: [0 1 2 3 | 0 1 2 3] and [4 5 6 7 | 4 5 6 7] halves to add
        const __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
        const __m256 hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
        _mm256_storeu_ps(out + s, _mm256_add_ps(lo, hi));
      }
    for (; s < ns; ++s) out[s] = dot(q, x + s * ldx, n);
  }
  // y[0, n) += sum over s < ns of w[s] * x[s * ldx + (0, n)], each element summed in s order (as
  // ns axpys, so the same bits) but held in registers across the rows, 64 or 32 columns at a
  // time: the ns axpys stored and reloaded y every row. Attention decode over 4096 keys: 0.92 ->
  // 0.81 ms (32 columns); one head and query on one Zen 4 core: 116 -> 97 us (64 columns).
  static void axpy_rows(float *y, const float *w, const float *x, int ns, int64_t ldx, int64_t n) {
    int64_t i = 0;
    // 64 columns (8 chains of FMAs, enough to cover their latency at two a cycle), then 32.
    for (; i + 64 <= n; i += 64) {
      __m256 a[8];
      for (int v = 0; v < 8; ++v) a[v] = _mm256_loadu_ps(y + i + 8 * v);
      for (int s = 0; s < ns; ++s) {
        const __m256 ws = _mm256_broadcast_ss(w + s);
        const float *xs = x + s * ldx + i;
        for (int v = 0; v < 8; ++v) a[v] = _mm256_fmadd_ps(ws, _mm256_loadu_ps(xs + 8 * v), a[v]);
      }
      for (int v = 0; v < 8; ++v) _mm256_storeu_ps(y + i + 8 * v, a[v]);
    }
    for (; i + 32 <= n; i += 32) {
      __m256 a[4];
      for (int v = 0; v < 4; ++v) a[v] = _mm256_loadu_ps(y + i + 8 * v);
      for (int s = 0; s < ns; ++s) {
        const __m256 ws = _mm256_broadcast_ss(w + s);
        const float *xs = x + s * ldx + i;
        for (int v = 0; v < 4; ++v) a[v] = _mm256_fmadd_ps(ws, _mm256_loadu_ps(xs + 8 * v), a[v]);
      }
      for (int v = 0; v < 4; ++v) _mm256_storeu_ps(y + i + 8 * v, a[v]);
    }
    if (i < n)
      for (int s = 0; s < ns; ++s) axpy(y + i, w[s], x + s * ldx + i, n - i);
  }
  static void scale_axpy(float *y, float s, float a, const float *x, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s), va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; ++i) y[i] = s * y[i] + a * x[i];
  }
  // The max of x[0, n) (n >= 1): 8 lanes, then across them (max is exact in any order).
  static float max_of(const float *x, int64_t n) {
    int64_t i = 0;
    float m = x[0];
    if (n >= 8) {
      __m256 v = _mm256_loadu_ps(x);
      for (i = 8; i + 8 <= n; i += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(x + i));
      alignas(32) float t[8];
      _mm256_store_ps(t, v);
      for (int j = 0; j < 8; ++j) m = std::max(m, t[j]);
    }
    for (; i < n; ++i) m = std::max(m, x[i]);
    return m;
  }
  // x[i] = e^(x[i] - m) for i < n; returns their sum (in 8 lanes: the scalar loop's chain of
  // dependent adds took 4 cycles a key in attention decode).
  static float exp_sub_sum(float *x, int64_t n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
      _mm256_storeu_ps(x + i, e);
      acc = _mm256_add_ps(acc, e);
    }
    float s = hsum(acc);
    if (i < n) {
      alignas(32) float t[8] = {};
      for (int64_t j = i; j < n; ++j) t[j - i] = x[j] - m;
      _mm256_store_ps(t, exp8(_mm256_load_ps(t)));
      for (int64_t j = i; j < n; ++j) s += (x[j] = t[j - i]);
    }
    return s;
  }
  static void exp_inplace(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
      alignas(32) float t[8] = {};
      for (int64_t j = i; j < n; ++j) t[j - i] = x[j];
      _mm256_store_ps(t, exp8(_mm256_load_ps(t)));
      for (int64_t j = i; j < n; ++j) x[j] = t[j - i];
    }
  }
  static __m256 silu8(__m256 v) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
    return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.f), e));
  }
  static void silu_inplace(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, silu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
      alignas(32) float t[8] = {};
      for (int64_t j = i; j < n; ++j) t[j - i] = x[j];
      _mm256_store_ps(t, silu8(_mm256_load_ps(t)));
      for (int64_t j = i; j < n; ++j) x[j] = t[j - i];
    }
  }
  // nb Q8_0 blocks -> 32 * nb floats (d * q, as the scalar loop).
  static void q8_0_to_f32(const BlockQ8_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK) {
      const __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
      for (int j = 0; j < QK; j += 8) {
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(b[i].qs + j));
        _mm256_storeu_ps(y + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
      }
    }
  }
  static void f16_to_f32(const uint16_t *h, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; ++i) y[i] = _cvtsh_ss(h[i]);
  }
  static void relu2_inplace(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_max_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps());
      _mm256_storeu_ps(x + i, _mm256_mul_ps(v, v));
    }
    for (; i < n; ++i) x[i] = x[i] > 0.f ? x[i] * x[i] : 0.f;
  }
  static float update_dot(float *s, float decay, float a, const float *b, const float *c,
                          int64_t n) {
    const __m256 vd = _mm256_set1_ps(decay), va = _mm256_set1_ps(a);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v =
          _mm256_fmadd_ps(vd, _mm256_loadu_ps(s + i), _mm256_mul_ps(va, _mm256_loadu_ps(b + i)));
      _mm256_storeu_ps(s + i, v);
      acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(c + i), acc);
    }
    float r = hsum(acc);
    for (; i < n; ++i) {
      s[i] = decay * s[i] + a * b[i];
      r += s[i] * c[i];
    }
    return r;
  }
  static void gemm_panel(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y,
                         int64_t ldy, int T, int nr, bool acc) {
    avx2_kernels().gemm_panel(wp, kc, x, ldx, y, ldy, T, nr, acc);
  }
  static void f32_to_f16(const float *x, uint16_t *h, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128((__m128i *)(h + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) h[i] = kern::f32_to_f16(x[i]);
  }
};

const NnTable kAvx2Nn = NnImpl<Avx2V>::table();

}  // namespace

const NnTable &nn_avx2() { return kAvx2Nn; }

}  // namespace edgenano::kern
