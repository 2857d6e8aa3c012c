// K-quant super-block search (Q4_K, Q5_K, Q6_K), included inside a namespace by ggml/quants_k.cpp
// (portable build) and kernels/quants_k_avx2.cpp (AVX2 build). Both translation units turn off FMA
// contraction and the code uses only IEEE basic operations in a fixed order, so every build
// writes identical bytes. Loops run 8 lanes wide over candidates (sums stay sequential) or over
// elements (lane sums, then a fixed pairwise order).
//
// Method. Q4_K/Q5_K model each 32-element sub-block as x ~ s*q - o (q in [0, nmax], s, o >= 0):
//  1. per sub-block, try stretches of [min(x,0), max(x)] over nmax-0.75 .. nmax+2.125 levels;
//     each gives codes, the codes give a least-squares (s, o); keep the lowest error, polish it;
//  2. super scales d = max s / 63, dmin = max o / 63 on the f16 grid;
//  3. per sub-block, choose the 6-bit (sc, m) among the 3x3 neighbours of the rounded fit by the
//     true error of the codes they give;
//  4. refit (d, dmin) by least squares over the whole super-block, repeat 3 while it improves.
// Q6_K does the same with one signed scale per 16 elements, codes in [-32, 31] and int8 scales.

namespace {

// 8 float lanes (GCC/Clang vector extension): AVX registers in the AVX2 build, SSE pairs in the
// portable one; lane-wise IEEE operations either way.
typedef float vf __attribute__((vector_size(32)));

inline vf splat(float v) { return vf{} + v; }
inline vf load8(const float *p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
// Fixed pairwise order, so both builds sum identically.
inline float hsum(vf v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: v + magic - magic rounds to nearest even

// Round to nearest (ties to even) after clamping to [lo, hi]; NaN goes to lo.
inline float round_clamped(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  return (v + kRoundMagic) - kRoundMagic;
}
inline vf round_clamped(vf v, vf lo, vf hi) {
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  return (v + kRoundMagic) - kRoundMagic;
}

inline float to_f16_grid(float v, uint16_t *bits) {
  v = v > -65504.0f ? v : -65504.0f;  // largest finite f16: never store inf
  v = v < 65504.0f ? v : 65504.0f;
  *bits = f32_to_f16(v);
  return f16_to_f32(*bits);
}

// ------------------------------------------------------------ Q4_K / Q5_K (affine codes)

struct Affine {
  float s, o, err;  // x ~ s*q - o
};

// Least-squares (s, o) for fixed codes, from the sums; o is held at 0 when it would go negative.
// err = sum((x - s*q + o)^2), expanded over the same sums.
inline Affine affine_from_sums(float n, float sx, float sxx, float sq, float sqq, float sxq) {
  Affine f{0.0f, 0.0f, sxx};
  if (!(sqq > 0.0f)) return f;
  const float det = n * sqq - sq * sq;
  float s = 0.0f, b = 1.0f;  // x ~ s*q + b
  if (det > 0.0f) {
    s = (n * sxq - sx * sq) / det;
    b = (sqq * sx - sq * sxq) / det;
  }
  if (b > 0.0f) {
    s = sxq / sqq;
    b = 0.0f;
  }
  f.s = s;
  f.o = -b;
  f.err = sxx + s * s * sqq + n * b * b - 2.0f * s * sxq - 2.0f * b * sx + 2.0f * s * b * sq;
  return f;
}

constexpr int kStretches = 24;

Affine fit_affine(const float *x, float nmax) {
  float lo = 0.0f, hi = x[0], sx = 0.0f, sxx = 0.0f;
  for (int i = 0; i < 32; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
    sx += x[i];
    sxx += x[i] * x[i];
  }
  if (!(hi > lo)) return Affine{0.0f, -lo, 0.0f};  // constant sub-block (<= 0): exact
  const float range = hi - lo;
  constexpr int nv = kStretches / 8;
  vf inv[nv], sq[nv] = {}, sqq[nv] = {}, sxq[nv] = {};
  for (int k = 0; k < kStretches; ++k)
    inv[k / 8][k % 8] = (nmax - 0.75f + 0.125f * static_cast<float>(k)) / range;
  const vf zero = splat(0.0f), top = splat(nmax);
  for (int i = 0; i < 32; ++i) {
    const vf xi = splat(x[i]), t = splat(x[i] - lo);
    for (int v = 0; v < nv; ++v) {
      const vf q = round_clamped(t * inv[v], zero, top);
      sq[v] += q;
      sqq[v] += q * q;
      sxq[v] += xi * q;
    }
  }
  Affine best{range / nmax, -lo, INFINITY};
  for (int k = 0; k < kStretches; ++k) {
    const Affine f =
        affine_from_sums(32.0f, sx, sxx, sq[k / 8][k % 8], sqq[k / 8][k % 8], sxq[k / 8][k % 8]);
    if (f.s > 0.0f && f.err < best.err) best = f;
  }
  for (int pass = 0; pass < 2 && best.s > 0.0f; ++pass) {  // codes of the winner, refit
    const float is = 1.0f / best.s;
    float a = 0.0f, b = 0.0f, c = 0.0f;
    for (int i = 0; i < 32; ++i) {
      const float q = round_clamped((x[i] + best.o) * is, 0.0f, nmax);
      a += q;
      b += q * q;
      c += x[i] * q;
    }
    const Affine f = affine_from_sums(32.0f, sx, sxx, a, b, c);
    if (!(f.s > 0.0f && f.err < best.err)) break;
    best = f;
  }
  return best;
}

struct SuperAffine {
  float d, dmin;  // on the f16 grid
  uint16_t d16, dmin16;
  int sc[8], m[8];
  uint8_t q[QK_K];
  float err;
};

constexpr int kNear = 9;  // 3x3 neighbourhood of (sc, m)

// Step 3: for fixed (d, dmin), each sub-block's (sc, m) by the error of the codes they give.
void choose_sub_scales(const float *x, const Affine *fit, float nmax, SuperAffine *t) {
  const float id = t->d > 0.0f ? 1.0f / t->d : 0.0f;
  const float idm = t->dmin > 0.0f ? 1.0f / t->dmin : 0.0f;
  t->err = 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float *xj = x + 32 * j;
    const int sc0 = static_cast<int>(round_clamped(fit[j].s * id, 1.0f, 62.0f));
    const int m0 = static_cast<int>(round_clamped(fit[j].o * idm, 1.0f, 62.0f));
    const vf xv[4] = {load8(xj), load8(xj + 8), load8(xj + 16), load8(xj + 24)};
    const vf zero = splat(0.0f), top = splat(nmax);
    float S[kNear], O[kNear], iS[kNear], err[kNear];
    for (int c = 0; c < kNear; ++c) {
      S[c] = t->d * static_cast<float>(sc0 - 1 + c / 3);
      O[c] = t->dmin * static_cast<float>(m0 - 1 + c % 3);
      iS[c] = S[c] > 0.0f ? 1.0f / S[c] : 0.0f;
      vf acc = zero;
      for (int v = 0; v < 4; ++v) {
        const vf q = round_clamped((xv[v] + O[c]) * iS[c], zero, top);
        const vf r = xv[v] - (S[c] * q - O[c]);
        acc += r * r;
      }
      err[c] = hsum(acc);
    }
    int best = 0;
    for (int c = 1; c < kNear; ++c) best = err[c] < err[best] ? c : best;
    t->sc[j] = sc0 - 1 + best / 3;
    t->m[j] = m0 - 1 + best % 3;
    for (int i = 0; i < 32; ++i)
      t->q[32 * j + i] =
          static_cast<uint8_t>(round_clamped((xj[i] + O[best]) * iS[best], 0.0f, nmax));
    t->err += err[best];
  }
}

// Step 4: least-squares (d, dmin) for fixed integer scales and codes, x = d*(sc*q) - dmin*m.
bool refit_super_affine(const float *x, const SuperAffine &t, float *d, float *dmin) {
  double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
  for (int j = 0; j < 8; ++j) {
    double qsum = 0, qq = 0, xq = 0, xs = 0;
    for (int i = 0; i < 32; ++i) {
      const double q = t.q[32 * j + i], v = x[32 * j + i];
      qsum += q;
      qq += q * q;
      xq += v * q;
      xs += v;
    }
    const double sc = t.sc[j], m = t.m[j];
    saa += sc * sc * qq;
    sab += sc * m * qsum;
    sbb += 32.0 * m * m;
    sxa += sc * xq;
    sxb += m * xs;
  }
  // minimize |x - d*a + dmin*b|^2: [saa -sab; -sab sbb] [d; dmin] = [sxa; -sxb]
  const double det = saa * sbb - sab * sab;
  if (sbb == 0.0 && saa > 0.0) {
    *d = static_cast<float>(sxa / saa);
    *dmin = 0.0f;
  } else if (det > 0.0) {
    *d = static_cast<float>((sxa * sbb - sab * sxb) / det);
    *dmin = static_cast<float>((sab * sxa - saa * sxb) / det);
  } else {
    return false;
  }
  return *d >= 0.0f && *dmin >= 0.0f && std::isfinite(*d) && std::isfinite(*dmin);
}

void quantize_super_affine(const float *x, float nmax, SuperAffine *out) {
  Affine fit[8];
  float smax = 0.0f, omax = 0.0f;
  for (int j = 0; j < 8; ++j) {
    fit[j] = fit_affine(x + 32 * j, nmax);
    smax = fit[j].s > smax ? fit[j].s : smax;
    omax = fit[j].o > omax ? fit[j].o : omax;
  }
  SuperAffine t;
  t.d = to_f16_grid(smax / 63.0f, &t.d16);
  t.dmin = to_f16_grid(omax / 63.0f, &t.dmin16);
  choose_sub_scales(x, fit, nmax, &t);
  *out = t;
  for (int pass = 0; pass < 2; ++pass) {
    float d, dmin;
    if (!refit_super_affine(x, *out, &d, &dmin)) break;
    t.d = to_f16_grid(d, &t.d16);
    t.dmin = to_f16_grid(dmin, &t.dmin16);
    choose_sub_scales(x, fit, nmax, &t);
    if (!(t.err < out->err)) break;
    *out = t;
  }
}

// ------------------------------------------------------------ Q6_K (signed codes)

constexpr int kSigned = 32;  // 16 slacks x {largest -> -32, largest -> +31}

// Best scale for codes in [-32, 31] on 16 elements, ranked by sum(xq)^2 / sum(qq) (the error
// drop of each candidate's codes at their least-squares scale sum(xq)/sum(qq)).
float fit_signed(const float *x) {
  float amax = 0.0f, vmax = 0.0f;
  for (int i = 0; i < 16; ++i) {
    const float a = std::fabs(x[i]);
    vmax = a > amax ? x[i] : vmax;
    amax = a > amax ? a : amax;
  }
  if (amax == 0.0f) return 0.0f;
  constexpr int nv = kSigned / 8;
  vf inv[nv], sqq[nv] = {}, sxq[nv] = {};
  for (int k = 0; k < kSigned / 2; ++k) {
    const float slack = -0.5f + 0.125f * static_cast<float>(k);
    inv[k / 4][2 * (k % 4)] = -(32.0f + slack) / vmax;
    inv[k / 4][2 * (k % 4) + 1] = (31.0f + slack) / vmax;
  }
  const vf lo = splat(-32.0f), hi = splat(31.0f);
  for (int i = 0; i < 16; ++i) {
    const vf xi = splat(x[i]);
    for (int v = 0; v < nv; ++v) {
      const vf q = round_clamped(xi * inv[v], lo, hi);
      sqq[v] += q * q;
      sxq[v] += xi * q;
    }
  }
  float best_gain = -1.0f, best_s = vmax / -32.0f;
  for (int k = 0; k < kSigned; ++k) {
    const float a = sqq[k / 8][k % 8], b = sxq[k / 8][k % 8];
    if (a > 0.0f && b * b / a > best_gain) {
      best_gain = b * b / a;
      best_s = b / a;
    }
  }
  for (int pass = 0; pass < 2; ++pass) {
    const float is = 1.0f / best_s;
    float a = 0.0f, b = 0.0f;
    for (int i = 0; i < 16; ++i) {
      const float q = round_clamped(x[i] * is, -32.0f, 31.0f);
      a += q * q;
      b += x[i] * q;
    }
    if (!(a > 0.0f && b * b / a > best_gain)) break;
    best_gain = b * b / a;
    best_s = b / a;
  }
  return best_s;
}

struct SuperSigned {
  float d;
  uint16_t d16;
  int sc[16];
  int8_t q[QK_K];
  float err;
};

void choose_signed_scales(const float *x, const float *s, SuperSigned *t) {
  const float id = t->d != 0.0f ? 1.0f / t->d : 0.0f;
  t->err = 0.0f;
  for (int j = 0; j < 16; ++j) {
    const float *xj = x + 16 * j;
    const int sc0 = static_cast<int>(round_clamped(s[j] * id, -127.0f, 126.0f));
    const vf x0 = load8(xj), x1 = load8(xj + 8), lo = splat(-32.0f), hi = splat(31.0f);
    float S[3], iS[3], err[3];
    for (int c = 0; c < 3; ++c) {
      S[c] = t->d * static_cast<float>(sc0 - 1 + c);
      iS[c] = S[c] != 0.0f ? 1.0f / S[c] : 0.0f;
      const vf r0 = x0 - S[c] * round_clamped(x0 * iS[c], lo, hi);
      const vf r1 = x1 - S[c] * round_clamped(x1 * iS[c], lo, hi);
      err[c] = hsum(r0 * r0 + r1 * r1);
    }
    int best = err[1] <= err[0] ? 1 : 0;
    best = err[2] < err[best] ? 2 : best;
    t->sc[j] = sc0 - 1 + best;
    for (int i = 0; i < 16; ++i)
      t->q[16 * j + i] = static_cast<int8_t>(round_clamped(xj[i] * iS[best], -32.0f, 31.0f));
    t->err += err[best];
  }
}

void quantize_super_signed(const float *x, SuperSigned *out) {
  float s[16], smax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    s[j] = fit_signed(x + 16 * j);
    smax = std::fabs(s[j]) > std::fabs(smax) ? s[j] : smax;
  }
  SuperSigned t;
  t.d = to_f16_grid(smax / -128.0f, &t.d16);  // the largest sub-scale takes code -128
  choose_signed_scales(x, s, &t);
  *out = t;
  for (int pass = 0; pass < 2; ++pass) {
    double saa = 0, sxa = 0;
    for (int i = 0; i < QK_K; ++i) {
      const double a = static_cast<double>(out->sc[i / 16]) * out->q[i];
      saa += a * a;
      sxa += a * x[i];
    }
    if (!(saa > 0.0)) break;
    t.d = to_f16_grid(static_cast<float>(sxa / saa), &t.d16);
    choose_signed_scales(x, s, &t);
    if (!(t.err < out->err)) break;
    *out = t;
  }
}

// ------------------------------------------------------------ packing

void pack_scales_mins(const int *sc, const int *m, uint8_t *s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

void pack_low_nibbles(const uint8_t *q, uint8_t *qs) {
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 32; ++i)
      qs[32 * c + i] = static_cast<uint8_t>((q[64 * c + i] & 15) | (q[64 * c + 32 + i] << 4));
}

}  // namespace

