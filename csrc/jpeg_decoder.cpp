#include "jpeg_decoder.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <cmath>

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "restart_index.h"

namespace ipu {

// ---------------------------------------------------------------------------------------------------------------------
// The error bridge. libjpeg calls error_exit on fatal errors and must not return; we longjmp back to the
// guarded_* function that called into libjpeg. Those functions hold only trivially destructible locals, so the jump
// skips no destructor. Warnings (msg_level -1) are counted; premature end of data, and every warning in strict mode,
// are turned into errors the same way. The progress monitor enforces the scan limits while libjpeg absorbs the scans.
struct JpegDecoder::State {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr jerr;
  jpeg_progress_mgr progress;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 160];
  int warnings;
  bool strict;
  int max_scans;
  bool multi_scan;          // progressive or non-interleaved: every scan is absorbed before any output
  int charged_scan;         // the last scan whose blocks were added to scan_blocks
  int64_t scan_blocks;      // coefficient blocks of the scans started so far
  int64_t max_scan_blocks;  // 0 = no limit
};

namespace {

using State = JpegDecoder::State;

State* state_of(j_common_ptr c) { return static_cast<State*>(c->client_data); }

void on_error_exit(j_common_ptr c) {
  State* s = state_of(c);
  (*c->err->format_message)(c, s->message);
  longjmp(s->jump, 1);
}

void on_emit_message(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace messages
  State* s = state_of(c);
  s->warnings += 1;
  const int code = c->err->msg_code;
  if (s->strict || code == JWRN_JPEG_EOF) {
    (*c->err->format_message)(c, s->message);
    if (s->strict && code != JWRN_JPEG_EOF) std::strncat(s->message, " (strict mode)", 20);
    longjmp(s->jump, 1);
  }
}

// Coefficient blocks one scan decodes: every block of each component it lists, whatever data it holds.
int64_t blocks_of_scan(const jpeg_decompress_struct& d) {
  int64_t blocks = 0;
  for (int i = 0; i < d.comps_in_scan; ++i) {
    blocks += int64_t(d.cur_comp_info[i]->width_in_blocks) * int64_t(d.cur_comp_info[i]->height_in_blocks);
  }
  return blocks;
}

// Called by libjpeg before each row of MCUs it absorbs, so a new scan is charged before any of its blocks is decoded.
// The walk in check_scans refuses floods before anything is allocated; this is the exact count, should a file's
// markers be read differently by libjpeg than by that walk.
void on_progress(j_common_ptr c) {
  State* s = state_of(c);
  if (!c->is_decompressor) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(c);
  if (d->input_scan_number > s->max_scans) {
    std::snprintf(s->message, sizeof(s->message),
                  "progressive JPEG with more than %d scans refused (pathological file; real images have ~20)",
                  s->max_scans);
    longjmp(s->jump, 1);
  }
  if (s->multi_scan && d->input_scan_number != s->charged_scan) {
    s->charged_scan = d->input_scan_number;
    s->scan_blocks += blocks_of_scan(*d);
    if (s->max_scan_blocks > 0 && s->scan_blocks > s->max_scan_blocks) {
      std::snprintf(s->message, sizeof(s->message),
                    "JPEG whose first %d scans decode %lld coefficient blocks, above the limit of %lld (scan-flood "
                    "guard; raise max_scan_blocks to allow it)",
                    d->input_scan_number, static_cast<long long>(s->scan_blocks),
                    static_cast<long long>(s->max_scan_blocks));
      longjmp(s->jump, 1);
    }
  }
}

// Error-guarded steps. Each returns 0 on success, -1 after a libjpeg error (message in s->message); the
// decompressor is then aborted and ready for the next image.
int guarded_read_header(State* s, const uint8_t* data, size_t size, bool save_app1) {
  if (setjmp(s->jump)) {
    jpeg_abort_decompress(&s->cinfo);
    return -1;
  }
  // A fresh decompressor for every image: one libjpeg object keeps the quantization and Huffman tables it has read
  // (for abbreviated datastreams), so a file without its own tables would decode with the previous image's, and a
  // result would depend on what the thread decoded before. Recreating it costs a few small allocations.
  jpeg_destroy_decompress(&s->cinfo);
  jpeg_create_decompress(&s->cinfo);  // keeps err and client_data
  s->cinfo.progress = &s->progress;
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&s->cinfo, JPEG_APP0 + 1, save_app1 ? 0xFFFF : 0);
  jpeg_read_header(&s->cinfo, TRUE);
  return 0;
}

