// The batch job: for each sample, read the bytes (in the worker thread), decode the region its crop needs, resize and
// flip it into its slot of the caller's (N, H, W, 3) buffer. Runs without the GIL on the shared thread pool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "crop.h"
#include "jpeg_decoder.h"
#include "resample.h"

namespace ipu {

struct Source {
  const uint8_t* data = nullptr;  // in-memory bytes, or
  size_t size = 0;
  std::string path;               // a file to read (used when data is null)
};

struct SampleResult {
  Status status = Status::Ok;
  std::string message;
  int warnings = 0;
  int scale_num = 8;
};

// Decode sources[i] with dataset index indices[i] into out + i * out_h * out_w * 3. Failed and non-JPEG slots are
// zero-filled and reported in results (never thrown).
void run_batch(const std::vector<Source>& sources, const int64_t* indices, uint8_t* out, const CropParams& crop,
               Filter filter, uint64_t seed, uint64_t epoch, const DecodeOptions& opts, int num_threads,
               std::vector<SampleResult>* results);

// Read a whole file into buf. Empty string on success, else the reason.
std::string read_file(const std::string& path, std::vector<uint8_t>* buf);

// The calling thread's decoder (one per thread, reused).
JpegDecoder& thread_decoder();

}  // namespace ipu
