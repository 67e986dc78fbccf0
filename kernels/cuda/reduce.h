// Fixed-order block reductions shared by the norm and softmax kernels (included, not compiled alone).
// blockDim.x must be a multiple of 32 (the launch code uses 256). The order of additions depends
// only on blockDim.x, never on scheduling, so results are reproducible run to run.
#pragma once

#define FULL_MASK 0xffffffffu
#define NEG_INF_F __int_as_float(0xff800000)  // -inf; INFINITY is not defined under NVRTC

__device__ __forceinline__ float warp_sum(float v) {
    for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int m = 16; m > 0; m /= 2) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, m));
    return v;
}

// Every thread gets the block's sum (red: __shared__ float[32], reused between calls).
__device__ __forceinline__ float block_sum(float v, float* red) {
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();  // red may still be read by the previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nwarps ? red[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* red) {
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nwarps ? red[lane] : NEG_INF_F;
    return warp_max(v);
}