// Decode rows [row0, row1) of the image at scale scale_num/8, columns [*col0, *col0 + *cols) (widened by libjpeg to
// the iMCU grid; the final window comes back in *col0 / *cols) into buf (row stride = *cols * channels, capacity
// buf_size bytes). finish reads the rest of the data (full-frame decodes), so a truncation anywhere is seen.
int guarded_decode_rows(State* s, int scale_num, J_COLOR_SPACE out_space, int row0, int row1, int* col0, int* cols,
                        uint8_t* buf, size_t buf_size, bool finish) {
  if (setjmp(s->jump)) {
    jpeg_abort_decompress(&s->cinfo);
    return -1;
  }
  j_decompress_ptr d = &s->cinfo;
  d->scale_num = static_cast<unsigned int>(scale_num);
  d->scale_denom = 8;
  d->out_color_space = out_space;
  d->dct_method = JDCT_ISLOW;    // libjpeg's default, as Pillow: full-frame output equal to Pillow's
  d->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(d);
  JDIMENSION x = static_cast<JDIMENSION>(*col0), w = static_cast<JDIMENSION>(*cols);
  if (x != 0 || w != d->output_width) jpeg_crop_scanline(d, &x, &w);
  const size_t stride = size_t(w) * size_t(d->output_components);
  if (stride * size_t(row1 - row0) > buf_size) {
    std::snprintf(s->message, sizeof(s->message), "internal error: region buffer too small");
    jpeg_abort_decompress(d);
    return -1;
  }
  if (row0 > 0) {
    JDIMENSION skipped = jpeg_skip_scanlines(d, static_cast<JDIMENSION>(row0));
    if (skipped != static_cast<JDIMENSION>(row0)) {
      std::snprintf(s->message, sizeof(s->message), "could not skip to row %d", row0);
      jpeg_abort_decompress(d);
      return -1;
    }
  }
  while (d->output_scanline < static_cast<JDIMENSION>(row1)) {
    JSAMPROW row = buf + stride * (d->output_scanline - static_cast<JDIMENSION>(row0));
    if (jpeg_read_scanlines(d, &row, 1) != 1) {
      std::snprintf(s->message, sizeof(s->message), "decoder stopped at row %u", d->output_scanline);
      jpeg_abort_decompress(d);
      return -1;
    }
  }
  if (finish && d->output_scanline == d->output_height) {
    jpeg_finish_decompress(d);
  } else {
    jpeg_abort_decompress(d);
  }
  *col0 = static_cast<int>(x);
  *cols = static_cast<int>(w);
  return 0;
}

// EXIF orientation from a saved APP1 segment ("Exif\0\0" + TIFF). 1 when absent or malformed.
int exif_orientation(const jpeg_decompress_struct& cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
    if (m->marker != JPEG_APP0 + 1 || m->data_length < 14 || std::memcmp(m->data, "Exif\0\0", 6) != 0) continue;
    const uint8_t* t = m->data + 6;
    const size_t n = m->data_length - 6;
    bool le;
    if (t[0] == 'I' && t[1] == 'I') le = true;
    else if (t[0] == 'M' && t[1] == 'M') le = false;
    else return 1;
    auto u16 = [&](size_t o) -> uint32_t { return le ? (t[o] | (t[o + 1] << 8)) : ((t[o] << 8) | t[o + 1]); };
    auto u32 = [&](size_t o) -> uint32_t {
      return le ? (uint32_t(t[o]) | (uint32_t(t[o + 1]) << 8) | (uint32_t(t[o + 2]) << 16) | (uint32_t(t[o + 3]) << 24))
                : ((uint32_t(t[o]) << 24) | (uint32_t(t[o + 1]) << 16) | (uint32_t(t[o + 2]) << 8) | uint32_t(t[o + 3]));
    };
    if (u16(2) != 42) return 1;
    const size_t ifd = u32(4);
    if (ifd + 2 > n) return 1;
    const size_t count = u16(ifd);
    for (size_t e = 0; e < count; ++e) {
      const size_t o = ifd + 2 + e * 12;
      if (o + 12 > n) return 1;
      if (u16(o) == 0x0112) {
        const uint32_t type = u16(o + 2);
        uint32_t v = type == 3 ? u16(o + 8) : (type == 4 ? u32(o + 8) : 0);
        return (v >= 1 && v <= 8) ? int(v) : 1;
      }
    }
    return 1;
  }
  return 1;
}

