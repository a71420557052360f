// The VNNI resampling kernels (see resample.cpp's VNNI section), written once and compiled twice: resample.cpp
// includes this file for AVX-512 VNNI on 256-bit vectors (EVEX: Ice Lake and later Xeons, Zen 4 and 5) and again for
// AVX-VNNI (VEX: Alder Lake and later client cores, Sierra Forest), which differ only in the target the compiler may
// use and the intrinsic's name. Not a standalone header: it expects IPU_VNNI_NS (the namespace of this copy),
// IPU_VNNI_TARGET (the target attribute) and IPU_DPBUSD (the vpdpbusd intrinsic), and resample.cpp's definitions
// before it.
// NOLINT(build/header_guard): included twice on purpose

namespace IPU_VNNI_NS {

// s0 + (s1 << 8) + (s2 << 16), shifted down: the exact Pillow sum's int32 before clipping.
IPU_VNNI_TARGET inline __m256i vnni_combine(__m256i s0, __m256i s1, __m256i s2) {
  return _mm256_srai_epi32(
      _mm256_add_epi32(s0, _mm256_add_epi32(_mm256_slli_epi32(s1, 8), _mm256_slli_epi32(s2, 16))), kPrecisionBits);
}

// The VNNI horizontal row: the AVX2 kernel's structure (4 output pixels per iteration as two pairs, NR rows sharing
// the weights), with one pshufb and three vpdpbusd per pair and group of 4 taps.
template <int CH, int GFIX, int NR>
IPU_VNNI_TARGET void h_row_vnni(const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step,
                                const int32_t* off, const int8_t* kw, int w4, int groups_rt) {
  const int groups = GFIX > 0 ? GFIX : groups_rt;
  const __m256i mask = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(QuadMask<CH>::m)));
  const __m256i bias = _mm256_setr_epi32(kBias, kBias, kBias, 0, kBias, kBias, kBias, 0);
  const __m256i* kv = reinterpret_cast<const __m256i*>(kw);
  for (int i = 0; i < w4; i += 4) {
    prefetch_next_pair<NR>(row, row_step, off[i]);
    __m256i acc[NR][2];
    for (int pr = 0; pr < 2; pr++) {
      const ptrdiff_t oa = off[i + 2 * pr], ob = off[i + 2 * pr + 1];
      __m256i s0[NR], s1[NR], s2[NR];
      for (int r = 0; r < NR; r++) s0[r] = bias, s1[r] = s2[r] = _mm256_setzero_si256();
      for (int g = 0; g < groups; g++) {
        const __m256i w0 = _mm256_loadu_si256(kv), w1 = _mm256_loadu_si256(kv + 1), w2 = _mm256_loadu_si256(kv + 2);
        for (int r = 0; r < NR; r++) {
          const uint8_t* src = row + r * row_step + g * 4 * CH;
          const __m256i v = _mm256_shuffle_epi8(
              _mm256_inserti128_si256(
                  _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + oa))),
                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + ob)), 1),
              mask);
          s0[r] = IPU_DPBUSD(s0[r], v, w0);
          s1[r] = IPU_DPBUSD(s1[r], v, w1);
          s2[r] = IPU_DPBUSD(s2[r], v, w2);
        }
        kv += 3;
      }
      for (int r = 0; r < NR; r++) acc[r][pr] = vnni_combine(s0[r], s1[r], s2[r]);
    }
    for (int r = 0; r < NR; r++) store_rgb4(out + r * out_step + i * 3, acc[r][0], acc[r][1]);
  }
}

template <int CH, class Rows>
void horizontal_vnni(const Plan& p, const ResampleScratch& s, const int32_t* off, int groups, Rows rows) {
  const int w4 = (p.out_w + 3) & ~3;
  const int8_t* kw = s.kx8.data();
  auto run = [&](auto gfix) {
    constexpr int G = decltype(gfix)::value;
    rows([&](const uint8_t* row, uint8_t* out) { h_row_vnni<CH, G, 1>(row, 0, out, 0, off, kw, w4, groups); },
         [&](const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step) {
           h_row_vnni<CH, G, 2>(row, row_step, out, out_step, off, kw, w4, groups);
         });
  };
  with_fixed_groups(groups, run);
}

