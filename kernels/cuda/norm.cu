// GroupNorm (with optional fused SiLU) and LayerNorm. Two passes over the data (mean, then the
// centred sum of squares) like the reference, with fixed-order block reductions.
#include "reduce.h"

// x (N, C, S) with S = spatial size -> y, normalised over each (n, group) of C / groups channels.
// Launch: grid (N * groups), block (256).
extern "C" __global__ void group_norm(const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ weight,
                                      const float* __restrict__ bias, int C, int groups, int S, float eps, int silu) {
    __shared__ float red[32];
    int cpg = C / groups, g = blockIdx.x % groups;
    long long count = (long long)cpg * S, base = (long long)blockIdx.x * count;
    const float* xg = x + base;
    float s = 0.0f;
    for (long long i = threadIdx.x; i < count; i += blockDim.x) s += xg[i];
    float mean = block_sum(s, red) / (float)count;
    float ss = 0.0f;
    for (long long i = threadIdx.x; i < count; i += blockDim.x) {
        float d = xg[i] - mean;
        ss += d * d;
    }
    float rstd = rsqrtf(block_sum(ss, red) / (float)count + eps);
    for (long long i = threadIdx.x; i < count; i += blockDim.x) {
        int c = g * cpg + int(i / S);
        float v = (xg[i] - mean) * rstd * weight[c] + bias[c];
        y[base + i] = silu ? v / (1.0f + expf(-v)) : v;
    }
}

// x (rows, C) -> y, normalised over the last axis. One warp per row.
// Launch: grid (ceil(rows / 8)), block (256).
extern "C" __global__ void layer_norm(const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ weight,
                                      const float* __restrict__ bias, long long rows, int C, float eps) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;  // whole warps leave together
    const float* xr = x + row * C;
    float* yr = y + row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += xr[i];
    float mean = warp_sum(s) / (float)C;
    float ss = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    float rstd = rsqrtf(warp_sum(ss) / (float)C + eps);
    for (int i = lane; i < C; i += 32) yr[i] = (xr[i] - mean) * rstd * weight[i] + bias[i];
}