// A reused buffer holds at least n bytes. It never shrinks: std::vector zero-fills what a resize adds, so resizing
// to each image's exact size would clear the difference again every time a larger region follows a smaller one (about
// 1% of a decode's instructions over the imagenet_sample photos).
void grow_to(std::vector<uint8_t>* buf, size_t n) {
  if (buf->size() < n) buf->resize(n);
}

// Pillow's CMYK JPEG handling: libjpeg's CMYK output is taken as Adobe-inverted ("CMYK;I"), then
// ImagingConvert CMYK -> RGB: out = nk - nk * c / 255 (rounded as MULDIV255), nk = 255 - k.
inline uint8_t muldiv255(int a, int b) {
  const int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

void cmyk_to_rgbx_inplace(uint8_t* px, size_t count) {
  for (size_t i = 0; i < count; ++i, px += 4) {
    const int nk = px[3];  // 255 - k, k = 255 - raw
    const int c = 255 - px[0], m = 255 - px[1], y = 255 - px[2];
    px[0] = static_cast<uint8_t>(std::clamp(nk - muldiv255(c, nk), 0, 255));
    px[1] = static_cast<uint8_t>(std::clamp(nk - muldiv255(m, nk), 0, 255));
    px[2] = static_cast<uint8_t>(std::clamp(nk - muldiv255(y, nk), 0, 255));
    px[3] = 255;
  }
}

// Apply EXIF orientation (Pillow ImageOps.exif_transpose) to an RGB image.
void orient_rgb(const uint8_t* src, int w, int h, int orientation, std::vector<uint8_t>* out, int* ow, int* oh) {
  const bool swap = orientation >= 5;
  *ow = swap ? h : w;
  *oh = swap ? w : h;
  out->resize(size_t(w) * size_t(h) * 3);
  uint8_t* dst = out->data();
  for (int y = 0; y < *oh; ++y) {
    for (int x = 0; x < *ow; ++x) {
      int sx, sy;
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break;
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;
        case 4: sx = x; sy = h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = h - 1 - x; break;
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;
        case 8: sx = w - 1 - y; sy = x; break;
        default: sx = x; sy = y; break;
      }
      std::memcpy(dst + (size_t(y) * *ow + x) * 3, src + (size_t(sy) * w + sx) * 3, 3);
    }
  }
}

// A truncated baseline file whose damage lies below the decoded region would otherwise go unnoticed: the entropy-coded
// data of a complete file ends with an EOI marker (0xFFD9), which cannot occur inside entropy-coded segments. Trailing
// padding after EOI is common, so look at the last few KiB.
bool has_end_marker(const uint8_t* data, size_t size) {
  const size_t window = std::min<size_t>(size, 4096);
  for (size_t i = size - window; i + 1 < size; ++i) {
    if (data[i] == 0xFF && data[i + 1] == 0xD9) return true;
  }
  return false;
}

