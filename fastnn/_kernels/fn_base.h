/* What every C kernel of fastnn shares: the CPU tiers and the one check of the
 * CPU's features, aligned allocation, and the task loop over OpenMP threads.
 *
 * A tier is an instruction set the kernels are compiled for (fn_kernels.h
 * instantiates each kernel source once per tier): FN_TIER_AVX512 (AVX-512
 * F/VL/DQ/BW + FMA), FN_TIER_AVX2 (AVX2 + FMA) and FN_TIER_GENERIC (no intrinsics:
 * 16-byte vectors the compiler maps to SSE2, NEON or plain code). The highest tier
 * the CPU and the compiler allow is active unless fn_set_tier chose a lower one
 * (FASTNN_ISA, through fastnn/_backends.py). Each extension module holds its own
 * copy of the setting; the Python layer sets them all together.
 */
#ifndef FASTNN_FN_BASE_H
#define FASTNN_FN_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#if defined(_WIN32)
#include <malloc.h>
#else
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FN_UNUSED __attribute__((unused))
#define FN_INLINE static inline __attribute__((always_inline))
#else
#define FN_UNUSED
#define FN_INLINE static inline
#endif

#define FN_TIER_GENERIC 0
#define FN_TIER_AVX2 1
#define FN_TIER_AVX512 2

/* The x86-64 tiers need a compiler that takes per-function target attributes and
 * vector extensions (GCC 8+, Clang 8+); the rest of a module keeps the baseline
 * instruction set, so it loads on any x86-64 CPU. */
#if defined(__x86_64__) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || \
                            (defined(__clang__) && __clang_major__ >= 8))
#define FN_X86_TIERS 1
#else
#define FN_X86_TIERS 0
#endif

/* The highest tier this CPU and this build can run: the one check of the CPU's
 * features in fastnn. */
FN_UNUSED static int fn_cpu_tier(void)
{
#if FN_X86_TIERS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma"))
        return FN_TIER_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FN_TIER_AVX2;
#endif
    return FN_TIER_GENERIC;
}

static int fn_tier_setting = -1;

/* The active tier: tier if the CPU has it, else the highest it has. Returns it. */
FN_UNUSED static int fn_set_tier(int tier)
{
    const int top = fn_cpu_tier();
    fn_tier_setting = tier < FN_TIER_GENERIC ? FN_TIER_GENERIC : (tier > top ? top : tier);
    return fn_tier_setting;
}

FN_UNUSED static inline int fn_tier(void)
{
    if (fn_tier_setting < 0)
        fn_tier_setting = fn_cpu_tier();
    return fn_tier_setting;
}

/* malloc and free for buffers that start on a 64-byte boundary (a cache line, one
 * AVX-512 vector): malloc's 16-byte alignment has vector loads of a packed operand
 * straddle two lines, which slows the matrix-vector steps that stream one. */
FN_UNUSED static inline void *fn_alloc(size_t bytes)
{
#if defined(_WIN32)
    return _aligned_malloc(bytes > 0 ? bytes : 1, 64);
#else
    void *p = NULL;
    return posix_memalign(&p, 64, bytes > 0 ? bytes : 1) == 0 ? p : NULL;
#endif
}

FN_UNUSED static inline void fn_free(void *p)
{
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* The level-2 cache of a core in bytes, as the C library reports it (Linux); 256 KiB,
 * the smallest of current x86 and ARM cores, where it does not say. */
FN_UNUSED static ptrdiff_t fn_l2_bytes(void)
{
    static ptrdiff_t bytes = 0;
    if (bytes <= 0) {
        long n = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE)
        n = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        bytes = n >= 65536 && n <= (1L << 30) ? (ptrdiff_t)n : 256 * 1024;
    }
    return bytes;
}

