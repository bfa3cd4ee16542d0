// collate_audio_{f32,f16,bf16}: gather ragged float32 samples (DALI's per-sample outputs, or
// rows of the fbank buffer) into one dense [B, W, F] tensor of the training dtype in a single
// pass: optional normalisation fused in, the cast fused in, the padding written as zeros, and
// the padding mask. NumPy reference: dali_asr.collate.collate_audio.
//
// Launch contract
//   grid  = (any >= 1, B): blocks stride over sample b's W rows
//   block = 256 threads; F <= 256 (the per-channel mean/scale live in shared memory)
//   the output and mask may hold anything before the launch: every cell is written
// Arguments
//   ptrs       uint64 [B]  device address of sample b: float32 [lengths[b], F], row-major
//   lengths    int64  [B]  rows of sample b (<= W)
//   num_channels int32     F
//   width      int64       W (the longest row count, rounded up to pad_to_multiple)
//   stats      float64 [B, F, 3] from segment_stats, or 0 for no normalisation
//   ddof       int32       0: biased variance (layer norm); 1: unbiased (Kaldi standardise)
//   eps        float32     added to the variance
//   out        [B, W, F]   float32, or the 16-bit patterns of float16 / bfloat16
//   mask       uint8 [B, W] 1 where the position is padding
// Normalised value: (x - mean) * scale with mean = sum / n, var = max(sumsq / n - mean^2, 0) *
// n / (n - ddof) and scale = 1 / sqrt(var + eps), or 0 when var + eps is 0 (a constant
// channel comes out as zeros, not NaN). Rounding to 16 bits is round-to-nearest-even.
//
// Each thread owns one channel f of one row slot r of the block (r = thread / F, fixed), and
// steps over rows: no division in the loop. A block covers floor(256 / F) rows at a time, so
// consecutive threads still write consecutive cells.

__device__ __forceinline__ float store_f32(float v) { return v; }

__device__ __forceinline__ unsigned short store_f16(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

__device__ __forceinline__ unsigned short store_bf16(float v) {
    // cvt.rn.bf16.f32 needs sm_80; the bit arithmetic below is the same rounding everywhere.
    unsigned int bits = __float_as_uint(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (unsigned short)(bits >> 16);
}

template <typename Out, Out (*convert)(float)>
__device__ void collate(const unsigned long long* ptrs, const long long* lengths,
                        int num_channels, long long width, const double* stats, int ddof,
                        float eps, Out* out, unsigned char* mask) {
    __shared__ float mean[256];
    __shared__ float scale[256];
    const int b = blockIdx.y;
    const long long rows = lengths[b];
    for (int f = threadIdx.x; f < num_channels; f += blockDim.x) {
        float m = 0.0f, s = 1.0f;
        if (stats != 0) {
            const double* cell = stats + ((long long)b * num_channels + f) * 3;
            const double n = (double)rows;
            const double mu = n > 0 ? cell[0] / n : 0.0;
            double var = n > 0 ? cell[1] / n - mu * mu : 0.0;
            var = var > 0.0 ? var : 0.0;
            var = n > ddof ? var * n / (n - ddof) : 0.0;
            const double denominator = var + (double)eps;
            m = (float)mu;
            s = denominator > 0.0 ? (float)(1.0 / sqrt(denominator)) : 0.0f;
        }
        mean[f] = m;
        scale[f] = s;
    }
    __syncthreads();
    const int rows_per_block = blockDim.x / num_channels;
    const int slot = threadIdx.x / num_channels;
    const int f = threadIdx.x - slot * num_channels;
    if (slot >= rows_per_block) return;
    const float* x = reinterpret_cast<const float*>(ptrs[b]);
    const float m = mean[f], s = scale[f];
    Out* sample_out = out + (long long)b * width * num_channels;
    unsigned char* sample_mask = mask + (long long)b * width;
    const long long step = (long long)gridDim.x * rows_per_block;
    for (long long t = (long long)blockIdx.x * rows_per_block + slot; t < width; t += step) {
        const long long i = t * num_channels + f;
        const bool real = t < rows;
        sample_out[i] = convert(real ? (x[i] - m) * s : 0.0f);
        if (f == 0) sample_mask[t] = !real;
    }
}

#define COLLATE_AUDIO(NAME, OUT, CONVERT)                                                      \
    extern "C" __global__ void NAME(const unsigned long long* ptrs, const long long* lengths,  \
                                    int num_channels, long long width, const double* stats,   \
                                    int ddof, float eps, OUT* out, unsigned char* mask) {     \
        collate<OUT, CONVERT>(ptrs, lengths, num_channels, width, stats, ddof, eps, out,      \
                              mask);                                                          \
    }

COLLATE_AUDIO(collate_audio_f32, float, store_f32)
COLLATE_AUDIO(collate_audio_f16, unsigned short, store_f16)
COLLATE_AUDIO(collate_audio_bf16, unsigned short, store_bf16)