// libjpeg's message -> report. Processes and precisions this libjpeg cannot decode (lossless, 12-bit, ...) are left
// to the Pillow path, whose bundled libjpeg-turbo may support them; anything else is an error in the data.
void set_failure(const char* message, DecodeReport* r) {
  r->message = message;
  const bool unsupported = std::strncmp(message, "Unsupported JPEG process", 24) == 0 ||
                           std::strncmp(message, "Unsupported JPEG data precision", 31) == 0;
  r->status = unsupported ? Status::Fallback : Status::Error;
}


// The next marker at or after *pos, found as libjpeg's marker reader finds it: skip to a 0xFF, skip fill 0xFF bytes,
// take the code that follows; stuffed zeros, restart markers and TEM (no payload, part of entropy-coded data) are
// passed over. On success *pos is just past the code.
bool next_marker(const uint8_t* data, size_t size, size_t* pos, uint8_t* code) {
  size_t p = *pos;
  while (p < size) {
    const void* ff = std::memchr(data + p, 0xFF, size - p);
    if (ff == nullptr) return false;
    p = size_t(static_cast<const uint8_t*>(ff) - data) + 1;
    while (p < size && data[p] == 0xFF) ++p;
    if (p >= size) return false;
    const uint8_t c = data[p++];
    if (c == 0x00 || c == 0x01 || (c >= 0xD0 && c <= 0xD7)) continue;
    *code = c;
    *pos = p;
    return true;
  }
  return false;
}

uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }

bool is_sof(uint8_t code) {
  return code >= 0xC0 && code <= 0xCF && code != 0xC4 && code != 0xC8 && code != 0xCC;
}

// Scans in the file and the coefficient blocks they decode, from their SOS headers: marker segments are skipped by
// their length (an EXIF thumbnail's scans are not counted), entropy-coded data up to the next marker.
struct ScanTally {
  int scans = 0;
  int64_t blocks = 0;
};

ScanTally tally_scans(const uint8_t* data, size_t size, const jpeg_decompress_struct& c) {
  ScanTally t;
  size_t p = 2;
  uint8_t code = 0;
  while (next_marker(data, size, &p, &code)) {
    if (code == 0xD9) break;     // EOI: libjpeg reads no further
    if (code == 0xD8) continue;  // SOI has no length
    if (p + 2 > size) break;
    const size_t len = be16(data + p);
    if (len < 2) break;
    if (code == 0xDA && p + 3 <= size) {
      const int ns = data[p + 2];
      t.scans += 1;
      for (int k = 0; k < ns && p + 3 + 2 * size_t(k) < size; ++k) {
        const int id = data[p + 3 + 2 * size_t(k)];
        for (int ci = 0; ci < c.num_components; ++ci) {
          if (c.comp_info[ci].component_id == id) {
            t.blocks += int64_t(c.comp_info[ci].width_in_blocks) * int64_t(c.comp_info[ci].height_in_blocks);
            break;
          }
        }
      }
    }
    p += len;
  }
  return t;
}

// A multi-scan file's scans are all absorbed (each over every block of its components, however little data it holds)
// before the first row comes out, so a few bytes of scan headers can ask for unbounded work. Refuse, before anything
// is allocated, a file whose scans exceed max_scans or decode more than max_scan_blocks blocks in all.
std::string check_scans(const uint8_t* data, size_t size, const jpeg_decompress_struct& c, const DecodeOptions& opts) {
  const ScanTally t = tally_scans(data, size, c);
  char buf[320];
  if (t.scans > opts.max_scans) {
    std::snprintf(buf, sizeof(buf),
                  "progressive JPEG with %d scans: more than %d scans refused (scan-flood guard; real images have up "
                  "to ~20; raise max_scans to allow it)",
                  t.scans, opts.max_scans);
    return buf;
  }
  if (opts.max_scan_blocks > 0 && t.blocks > opts.max_scan_blocks) {
    int64_t pass = 0;
    for (int ci = 0; ci < c.num_components; ++ci) {
      pass += int64_t(c.comp_info[ci].width_in_blocks) * int64_t(c.comp_info[ci].height_in_blocks);
    }
    std::snprintf(buf, sizeof(buf),
                  "JPEG of %ux%u whose %d scans decode %lld coefficient blocks (%.1f full passes), above the limit of "
                  "%lld (scan-flood guard; raise max_scan_blocks to allow it)",
                  c.image_width, c.image_height, t.scans, static_cast<long long>(t.blocks),
                  pass > 0 ? double(t.blocks) / double(pass) : 0.0, static_cast<long long>(opts.max_scan_blocks));
    return buf;
  }
  return "";
}

}  // namespace

