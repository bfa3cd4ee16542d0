// log_mel: Kaldi's mel energies and their log, from the ragged power spectra the DALI graph
// computed (float32 [frames_b, 257] per utterance, graph.kaldi_power), into one buffer of all
// the batch's frames. NumPy reference: dali_asr.fbank.log_mel.
//
// Launch contract
//   grid  = (total_frames); block = 128 threads (at least 80: one thread per mel bin)
//   every cell of out is written
// Arguments
//   ptrs         uint64 [B]     device address of utterance b's power: float32 [frames_b, 257]
//   offsets      int64 [B + 1]  utterance b owns rows offsets[b] .. offsets[b + 1] - 1 of out
//   num_samples  int32          B
//   weights      float32 [257, 80]  Kaldi's mel matrix (dali_asr.fbank.mel_matrix)
//   bands        int32 [80, 2]  each triangle's first FFT bin and its number of bins
//   log_floor    float32        energies are floored here before the log (FLT_EPSILON)
//   out          float32 [total_frames, 80]
#define NUM_BINS 257
#define NUM_MEL 80

extern "C" __global__ void log_mel(const unsigned long long* ptrs, const long long* offsets,
                                   int num_samples, const float* weights, const int* bands,
                                   float log_floor, float* out) {
    __shared__ float power[NUM_BINS];
    const long long index = blockIdx.x;
    // the utterance owning this frame: the last b with offsets[b] <= index
    int lo = 0, hi = num_samples;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (offsets[mid] <= index) lo = mid; else hi = mid;
    }
    const float* row = reinterpret_cast<const float*>(ptrs[lo]) + (index - offsets[lo]) * NUM_BINS;
    for (int k = threadIdx.x; k < NUM_BINS; k += blockDim.x) power[k] = row[k];
    __syncthreads();
    for (int bin = threadIdx.x; bin < NUM_MEL; bin += blockDim.x) {
        const int first = bands[2 * bin];
        const int last = first + bands[2 * bin + 1];
        float energy = 0.0f;
        for (int k = first; k < last; ++k) energy += power[k] * weights[k * NUM_MEL + bin];
        out[index * NUM_MEL + bin] = logf(fmaxf(energy, log_floor));
    }
}
