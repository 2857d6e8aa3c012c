// The 16-row interleave of the row-lane dots (see matmul.h, pack_rows16). Portable C++: the packing
// runs once at load, the unpacking only where the AVX-512 kernels are not in use.
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_impl.h"

namespace edgenano::kern {

namespace {

constexpr int kGroup = 16;

// A block's bytes: `lead` bytes of f16 scale (the *_0 types: 2; Q4_K: none, its header is dwords
// like the rest) then `dwords` 4-byte words.
struct Layout {
  size_t block, lead, dwords;
};
template <int TYPE>
constexpr Layout layout_of() {
  if constexpr (TYPE == T_Q8_0) return {sizeof(BlockQ8_0), 2, 8};
  if constexpr (TYPE == T_Q4_0) return {sizeof(BlockQ4_0), 2, 4};
  if constexpr (TYPE == T_Q5_0) return {sizeof(BlockQ5_0), 2, 5};
  return {sizeof(BlockQ4_K), 0, 36};
}

// Q5_0's high bits, reordered so that one shift brings those of 4 consecutive values to bit 4 of
// their bytes: bit 8j + g of the packed word = bit 4g + j of qh (j < 4, g < 8): a 4x8 bit
// transpose, nibble g of qh spread to bit g of the 4 bytes.
constexpr uint32_t spread(uint32_t nib) {
  return (nib & 1) | (nib & 2) << 7 | (nib & 4) << 14 | (nib & 8) << 21;
}
uint32_t qh_pack(uint32_t qh) {
  uint32_t r = 0;
  for (int g = 0; g < 8; ++g) r |= spread((qh >> (4 * g)) & 15) << g;
  return r;
}
uint32_t qh_unpack(uint32_t r) {
  uint32_t qh = 0;
  for (int j = 0; j < 4; ++j)
    for (int g = 0; g < 8; ++g) qh |= ((r >> (8 * j + g)) & 1u) << (4 * g + j);
  return qh;
}

// One dword of a row's block, as packed (pack) or back (unpack).
template <int TYPE, bool Pack>
inline uint32_t dword_out(size_t k, uint32_t v) {
  if constexpr (TYPE == T_Q8_0) return v ^ 0x80808080u;  // signed codes biased (an involution)
  if constexpr (TYPE == T_Q5_0)
    if (k == 0) return Pack ? qh_pack(v) : qh_unpack(v);
  return v;
}

template <int TYPE, bool Pack>
void convert(int64_t n_in, const uint8_t *src, uint8_t *dst, int64_t n_rows) {
  constexpr Layout L = layout_of<TYPE>();
  const size_t rb = row_bytes(TYPE, n_in);
  if (rb == 0) throw std::invalid_argument("pack_rows16: rows are not whole blocks");
  const int64_t nb = int64_t(rb / L.block), full = n_rows / kGroup * kGroup;
#ifdef EDGENANO_AVX512
  if (Pack && use_avx512()) {  // the same bytes, about 4x as fast (a 9B model is 6 GB)
    pack_groups_avx512(TYPE, src, dst, rb, full / kGroup);
  } else
#endif
  for (int64_t g = 0; g < full; g += kGroup) {
    const uint8_t *s = src + size_t(g) * rb;
    uint8_t *d = dst + size_t(g) * rb;
    for (int64_t i = 0; i < nb; ++i) {
      // Block i of the group: the 16 scales, then dword k of every row, row r in lane r.
      const size_t gb = size_t(i) * kGroup * L.block;
      for (int r = 0; r < kGroup; ++r) {
        const size_t row = size_t(r) * rb + size_t(i) * L.block;  // row r's block, unpacked
        const uint8_t *from = Pack ? s + row : s + gb;
        uint8_t *to = Pack ? d + gb : d + row;
        if constexpr (L.lead != 0) {
          if (Pack)
            std::memcpy(to + 2 * r, from, 2);
          else
            std::memcpy(to, from + 2 * r, 2);
        }
        for (size_t k = 0; k < L.dwords; ++k) {
          const size_t u = L.lead + 4 * k, p = kGroup * L.lead + (k * kGroup + size_t(r)) * 4;
          uint32_t v;
          std::memcpy(&v, from + (Pack ? u : p), 4);
          v = dword_out<TYPE, Pack>(k, v);
          std::memcpy(to + (Pack ? p : u), &v, 4);
        }
      }
    }
  }
  if (full < n_rows)  // the last rows, fewer than a group: as they are
    std::memcpy(dst + size_t(full) * rb, src + size_t(full) * rb, size_t(n_rows - full) * rb);
}

template <bool Pack>
void convert(int type, int64_t n_in, const uint8_t *src, uint8_t *dst, int64_t n_rows) {
  switch (type) {
    case T_Q8_0: return convert<T_Q8_0, Pack>(n_in, src, dst, n_rows);
    case T_Q4_0: return convert<T_Q4_0, Pack>(n_in, src, dst, n_rows);
    case T_Q5_0: return convert<T_Q5_0, Pack>(n_in, src, dst, n_rows);
    case T_Q4_K: return convert<T_Q4_K, Pack>(n_in, src, dst, n_rows);
    default: throw std::invalid_argument("pack_rows16: no packed layout for this type");
  }
}

bool has_layout(int type) {
  return type == T_Q8_0 || type == T_Q4_0 || type == T_Q5_0 || type == T_Q4_K;
}

}  // namespace

bool packable(int type) {
  return has_layout(type) && active_kernels().dot_rows[type_index(type)] != nullptr;
}

void pack_rows16(int type, int64_t n_in, const uint8_t *src, uint8_t *dst, int64_t n_rows) {
  convert<true>(type, n_in, src, dst, n_rows);
}

void unpack_rows16(int type, int64_t n_in, const uint8_t *src, uint8_t *dst, int64_t n_rows) {
  convert<false>(type, n_in, src, dst, n_rows);
}

}  // namespace edgenano::kern