FrameSearch find_frame_header(const uint8_t* data, size_t size, FrameHeader* frame) {
  if (!looks_like_jpeg(data, size)) return FrameSearch::Absent;
  size_t p = 2;
  uint8_t code = 0;
  while (next_marker(data, size, &p, &code)) {
    if (code == 0xD8) continue;
    if (code == 0xD9 || code == 0xDA) return FrameSearch::Absent;
    if (p + 2 > size) return FrameSearch::Incomplete;
    const size_t len = be16(data + p);
    if (len < 2) return FrameSearch::Absent;
    if (is_sof(code)) {
      if (len < 8) return FrameSearch::Absent;
      if (p + 8 > size) return FrameSearch::Incomplete;
      frame->height = int(be16(data + p + 3));
      frame->width = int(be16(data + p + 5));
      frame->components = data[p + 7];
      return FrameSearch::Found;
    }
    p += len;
  }
  return FrameSearch::Incomplete;
}

bool looks_like_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

bool is_libjpeg_turbo() {
#ifdef LIBJPEG_TURBO_VERSION
  return true;
#else
  return false;
#endif
}

std::string jpeg_library_version() {
  char buf[96];
#ifdef LIBJPEG_TURBO_VERSION
#define IPU_STR2(x) #x
#define IPU_STR(x) IPU_STR2(x)
  std::snprintf(buf, sizeof(buf), "libjpeg-turbo %s (libjpeg API %d)", IPU_STR(LIBJPEG_TURBO_VERSION), JPEG_LIB_VERSION);
#else
  std::snprintf(buf, sizeof(buf), "libjpeg (API %d)", JPEG_LIB_VERSION);
#endif
  return buf;
}

JpegDecoder::JpegDecoder() : st_(new State()) {
  std::memset(st_, 0, sizeof(State));
  st_->cinfo.err = jpeg_std_error(&st_->jerr);
  st_->jerr.error_exit = on_error_exit;
  st_->jerr.emit_message = on_emit_message;
  st_->cinfo.client_data = st_;
  jpeg_create_decompress(&st_->cinfo);
  st_->progress.progress_monitor = on_progress;
  st_->cinfo.progress = &st_->progress;
  st_->max_scans = 500;
}

JpegDecoder::~JpegDecoder() {
  jpeg_destroy_decompress(&st_->cinfo);
  delete st_;
}

DecodeReport JpegDecoder::read_header(const uint8_t* data, size_t size, bool with_orientation, JpegInfo* info,
                                      bool strict) {
  DecodeReport r;
  if (size == 0) {
    r.status = Status::Error;
    r.message = "empty file (0 bytes)";
    return r;
  }
  if (!looks_like_jpeg(data, size)) {
    r.status = Status::Fallback;
    r.message = "not a JPEG file (no SOI marker)";
    return r;
  }
  st_->warnings = 0;
  st_->strict = strict;
  st_->multi_scan = false;  // open() arms the scan budget once the header says how many scans to expect
  if (guarded_read_header(st_, data, size, with_orientation) != 0) {
    set_failure(st_->message, &r);
    return r;
  }
  const jpeg_decompress_struct& c = st_->cinfo;
  info->width = int(c.image_width);
  info->height = int(c.image_height);
  info->components = c.num_components;
  info->color_space = int(c.jpeg_color_space);
  info->progressive = c.progressive_mode != 0;
  info->arithmetic = c.arith_code != 0;
  info->orientation = with_orientation ? exif_orientation(c) : 1;
  r.warnings = st_->warnings;
  return r;
}

