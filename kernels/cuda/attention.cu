// Tiled attention with online softmax (flash-style): out = softmax(q k^T * scale) v, never
// forming the (Tq, Tk) matrix; memory O(T * D).
//
// q (BH, Tq, D), k/v (BH, Tk, D) -> o (BH, Tq, D), D <= ATT_MAX_D.
// Launch: grid (ceil(Tq / ATT_WARPS), BH), block (32 * ATT_WARPS), dynamic shared memory
// (ATT_WARPS * D + BK * (D + 1) + BK * D + 2 * ATT_WARPS * ATT_MAX_BK) floats, BK <= ATT_MAX_BK keys
// per tile (the launch code picks BK so this stays within 48 KB). One warp per query row: lane j
// scores keys j and j + 32 of the tile (K rows padded to D + 1 floats: no bank conflicts), the lanes share scores and
// probabilities through shared memory, and each lane accumulates the output dims
// d = lane, lane + 32, ... in registers.
#define ATT_WARPS 8
#define ATT_MAX_D 512
#define ATT_MAX_BK 64
#define ATT_NEG_INF __int_as_float(0xff800000)

extern "C" __global__ void attention_fwd(const float* __restrict__ q, const float* __restrict__ k,
                                         const float* __restrict__ v, float* __restrict__ o, int Tq, int Tk, int D,
                                         float scale, int causal, int BK) {
    extern __shared__ float smem[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, KS = D + 1;
    float* myq = smem + warp * D;                   // (ATT_WARPS, D): this warp's query row, pre-scaled
    float* ks = smem + ATT_WARPS * D;               // (BK, D + 1)
    float* vs = ks + BK * KS;                       // (BK, D)
    float* mys = vs + BK * D + warp * ATT_MAX_BK;   // (ATT_WARPS, ATT_MAX_BK): this warp's tile scores
    float* myp = mys + ATT_WARPS * ATT_MAX_BK;      // (ATT_WARPS, ATT_MAX_BK): ... and probabilities
    long long bh = blockIdx.y;
    int qi = blockIdx.x * ATT_WARPS + warp;
    bool active = qi < Tq;
    for (int d = lane; d < D; d += 32) myq[d] = active ? q[(bh * Tq + qi) * D + d] * scale : 0.0f;

    float acc[ATT_MAX_D / 32];
#pragma unroll
    for (int i = 0; i < ATT_MAX_D / 32; ++i) acc[i] = 0.0f;
    float m = ATT_NEG_INF, l = 0.0f;
    int last_q = min(Tq, (int)(blockIdx.x + 1) * ATT_WARPS) - 1;
    int kend = causal ? min(Tk, last_q + 1) : Tk;

    for (int k0 = 0; k0 < kend; k0 += BK) {
        int nk = min(BK, kend - k0);
        __syncthreads();  // the previous tile is consumed (and every myq is written)
        const float* kg = k + (bh * Tk + k0) * D;
        const float* vg = v + (bh * Tk + k0) * D;
        for (int i = threadIdx.x; i < nk * D; i += blockDim.x) {
            int j = i / D;
            ks[i + j] = kg[i];  // row j starts at j * (D + 1)
            vs[i] = vg[i];
        }
        __syncthreads();
        for (int j = lane; j < ATT_MAX_BK; j += 32) {
            float s = ATT_NEG_INF;
            if (j < nk && active && !(causal && k0 + j > qi)) {
                float dot = 0.0f;
                for (int d = 0; d < D; ++d) dot += myq[d] * ks[j * KS + d];
                s = dot;
            }
            mys[j] = s;
        }
        __syncwarp();
        float m_new = m;
        for (int j = 0; j < nk; ++j) m_new = fmaxf(m_new, mys[j]);
        if (m_new == ATT_NEG_INF) continue;  // the whole tile is masked for this row (warp-uniform)
        float corr = expf(m - m_new);
        for (int j = lane; j < nk; j += 32) myp[j] = mys[j] == ATT_NEG_INF ? 0.0f : expf(mys[j] - m_new);
        __syncwarp();
        float psum = 0.0f;
        for (int j = 0; j < nk; ++j) psum += myp[j];
        l = l * corr + psum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < ATT_MAX_D / 32; ++i) {
            int d = lane + 32 * i;
            if (d < D) {
                float a = acc[i] * corr;
                for (int j = 0; j < nk; ++j) a += myp[j] * vs[j * D + d];
                acc[i] = a;
            }
        }
    }
    if (active) {
        float inv = 1.0f / l;
#pragma unroll
        for (int i = 0; i < ATT_MAX_D / 32; ++i) {
            int d = lane + 32 * i;
            if (d < D) o[(bh * Tq + qi) * D + d] = acc[i] * inv;
        }
    }
}
