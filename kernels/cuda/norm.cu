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

// x (rows, C) -> y, normalised over the last axis. Launch: grid (rows), block (256).
extern "C" __global__ void layer_norm(const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ weight,
                                      const float* __restrict__ bias, int C, float eps) {
    __shared__ float red[32];
    const float* xr = x + (long long)blockIdx.x * C;
    float* yr = y + (long long)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, red) / (float)C;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    float rstd = rsqrtf(block_sum(ss, red) / (float)C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x) yr[i] = (xr[i] - mean) * rstd * weight[i] + bias[i];
}