namespace {

// After a successful header: refuse bombs and colour spaces we cannot turn into RGB. Empty string when fine.
std::string check_header(const jpeg_decompress_struct& c, const DecodeOptions& opts) {
  const int64_t pixels = int64_t(c.image_width) * int64_t(c.image_height);
  if (opts.max_pixels > 0 && pixels > opts.max_pixels) {
    char buf[200];
    std::snprintf(buf, sizeof(buf),
                  "image is %ux%u = %lld pixels, above the limit of %lld (decompression bomb guard; raise max_pixels "
                  "to allow it)",
                  c.image_width, c.image_height, static_cast<long long>(pixels),
                  static_cast<long long>(opts.max_pixels));
    return buf;
  }
  switch (c.jpeg_color_space) {
    case JCS_GRAYSCALE: case JCS_YCbCr: case JCS_RGB: case JCS_CMYK: case JCS_YCCK: return "";
    default: {
      char buf[120];
      std::snprintf(buf, sizeof(buf), "unsupported JPEG colour space (%d components, libjpeg colour space %d)",
                    c.num_components, int(c.jpeg_color_space));
      return buf;
    }
  }
}

bool is_cmyk(const jpeg_decompress_struct& c) {
  return c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK;
}

}  // namespace

DecodeReport JpegDecoder::open(const uint8_t* data, size_t size, const DecodeOptions& opts, JpegInfo* info) {
  DecodeReport r = read_header(data, size, opts.apply_exif_orientation, info, opts.strict);
  if (r.status != Status::Ok) return r;
  std::string bad = check_header(st_->cinfo, opts);
  if (!bad.empty()) {
    jpeg_abort_decompress(&st_->cinfo);
    r.status = Status::Error;
    r.message = bad;
    return r;
  }
  jpeg_decompress_struct& c = st_->cinfo;
  st_->multi_scan = c.progressive_mode || c.comps_in_scan < c.num_components;
  st_->charged_scan = 0;
  st_->scan_blocks = 0;
  st_->max_scan_blocks = opts.max_scan_blocks;
  if (st_->multi_scan) {
    bad = check_scans(data, size, c, opts);
    if (!bad.empty()) {
      jpeg_abort_decompress(&c);
      r.status = Status::Error;
      r.message = bad;
      return r;
    }
  }
  st_->strict = opts.strict;
  st_->max_scans = opts.max_scans;
  use_restart_index_ = opts.restart_index;
  return r;
}

DecodeReport JpegDecoder::decode_full(const uint8_t* data, size_t size, const DecodeOptions& opts,
                                      std::vector<uint8_t>* pixels, int* width, int* height) {
  JpegInfo info;
  DecodeReport r = open(data, size, opts, &info);
  if (r.status != Status::Ok) return r;
  jpeg_decompress_struct& c = st_->cinfo;
  const int w = info.width, h = info.height;
  const bool cmyk = is_cmyk(c);
  std::vector<uint8_t>& raw = (cmyk || info.orientation != 1) ? raw_ : *pixels;
  raw.resize(size_t(w) * size_t(h) * (cmyk ? 4 : 3));
  int col0 = 0, cols = w;
  if (guarded_decode_rows(st_, 8, cmyk ? JCS_CMYK : JCS_RGB, 0, h, &col0, &cols, raw.data(), raw.size(), true) != 0) {
    set_failure(st_->message, &r);
    r.warnings = st_->warnings;
    return r;
  }
  r.warnings = st_->warnings;
  if (cmyk) {
    cmyk_to_rgbx_inplace(raw.data(), size_t(w) * h);
    for (size_t i = 0, n = size_t(w) * h; i < n; ++i) std::memmove(raw.data() + i * 3, raw.data() + i * 4, 3);
    raw.resize(size_t(w) * h * 3);
  }
  *width = w;
  *height = h;
  if (info.orientation != 1) {
    orient_rgb(raw.data(), w, h, info.orientation, pixels, width, height);
  } else if (&raw != pixels) {
    pixels->assign(raw.begin(), raw.end());
  }
  return r;
}

