// cuda_emu.h — run CUDA C kernels on the CPU (force-included by minriff's EmulatorLoader).
//
// Execution model:
//   * blocks are spread over a pool of OS threads (one block per OS thread at a time);
//   * the threads of one block are fibers (ucontext) on that OS thread, run round-robin in
//     linear thread order; a fiber switches only at __syncthreads / __syncwarp / warp
//     shuffles and votes, so a run is deterministic;
//   * __shared__ is `static thread_local`: one copy per OS thread = per running block;
//     `extern __shared__ T name[];` is rewritten by the loader to a pointer into the launch's
//     dynamic shared buffer (sized by shared_mem, 16-byte aligned);
//   * warp shuffles and votes exchange values through a per-warp two-phase buffer with an
//     implicit warp barrier over the warp's live lanes (the mask only selects vote lanes).
// Define MINRIFF_EMU_THREADS to run each block's threads as OS threads with std::barrier
// instead (slower; the variant to run under ThreadSanitizer). Blocks then run one at a time.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#if !defined(MINRIFF_EMU_THREADS) && (!defined(__x86_64__) || defined(MINRIFF_EMU_UCONTEXT))
#include <ucontext.h>
#endif

// ---- qualifiers -------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__ static
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#ifdef MINRIFF_EMU_THREADS
#define __shared__ static
#else
#define __shared__ static thread_local
#endif

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef float __half;  // computed in float32: storage-only half types are not emulated
static constexpr int warpSize = 32;

namespace emu {
inline thread_local uint3 tid, bid;
inline thread_local dim3 bdim, gdim;
inline thread_local unsigned char* dyn_shared = nullptr;
}  // namespace emu
#define threadIdx (static_cast<const uint3&>(emu::tid))
#define blockIdx (static_cast<const uint3&>(emu::bid))
#define blockDim (static_cast<const dim3&>(emu::bdim))
#define gridDim (static_cast<const dim3&>(emu::gdim))

inline void* emu_dynamic_shared() { return emu::dyn_shared; }

// ---- math -------------------------------------------------------------------------------
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __half2float(__half h) { return h; }
inline __half __float2half(float f) { return f; }
inline int __popc(unsigned v) { return std::popcount(v); }
inline int __ffs(int v) { return v ? std::countr_zero(static_cast<unsigned>(v)) + 1 : 0; }
inline int __clz(int v) { return std::countl_zero(static_cast<unsigned>(v)); }
template <class A, class B> inline auto min(A a, B b) -> std::common_type_t<A, B> { return b < a ? b : a; }
template <class A, class B> inline auto max(A a, B b) -> std::common_type_t<A, B> { return a < b ? b : a; }
template <class T> inline T __ldg(const T* p) { return *p; }

// ---- atomics (blocks run concurrently on OS threads) ---------------------------------------
template <class T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline T atomicSub(T* p, T v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <class T> inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {}
    return old;
}
template <class T> inline T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {}
    return old;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- block scheduler --------------------------------------------------------------------