// Half of a 32-byte vertical block: per 128-bit lane, bytes 0-7 (HI false) or 8-15 (HI true), as two int32 vectors
// of 4 bytes each (the exact sums, shifted down). One half at a time keeps 6 accumulators live, not 12: AVX-VNNI has
// 16 vector registers. W holds the row's weights (VWeights below): per group of 4 taps, the three digit vectors and
// the four row offsets.
template <bool HI, class W>
IPU_VNNI_TARGET inline void v_half_vnni(const uint8_t* base, const W& w, __m256i* lo4, __m256i* hi4) {
  __m256i a0 = _mm256_set1_epi32(kBias), b0 = a0;
  __m256i a1 = _mm256_setzero_si256(), b1 = a1, a2 = a1, b2 = a1;
  for (int g = 0; g < w.groups(); g++) {
    const ptrdiff_t* roff = w.roff(g);
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + roff[0]));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + roff[1]));
    const __m256i t01 = HI ? _mm256_unpackhi_epi8(x0, x1) : _mm256_unpacklo_epi8(x0, x1);
    const __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + roff[2]));
    const __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + roff[3]));
    const __m256i t23 = HI ? _mm256_unpackhi_epi8(x2, x3) : _mm256_unpacklo_epi8(x2, x3);
    // each byte's 4 taps in an int32: bytes 0-3 (or 8-11) of each lane, then 4-7 (or 12-15)
    const __m256i qa = _mm256_unpacklo_epi16(t01, t23), qb = _mm256_unpackhi_epi16(t01, t23);
    const __m256i w0 = w.digit(g, 0), w1 = w.digit(g, 1), w2 = w.digit(g, 2);
    a0 = IPU_DPBUSD(a0, qa, w0);
    b0 = IPU_DPBUSD(b0, qb, w0);
    a1 = IPU_DPBUSD(a1, qa, w1);
    b1 = IPU_DPBUSD(b1, qb, w1);
    a2 = IPU_DPBUSD(a2, qa, w2);
    b2 = IPU_DPBUSD(b2, qb, w2);
  }
  *lo4 = vnni_combine(a0, a1, a2);
  *hi4 = vnni_combine(b0, b1, b2);
}

// 32 bytes of one vertical output row. Four rows' bytes are interleaved (punpck 8 then 16) so a lane holds one output
// byte's four taps; packs/packus undo the unpacks' order.
template <class W>
IPU_VNNI_TARGET inline __m256i v_block_vnni(const uint8_t* base, const W& w) {
  __m256i v0, v1, v2, v3;
  v_half_vnni<false>(base, w, &v0, &v1);
  v_half_vnni<true>(base, w, &v2, &v3);
  return _mm256_packus_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
}

// A row's weights with G groups of 4 taps fixed, broadcast once per row and held in registers (read through a pointer
// inside the block loop, they would be loaded again after every store: a byte store may alias them). VWeights<0>
// takes any group count and broadcasts the digits in the loop.
template <int G>
struct VWeights {
  __m256i d[G][3];
  ptrdiff_t off[G * 4];
  IPU_VNNI_TARGET VWeights(const int32_t* kq, int count, ptrdiff_t stride) {
    for (int g = 0; g < G; g++)
      for (int j = 0; j < 3; j++) d[g][j] = _mm256_set1_epi32(kq[g * 3 + j]);
    tap_row_offsets(off, G * 4, count, stride);
  }
  static constexpr int groups() { return G; }
  const ptrdiff_t* roff(int g) const { return off + g * 4; }
  IPU_VNNI_TARGET __m256i digit(int g, int j) const { return d[g][j]; }
};

template <>
struct VWeights<0> {
  const int32_t* kq;
  int n;
  ptrdiff_t off[kVnniMaxTaps];  // groups * 4 <= kVnniMaxTaps (a multiple of 4)
  VWeights(const int32_t* q, int count, ptrdiff_t stride) : kq(q), n((count + 3) / 4) {
    tap_row_offsets(off, n * 4, count, stride);
  }
  int groups() const { return n; }
  const ptrdiff_t* roff(int g) const { return off + g * 4; }
  IPU_VNNI_TARGET __m256i digit(int g, int j) const { return _mm256_set1_epi32(kq[g * 3 + j]); }
};

// One vertical output row with VNNI (taps past the row's count repeat its last row, with zero weights).
template <class W>
IPU_VNNI_TARGET inline void v_row_vnni(const VertIO& io, const uint8_t* base, const int32_t* k, int count,
                                       const W& w, uint8_t* out) {
  const int nbytes = io.nbytes;
  int b = 0;
  for (; b + 32 <= nbytes; b += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b), v_block_vnni(base + b, w));
  if (b == nbytes) return;
  // The last, partial block: as v_row_avx2 (the padded taps read only rows up to count - 1).
  if (v_block_readable(io, base, count, b, 32))
    v_store_partial(io, out + b, nbytes - b, v_block_vnni(base + b, w));
  else
    v_bytes_scalar(base, io.src_stride, k, count, b, nbytes, out);
}

// The vertical pass: the rows VNNI takes (vnni_takes) with v_block_vnni, the others with the AVX2 block.
IPU_VNNI_TARGET void vertical_vnni(const Plan& p, const ResampleScratch& s, const VertIO io) {
  const int groups_all = (p.ky_size + 3) / 4;
  for (int yy = 0; yy < p.out_h; yy++) {
    const uint8_t* base = v_base(io, s, yy);
    const int count = s.by[size_t(yy) * 2 + 1];
    const int32_t* k = &s.ky[size_t(yy) * size_t(p.ky_size)];
    uint8_t* out = io.dst + yy * io.dst_stride;
    if (!vnni_takes(count)) {
      v_row_avx2(io, base, k, count, out);
      continue;
    }
    const int32_t* kq = &s.ky4[size_t(yy) * size_t(groups_all) * 3];
    // The lambda is given the kernels' target (a lambda does not inherit it), so the row inlines into it.
    with_fixed_groups((count + 3) / 4, [&](auto gfix) IPU_VNNI_TARGET {
      v_row_vnni(io, base, k, count, VWeights<decltype(gfix)::value>(kq, count, io.src_stride), out);
    });
  }
}

}  // namespace IPU_VNNI_NS