DecodeReport JpegDecoder::decode_region(const uint8_t* data, size_t size, int scale_num, int x0, int y0, int x1,
                                        int y1, std::vector<uint8_t>* buf, DecodedRegion* got) {
  DecodeReport r;
  jpeg_decompress_struct& c = st_->cinfo;
  const int SH = int((int64_t(c.image_height) * scale_num + 7) / 8);
  const int SW = int((int64_t(c.image_width) * scale_num + 7) / 8);
  const bool cmyk = is_cmyk(c);
  int col0 = x0, cols = x1 - x0;
  // crop_scanline widens the window to the iMCU grid: at most one iMCU (<= 32 scaled pixels) on the left and right.
  const int max_cols = std::min(SW, cols + 64);
  grow_to(buf, size_t(max_cols) * 4 * size_t(y1 - y0));
  const bool whole = (y0 == 0 && y1 == SH);
  // Only a file with restart markers can carry an index: the others (nearly all) skip the second header walk that
  // looking for the index segment costs.
  if (use_restart_index_ && !(whole && x0 == 0 && x1 == SW) && c.restart_interval != 0 && !c.progressive_mode &&
      !c.arith_code) {
    DecodeReport fast = decode_region_indexed(data, size, scale_num, x0, y0, x1, y1, buf, got);
    if (fast.status != Status::Fallback) return fast;
  }
  if (guarded_decode_rows(st_, scale_num, cmyk ? JCS_CMYK : JCS_EXT_RGBX, y0, y1, &col0, &cols, buf->data(),
                          buf->size(), whole) != 0) {
    set_failure(st_->message, &r);
    r.warnings = st_->warnings;
    return r;
  }
  r.warnings = st_->warnings;
  r.scale_num = scale_num;
  if (!c.progressive_mode && !whole && !has_end_marker(data, size)) {
    r.status = Status::Error;
    r.message = "Premature end of JPEG file (no end-of-image marker: the file is truncated)";
    return r;
  }
  if (cmyk) cmyk_to_rgbx_inplace(buf->data(), size_t(cols) * size_t(y1 - y0));
  *got = DecodedRegion{buf->data(), cols * 4, col0, y0, cols, y1 - y0};
  return r;
}

