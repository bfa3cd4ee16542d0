// spec_augment_{32,16}: SpecAugment's masks on a collated fbank batch [B, W, F], in place:
// cells inside any of sample b's frequency masks (channels) or time masks (frames) are set to
// zero, which after the per-bin standardisation is the bin's mean. The same zero bit pattern
// serves float32 (the _32 kernel) and float16 / bfloat16 (_16). Masks are drawn on the host,
// seeded per example (dali_asr.augment), so a resumed run masks the same cells.
// NumPy reference: dali_asr.augment.apply_spec_augment.
//
// Launch contract
//   grid  = (any >= 1, B); block = 256 threads
// Arguments
//   data        [B, W, F] 32- or 16-bit cells, modified in place
//   width       int64   W
//   num_channels int32  F
//   freq_masks  int32 [B, num_freq, 2]  (first channel, count); count 0 = no mask
//   num_freq    int32
//   time_masks  int32 [B, num_time, 2]  (first frame, count)
//   num_time    int32
template <typename Cell>
__device__ void spec_augment(Cell* data, long long width, int num_channels,
                             const int* freq_masks, int num_freq, const int* time_masks,
                             int num_time) {
    const int b = blockIdx.y;
    const long long cells = width * num_channels;
    const int* fm = freq_masks + (long long)b * num_freq * 2;
    const int* tm = time_masks + (long long)b * num_time * 2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < cells;
         i += (long long)gridDim.x * blockDim.x) {
        const int f = (int)(i % num_channels);
        const long long t = i / num_channels;
        bool masked = false;
        for (int k = 0; k < num_freq; ++k) masked |= f >= fm[2 * k] && f < fm[2 * k] + fm[2 * k + 1];
        for (int k = 0; k < num_time; ++k) masked |= t >= tm[2 * k] && t < tm[2 * k] + tm[2 * k + 1];
        if (masked) data[(long long)b * cells + i] = 0;
    }
}

extern "C" __global__ void spec_augment_32(unsigned int* data, long long width, int num_channels,
                                           const int* freq_masks, int num_freq,
                                           const int* time_masks, int num_time) {
    spec_augment(data, width, num_channels, freq_masks, num_freq, time_masks, num_time);
}

extern "C" __global__ void spec_augment_16(unsigned short* data, long long width,
                                           int num_channels, const int* freq_masks,
                                           int num_freq, const int* time_masks, int num_time) {
    spec_augment(data, width, num_channels, freq_masks, num_freq, time_masks, num_time);
}
