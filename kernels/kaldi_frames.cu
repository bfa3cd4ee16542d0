// kaldi_frames: Kaldi's framing (kaldi-native-fbank / torchaudio.compliance.kaldi defaults,
// snip_edges) of ragged 16 kHz float32 audio, ready for a 512-point real FFT. Per frame of 400
// samples starting at 160 * i: scale by 32768, subtract the frame's own mean, pre-emphasise
// inside the frame (y[0] = x[0] - 0.97 x[0]), multiply by the Povey window, zero-pad to 512.
// NumPy reference: dali_asr.fbank.kaldi_frames.
//
// Launch contract
//   grid  = (total_frames); block = 128 threads (a power of two, at most 512)
//   every output cell of the grid's frames is written
// Arguments
//   ptrs          uint64 [B]    device address of sample b: float32 [n_b]
//   offsets       int64 [B + 1] frame offsets: sample b owns frames offsets[b] .. offsets[b+1]-1
//                               (1 + (n_b - 400) / 160 frames, 0 below 400 samples)
//   num_samples   int32         B
//   window        float32 [400] the Povey window
//   out           float32 [total_frames, 512]
#define FRAME_LENGTH 400
#define FRAME_SHIFT 160
#define FFT_SIZE 512

extern "C" __global__ void kaldi_frames(const unsigned long long* ptrs, const long long* offsets,
                                        int num_samples, const float* window, float* out) {
    __shared__ float frame[FRAME_LENGTH];
    __shared__ float partial[512];
    const long long index = blockIdx.x;
    // the sample owning this frame: the last b with offsets[b] <= index (samples without
    // frames have offsets[b] == offsets[b + 1] and are passed over)
    int lo = 0, hi = num_samples;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (offsets[mid] <= index) lo = mid; else hi = mid;
    }
    const float* x = reinterpret_cast<const float*>(ptrs[lo]) + (index - offsets[lo]) * FRAME_SHIFT;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < FRAME_LENGTH; j += blockDim.x) {
        const float v = x[j] * 32768.0f;
        frame[j] = v;
        sum += v;
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    const float mean = partial[0] / FRAME_LENGTH;
    float* row = out + index * FFT_SIZE;
    for (int j = threadIdx.x; j < FFT_SIZE; j += blockDim.x) {
        float y = 0.0f;
        if (j < FRAME_LENGTH) {
            const float current = frame[j] - mean;
            const float previous = j > 0 ? frame[j - 1] - mean : current;
            y = (current - 0.97f * previous) * window[j];
        }
        row[j] = y;
    }
}