// The rows above a region, and the columns left and right of it, cost their entropy decoding on the normal path
// (jpeg_skip_scanlines must Huffman-decode a baseline scan up to the first row it keeps, and every row it keeps is
// Huffman-decoded whole; jpeg_crop_scanline saves only the IDCT of the columns outside). A restart-indexed file is
// read only where the region needs it: build_restart_window makes a small JPEG of MCU rows [a, b] x tiles [ta, tb]
// and that is decoded, with the same scale, colour space and column window shifted by the tiles' origin. Pixels stay
// bit-identical to decoding the whole file:
// - the coefficients are the same (a restart resets the DC predictors and the bit reader, by the standard);
// - libjpeg's fancy upsampling with vertical subsampling (h2v2, h1v2) makes each output row from its chroma row and
//   the chroma row above or below it, through its context-row machinery; at the top and bottom of an image it
//   replicates the edge row instead. So the window starts at the MCU row holding the output row above the first needed
//   row and ends at the one holding the row below the last (or at the image's end): every row kept sees exactly the
//   neighbours it sees in the whole file. Without vertical subsampling no row depends on another;
// - horizontally, jpeg_crop_scanline already makes the region's iMCU-aligned column window the upsampler's whole row
//   (it replicates at the window's edges, whatever lies beyond), and tiles are whole MCUs, so on the iMCU grid: tiles
//   covering [x0, x1) hold every iMCU column that window reads, at the same place relative to the window;
// - the window's height and width are whole MCUs, or the true remainder where it reaches the bottom or right edge, so
//   every component's partial last row and column are the whole file's.
// Anything unexpected (no valid index, a different frame after re-reading, a warning in the window) falls back to the
// normal path on the original bytes.
DecodeReport JpegDecoder::decode_region_indexed(const uint8_t* data, size_t size, int scale_num, int x0, int y0,
                                                int x1, int y1, std::vector<uint8_t>* buf, DecodedRegion* got) {
  DecodeReport r;
  r.status = Status::Fallback;
  jpeg_decompress_struct& c = st_->cinfo;
  RestartIndex x;
  if (!find_restart_index(data, size, &x)) return r;
  if (int(c.image_width) != x.width || int(c.image_height) != x.height ||
      int(c.restart_interval) != x.restart_interval) {
    return r;
  }
  // Output rows per MCU row and columns per tile at this scale (whole numbers: an MCU is 8 x sampling factor pixels).
  const int rows_per_mcu = x.mcu_h * scale_num / 8;
  const int cols_per_tile = x.tile_w * scale_num / 8;
  if (rows_per_mcu < 1 || cols_per_tile < 1 || (x.mcu_h * scale_num) % 8 != 0 || (x.tile_w * scale_num) % 8 != 0) {
    return r;
  }
  // Vertical chroma upsampling (4:2:0, 4:4:0) reads one sample row above and below; without it no row needs another.
  int context = 0;
  for (int ci = 0; ci < c.num_components; ++ci) context |= c.comp_info[ci].v_samp_factor < c.max_v_samp_factor;
  const int a = std::max(0, (y0 - context) / rows_per_mcu);
  const int b = std::min(x.mcu_rows - 1, (y1 - 1 + context) / rows_per_mcu);
  const int ta = x0 / cols_per_tile;
  const int tb = std::min(x.tiles_per_row - 1, (x1 - 1) / cols_per_tile);
  if (a == 0 && ta == 0 && tb == x.tiles_per_row - 1) return r;  // the region needs every tile of the rows it reads
  if (!build_restart_window(data, size, x, a, b, ta, tb, &window_)) return r;

  // From here the open image is the window's; on any doubt the original is opened again for the normal path.
  const J_COLOR_SPACE space = c.jpeg_color_space;
  const bool cmyk = is_cmyk(c);
  const int warnings = st_->warnings;
  const int shift = a * rows_per_mcu, col_shift = ta * cols_per_tile;
  const int window_height = b + 1 == x.mcu_rows ? x.height - a * x.mcu_h : (b - a + 1) * x.mcu_h;
  const int window_width = tb + 1 == x.tiles_per_row ? x.width - ta * x.tile_w : (tb - ta + 1) * x.tile_w;
  int col0 = x0 - col_shift, cols = x1 - x0;
  bool ok = guarded_read_header(st_, window_.data(), window_.size(), false) == 0 &&
            int(c.image_width) == window_width && int(c.image_height) == window_height &&
            c.jpeg_color_space == space && !c.progressive_mode && !c.arith_code;
  if (ok) {
    const int SW = int((int64_t(window_width) * scale_num + 7) / 8);
    grow_to(buf, size_t(std::min(SW, cols + 64)) * 4 * size_t(y1 - y0));
    ok = guarded_decode_rows(st_, scale_num, cmyk ? JCS_CMYK : JCS_EXT_RGBX, y0 - shift, y1 - shift, &col0, &cols,
                             buf->data(), buf->size(), false) == 0 &&
         st_->warnings == warnings;
  }
  if (!ok) {
    st_->warnings = warnings;
    if (guarded_read_header(st_, data, size, false) != 0) {
      r.status = Status::Error;
      r.message = st_->message;
      return r;
    }
    return r;  // Fallback: decode_region goes on with the normal path
  }
  r.status = Status::Ok;
  r.warnings = st_->warnings;
  r.scale_num = scale_num;
  if (cmyk) cmyk_to_rgbx_inplace(buf->data(), size_t(cols) * size_t(y1 - y0));
  *got = DecodedRegion{buf->data(), cols * 4, col0 + col_shift, y0, cols, y1 - y0};
  return r;
}

void JpegDecoder::abort() { jpeg_abort_decompress(&st_->cinfo); }

}  // namespace ipu
