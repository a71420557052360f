// Batches from raw pixels: a dataset held decoded in memory as one (N, H, W, C) uint8 array (CIFAR-10), each batch
// sample transformed (transform.h, transform_raw) into its slot of the caller's (B, out_h, out_w, 3) buffer, over the
// shared thread pool, without the GIL. The raw counterpart of run_batch (pipeline.h), with the same keying of the
// random draws by (seed, epoch, dataset index).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "crop.h"
#include "resample.h"

namespace ipu {

// Transform images[indices[i]] (each height x width x channels bytes, channels 3 or 4) into out + i * out_h * out_w * 3
// for i < count. indices must be below num_images (the caller checks). Returns one message per sample, empty when it
// succeeded; a failed slot is zero-filled.
std::vector<std::string> run_raw_batch(const uint8_t* images, uint64_t num_images, int height, int width,
                                       int channels, const uint64_t* indices, size_t count, uint8_t* out,
                                       const CropParams& crop, Filter filter, uint64_t seed, uint64_t epoch,
                                       int num_threads);

}  // namespace ipu