void quantize_q4_k(const float *x, BlockQ4_K *y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK_K) {
    SuperAffine t;
    quantize_super_affine(x, 15.0f, &t);
    y[b].d = t.d16;
    y[b].dmin = t.dmin16;
    pack_scales_mins(t.sc, t.m, y[b].scales);
    pack_low_nibbles(t.q, y[b].qs);
  }
}

void quantize_q5_k(const float *x, BlockQ5_K *y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK_K) {
    SuperAffine t;
    quantize_super_affine(x, 31.0f, &t);
    y[b].d = t.d16;
    y[b].dmin = t.dmin16;
    pack_scales_mins(t.sc, t.m, y[b].scales);
    pack_low_nibbles(t.q, y[b].qs);
    for (int i = 0; i < 32; ++i) {
      uint8_t h = 0;
      for (int j = 0; j < 8; ++j) h |= static_cast<uint8_t>(((t.q[32 * j + i] >> 4) & 1) << j);
      y[b].qh[i] = h;
    }
  }
}

void quantize_q6_k(const float *x, BlockQ6_K *y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK_K) {
    SuperSigned t;
    quantize_super_signed(x, &t);
    y[b].d = t.d16;
    for (int j = 0; j < 16; ++j) y[b].scales[j] = static_cast<int8_t>(t.sc[j]);
    for (int h = 0; h < 2; ++h) {
      const int8_t *q = t.q + 128 * h;
      for (int k = 0; k < 64; ++k) {
        const int lo = q[k] + 32, hi = q[k + 64] + 32;  // codes 0..63
        y[b].ql[64 * h + k] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
      }
      for (int i = 0; i < 32; ++i) {
        int v = 0;
        for (int s = 0; s < 4; ++s) v |= ((q[32 * s + i] + 32) >> 4) << (2 * s);
        y[b].qh[32 * h + i] = static_cast<uint8_t>(v);
      }
    }
  }
}
