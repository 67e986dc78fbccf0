// im2col for conv2d: the GEMM itself is xp.matmul (cuBLAS on a GPU).
// x (N, C, H, W) -> cols (N, C * kh * kw, Ho * Wo), zeros where the window hangs over the padding.
// Launch: grid (min(ceil(total / 256), max_grid)), block (256); grid-stride loop over all elements
// (max_grid fills the device: 32 blocks per SM on a GPU).
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols, int N, int C, int H, int W,
                                  int kh, int kw, int stride, int pad_top, int pad_left, int Ho, int Wo) {
    long long L = (long long)Ho * Wo, K = (long long)C * kh * kw, total = (long long)N * K * L;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long l = i % L, nk = i / L;
        int k = int(nk % K), n = int(nk / K);
        int c = k / (kh * kw), r = k % (kh * kw), ki = r / kw, kj = r % kw;
        int oh = int(l / Wo), ow = int(l % Wo);
        int ih = oh * stride - pad_top + ki, iw = ow * stride - pad_left + kj;
        bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
        cols[i] = inside ? x[(((long long)n * C + c) * H + ih) * W + iw] : 0.0f;
    }
}