/* Recurrent sequences split by batch rows. The rows of a batch are independent
 * sequences, so a block of them can run every time step on one thread, with no
 * synchronisation between the steps; splitting each step's product over the
 * threads instead costs a fork and a join per step and hands the state one core
 * wrote to the others (a 32 x 128 LSTM step is 30-50 us of work: 1.2-1.4x from 1 to
 * 2 threads that way). Each thread then reads all of a step's weights at every
 * step, so this holds only while they fit in half of a core's level-2 cache (the
 * rows' state shares it). Returns the row blocks to hand out, whole tiles of `tile`
 * rows each (the tiles a whole-batch step would run, so no sum depends on the
 * split): up to 4 per thread, so a thread slowed by a busy core leaves some of its
 * share to the others, and no more, so a block's tiles share each panel of the
 * weights while it is in the level-1 cache. 0: split each step instead. */
FN_UNUSED static inline ptrdiff_t fn_batch_blocks(ptrdiff_t m, ptrdiff_t tile, size_t weight_bytes, int threads)
{
    const ptrdiff_t tiles = tile > 0 ? (m + tile - 1) / tile : 0;
    if (threads < 2 || tiles < 2 || weight_bytes > (size_t)fn_l2_bytes() / 2)
        return 0;
    return tiles < 4 * (ptrdiff_t)threads ? tiles : 4 * (ptrdiff_t)threads;
}

/* Cache lines to fetch ahead: up to three regions (a batch's next product's
 * operands and result) handed out in order, per_tile lines for each tile of the
 * product before them, which fetches them one or two per step of its reduction. So
 * the next product's data arrives while this one computes, instead of each product
 * starting on a cold cache (the hardware prefetchers start anew on every page), and
 * without a burst of fetches that stalls the tile. Prefetches never fault, so a
 * region may span gaps between rows. */
typedef struct {
    const char *cur[3], *end[3];
    int region;
    ptrdiff_t per_tile;
} fn_ahead;

/* Region r of *q: bytes from p (nothing when p is NULL or bytes <= 0). */
FN_UNUSED static inline void fn_ahead_set(fn_ahead *q, int r, const void *p, ptrdiff_t bytes)
{
    q->cur[r] = (const char *)p;
    q->end[r] = p != NULL && bytes > 0 ? (const char *)p + bytes : (const char *)p;
}

/* The next run of at most `most` lines of one region (*lines of them; none when q
 * is NULL or spent), taken off *q. */
FN_UNUSED static inline const char *fn_ahead_take(fn_ahead *q, ptrdiff_t most, ptrdiff_t *lines)
{
    const char *p;
    ptrdiff_t n;
    *lines = 0;
    if (q == NULL)
        return NULL;
    while (q->region < 3 && q->cur[q->region] >= q->end[q->region])
        q->region++;
    if (q->region >= 3)
        return NULL;
    p = q->cur[q->region];
    n = (q->end[q->region] - p + 63) / 64;
    n = n < most ? n : most;
    n = n < q->per_tile ? n : q->per_tile;
    q->cur[q->region] = p + 64 * n;
    *lines = n;
    return p;
}

FN_UNUSED static inline int fn_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

FN_UNUSED static inline int fn_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* for (task = 0; task < count; task++) BODY, over `threads` OpenMP threads when
 * above 1 (one thread enters no parallel region: a step may take a microsecond).
 * Tasks write disjoint parts of the result, so which thread runs one changes no
 * bit of it; they are handed out one at a time, so a thread slowed by a busy core
 * takes fewer.
 *
 * On a machine where another process keeps a core busy, a parallel region can
 * still wait milliseconds for a thread the scheduler has not run yet: a recurrent
 * sequence, a region per step, then takes several times its one-thread time. So
 * every region measures what the calling thread spent waiting beyond its own work,
 * and off its CPU; when either exceeds FN_STALL_SECONDS (and the work it did) in two
 * regions in a row, the module runs its kernels on one thread for the next
 * FN_BACKOFF_SECONDS (a single stall is a thread waking from an idle spell), then tries
 * the threads again if the machine had an idle core meanwhile (Linux: /proc/stat),
 * else backs off again without trying. A stall soon after the last one doubles the
 * back-off (up to FN_BACKOFF_MAX_SECONDS). A short one, such as another library's
 * threads spinning for some milliseconds after their own work, costs a few tens
 * of milliseconds on one thread; a core that stays busy, no stall after the first.
 * On a quiet machine the wait is a few microseconds and nothing changes. The Cython drivers' parallel
 * loops whose results do not depend on the thread count take part through
 * fn_region_threads, fn_region_begin, fn_main_clock, fn_add_busy and fn_region_end. */
