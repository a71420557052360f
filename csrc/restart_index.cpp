#include "restart_index.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <jerror.h>

namespace ipu {

namespace {

uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
void put16(std::vector<uint8_t>* v, uint32_t x) {
  v->push_back(uint8_t(x >> 8));
  v->push_back(uint8_t(x));
}
void put32(std::vector<uint8_t>* v, uint32_t x) {
  put16(v, x >> 16);
  put16(v, x & 0xFFFF);
}

uint32_t fnv1a(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

bool is_sof(uint8_t code) { return code >= 0xC0 && code <= 0xCF && code != 0xC4 && code != 0xC8 && code != 0xCC; }

bool is_index_segment(uint8_t code, const uint8_t* payload, size_t len) {
  return code == kRestartIndexMarker && len >= sizeof(kRestartIndexTag) &&
         std::memcmp(payload, kRestartIndexTag, sizeof(kRestartIndexTag)) == 0;
}

// The marker segments from SOI to the first SOS, walked strictly: segments back to back (fill 0xFF bytes allowed), each
// within the data. Anything else (a second SOF, a marker without a length before SOS) ends the walk with false:
// the file is then not one whose index can be trusted, and the normal decoding path judges it.
struct Segment {
  size_t pos;  // the 0xFF of the marker
  size_t len;  // marker + length field + payload
  uint8_t code;
};
constexpr int kMaxSegments = 64;
struct Layout {
  Segment seg[kMaxSegments];
  int segments = 0;
  int sof = -1, dri = -1, sos = -1, index = -1, index_count = 0;
  int width = 0, height = 0, components = 0, precision = 0;
  int h[4] = {0, 0, 0, 0}, v[4] = {0, 0, 0, 0};
  int max_h = 0, max_v = 0;
  int restart_interval = 0;
  int scan_components = 0;
  size_t scan_start = 0;
};

bool walk_header(const uint8_t* d, size_t n, Layout* L, std::string* why) {
  auto fail = [&](const char* m) {
    if (why) *why = m;
    return false;
  };
  if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return fail("not a JPEG file (no SOI marker)");
  size_t p = 2;
  while (true) {
    if (p >= n || d[p] != 0xFF) return fail("marker segments before the scan are not back to back");
    const size_t start = p;
    while (p < n && d[p] == 0xFF) ++p;
    if (p + 3 > n) return fail("header ends before the scan");
    const uint8_t code = d[p++];
    if (code == 0x00 || code == 0x01 || code == 0xD8 || code == 0xD9 || (code >= 0xD0 && code <= 0xD7)) {
      return fail("unexpected marker before the scan");
    }
    const size_t len = be16(d + p);
    if (len < 2 || p + len > n) return fail("marker segment runs past the end of the data");
    if (L->segments == kMaxSegments) return fail("more marker segments than the index reader walks");
    L->seg[L->segments] = Segment{start, (p - start) + len, code};
    const uint8_t* q = d + p + 2;  // payload
    const size_t plen = len - 2;
    if (is_sof(code)) {
      if (L->sof >= 0) return fail("more than one frame header");
      if (plen < 6) return fail("short frame header");
      L->sof = L->segments;
      L->precision = q[0];
      L->height = int(be16(q + 1));
      L->width = int(be16(q + 3));
      L->components = q[5];
      if (L->components < 1 || L->components > 4 || plen != 6 + 3 * size_t(L->components)) {
        return fail("frame header with an unexpected component count");
      }
      for (int c = 0; c < L->components; ++c) {
        L->h[c] = q[6 + 3 * c + 1] >> 4;
        L->v[c] = q[6 + 3 * c + 1] & 15;
        if (L->h[c] < 1 || L->h[c] > 4 || L->v[c] < 1 || L->v[c] > 4) return fail("bad sampling factors");
        L->max_h = std::max(L->max_h, L->h[c]);
        L->max_v = std::max(L->max_v, L->v[c]);
      }
    } else if (code == 0xDD) {
      if (plen != 2) return fail("bad DRI segment");
      L->dri = L->segments;
      L->restart_interval = int(be16(q));
    } else if (code == 0xDA) {
      if (L->sof < 0 || plen < 1) return fail("scan before the frame header");
      L->sos = L->segments;
      L->scan_components = q[0];
      L->scan_start = p + len;
      L->segments += 1;
      return true;
    } else if (is_index_segment(code, q, plen)) {
      L->index = L->segments;
      L->index_count += 1;
    }
    L->segments += 1;
    p += len;
  }
}

// MCU geometry of the file's single scan, the one the transcoder writes: all components interleaved (MCU = max
// sampling factors x 8 pixels), or one component sampled 1x1 (MCU = one 8x8 block). false for anything else.
bool mcu_geometry(const Layout& L, int* mcu_w, int* mcu_h) {
  if (L.components == 1) {
    if (L.scan_components != 1 || L.h[0] != 1 || L.v[0] != 1) return false;
    *mcu_w = *mcu_h = 8;
    return true;
  }
  if (L.scan_components != L.components) return false;
  *mcu_w = 8 * L.max_h;
  *mcu_h = 8 * L.max_v;
  return true;
}

constexpr size_t kFixedPayload = 8 + 1 + 1 + 2 + 2 + 2 + 2 + 4;  // tag .. scan bytes

bool check_index(const uint8_t* d, size_t n, const Layout& L, RestartIndex* x, std::string* why) {
  auto fail = [&](const char* m) {
    if (why) *why = m;
    return false;
  };
  if (L.index_count == 0) return fail("no restart index segment");
  if (L.index_count > 1) return fail("more than one restart index segment");
  const Segment& s = L.seg[L.index];
  const size_t seg_end = s.pos + s.len;
  size_t len_pos = s.pos;
  while (d[len_pos] == 0xFF) ++len_pos;  // fill bytes, then the code
  len_pos += 1;
  const uint8_t* p = d + len_pos + 2;
  const size_t pl = seg_end - (len_pos + 2);
  if (pl < kFixedPayload + 4) return fail("restart index segment too short");
  const int version = p[8];
  if (version != 1 && version != 2) return fail("restart index of another version");
  const int width = int(be16(p + 10)), height = int(be16(p + 12));
  const int interval = int(be16(p + 14)), intervals = int(be16(p + 16));
  const size_t scan_bytes = be32(p + 18);
  if (fnv1a(p, pl - 4) != be32(p + pl - 4)) return fail("restart index checksum mismatch (damaged segment)");
  if (L.precision != 8) return fail("not an 8-bit frame");
  const uint8_t sof_code = L.seg[L.sof].code;
  if (sof_code != 0xC0 && sof_code != 0xC1) return fail("not a baseline/extended Huffman sequential frame");
  if (width != L.width || height != L.height || width < 1 || height < 1) {
    return fail("restart index made for another frame size (stale)");
  }
  int mcu_w = 0, mcu_h = 0;
  if (!mcu_geometry(L, &mcu_w, &mcu_h)) return fail("scan layout the restart index does not cover");
  const int per_row = (width + mcu_w - 1) / mcu_w;
  const int rows = (height + mcu_h - 1) / mcu_h;
  if (L.dri < 0 || L.restart_interval != interval || interval < 1 || per_row % interval != 0) {
    return fail("restart interval does not divide the MCU row (stale index)");
  }
  const int tiles = per_row / interval;
  if (intervals != rows * tiles) {
    return fail("restart index interval count is not MCU rows x intervals per row (stale index)");
  }
  const size_t table = version == 1 ? 4 * size_t(intervals) : 4 * size_t(rows) + 2 * size_t(rows) * size_t(tiles - 1);
  if (pl != kFixedPayload + table + 4) return fail("restart index segment of the wrong length");
  if (L.scan_start + scan_bytes + 2 > n || d[L.scan_start + scan_bytes] != 0xFF ||
      d[L.scan_start + scan_bytes + 1] != 0xD9) {
    return fail("scan does not end with EOI where the restart index says (stale index or truncated file)");
  }
  // Version 1: a u32 per interval. Version 2: a u32 per row (its first interval), then per row the u16 distances of
  // its other intervals from the one before.
  const uint8_t* table_at = p + kFixedPayload;
  x->offsets.resize(size_t(intervals));
  for (int i = 0; i < intervals; ++i) {
    const int row = i / tiles, t = i - row * tiles;
    x->offsets[size_t(i)] =
        version == 1 ? be32(table_at + 4 * size_t(i))
        : t == 0     ? be32(table_at + 4 * size_t(row))
                     : x->offsets[size_t(i) - 1] +
                       be16(table_at + 4 * size_t(rows) + 2 * (size_t(row) * size_t(tiles - 1) + size_t(t - 1)));
  }
  uint32_t prev = 0;
  if (x->offsets[0] != 0) return fail("first restart offset is not 0");
  for (int i = 1; i < intervals; ++i) {
    const uint32_t o = x->offsets[size_t(i)];
    if (uint64_t(o) < uint64_t(prev) + 2 || o > scan_bytes) {
      return fail("restart offsets out of order or past the scan");
    }
    const uint8_t* m = d + L.scan_start + o - 2;
    if (m[0] != 0xFF || m[1] != uint8_t(0xD0 + ((i - 1) & 7))) {
      return fail("no RST marker where the restart index says (stale index)");
    }
    prev = o;
  }
  x->width = width;
  x->height = height;
  x->mcu_w = mcu_w;
  x->mcu_h = mcu_h;
  x->restart_interval = interval;
  x->intervals = intervals;
  x->mcu_rows = rows;
  x->tiles_per_row = tiles;
  x->tile_w = interval * mcu_w;
  x->version = version;
  x->scan_start = L.scan_start;
  x->scan_bytes = scan_bytes;
  x->segment_pos = s.pos;
  x->segment_bytes = s.len;
  return true;
}

// ---------------------------------------------------------------------------------------------------------------------
// The transcode: libjpeg reads the coefficients and writes them again (jpegtran's path), with restart_in_rows = 1.
// Errors come back by longjmp into guarded_transcode, which owns no C++ objects; every warning is an error (corrupt
// data is not carried into a file that claims to be lossless).
struct Transcoder {
  jpeg_decompress_struct src;
  jpeg_compress_struct dst;
  jpeg_error_mgr src_err, dst_err;
  jpeg_progress_mgr progress;
  jpeg_destination_mgr dest;
  uint8_t* out;
  size_t cap, len;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 200];
  int max_scans;
  int tile_width;
  bool src_made, dst_made;
};

Transcoder* transcoder_of(j_common_ptr c) { return static_cast<Transcoder*>(c->client_data); }

void tc_error_exit(j_common_ptr c) {
  Transcoder* t = transcoder_of(c);
  (*c->err->format_message)(c, t->message);
  longjmp(t->jump, 1);
}

void tc_emit_message(j_common_ptr c, int level) {
  if (level >= 0) return;
  Transcoder* t = transcoder_of(c);
  char m[JMSG_LENGTH_MAX];
  (*c->err->format_message)(c, m);
  std::snprintf(t->message, sizeof(t->message), "corrupt data (%s): not transcoded, keep the original bytes", m);
  longjmp(t->jump, 1);
}

void tc_progress(j_common_ptr c) {
  if (!c->is_decompressor) return;
  Transcoder* t = transcoder_of(c);
  if (reinterpret_cast<j_decompress_ptr>(c)->input_scan_number > t->max_scans) {
    std::snprintf(t->message, sizeof(t->message), "progressive JPEG with more than %d scans refused", t->max_scans);
    longjmp(t->jump, 1);
  }
}

void dest_init(j_compress_ptr c) {
  Transcoder* t = transcoder_of(reinterpret_cast<j_common_ptr>(c));
  c->dest->next_output_byte = t->out;
  c->dest->free_in_buffer = t->cap;
}

boolean dest_empty(j_compress_ptr c) {
  Transcoder* t = transcoder_of(reinterpret_cast<j_common_ptr>(c));
  const size_t grown = t->cap * 2;
  auto* bigger = static_cast<uint8_t*>(std::realloc(t->out, grown));
  if (bigger == nullptr) ERREXIT1(c, JERR_OUT_OF_MEMORY, 10);
  t->out = bigger;
  c->dest->next_output_byte = t->out + t->cap;
  c->dest->free_in_buffer = grown - t->cap;
  t->cap = grown;
  return TRUE;
}

void dest_term(j_compress_ptr c) {
  Transcoder* t = transcoder_of(reinterpret_cast<j_common_ptr>(c));
  t->len = t->cap - c->dest->free_in_buffer;
}

int guarded_transcode(Transcoder* t, const uint8_t* data, size_t size, bool optimize) {
  if (setjmp(t->jump)) return -1;
  t->src.err = jpeg_std_error(&t->src_err);
  t->src_err.error_exit = tc_error_exit;
  t->src_err.emit_message = tc_emit_message;
  t->src.client_data = t;
  jpeg_create_decompress(&t->src);
  t->src_made = true;
  t->dst.err = jpeg_std_error(&t->dst_err);
  t->dst_err.error_exit = tc_error_exit;
  t->dst_err.emit_message = tc_emit_message;
  t->dst.client_data = t;
  jpeg_create_compress(&t->dst);
  t->dst_made = true;
  t->progress.progress_monitor = tc_progress;
  t->src.progress = &t->progress;

  jpeg_mem_src(&t->src, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&t->src, JPEG_COM, 0xFFFF);
  for (int m = 0; m < 16; ++m) jpeg_save_markers(&t->src, JPEG_APP0 + m, 0xFFFF);
  jpeg_read_header(&t->src, TRUE);
  jvirt_barray_ptr* coefs = jpeg_read_coefficients(&t->src);
  if (t->src.progressive_mode && t->src.coef_bits != nullptr) {
    // A progressive file whose scans leave some coefficient bits unsent is block-smoothed by libjpeg when decoded;
    // its baseline copy would not be, so its pixels would change.
    for (int c = 0; c < t->src.num_components; ++c) {
      for (int k = 0; k < DCTSIZE2; ++k) {
        if (t->src.coef_bits[c][k] != 0) {
          std::snprintf(t->message, sizeof(t->message),
                        "progressive JPEG whose scans leave coefficient bits unsent (component %d, coefficient %d): "
                        "libjpeg smooths such blocks, a baseline copy would change pixels; not transcoded", c, k);
          return -1;
        }
      }
    }
  }
  jpeg_copy_critical_parameters(&t->src, &t->dst);
  t->dst.optimize_coding = optimize ? TRUE : FALSE;
  t->dst.arith_code = FALSE;
  {
    // The scan written is interleaved (MCU = max sampling factors x 8 pixels) unless there is one component (8 x 8).
    const j_decompress_ptr s = &t->src;
    const int mcu_w = s->num_components == 1 ? 8 : 8 * s->max_h_samp_factor;
    const int mcu_h = s->num_components == 1 ? 8 : 8 * s->max_v_samp_factor;
    const int per_row = int((s->image_width + JDIMENSION(mcu_w) - 1) / JDIMENSION(mcu_w));
    const int rows = int((s->image_height + JDIMENSION(mcu_h) - 1) / JDIMENSION(mcu_h));
    t->dst.restart_interval = static_cast<unsigned int>(restart_interval_for(per_row, rows, mcu_w, t->tile_width));
    t->dst.restart_in_rows = 0;
  }
  t->dest.init_destination = dest_init;
  t->dest.empty_output_buffer = dest_empty;
  t->dest.term_destination = dest_term;
  t->dst.dest = &t->dest;
  jpeg_write_coefficients(&t->dst, coefs);
  // The saved APPn / COM segments, in their order; libjpeg writes JFIF / Adobe headers itself when the colour space
  // calls for them (as jpegtran leaves out the copies), and an older restart index is dropped.
  for (jpeg_saved_marker_ptr m = t->src.marker_list; m != nullptr; m = m->next) {
    const bool jfif = m->marker == JPEG_APP0 && m->data_length >= 5 && std::memcmp(m->data, "JFIF\0", 5) == 0;
    const bool adobe = m->marker == JPEG_APP0 + 14 && m->data_length >= 5 && std::memcmp(m->data, "Adobe", 5) == 0;
    if ((jfif && t->dst.write_JFIF_header) || (adobe && t->dst.write_Adobe_marker)) continue;
    if (is_index_segment(uint8_t(0xFF & m->marker), m->data, m->data_length)) continue;
    jpeg_write_marker(&t->dst, int(m->marker), m->data, m->data_length);
  }
  jpeg_finish_compress(&t->dst);
  jpeg_finish_decompress(&t->src);
  return 0;
}

void free_transcoder(Transcoder* t) {
  if (t->dst_made) jpeg_destroy_compress(&t->dst);
  if (t->src_made) jpeg_destroy_decompress(&t->src);
  std::free(t->out);
}

// Where each restart interval of a freshly written scan starts, found by walking its entropy-coded data: 0xFF 0x00 is
// a stuffed byte, 0xFF 0xD0..D7 a restart marker, 0xFF 0xD9 the end. Returns the scan's length, 0 on anything else.
size_t find_intervals(const uint8_t* d, size_t n, size_t scan_start, std::vector<uint32_t>* offsets) {
  offsets->assign(1, 0);
  size_t p = scan_start;
  while (p + 1 < n) {
    const void* ff = std::memchr(d + p, 0xFF, n - p - 1);
    if (ff == nullptr) return 0;
    p = size_t(static_cast<const uint8_t*>(ff) - d);
    const uint8_t code = d[p + 1];
    if (code == 0x00) {
      p += 2;
    } else if (code >= 0xD0 && code <= 0xD7) {
      if (code != 0xD0 + ((offsets->size() - 1) & 7)) return 0;
      offsets->push_back(uint32_t(p + 2 - scan_start));
      p += 2;
    } else if (code == 0xD9) {
      return p - scan_start;
    } else {
      return 0;
    }
  }
  return 0;
}

}  // namespace

int restart_interval_for(int per_row, int rows, int mcu_w, int tile_width) {
  if (per_row < 1) return 1;
  const int64_t max_intervals = int64_t((0xFFFF - 2 - kFixedPayload - 4) / 4);
  auto fits = [&](int k) { return int64_t(rows) * (per_row / k) <= max_intervals; };
  int k = per_row;
  if (tile_width > 0) {
    // The widest divisor within tile_width; if that is under half of it (a row of prime MCU count, whose only narrow
    // tile is one MCU: a marker and a DC restart per MCU cost ~15% in size), the narrowest wider one up to twice
    // tile_width; else whole rows.
    int widest = 0, wider = 0;
    for (int d = 1; d <= per_row; ++d) {
      if (per_row % d != 0) continue;
      if (int64_t(d) * mcu_w <= tile_width) widest = d;
      else if (wider == 0) wider = d;
    }
    if (widest > 0 && 2 * int64_t(widest) * mcu_w >= tile_width) k = widest;
    else if (wider > 0 && int64_t(wider) * mcu_w <= 2 * int64_t(tile_width)) k = wider;
  }
  while (!fits(k)) {  // too many intervals for one index segment: the next wider divisor (whole rows always fit)
    do ++k; while (per_row % k != 0);
  }
  return k;
}

bool find_restart_index(const uint8_t* data, size_t size, RestartIndex* index, std::string* why) {
  Layout L;
  if (!walk_header(data, size, &L, why)) return false;
  return check_index(data, size, L, index, why);
}

std::string add_restart_index(const uint8_t* data, size_t size, const DecodeOptions& opts, bool optimize_coding,
                              int tile_width, std::vector<uint8_t>* out) {
  RestartIndex existing;
  if (find_restart_index(data, size, &existing)) {
    out->assign(data, data + size);
    return "";
  }
  // The checks every decode makes (pixel limit, colour space, scan floods) before libjpeg allocates the coefficients.
  {
    JpegDecoder probe;
    JpegInfo info;
    DecodeReport r = probe.open(data, size, opts, &info);
    if (r.status != Status::Ok) return r.message;
    probe.abort();
    if (info.components > 4) return "JPEG with more than 4 components: not transcoded";
  }
  Transcoder* t = static_cast<Transcoder*>(std::calloc(1, sizeof(Transcoder)));
  if (t == nullptr) return "out of memory";
  t->max_scans = opts.max_scans;
  t->tile_width = tile_width;
  t->cap = size + size / 4 + 65536;
  t->out = static_cast<uint8_t*>(std::malloc(t->cap));
  if (t->out == nullptr) {
    std::free(t);
    return "out of memory";
  }
  const int rc = guarded_transcode(t, data, size, optimize_coding);
  std::string err = rc == 0 ? "" : std::string(t->message);
  std::vector<uint8_t> coded;
  if (rc == 0) coded.assign(t->out, t->out + t->len);
  free_transcoder(t);
  std::free(t);
  if (!err.empty()) return err;

  Layout L;
  std::string why;
  if (!walk_header(coded.data(), coded.size(), &L, &why)) return "internal error: transcoded header: " + why;
  int mcu_w = 0, mcu_h = 0;
  if (!mcu_geometry(L, &mcu_w, &mcu_h)) {
    return "JPEG whose single-component frame is not sampled 1x1: not transcoded (the restart index covers 1x1 "
           "grayscale and interleaved colour scans)";
  }
  std::vector<uint32_t> offsets;
  const size_t scan_bytes = find_intervals(coded.data(), coded.size(), L.scan_start, &offsets);
  const int rows = (L.height + mcu_h - 1) / mcu_h;
  const int per_row = (L.width + mcu_w - 1) / mcu_w;
  if (scan_bytes == 0 || L.restart_interval < 1 || per_row % L.restart_interval != 0 ||
      int64_t(offsets.size()) != int64_t(rows) * (per_row / L.restart_interval)) {
    return "internal error: restart intervals do not tile the MCU rows";
  }
  if (scan_bytes > 0xFFFFFFFFu) return "scan data above 4 GiB: not indexed";
  // Version 2 (each row's first offset, then u16 distances between the row's intervals) when every distance fits.
  const int tiles = per_row / L.restart_interval;
  bool compact = true;
  for (size_t i = 0; i < offsets.size() && compact; ++i) {
    compact = i % size_t(tiles) == 0 || offsets[i] - offsets[i - 1] <= 0xFFFF;
  }
  const size_t table = compact ? 4 * size_t(rows) + 2 * size_t(rows) * size_t(tiles - 1) : 4 * offsets.size();
  const size_t seg_len = 2 + kFixedPayload + table + 4;  // the length field counts itself, not the marker
  if (seg_len > 0xFFFF) return "image with too many restart intervals for one index segment";
  std::vector<uint8_t> seg;
  seg.reserve(2 + seg_len);
  seg.push_back(0xFF);
  seg.push_back(kRestartIndexMarker);
  put16(&seg, uint32_t(seg_len));
  seg.insert(seg.end(), kRestartIndexTag, kRestartIndexTag + sizeof(kRestartIndexTag));
  seg.push_back(uint8_t(compact ? 2 : 1));  // the versions of the header comment
  seg.push_back(0);
  put16(&seg, uint32_t(L.width));
  put16(&seg, uint32_t(L.height));
  put16(&seg, uint32_t(L.restart_interval));
  put16(&seg, uint32_t(offsets.size()));
  put32(&seg, uint32_t(scan_bytes));
  if (compact) {
    for (int r = 0; r < rows; ++r) put32(&seg, offsets[size_t(r) * size_t(tiles)]);
    for (int r = 0; r < rows; ++r) {
      const size_t first = size_t(r) * size_t(tiles);
      for (int t = 1; t < tiles; ++t) put16(&seg, offsets[first + size_t(t)] - offsets[first + size_t(t) - 1]);
    }
  } else {
    for (uint32_t o : offsets) put32(&seg, o);
  }
  put32(&seg, fnv1a(seg.data() + 4, seg.size() - 4));
  const size_t at = L.seg[L.sos].pos;
  out->clear();
  out->reserve(coded.size() + seg.size());
  out->insert(out->end(), coded.begin(), coded.begin() + std::ptrdiff_t(at));
  out->insert(out->end(), seg.begin(), seg.end());
  out->insert(out->end(), coded.begin() + std::ptrdiff_t(at), coded.end());
  RestartIndex check;
  if (!find_restart_index(out->data(), out->size(), &check, &why)) return "internal error: fresh index rejected: " + why;
  return "";
}

bool build_restart_window(const uint8_t* data, size_t size, const RestartIndex& x, int row_a, int row_b, int tile_a,
                          int tile_b, std::vector<uint8_t>* out) {
  if (row_a < 0 || row_b < row_a || row_b >= x.mcu_rows || tile_a < 0 || tile_b < tile_a ||
      tile_b >= x.tiles_per_row) {
    return false;
  }
  Layout L;
  if (!walk_header(data, size, &L, nullptr) || L.sos < 0) return false;
  out->clear();
  out->push_back(0xFF);
  out->push_back(0xD8);
  size_t height_at = 0;
  for (int i = 0; i < L.segments; ++i) {
    const Segment& s = L.seg[i];
    const bool app = s.code >= 0xE0 && s.code <= 0xEF;
    if ((app && s.code != 0xE0 && s.code != 0xEE) || s.code == 0xFE) continue;  // only APP0 / APP14 change pixels
    size_t p = s.pos;
    while (data[p] == 0xFF) ++p;  // drop fill bytes
    out->push_back(0xFF);
    if (i == L.sof) height_at = out->size() + 1 + 2 + 1;
    out->insert(out->end(), data + p, data + s.pos + s.len);
  }
  const int height = row_b + 1 == x.mcu_rows ? x.height - row_a * x.mcu_h : (row_b - row_a + 1) * x.mcu_h;
  const int width = tile_b + 1 == x.tiles_per_row ? x.width - tile_a * x.tile_w : (tile_b - tile_a + 1) * x.tile_w;
  (*out)[height_at] = uint8_t(height >> 8);
  (*out)[height_at + 1] = uint8_t(height);
  (*out)[height_at + 2] = uint8_t(width >> 8);
  (*out)[height_at + 3] = uint8_t(width);
  // Rows of consecutive tiles are one run of bytes with their RST markers in it: copied whole, markers renumbered.
  const int run = tile_b - tile_a + 1;
  int marker = 0;
  for (int r = row_a; r <= row_b; ++r) {
    const int first = r * x.tiles_per_row + tile_a, last = first + run - 1;
    const size_t begin = x.scan_start + x.offset(first);
    const size_t end = last + 1 < x.intervals ? x.scan_start + x.offset(last + 1) - 2 : x.scan_start + x.scan_bytes;
    if (end < begin || end > size) return false;
    if (r > row_a) {
      out->push_back(0xFF);
      out->push_back(uint8_t(0xD0 + (marker++ & 7)));
    }
    const size_t at = out->size();
    out->insert(out->end(), data + begin, data + end);
    for (int i = first + 1; i <= last; ++i) {  // the RST code byte just before interval i
      (*out)[at + (x.offset(i) - x.offset(first)) - 1] = uint8_t(0xD0 + (marker++ & 7));
    }
  }
  out->push_back(0xFF);
  out->push_back(0xD9);
  return true;
}

}  // namespace ipu
