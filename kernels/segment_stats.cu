// segment_stats: per (sample, channel) sum, sum of squares and count of non-finite values of
// ragged float32 samples, for the layer norm of waveforms, the per-bin standardisation of fbank,
// and the NaN/Inf check. NumPy reference: dali_asr.collate.segment_stats.
//
// Launch contract
//   grid  = (blocks_per_sample, B); any blocks_per_sample >= 1 (the loops are grid-strided)
//   block = a multiple of num_channels, at most 1024 (the launcher uses F * (256 / F))
//   dynamic shared memory = 3 * blockDim.x * sizeof(double)
//   out must be zeroed before the launch; it is accumulated with double atomicAdd (sm_60+).
// Arguments
//   ptrs          uint64 [B]    device address of sample b: float32 [lengths[b], num_channels]
//   lengths       int64  [B]    rows of sample b
//   num_channels  int32         F (1 for a waveform, 80 for fbank)
//   out           float64 [B, F, 3]: sum and sum of squares of the finite values, and the
//                 number of non-finite values
// Because the grid stride is a multiple of F, every thread stays on one channel, so the block
// can reduce per channel with F threads.
extern "C" __global__ void segment_stats(const unsigned long long* ptrs,
                                         const long long* lengths,
                                         int num_channels,
                                         double* out) {
    extern __shared__ double shared[];
    const int b = blockIdx.y;
    const float* x = reinterpret_cast<const float*>(ptrs[b]);
    const long long n = lengths[b] * num_channels;
    const long long stride = (long long)gridDim.x * blockDim.x;
    double sum = 0.0, squares = 0.0, bad = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = x[i];
        if (isfinite(v)) {
            sum += v;
            squares += (double)v * v;
        } else {
            bad += 1.0;
        }
    }
    shared[threadIdx.x] = sum;
    shared[blockDim.x + threadIdx.x] = squares;
    shared[2 * blockDim.x + threadIdx.x] = bad;
    __syncthreads();
    if (threadIdx.x < num_channels) {
        double s = 0.0, q = 0.0, c = 0.0;
        for (int j = threadIdx.x; j < blockDim.x; j += num_channels) {
            s += shared[j];
            q += shared[blockDim.x + j];
            c += shared[2 * blockDim.x + j];
        }
        double* cell = out + ((long long)b * num_channels + threadIdx.x) * 3;
        atomicAdd(cell, s);
        atomicAdd(cell + 1, q);
        atomicAdd(cell + 2, c);
    }
}