#ifdef _OPENMP
#define FN_STALL_SECONDS 1e-3
#define FN_BACKOFF_SECONDS 0.05
#define FN_BACKOFF_MAX_SECONDS 3.2
#define FN_CAP_SECONDS 5.0
static double fn_serial_until = 0.0, fn_backoff = FN_BACKOFF_SECONDS, fn_last_stall = -1e9;
/* regions that stalled one after the other: a thread that slept through an idle
 * spell can take a millisecond to wake (a virtual CPU longer), once; a busy core
 * stalls region after region */
static int fn_stalls = 0;
/* after a back-off, the team is held to the cores that were idle during it (plus the
 * caller's) until FN_CAP_SECONDS pass without a stall; 0: no cap */
static int fn_team_cap = 0;

/* The calling thread's CPU time (seconds), or -1 where it cannot be read. */
FN_UNUSED static inline double fn_thread_cpu(void)
{
#if defined(CLOCK_THREAD_CPUTIME_ID)
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
    return -1.0;
}

/* A parallel region as its calling thread (thread 0 of the team) sees it: when it
 * began (wall clock and the thread's CPU time) and how long the thread worked. */
typedef struct {
    double wall, cpu, busy;
} fn_region;

/* Idle CPU time of the whole machine since the previous call, in cores (Linux:
 * /proc/stat), or -1 where it cannot be read. The first call only samples. */
static double fn_stat_idle = -1.0, fn_stat_total = -1.0;
FN_UNUSED static double fn_idle_cores(void)
{
#if defined(__linux__)
    unsigned long long v[8] = {0};
    double idle, total, cores = -1.0;
    int i, n;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1.0;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]);
    fclose(f);
    if (n < 5)
        return -1.0;
    idle = (double)(v[3] + v[4]);
    for (total = 0.0, i = 0; i < n; i++)
        total += (double)v[i];
    if (fn_stat_total >= 0.0 && total > fn_stat_total)
        cores = (idle - fn_stat_idle) / (total - fn_stat_total) * (double)omp_get_num_procs();
    fn_stat_idle = idle;
    fn_stat_total = total;
    return cores;
#else
    return -1.0;
#endif
}

/* The thread count a parallel region may use now: 1 while backing off. When a
 * back-off ends, the machine's idle time over it says whether a core is free again
 * (where it can be read): if not, the back-off goes on without a try. */
FN_UNUSED static inline int fn_region_threads(int threads)
{
    double now, idle;
    if (threads <= 1 || (fn_serial_until <= 0.0 && fn_team_cap == 0))
        return threads;
    now = omp_get_wtime();
    if (fn_serial_until <= 0.0) {
        if (now - fn_last_stall > FN_CAP_SECONDS)
            fn_team_cap = 0;
        return fn_team_cap > 0 && fn_team_cap < threads ? fn_team_cap : threads;
    }
    if (now < fn_serial_until)
        return 1;
    idle = fn_idle_cores();
    if (idle >= 0.0 && idle < 0.5) {
        fn_serial_until = now + fn_backoff;
        return 1;
    }
    fn_serial_until = 0.0;
    fn_team_cap = idle >= 0.0 ? 1 + (int)(idle + 0.25) : 0;
    return fn_team_cap > 0 && fn_team_cap < threads ? fn_team_cap : threads;
}

FN_UNUSED static inline void fn_region_begin(fn_region *r)
{
    r->wall = omp_get_wtime();
    r->cpu = fn_thread_cpu();
    r->busy = 0.0;
}

/* After a region: back off when the calling thread waited long for the others, or
 * was itself off its CPU for most of the region (the threads outnumber the free
 * cores), in this region and the one before. A stall soon after the last back-off
 * doubles the next, up to FN_BACKOFF_MAX_SECONDS. */
