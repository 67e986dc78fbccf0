// Softmax over the last axis.
#include "reduce.h"

// x (rows, C) -> y: exp(x - max) / sum(exp(x - max)) per row. One warp per row for C <= 1024
// (launch: grid (ceil(rows / 8)), block (256)); a block per row for longer rows (softmax_rows_block).
extern "C" __global__ void softmax_rows(const float* __restrict__ x, float* __restrict__ y, long long rows, int C) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;  // whole warps leave together
    const float* xr = x + row * C;
    float* yr = y + row * C;
    float m = NEG_INF_F;
    for (int i = lane; i < C; i += 32) m = fmaxf(m, xr[i]);
    m = warp_max(m);
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += expf(xr[i] - m);
    float inv = 1.0f / warp_sum(s);
    for (int i = lane; i < C; i += 32) yr[i] = expf(xr[i] - m) * inv;
}

// Same, a block per row. Launch: grid (rows), block (256).
extern "C" __global__ void softmax_rows_block(const float* __restrict__ x, float* __restrict__ y, int C) {
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
