// Tiny kernels that exercise the CUDA execution model; tests/test_cuda_emulator.py runs them
// through the emulator (and on a GPU where one exists) and checks the results in NumPy.

// grid (any 3-D), block (any 3-D): every thread writes its 12 index/shape values.
extern "C" __global__ void dims_probe(int* out) {
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int* o = out + 12 * (b * blockDim.x * blockDim.y * blockDim.z + t);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x;  o[4] = blockIdx.y;  o[5] = blockIdx.z;
    o[6] = blockDim.x;  o[7] = blockDim.y;  o[8] = blockDim.z;
    o[9] = gridDim.x;   o[10] = gridDim.y;  o[11] = gridDim.z;
}

// grid (n_blocks), block (256): rounds of "write my slot, barrier, read my neighbour's slot,
// barrier"; out[i] = x[i] rotated by `rounds` places within the block (wrong without barriers).
extern "C" __global__ void rotate_rounds(const float* x, float* out, int rounds) {
    __shared__ float buf[256];
    unsigned t = threadIdx.x, n = blockDim.x;
    float v = x[blockIdx.x * n + t];
    for (int r = 0; r < rounds; ++r) {
        buf[t] = v;
        __syncthreads();
        v = buf[(t + 1) % n];
        __syncthreads();
    }
    out[blockIdx.x * n + t] = v;
}

// grid (n_blocks), block (n): block-wide fixed-order tree sum in static shared memory;
// sums[b] = sum of the block's n inputs (n a power of two <= 512).
extern "C" __global__ void block_sum(const float* x, float* sums) {
    __shared__ float s[512];
    unsigned t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned h = blockDim.x / 2; h > 0; h /= 2) {
        if (t < h) s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0) sums[blockIdx.x] = s[0];
}

// grid (1), block (n <= 1024, n % 32 may be != 0): per lane 8 results of warp operations.
extern "C" __global__ void warp_ops(const float* x, float* out, unsigned* votes, int threshold) {
    unsigned t = threadIdx.x;
    float v = x[t];
    float s = v;
    for (int m = 16; m > 0; m /= 2) s += __shfl_xor_sync(0xffffffffu, s, m);
    float* o = out + 5 * t;
    o[0] = s;                                   // warp sum (full warps)
    o[1] = __shfl_down_sync(0xffffffffu, v, 3); // lane + 3, or own value past the end
    o[2] = __shfl_up_sync(0xffffffffu, v, 2);   // lane - 2, or own value below 0
    o[3] = __shfl_sync(0xffffffffu, v, 7);      // lane 7's value
    o[4] = __shfl_xor_sync(0xffffffffu, v, 1, 8);  // neighbour within groups of 8
    int p = int(v) > threshold;
    unsigned* vt = votes + 3 * t;
    vt[0] = __ballot_sync(0xffffffffu, p);
    vt[1] = __all_sync(0xffffffffu, p);
    vt[2] = __any_sync(0xffffffffu, p);
}

// grid (any), block (any): float and int atomics into one accumulator from every block.
extern "C" __global__ void atomic_sum(const float* x, float* total, int* count, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(total, x[i]);
        atomicAdd(count, 1);
    }
}

// grid (n_blocks), block (n), shared_mem = n * 4: reverse each block's slice through the
// dynamic shared buffer.
extern "C" __global__ void dyn_reverse(const float* x, float* y) {
    extern __shared__ float dbuf[];
    unsigned t = threadIdx.x, n = blockDim.x;
    dbuf[t] = x[blockIdx.x * n + t];
    __syncthreads();
    y[blockIdx.x * n + t] = dbuf[n - 1 - t];
}

// grid (1), block (64): lanes below `split` wait at __syncthreads, the others at a shuffle;
// a GPU hangs or misbehaves here, the emulator reports a divergent barrier.
extern "C" __global__ void divergent(float* y, int split) {
    unsigned t = threadIdx.x;
    if (t < unsigned(split)) __syncthreads();
    else y[t] = __shfl_xor_sync(0xffffffffu, y[t], 1);
}

// grid (1), block (n): mixed parameter types, to check argument conversion.
extern "C" __global__ void scalars(float* out, int i, float f, unsigned u, long long ll, double d) {
    if (threadIdx.x == 0) {
        out[0] = float(i); out[1] = f; out[2] = float(u); out[3] = float(ll); out[4] = float(d);
    }
}
