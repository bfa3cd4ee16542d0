// collate_targets: token id lists, concatenated, into int64 [B, L] padded with pad_idx.
// NumPy reference: dali_asr.collate.collate_targets.
//
// Launch contract
//   grid  = (any >= 1, B); block = 256 threads; every output cell is written
// Arguments
//   tokens   int64 [total]   all sequences back to back
//   offsets  int64 [B + 1]   sequence b is tokens[offsets[b] : offsets[b + 1]]
//   width    int64           L (the longest sequence)
//   pad_idx  int64
//   out      int64 [B, L]
extern "C" __global__ void collate_targets(const long long* tokens, const long long* offsets,
                                           long long width, long long pad_idx,
                                           long long* out) {
    const int b = blockIdx.y;
    const long long start = offsets[b];
    const long long count = offsets[b + 1] - start;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < width;
         i += (long long)gridDim.x * blockDim.x) {
        out[(long long)b * width + i] = i < count ? tokens[start + i] : pad_idx;
    }
}