FN_UNUSED static inline void fn_region_end(const fn_region *r)
{
    const double now = omp_get_wtime(), wall = now - r->wall, wait = wall - r->busy;
    const double cpu = r->cpu >= 0.0 ? fn_thread_cpu() - r->cpu : wall;
    const double off = wall - cpu;
    if (!((wait > FN_STALL_SECONDS && wait > 2.0 * r->busy) || (off > FN_STALL_SECONDS && off > 0.5 * wall))) {
        fn_stalls = 0;
        return;
    }
    if (++fn_stalls >= 2) {
        fn_stalls = 0;
        if (now - fn_last_stall < 4.0 * fn_backoff + 1.0)
            fn_backoff = 2.0 * fn_backoff < FN_BACKOFF_MAX_SECONDS ? 2.0 * fn_backoff : FN_BACKOFF_MAX_SECONDS;
        else
            fn_backoff = FN_BACKOFF_SECONDS;
        fn_last_stall = now;
        fn_serial_until = now + fn_backoff;
        fn_idle_cores();  /* the idle time from here on decides when to try again */
    }
}

/* For a parallel loop written in Cython: the clock when the calling thread starts a
 * piece of work (0 on the other threads), and the work's time added to *busy. */
FN_UNUSED static inline double fn_main_clock(void) { return omp_get_thread_num() == 0 ? omp_get_wtime() : 0.0; }
FN_UNUSED static inline void fn_add_busy(double *busy, double t0)
{
    if (omp_get_thread_num() == 0)
        *busy += omp_get_wtime() - t0;
}

/* 1 while the module runs on one thread after a stall */
FN_UNUSED static int fn_backing_off(void) { return fn_serial_until > 0.0 && omp_get_wtime() < fn_serial_until; }

#define FN_TASKS(count, ...) \
    do { \
        ptrdiff_t task; \
        const int team_ = fn_region_threads(threads); \
        if (team_ > 1) { \
            fn_region region_; \
            fn_region_begin(&region_); \
            _Pragma("omp parallel for num_threads(team_) schedule(dynamic, 1)") \
            for (task = 0; task < (count); task++) { \
                const double t0_ = fn_main_clock(); \
                { __VA_ARGS__ } \
                fn_add_busy(&region_.busy, t0_); \
            } \
            fn_region_end(&region_); \
        } else { \
            for (task = 0; task < (count); task++) { __VA_ARGS__ } \
        } \
    } while (0)

/* FN_TASKS for a region that repeats, step after step, over the same tasks (a
 * recurrent sequence's panels): thread t of a team of n starts on the tasks
 * [t count / n, (t + 1) count / n), in order, then helps with the others' tasks not
 * yet started. The same thread so runs the same tasks step after step, and its
 * share of the weights and of the state it wrote stays in its own caches (handed out
 * first come, first served, the panels of a 32 x 128 LSTM step moved between the
 * cores and its forward ran 12 % slower at 2 threads), while a thread slowed by a
 * busy core still leaves its remaining tasks to the others. */
#define FN_AFFINE_MAX 64
#define FN_AFFINE_PAD 8 /* counters a cache line apart */
#define FN_AFFINE_TASKS(count, ...) \
    do { \
        const ptrdiff_t count_ = (count); \
        const int asked_ = fn_region_threads(threads), team_ = asked_ < FN_AFFINE_MAX ? asked_ : FN_AFFINE_MAX; \
        if (team_ > 1) { \
            ptrdiff_t next_[FN_AFFINE_MAX * FN_AFFINE_PAD], end_[FN_AFFINE_MAX]; \
            fn_region region_; \
            int t_; \
            for (t_ = 0; t_ < team_; t_++) { \
                next_[t_ * FN_AFFINE_PAD] = t_ * count_ / team_; \
                end_[t_] = (t_ + 1) * count_ / team_; \
            } \
            fn_region_begin(&region_); \
            _Pragma("omp parallel num_threads(team_)") \
            { \
                const int me_ = omp_get_thread_num(); \
                int k_; \
                for (k_ = 0; k_ < team_; k_++) { \
                    const int owner_ = (me_ + k_) % team_; \
                    for (;;) { \
                        const ptrdiff_t task = __atomic_fetch_add(&next_[owner_ * FN_AFFINE_PAD], 1, __ATOMIC_RELAXED); \
                        if (task >= end_[owner_]) \
                            break; \
                        { \
                            const double t0_ = fn_main_clock(); \
                            { __VA_ARGS__ } \
                            fn_add_busy(&region_.busy, t0_); \
                        } \
                    } \
                } \
            } \
            fn_region_end(&region_); \
        } else { \
            ptrdiff_t task; \
            for (task = 0; task < count_; task++) { __VA_ARGS__ } \
        } \
    } while (0)
