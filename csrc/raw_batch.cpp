#include "raw_batch.h"

#include <cstring>
#include <exception>

#include "thread_pool.h"
#include "transform.h"

namespace ipu {

std::vector<std::string> run_raw_batch(const uint8_t* images, uint64_t num_images, int height, int width,
                                       int channels, const uint64_t* indices, size_t count, uint8_t* out,
                                       const CropParams& crop, Filter filter, uint64_t seed, uint64_t epoch,
                                       int num_threads) {
  const size_t image_bytes = size_t(height) * size_t(width) * size_t(channels);
  const size_t slot_bytes = size_t(crop.out_h) * size_t(crop.out_w) * 3;
  std::vector<std::string> errors(count);
  ThreadPool::instance().parallel_for(count, num_threads, [&](size_t i, int) {
    uint8_t* dst = out + i * slot_bytes;
    try {
      thread_local ResampleScratch scratch;
      thread_local std::vector<uint8_t> pad_buf;
      if (indices[i] >= num_images) {
        errors[i] = "index " + std::to_string(indices[i]) + " is outside the " + std::to_string(num_images) +
                    " images";
      } else {
        errors[i] = transform_raw(images + size_t(indices[i]) * image_bytes, width, height, channels, crop, filter,
                                  seed, epoch, indices[i], dst, scratch, pad_buf);
      }
    } catch (const std::exception& e) {
      errors[i] = std::string("internal error: ") + e.what();
    }
    if (!errors[i].empty()) std::memset(dst, 0, slot_bytes);
  });
  return errors;
}

}  // namespace ipu
