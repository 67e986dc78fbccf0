// Softmax over the last axis. Launch: grid (rows), block (256).
#include "reduce.h"

// x (rows, C) -> y: exp(x - max) / sum(exp(x - max)) per row
extern "C" __global__ void softmax_rows(const float* __restrict__ x, float* __restrict__ y, int C) {
    __shared__ float red[32];
    const float* xr = x + (long long)blockIdx.x * C;
    float* yr = y + (long long)blockIdx.x * C;
    float m = NEG_INF_F;
    for (int i = threadIdx.x; i < C; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = block_max(m, red);
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += expf(xr[i] - m);
    float inv = 1.0f / block_sum(s, red);
    for (int i = threadIdx.x; i < C; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
}