#else
typedef struct {
    double wall, cpu, busy;
} fn_region;
FN_UNUSED static inline int fn_region_threads(int threads) { (void)threads; return 1; }
FN_UNUSED static inline void fn_region_begin(fn_region *r) { r->wall = r->cpu = r->busy = 0.0; }
FN_UNUSED static inline void fn_region_end(const fn_region *r) { (void)r; }
FN_UNUSED static inline double fn_main_clock(void) { return 0.0; }
FN_UNUSED static inline void fn_add_busy(double *busy, double t0) { (void)busy; (void)t0; }
FN_UNUSED static int fn_backing_off(void) { return 0; }
#define FN_TASKS(count, ...) \
    do { ptrdiff_t task; for (task = 0; task < (count); task++) { __VA_ARGS__ } } while (0)
#define FN_AFFINE_TASKS FN_TASKS
#endif

/* Items (rows of an output, say) of `bytes` of memory traffic each, grouped into
 * tasks of at least FN_TASK_BYTES: handing out a task costs about as much as moving
 * a few kilobytes, and neighbouring tasks on different threads share the cache
 * lines at their edges. A whole under FN_MT_BYTES runs on one thread (*threads set
 * to 1): waking a second thread and waiting for it costs more than it saves (a
 * LeNet pooling layer of 64 x 10 x 10 x 16, handed out row by row, ran slower on 2
 * threads than on 1).
 * Otherwise tasks stay small enough for 4 per thread. Returns the items per task. */
#ifndef FN_TASK_BYTES
#define FN_TASK_BYTES ((ptrdiff_t)16 << 10)
#endif
#ifndef FN_MT_BYTES
#define FN_MT_BYTES ((ptrdiff_t)128 << 10)
#endif
FN_UNUSED static inline ptrdiff_t fn_task_items(ptrdiff_t items, ptrdiff_t bytes, int *threads)
{
    ptrdiff_t per, cap;
    if (bytes < 1)
        bytes = 1;
    if (items <= 0)
        return 1;
    if (items * bytes < FN_MT_BYTES)
        *threads = 1;
    per = (FN_TASK_BYTES + bytes - 1) / bytes;
    cap = *threads > 1 ? items / (4 * (ptrdiff_t)*threads) : items;
    if (per > cap)
        per = cap;
    return per > 1 ? per : 1;
}

/* FN_TASKS over `items` of `bytes` each, grouped by fn_task_items (which may set
 * `threads` to 1): BODY runs once per item, with the item's index in `item`. */
#define FN_ITEM_TASKS(items, bytes, ...) \
    do { \
        const ptrdiff_t items_ = (items), per_ = fn_task_items(items_, (bytes), &threads); \
        FN_TASKS((items_ + per_ - 1) / per_, \
            ptrdiff_t item; \
            for (item = task * per_; item < items_ && item < (task + 1) * per_; item++) { __VA_ARGS__ }); \
    } while (0)

/* The geometry of an NHWC convolution (the caller's arguments, normalised). */
typedef struct {
    ptrdiff_t N, H, W, C;   /* input; C is the pixel stride of x */
    ptrdiff_t Ho, Wo;
    ptrdiff_t kh, kw, sh, sw, dh, dw;
    ptrdiff_t pt, pl;       /* top and left padding */
    ptrdiff_t Cg;           /* input channels per group (the length of a tap) */
} fn_conv_geom;

#endif
