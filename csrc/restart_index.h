// Restart-indexed JPEGs: a lossless coefficient-level transcode that puts a restart marker at every MCU row and
// records where each restart interval starts, so that a region decode can begin at the interval holding its first row
// instead of entropy-decoding every row above it (Huffman decoding is sequential; restart markers are the only places
// a baseline scan can be entered).
//
// The offsets travel IN the JPEG, as a private APP10 segment placed just before SOS:
//   "IPURSTIX" (8) | version u8 = 1 | reserved u8 = 0 | width u16 | height u16 | restart interval u16 (MCUs) |
//   intervals u16 (= MCU rows) | scan bytes u32 (entropy-coded data up to EOI) | offsets u32 x intervals (from the first
//   byte after the SOS segment; offsets[0] = 0) | FNV-1a u32 of all the bytes before it
// (big-endian, like JPEG itself). Offsets are relative to the scan data, which the segment's own insertion before SOS
// does not move. Every other decoder skips an unknown APPn, so the file stays a plain baseline JPEG. Keeping the index
// in the sample's bytes (not in a shard index) keeps a 1.28M-sample shard index small and helps loose files too.
//
// A segment is trusted only after checking it against the file: checksum, frame size, DRI, the MCU grid, the scan
// length up to an EOI marker, and an RSTn marker (numbered as the decoder expects) just before every offset. Anything
// else (a tool that re-encoded the scan but kept the APPn, a damaged byte) makes it "absent" and the normal path runs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "jpeg_decoder.h"

namespace ipu {

constexpr uint8_t kRestartIndexMarker = 0xEA;  // APP10
constexpr char kRestartIndexTag[8] = {'I', 'P', 'U', 'R', 'S', 'T', 'I', 'X'};
constexpr int kRestartIndexVersion = 1;

// A validated index, as views into the file's bytes (valid while they are).
struct RestartIndex {
  int width = 0, height = 0;
  int mcu_w = 0, mcu_h = 0;         // MCU size in pixels (8 x max sampling factor; 8x8 for a single component)
  int restart_interval = 0;         // MCUs per interval = MCUs per row
  int intervals = 0;                // = MCU rows
  size_t header_end = 0;            // offset of the SOS marker (0xFF 0xDA)
  size_t scan_start = 0;            // first byte of entropy-coded data (just past the SOS segment)
  size_t scan_bytes = 0;            // entropy-coded bytes up to the EOI marker
  size_t sof_height_pos = 0;        // offset of the SOF's 2-byte height field
  size_t segment_pos = 0, segment_bytes = 0;  // the APP10 segment (marker included)
  const uint8_t* offsets = nullptr;            // intervals x u32 big-endian
  uint32_t offset(int i) const {
    const uint8_t* p = offsets + 4 * size_t(i);
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
  }
};

// Find and check the index of a file. false when there is none or it cannot be trusted; *why (when given) says which.
bool find_restart_index(const uint8_t* data, size_t size, RestartIndex* index, std::string* why = nullptr);

// Transcode data (any JPEG libjpeg reads: baseline, progressive, arithmetic) into a baseline Huffman JPEG with a
// restart marker at every MCU row and its index segment; APPn and COM segments are kept (an older index is replaced).
// Already-indexed input is copied as is. Returns "" on success, else why the file was not transcoded (corrupt data,
// a colour space or precision this libjpeg cannot carry, a progressive file libjpeg would block-smooth, limits).
// optimize_coding: per-image Huffman tables (smaller and as fast to decode) instead of the standard ones.
std::string add_restart_index(const uint8_t* data, size_t size, const DecodeOptions& opts, bool optimize_coding,
                              std::vector<uint8_t>* out);

// A self-contained baseline JPEG holding MCU rows [row_a, row_b] of an indexed file: its header segments up to SOS
// (APP0/APP14, which set the colour transform, kept; other APPn and COM left out) with the SOF height cut to those
// rows, then the scan data of those intervals with their RST markers renumbered from RST0, then EOI. Decoding it gives
// the same coefficients for those rows as decoding the whole file. false when the rows are out of range.
bool build_restart_window(const uint8_t* data, size_t size, const RestartIndex& index, int row_a, int row_b,
                          std::vector<uint8_t>* out);

}  // namespace ipu