namespace emu {

struct Error {
    std::string msg;
};
inline std::mutex err_mu;
inline std::string last_error;
inline void set_error(const std::string& m) {
    std::lock_guard<std::mutex> g(err_mu);
    if (last_error.empty()) last_error = m;
}

struct WarpExchange {  // two phases so a fast lane's next exchange never overwrites a slow lane's read
    uint64_t slot[2][32];
};

inline unsigned linear_tid() { return tid.x + bdim.x * (tid.y + bdim.y * tid.z); }
inline unsigned threads_per_block() { return bdim.x * bdim.y * bdim.z; }

// Dynamic shared memory: 16-byte aligned, filled with NaNs (like memory nobody wrote) and
// followed by a guard zone checked after the launch.
struct DynShared {
    static constexpr size_t kGuard = 256;
    std::vector<unsigned char> raw;
    unsigned char* ptr;
    size_t size;
    explicit DynShared(size_t n) : raw(n + 16 + kGuard), size(n) {
        ptr = raw.data() + (16 - reinterpret_cast<uintptr_t>(raw.data()) % 16) % 16;
        std::memset(ptr, 0xff, n);
        std::memset(ptr + n, 0xa5, kGuard);
    }
    void check() const {
        for (size_t i = 0; i < kGuard; ++i)
            if (ptr[size + i] != 0xa5) {
                set_error("a kernel wrote past the end of its dynamic shared memory (shared_mem=" +
                          std::to_string(size) + " B)");
                return;
            }
    }
};

#ifndef MINRIFF_EMU_THREADS
// -------- fibers --------
// Context switch: on x86-64 a few instructions saving the callee-saved registers (no signal-mask
// syscall, unlike swapcontext); elsewhere, or with MINRIFF_EMU_UCONTEXT, ucontext.
#if defined(__x86_64__) && !defined(MINRIFF_EMU_UCONTEXT)
extern "C" void emu_switch_stack(void** save_sp, void* new_sp);
asm(R"(
.text
.p2align 4
.hidden emu_switch_stack
.type emu_switch_stack,@function
emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch_stack,.-emu_switch_stack
)");
struct Context {
    void* sp = nullptr;
    // A fresh stack that "returns" into entry with the ABI's alignment and the caller's FP modes.
    void init(char* stack, size_t size, void (*entry)()) {
        auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
        auto* w = reinterpret_cast<uint64_t*>(top);
        *--w = 0;                                     // fake return address of entry (never used)
        *--w = reinterpret_cast<uint64_t>(entry);     // popped by ret
        for (int r = 0; r < 6; ++r) *--w = 0;         // rbp rbx r12 r13 r14 r15
        uint32_t modes[2];
        asm volatile("stmxcsr %0" : "=m"(modes[0]));
        asm volatile("fnstcw %0" : "=m"(modes[1]));
        uint64_t m;
        std::memcpy(&m, modes, 8);
        *--w = m;
        sp = w;
    }
};
inline void switch_context(Context& from, Context& to) { emu_switch_stack(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;  // points into itself (fpregs): re-made in place each time, never reused after a move
    void init(char* stack, size_t size, void (*entry)()) {
        getcontext(&uc);
        uc.uc_stack.ss_sp = stack;
        uc.uc_stack.ss_size = size;
        uc.uc_link = nullptr;
        makecontext(&uc, entry, 0);
    }
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

enum State : int { RUN, AT_BARRIER, AT_WARP, DONE };
struct Fiber {
    Context ctx;
    uint3 idx;
    int state;
    unsigned nexch;  // warp exchanges this lane has made (its parity picks the phase)
};
struct Block {
    std::vector<Fiber> fibers;
    std::vector<WarpExchange> warps;
    std::vector<std::unique_ptr<char[]>> stacks;
    Context sched;
    unsigned cur = 0;
    const std::function<void()>* body = nullptr;
    bool failed = false;
};
inline thread_local Block* blk = nullptr;
constexpr size_t kStack = 128 * 1024;

// Hand over to the next runnable fiber of this round directly (or back to the scheduler when the
// round is over): one switch per wait instead of two.
inline void pass_on(Fiber& f) {
    Block* b = blk;
    unsigned n = unsigned(b->fibers.size()), i = b->cur + 1;
    while (i < n && b->fibers[i].state != RUN) ++i;
    if (i < n) {
        b->cur = i;
        tid = b->fibers[i].idx;
        switch_context(f.ctx, b->fibers[i].ctx);
    } else {
        switch_context(f.ctx, b->sched);
    }
}

[[noreturn]] inline void fiber_main() {
    (*blk->body)();
    Fiber& f = blk->fibers[blk->cur];
    f.state = DONE;
    pass_on(f);  // never resumed
    std::abort();
}

inline void wait(State s) {
    Fiber& f = blk->fibers[blk->cur];
    f.state = s;
    asm volatile("" ::: "memory");
    pass_on(f);
    asm volatile("" ::: "memory");
}
inline void sync_block() { wait(AT_BARRIER); }
inline void sync_warp() { wait(AT_WARP); }
inline unsigned next_exchange() { return blk->fibers[blk->cur].nexch++; }
inline WarpExchange& my_warp() { return blk->warps[blk->cur / 32]; }
inline unsigned live_lanes_mask() {
    unsigned w = blk->cur / 32, n = blk->fibers.size(), m = 0;
    for (unsigned l = 0; l < 32 && w * 32 + l < n; ++l)
        if (blk->fibers[w * 32 + l].state != DONE) m |= 1u << l;
    return m;
}

inline void run_block(Block& b, const std::function<void()>& body) {
    unsigned n = threads_per_block();
    b.body = &body;
    b.fibers.resize(n);
    b.warps.resize((n + 31) / 32);
    std::memset(b.warps.data(), 0xff, b.warps.size() * sizeof(WarpExchange));  // no lane has exchanged yet
    while (b.stacks.size() < n) b.stacks.emplace_back(new char[kStack]);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = b.fibers[i];
        f.idx = uint3{i % bdim.x, (i / bdim.x) % bdim.y, i / (bdim.x * bdim.y)};
        f.state = RUN;
        f.nexch = 0;
        f.ctx.init(b.stacks[i].get(), kStack, fiber_main);
    }
    blk = &b;
    for (;;) {
        unsigned first = 0;  // one round: the fibers hand over to each other in index order
        while (first < n && b.fibers[first].state != RUN) ++first;
        if (first < n) {
            b.cur = first;
            tid = b.fibers[first].idx;
            switch_context(b.sched, b.fibers[first].ctx);
        }
        // every fiber is now waiting or done: release whole warps first, then the block barrier
        bool released = false, all_bar = true, any_live = false;
        for (unsigned w = 0; w * 32 < n; ++w) {
            unsigned lo = w * 32, hi = std::min(n, lo + 32);
            bool warp_ready = true, any_warp_wait = false;
            for (unsigned i = lo; i < hi; ++i) {
                int s = b.fibers[i].state;
                if (s == DONE) continue;
                any_live = true;
                if (s == AT_WARP) any_warp_wait = true; else warp_ready = false;
                if (s != AT_BARRIER) all_bar = false;
            }
            if (any_warp_wait && warp_ready) {
                for (unsigned i = lo; i < hi; ++i)
                    if (b.fibers[i].state == AT_WARP) b.fibers[i].state = RUN;
                released = true;
            }
        }
        if (!any_live) break;
        if (released) continue;
        if (all_bar) {
            for (auto& f : b.fibers)
                if (f.state == AT_BARRIER) f.state = RUN;
            continue;
        }
        set_error("deadlock: some threads of block (" + std::to_string(bid.x) + "," + std::to_string(bid.y) + "," +
                  std::to_string(bid.z) + ") wait at __syncthreads while others of the same warp wait at a warp "
                  "operation (divergent barrier)");
        b.failed = true;
        return;  // fiber stacks are abandoned; the launch reports the error
    }
}

// Blocks (with their fiber stacks) are kept between launches: fresh stacks cost page faults.
inline std::mutex pool_mu;
inline std::vector<std::unique_ptr<Block>> pool;
inline std::unique_ptr<Block> take_block() {
    std::lock_guard<std::mutex> g(pool_mu);
    if (pool.empty()) return std::make_unique<Block>();
    auto b = std::move(pool.back());
    pool.pop_back();
    return b;
}
inline void give_block(std::unique_ptr<Block> b) {
    std::lock_guard<std::mutex> g(pool_mu);
    pool.push_back(std::move(b));
}

inline void run_blocks(dim3 grid, dim3 block, size_t shmem, const std::function<void()>& body) {
    unsigned long long nblocks = 1ull * grid.x * grid.y * grid.z;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    auto worker = [&] {
        gdim = grid;
        bdim = block;
        DynShared dyn(shmem);
        dyn_shared = dyn.ptr;
        std::unique_ptr<Block> b = take_block();
        for (unsigned long long k; !failed && (k = next.fetch_add(1)) < nblocks;) {
            bid = uint3{unsigned(k % grid.x), unsigned((k / grid.x) % grid.y), unsigned(k / (1ull * grid.x * grid.y))};
            run_block(*b, body);
            if (b->failed) { failed = true; b = std::make_unique<Block>(); }
        }
        blk = nullptr;
        give_block(std::move(b));
        dyn.check();
    };
    unsigned nthreads = std::thread::hardware_concurrency();
    if (const char* e = std::getenv("MINRIFF_EMU_WORKERS")) nthreads = std::max(1, std::atoi(e));
    nthreads = unsigned(std::min<unsigned long long>(std::max(1u, nthreads), nblocks));
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < nthreads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
}

#else
// -------- OS threads (for ThreadSanitizer) --------
struct Block {
    std::unique_ptr<std::barrier<>> bar;
    std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
    std::vector<WarpExchange> warps;
    std::unique_ptr<std::atomic<int>[]> done;
};
inline Block* blk = nullptr;
inline thread_local unsigned my_nexch = 0;
inline void sync_block() { blk->bar->arrive_and_wait(); }
inline void sync_warp() { blk->warp_bar[linear_tid() / 32]->arrive_and_wait(); }
inline unsigned next_exchange() { return my_nexch++; }
inline WarpExchange& my_warp() { return blk->warps[linear_tid() / 32]; }
inline unsigned live_lanes_mask() {
    unsigned w = linear_tid() / 32, n = threads_per_block(), m = 0;
    for (unsigned l = 0; l < 32 && w * 32 + l < n; ++l)
        if (!blk->done[w * 32 + l].load()) m |= 1u << l;
    return m;
}
inline void run_blocks(dim3 grid, dim3 block, size_t shmem, const std::function<void()>& body) {
    unsigned n = block.x * block.y * block.z;
    DynShared dyn(shmem);
    unsigned char* dyn_ptr = dyn.ptr;
    for (unsigned long long k = 0; k < 1ull * grid.x * grid.y * grid.z; ++k) {
        uint3 b3{unsigned(k % grid.x), unsigned((k / grid.x) % grid.y), unsigned(k / (1ull * grid.x * grid.y))};
        Block b;
        b.bar = std::make_unique<std::barrier<>>(n);
        for (unsigned w = 0; w * 32 < n; ++w) b.warp_bar.emplace_back(std::make_unique<std::barrier<>>(std::min(32u, n - w * 32)));
        b.warps.resize((n + 31) / 32);
        std::memset(b.warps.data(), 0xff, b.warps.size() * sizeof(WarpExchange));
        b.done.reset(new std::atomic<int>[n]);
        for (unsigned i = 0; i < n; ++i) b.done[i] = 0;
        blk = &b;
        std::vector<std::thread> ts;
        for (unsigned i = 0; i < n; ++i)
            ts.emplace_back([&, i] {
                gdim = grid; bdim = block; bid = b3; dyn_shared = dyn_ptr; my_nexch = 0;
                tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
                body();
                b.done[i] = 1;
                b.warp_bar[i / 32]->arrive_and_drop();
                b.bar->arrive_and_drop();
            });
        for (auto& t : ts) t.join();
    }
    dyn.check();
}
#endif

// ---- warp exchange: write my value, warp barrier, read the source lane's value -------------------
// Each lane counts its exchanges; the count's parity picks one of two buffers, so a lane that
// runs ahead into the next exchange never overwrites a value a slower lane has yet to read.
template <class T> inline T shfl(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned lane = linear_tid() % 32, phase = next_exchange() & 1;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    my_warp().slot[phase][lane] = bits;
    sync_warp();
    unsigned width_lanes = std::min(32u, threads_per_block() - (linear_tid() / 32) * 32);
    if (src_lane < 0 || unsigned(src_lane) >= width_lanes) src_lane = int(lane);
    bits = my_warp().slot[phase][src_lane];
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
// Returns the ballot over `mask`; `participants` gets the lanes that took part in this exchange.
inline unsigned ballot(bool pred, unsigned mask, unsigned* participants = nullptr) {
    unsigned lane = linear_tid() % 32, seq = next_exchange(), phase = seq & 1;
    uint64_t tag = uint64_t(seq) << 1;
    my_warp().slot[phase][lane] = tag | (pred ? 1 : 0);
    sync_warp();
    unsigned width_lanes = std::min(32u, threads_per_block() - (linear_tid() / 32) * 32), out = 0, part = 0;
    WarpExchange& w = my_warp();
    for (unsigned l = 0; l < width_lanes; ++l) {
        if ((w.slot[phase][l] & ~uint64_t(1)) != tag) continue;  // lane exited or is elsewhere
        part |= 1u << l;
        if ((mask >> l & 1) && (w.slot[phase][l] & 1)) out |= 1u << l;
    }
    if (participants) *participants = part;
    return out;
}

template <class... P, size_t... I>
inline void call_with(void (*f)(P...), void** a, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cvref_t<P>*>(a[I])...);
}

// Entry used by the loader's generated wrapper: dims = {grid x,y,z, block x,y,z}. Returns 0 or -1.
template <class... P>
inline int launch(void (*f)(P...), const unsigned* dims, size_t shmem, void** args) {
    {
        std::lock_guard<std::mutex> g(err_mu);
        last_error.clear();
    }
    dim3 grid(dims[0], dims[1], dims[2]), block(dims[3], dims[4], dims[5]);
    std::function<void()> body = [&] { call_with(f, args, std::index_sequence_for<P...>{}); };
    run_blocks(grid, block, shmem, body);
    std::lock_guard<std::mutex> g(err_mu);
    return last_error.empty() ? 0 : -1;
}
}  // namespace emu

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }
template <class T> inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    int lane = int(emu::linear_tid() % 32);
    return emu::shfl(v, (lane & ~(width - 1)) + (src % width));
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32) {
    int lane = int(emu::linear_tid() % 32), src = lane ^ m;
    return emu::shfl(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <class T> inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32) {
    int lane = int(emu::linear_tid() % 32), src = lane + int(d);
    return emu::shfl(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32) {
    int lane = int(emu::linear_tid() % 32), src = lane - int(d);
    return emu::shfl(v, src >= (lane & ~(width - 1)) ? src : lane);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return emu::ballot(pred != 0, mask); }
inline int __all_sync(unsigned mask, int pred) {
    unsigned part;
    unsigned b = emu::ballot(pred != 0, mask, &part);
    return b == (mask & part) ? 1 : 0;
}
inline int __any_sync(unsigned mask, int pred) { return emu::ballot(pred != 0, mask) != 0; }
inline unsigned __activemask() { return emu::live_lanes_mask(); }

// The loader builds with -fvisibility=hidden: only these are exported, so two emulator libraries
// in one process (say the fiber and the thread variant) never share the emulator's inline state.
extern "C" __attribute__((visibility("default"))) const char* emu_last_error() { return emu::last_error.c_str(); }

#define MINRIFF_EMU_EXPORT(name) \
    extern "C" __attribute__((visibility("default"))) int emu_launch_##name(const unsigned* dims, size_t shmem, \
                                                                          void** args) { \
        return emu::launch(name, dims, shmem, args); \
    }
