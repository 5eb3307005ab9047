/* Stitching's inner loop: patches added into the image a few output rows at a time, in cache.
 *
 * rows(params, row_pointers, weights, wide) stitches output rows [ya, yb) of a band, in blocks of a few
 * rows. For each row it finds the (patch row, tap row) pairs that sample it and adds every patch's run
 * of taps along it into that row's accumulators (float64; int64 for integer sums; int32 for plain means
 * of small integers, which hold their sums exactly), which stay in cache; the runs of a patch for the
 * rows of a block are consecutive tap rows, read in one go. Each row is then finished into the band's
 * output: a weighted mean (modes 0 and 3), a sum (mode 1), or, with no accumulator, the last write in
 * row-major patch order (mode 2). Pixels that no positive weight reaches (no patch, for mode 2) take the
 * fill value (not for sums). The patches are read once, where they lie (each patch row at its own
 * address: the chunks a lazy array was read in are not joined); it releases the GIL, so threads stitch
 * different rows of a band at once.
 *
 * The arithmetic is numpy's, in numpy's order (patchkit/stitch/accumulate.py's numpy path gives the same
 * bits): for each pixel its (patch, tap) pairs come in row-major patch order, each weighted value is
 * (double)value * weight, added to an accumulator that starts at -0.0 (+0.0 for a sum); the mean
 * multiplies by 1.0 / (sum of weights), integers are rounded half to even (rint) and cast. Zero-weight
 * taps add nothing (not even 0 * inf). Floating-point contraction (fused multiply-add) is off: it would
 * round differently from numpy.
 *
 * params is a tuple of integers in the order of the enum below (accumulate.py builds it); pointers are
 * addresses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* The inner loops again for AVX2 (twice the lanes of the baseline's SSE2), chosen when the module loads:
 * the same operations, each rounded alike (no FMA: that is another target). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

enum {
    P_MODE, P_CODE, P_ITEM, P_N, P_M, P_W,
    P_ROWS, P_I0, P_SN, P_SJ, P_SA, P_SB, P_SM, P_J, P_J0,
    P_PRESENT, P_PR, P_PC,
    P_RS, P_RR, P_RBEFORE, P_RT0, P_RT1,
    P_CS, P_CR, P_CBEFORE, P_CT0, P_CT1,
    P_ZEROS, P_OUT, P_ON, P_OY, P_OX, P_OM, P_Y0,
    P_FILL, P_BLOCK, P_YA, P_YB,
    P_COUNT
};

/* Modes: a weighted mean; a sum; the last write; a plain mean (every weight 1) of integers of up to 16 bits,
 * added in int32, which holds their sums exactly (the caller checks that they fit): the same sums as float64
 * makes of them, and so the same means. */
enum { MODE_MEAN = 0, MODE_SUM = 1, MODE_LAST = 2, MODE_PLAIN = 3 };

/* Rows are stitched in blocks of at most this many: each patch's runs for the rows of a block are
 * consecutive tap rows, read in one go. */
#define BLOCK_MAX 16

typedef struct {
    Py_ssize_t p[P_COUNT];
    char *const *rowp;  /* patch row I0 + k starts at rowp[k] (its batch 0, column 0, tap 0, 0, channel 0) */
    const double *weights;  /* [RT1 - RT0, CT1 - CT0], or NULL: all 1 */
    const double *wide;  /* weights repeated along the channels, [RT1 - RT0, (CT1 - CT0) * M], or NULL */
    Py_ssize_t *taps;  /* each patch column's kept taps in the image and the pixel of the first: b0, b1, x0 */
    /* for each row of a block: */
    double *acc;  /* N * W * M accumulators (int64 for integer sums), set back to their start once finished */
    double *wsum;  /* W weight sums */
    double *scale;  /* W reciprocal weight sums (W * M, each repeated along the channels, channels last) */
    uint8_t *seen;  /* W: which pixels some positive weight reaches */
    Py_ssize_t gaps[BLOCK_MAX];  /* pixels of the row the scale is for that no weight reaches */
    Py_ssize_t scaled[BLOCK_MAX];  /* a plain mean of every patch: how many patch rows sample the row the
                                      scale is for (-1: none) */
    int first;  /* accumulators channels first: [N][M][W], else [N][W][M] */
} Task;

#define P(t, k) ((t)->p[k])

static Py_ssize_t floordiv(Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* rint for |v| < 2**52, as the FPU rounds (half to even), in a form compilers vectorise. */
static inline double round_even(double v)
{
    const double big = copysign(4503599627370496.0, v);
    return (v + big) - big;
}

/* ---- adding runs of taps ---------------------------------------------------------------------------- */

/* The taps [b0, b1) of one patch's tap row, at `src`, into accumulator row `acc` (batch n) from pixel x0. */
#define ADD_RUN(NAME, T)                                                                                    \
CLONES static void NAME(const Task *t, double *restrict acc, const char *src, Py_ssize_t b0, Py_ssize_t b1,        \
                 Py_ssize_t x0, const double *wrow, const double *widerow)                                 \
{                                                                                                          \
    const Py_ssize_t M = P(t, P_M), W = P(t, P_W), sb = P(t, P_SB), sm = P(t, P_SM), cr = P(t, P_CR);     \
    const Py_ssize_t item = sizeof(T), ct0 = P(t, P_CT0), len = b1 - b0;                                    \
    if (cr == 1 && !P(t, P_ZEROS) && !t->first && sm == item && sb == M * item) {                          \
        double *restrict a = acc + x0 * M;                                                                 \
        const T *restrict s = (const T *)(src + b0 * sb);                                                  \
        const Py_ssize_t n = len * M;                                                                      \
        if (widerow == NULL) {                                                                             \
            for (Py_ssize_t e = 0; e < n; e++)                                                             \
                a[e] += (double)s[e];                                                                      \
        } else {                                                                                           \
            const double *restrict w = widerow + (b0 - ct0) * M;                                           \
            for (Py_ssize_t e = 0; e < n; e++)                                                             \
                a[e] += (double)s[e] * w[e];                                                               \
        }                                                                                                  \
        return;                                                                                            \
    }                                                                                                      \
    if (cr == 1 && !P(t, P_ZEROS) && (t->first || M == 1) && sb == item) {                                \
        for (Py_ssize_t m = 0; m < M; m++) {                                                               \
            double *restrict a = acc + m * W + x0;                                                         \
            const T *restrict s = (const T *)(src + m * sm + b0 * sb);                                     \
            if (wrow == NULL) {                                                                            \
                for (Py_ssize_t e = 0; e < len; e++)                                                       \
                    a[e] += (double)s[e];                                                                  \
            } else {                                                                                       \
                const double *restrict w = wrow + (b0 - ct0);                                              \
                for (Py_ssize_t e = 0; e < len; e++)                                                       \
                    a[e] += (double)s[e] * w[e];                                                           \
            }                                                                                              \
        }                                                                                                  \
        return;                                                                                            \
    }                                                                                                      \
    const Py_ssize_t ax = t->first ? 1 : M, am = t->first ? W : 1;                                        \
    for (Py_ssize_t b = b0; b < b1; b++) {                                                                 \
        const double w = wrow == NULL ? 1.0 : wrow[b - ct0];                                               \
        if (w == 0.0)                                                                                      \
            continue;                                                                                      \
        double *a = acc + (x0 + (b - b0) * cr) * ax;                                                       \
        const char *s = src + b * sb;                                                                      \
        for (Py_ssize_t m = 0; m < M; m++)                                                                 \
            a[m * am] += (double)*(const T *)(s + m * sm) * w;                                             \
    }                                                                                                      \
}

/* Integers added into integer accumulators ACC (unsigned: they wrap, as numpy's int64 addition does): int64
 * for sums, int32 for plain means of small integers, whose sums they hold exactly. */
#define SUM_RUN(NAME, T, ACC)                                                                               \
CLONES static void NAME(const Task *t, double *acc_, const char *src, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t x0, \
                 const double *wrow, const double *widerow)                                                \
{                                                                                                          \
    const Py_ssize_t M = P(t, P_M), W = P(t, P_W), sb = P(t, P_SB), sm = P(t, P_SM), cr = P(t, P_CR);     \
    const Py_ssize_t item = sizeof(T), len = b1 - b0;                                                       \
    ACC *restrict acc = (ACC *)acc_;                                                                       \
    (void)wrow;                                                                                            \
    (void)widerow;                                                                                         \
    if (cr == 1 && !t->first && sm == item && sb == M * item) {                                            \
        ACC *restrict a = acc + x0 * M;                                                                    \
        const T *restrict s = (const T *)(src + b0 * sb);                                                  \
        for (Py_ssize_t e = 0; e < len * M; e++)                                                           \
            a[e] += (ACC)(int64_t)s[e];                                                                    \
        return;                                                                                            \
    }                                                                                                      \
    if (cr == 1 && (t->first || M == 1) && sb == item) {                                                   \
        for (Py_ssize_t m = 0; m < M; m++) {                                                               \
            ACC *restrict a = acc + m * W + x0;                                                            \
            const T *restrict s = (const T *)(src + m * sm + b0 * sb);                                     \
            for (Py_ssize_t e = 0; e < len; e++)                                                           \
                a[e] += (ACC)(int64_t)s[e];                                                                \
        }                                                                                                  \
        return;                                                                                            \
    }                                                                                                      \
    const Py_ssize_t ax = t->first ? 1 : M, am = t->first ? W : 1;                                        \
    for (Py_ssize_t b = b0; b < b1; b++) {                                                                 \
        ACC *a = acc + (x0 + (b - b0) * cr) * ax;                                                          \
        const char *s = src + b * sb;                                                                      \
        for (Py_ssize_t m = 0; m < M; m++)                                                                 \
            a[m * am] += (ACC)(int64_t)*(const T *)(s + m * sm);                                           \
    }                                                                                                      \
}

ADD_RUN(add_f4, float)
ADD_RUN(add_f8, double)
ADD_RUN(add_i1, int8_t)
ADD_RUN(add_u1, uint8_t)
ADD_RUN(add_i2, int16_t)
ADD_RUN(add_u2, uint16_t)
ADD_RUN(add_i4, int32_t)
ADD_RUN(add_u4, uint32_t)
SUM_RUN(sum_i1, int8_t, uint64_t)
SUM_RUN(sum_u1, uint8_t, uint64_t)
SUM_RUN(sum_i2, int16_t, uint64_t)
SUM_RUN(sum_u2, uint16_t, uint64_t)
SUM_RUN(sum_i4, int32_t, uint64_t)
SUM_RUN(sum_u4, uint32_t, uint64_t)
SUM_RUN(sum_i8, int64_t, uint64_t)
SUM_RUN(sum_u8, uint64_t, uint64_t)
SUM_RUN(plain_i1, int8_t, uint32_t)
SUM_RUN(plain_u1, uint8_t, uint32_t)
SUM_RUN(plain_i2, int16_t, uint32_t)
SUM_RUN(plain_u2, uint16_t, uint32_t)

typedef void (*run_fn)(const Task *, double *, const char *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const double *,
                       const double *);

/* ---- finishing a row ---------------------------------------------------------------------------------- */

/* Accumulator row (batch n) into output row `o`: CONVERT(v) of each value v with its `s`, the reciprocal
 * weight of its pixel (1 for sums; `scale` repeated along the channels of channels-last accumulators).
 * Each accumulator is set back to START for the next row as it is read. */
#define FINISH(NAME, T, ACC, START, CONVERT)                                                                \
CLONES static void NAME(const Task *t, double *acc_, const double *scale, char *o, Py_ssize_t ox, Py_ssize_t om) \
{                                                                                                          \
    const Py_ssize_t M = P(t, P_M), W = P(t, P_W);                                                         \
    const Py_ssize_t item = sizeof(T);                                                                      \
    ACC *restrict acc = (ACC *)acc_;                                                                       \
    if (!t->first && om == item && ox == M * item) {                                                       \
        T *restrict out = (T *)o;                                                                          \
        for (Py_ssize_t e = 0; e < W * M; e++) {                                                           \
            const ACC v = acc[e];                                                                          \
            const double s = scale == NULL ? 1.0 : scale[e];                                               \
            out[e] = CONVERT;                                                                              \
            acc[e] = START;                                                                                \
        }                                                                                                  \
        return;                                                                                            \
    }                                                                                                      \
    if ((t->first || M == 1) && ox == item) {                                                              \
        for (Py_ssize_t m = 0; m < M; m++) {                                                               \
            T *restrict out = (T *)(o + m * om);                                                           \
            ACC *restrict a = acc + m * W;                                                                 \
            for (Py_ssize_t e = 0; e < W; e++) {                                                           \
                const ACC v = a[e];                                                                        \
                const double s = scale == NULL ? 1.0 : scale[e];                                           \
                out[e] = CONVERT;                                                                          \
                a[e] = START;                                                                              \
            }                                                                                              \
        }                                                                                                  \
        return;                                                                                            \
    }                                                                                                      \
    const Py_ssize_t ax = t->first ? 1 : M, am = t->first ? W : 1;                                        \
    for (Py_ssize_t x = 0; x < W; x++)                                                                     \
        for (Py_ssize_t m = 0; m < M; m++) {                                                               \
            const ACC v = acc[x * ax + m * am];                                                            \
            const double s = scale == NULL ? 1.0 : scale[x * ax];                                          \
            *(T *)(o + x * ox + m * om) = CONVERT;                                                         \
            acc[x * ax + m * am] = START;                                                                  \
        }                                                                                                  \
}

FINISH(mean_f4, float, double, -0.0, (float)(v * s))
FINISH(mean_i1, int8_t, double, -0.0, (int8_t)round_even(v * s))
FINISH(mean_u1, uint8_t, double, -0.0, (uint8_t)round_even(v * s))
FINISH(mean_i2, int16_t, double, -0.0, (int16_t)round_even(v * s))
FINISH(mean_u2, uint16_t, double, -0.0, (uint16_t)round_even(v * s))
FINISH(mean_i4, int32_t, double, -0.0, (int32_t)round_even(v * s))
FINISH(mean_u4, uint32_t, double, -0.0, (uint32_t)(int64_t)round_even(v * s))
FINISH(mean_b1, uint8_t, double, -0.0, (uint8_t)(round_even(v * s) != 0.0))
FINISH(sumf_f4, float, double, 0.0, ((void)s, (float)v))
FINISH(sumf_f8, double, double, 0.0, ((void)s, v))
FINISH(sumi_i1, int8_t, uint64_t, 0, ((void)s, (int8_t)v))
FINISH(sumi_u1, uint8_t, uint64_t, 0, ((void)s, (uint8_t)v))
FINISH(sumi_i2, int16_t, uint64_t, 0, ((void)s, (int16_t)v))
FINISH(sumi_u2, uint16_t, uint64_t, 0, ((void)s, (uint16_t)v))
FINISH(sumi_i4, int32_t, uint64_t, 0, ((void)s, (int32_t)v))
FINISH(sumi_u4, uint32_t, uint64_t, 0, ((void)s, (uint32_t)v))
FINISH(sumi_i8, int64_t, uint64_t, 0, ((void)s, (int64_t)v))
FINISH(sumi_u8, uint64_t, uint64_t, 0, ((void)s, v))
FINISH(sumi_b1, uint8_t, uint64_t, 0, ((void)s, (uint8_t)(v != 0)))
FINISH(plain_mean_i1, int8_t, int32_t, 0, (int8_t)round_even((double)v * s))
FINISH(plain_mean_u1, uint8_t, int32_t, 0, (uint8_t)round_even((double)v * s))
FINISH(plain_mean_b1, uint8_t, int32_t, 0, (uint8_t)(round_even((double)v * s) != 0.0))
FINISH(plain_mean_i2, int16_t, int32_t, 0, (int16_t)round_even((double)v * s))
FINISH(plain_mean_u2, uint16_t, int32_t, 0, (uint16_t)round_even((double)v * s))

typedef void (*finish_fn)(const Task *, double *, const double *, char *, Py_ssize_t, Py_ssize_t);

/* The kernels of a mode and a type code (numpy's dtype.char), or 0 when there are none. */
static int kernels(int mode, int code, run_fn *add, finish_fn *finish)
{
    if (mode == MODE_PLAIN) {
        switch (code) {
        case 'b': *add = plain_i1; *finish = plain_mean_i1; return 1;
        case 'B': *add = plain_u1; *finish = plain_mean_u1; return 1;
        case '?': *add = plain_u1; *finish = plain_mean_b1; return 1;
        case 'h': *add = plain_i2; *finish = plain_mean_i2; return 1;
        case 'H': *add = plain_u2; *finish = plain_mean_u2; return 1;
        }
        return 0;
    }
    if (mode == MODE_MEAN) {
        switch (code) {
        case 'f': *add = add_f4; *finish = mean_f4; return 1;
        case 'b': *add = add_i1; *finish = mean_i1; return 1;
        case 'B': *add = add_u1; *finish = mean_u1; return 1;
        case '?': *add = add_u1; *finish = mean_b1; return 1;
        case 'h': *add = add_i2; *finish = mean_i2; return 1;
        case 'H': *add = add_u2; *finish = mean_u2; return 1;
        case 'i': *add = add_i4; *finish = mean_i4; return 1;
        case 'I': *add = add_u4; *finish = mean_u4; return 1;
        }
        return 0;
    }
    switch (code) {  /* sums */
    case 'f': *add = add_f4; *finish = sumf_f4; return 1;
    case 'd': *add = add_f8; *finish = sumf_f8; return 1;
    case 'b': *add = sum_i1; *finish = sumi_i1; return 1;
    case 'B': *add = sum_u1; *finish = sumi_u1; return 1;
    case '?': *add = sum_u1; *finish = sumi_b1; return 1;
    case 'h': *add = sum_i2; *finish = sumi_i2; return 1;
    case 'H': *add = sum_u2; *finish = sumi_u2; return 1;
    case 'i': *add = sum_i4; *finish = sumi_i4; return 1;
    case 'I': *add = sum_u4; *finish = sumi_u4; return 1;
    case 'l': case 'q': *add = sum_i8; *finish = sumi_i8; return 1;
    case 'L': case 'Q': *add = sum_u8; *finish = sumi_u8; return 1;
    }
    return 0;
}

/* Pixels of output row y that nothing reached (seen[x] == 0; all of them without `seen`) take the fill value,
 * in every channel and batch. */
static void fill_row(const Task *t, Py_ssize_t y, const uint8_t *seen)
{
    const Py_ssize_t N = P(t, P_N), W = P(t, P_W), M = P(t, P_M), item = P(t, P_ITEM);
    const char *fill = (const char *)P(t, P_FILL);
    char *row = (char *)P(t, P_OUT) + (y - P(t, P_Y0)) * P(t, P_OY);
    for (Py_ssize_t x = 0; x < W; x++) {
        if (seen != NULL && seen[x])
            continue;
        for (Py_ssize_t n = 0; n < N; n++)
            for (Py_ssize_t m = 0; m < M; m++)
                memcpy(row + n * P(t, P_ON) + x * P(t, P_OX) + m * P(t, P_OM), fill, (size_t)item);
    }
}

/* ---- a row ------------------------------------------------------------------------------------------ */

/* The patch rows k (of the band's) whose kept tap row a samples output row y, first to last. */
static void row_span(const Task *t, Py_ssize_t y, Py_ssize_t *k0, Py_ssize_t *k1)
{
    const Py_ssize_t s = P(t, P_RS), r = P(t, P_RR), before = P(t, P_RBEFORE);
    Py_ssize_t lo = -floordiv(-(y + before - (P(t, P_RT1) - 1) * r), s);  /* ceil */
    Py_ssize_t hi = floordiv(y + before - P(t, P_RT0) * r, s) + 1;
    const Py_ssize_t first = P(t, P_I0), stop = first + P(t, P_ROWS);
    lo = lo < first ? first : lo > stop ? stop : lo;
    hi = hi < lo ? lo : hi > stop ? stop : hi;
    *k0 = lo - first;
    *k1 = hi - first;
}

/* The kept taps [b0, b1) of patch column j inside the image, and the pixel of b0; 0 when none. */
static int col_taps_of(const Task *t, Py_ssize_t j, Py_ssize_t *b0, Py_ssize_t *b1, Py_ssize_t *x0)
{
    const Py_ssize_t s = P(t, P_CS), r = P(t, P_CR), base = j * s - P(t, P_CBEFORE);
    Py_ssize_t lo = -floordiv(base, r), hi = floordiv(P(t, P_W) - 1 - base, r) + 1;
    lo = lo > P(t, P_CT0) ? lo : P(t, P_CT0);
    hi = hi < P(t, P_CT1) ? hi : P(t, P_CT1);
    *b0 = lo;
    *b1 = hi;
    *x0 = base + lo * r;
    return lo < hi;
}

/* The same for the band's column jj, from the table made once a call. */
static inline int col_taps(const Task *t, Py_ssize_t jj, Py_ssize_t *b0, Py_ssize_t *b1, Py_ssize_t *x0)
{
    const Py_ssize_t *taps = t->taps + 3 * jj;
    *b0 = taps[0];
    *b1 = taps[1];
    *x0 = taps[2];
    return taps[0] < taps[1];
}

static int present(const Task *t, Py_ssize_t k, Py_ssize_t jj)
{
    const uint8_t *mask = (const uint8_t *)P(t, P_PRESENT);
    return mask == NULL || mask[k * P(t, P_PR) + jj * P(t, P_PC)];
}

/* Tap row a of patch row k, if it samples output row y (rates above 1 skip rows). */
static int tap_row(const Task *t, Py_ssize_t y, Py_ssize_t k, Py_ssize_t *a)
{
    const Py_ssize_t d = y + P(t, P_RBEFORE) - (P(t, P_I0) + k) * P(t, P_RS);
    if (d % P(t, P_RR) != 0)
        return 0;
    *a = d / P(t, P_RR);
    return *a >= P(t, P_RT0) && *a < P(t, P_RT1);
}

/* How many patch rows sample output row y (their kept tap rows do). */
static Py_ssize_t sampling_rows(const Task *t, Py_ssize_t y)
{
    Py_ssize_t k0, k1, a, count = 0;
    row_span(t, y, &k0, &k1);
    for (Py_ssize_t k = k0; k < k1; k++)
        count += tap_row(t, y, k, &a);
    return count;
}

/* The weights of taps [b0, b1) of a tap row (`wrow`; NULL: all 1) into a row's weight sums from pixel x0;
 * zero weights add nothing. */
CLONES static void add_weights(const Task *t, double *row, const double *wrow, Py_ssize_t b0, Py_ssize_t b1,
                               Py_ssize_t x0)
{
    const Py_ssize_t cr = P(t, P_CR), len = b1 - b0;
    double *restrict wsum = row + x0;
    if (wrow == NULL) {
        for (Py_ssize_t e = 0; e < len; e++)
            wsum[e * cr] += 1.0;
        return;
    }
    const double *restrict w = wrow + (b0 - P(t, P_CT0));
    if (!P(t, P_ZEROS) && cr == 1) {
        for (Py_ssize_t e = 0; e < len; e++)
            wsum[e] += w[e];
        return;
    }
    for (Py_ssize_t e = 0; e < len; e++)
        if (w[e] != 0.0)
            wsum[e * cr] += w[e];
}

#define SPREAD(R)                                                                                           \
    for (Py_ssize_t x = 0; x < W; x++)                                                                     \
        for (Py_ssize_t m = 0; m < (R); m++)                                                               \
            scale[x * (R) + m] = wsum[x];

/* scale = 1 / wsum where some weight reached a pixel (0 elsewhere), each repeated `rep` times; seen: which.
 * wsum is left holding the reciprocals. Returns how many pixels none reached. */
CLONES static Py_ssize_t reciprocals(double *restrict wsum, double *restrict scale, uint8_t *restrict seen,
                                     Py_ssize_t W, Py_ssize_t rep)
{
    double *restrict one = rep == 1 ? scale : wsum;
    Py_ssize_t gaps = 0;
    for (Py_ssize_t x = 0; x < W; x++) {
        seen[x] = wsum[x] > 0.0;
        gaps += !seen[x];
    }
    for (Py_ssize_t x = 0; x < W; x++)  /* apart from the choice below, which a division would keep from SIMD */
        one[x] = 1.0 / wsum[x];
    for (Py_ssize_t x = 0; x < W; x++)  /* sums are +0.0 or positive: 1 / +0.0 is inf, not kept */
        one[x] = seen[x] ? one[x] : 0.0;
    switch (rep) {
    case 1: break;
    case 2: SPREAD(2) break;
    case 3: SPREAD(3) break;
    case 4: SPREAD(4) break;
    default: SPREAD(rep) break;
    }
    return gaps;
}

/* Output rows [y, y + R) of a block: each row's accumulators (set to their start by the rows before, or at
 * the start) and, where `weigh`, its weight sums. The patch rows come in order, and for each its columns
 * in order, so that each pixel's sum is made in row-major patch order; a column's runs for the rows of the
 * block are consecutive tap rows. */
static void accumulate_block(const Task *t, Py_ssize_t y, Py_ssize_t R, run_fn add, const int *weigh)
{
    const Py_ssize_t N = P(t, P_N), W = P(t, P_W), M = P(t, P_M), J = P(t, P_J), kc = P(t, P_CT1) - P(t, P_CT0);
    const Py_ssize_t sj = P(t, P_SJ), sa = P(t, P_SA);
    Py_ssize_t k0, k1, last0, last1, a[BLOCK_MAX];
    int valid[BLOCK_MAX];
    row_span(t, y, &k0, &k1);  /* spans move down with the rows: the first row's starts first */
    row_span(t, y + R - 1, &last0, &last1);
    k1 = k1 > last1 ? k1 : last1;
    for (Py_ssize_t r = 0; r < R; r++)
        if (weigh[r])
            memset(t->wsum + r * W, 0, sizeof(double) * (size_t)W);
    for (Py_ssize_t n = 0; n < N; n++)
        for (Py_ssize_t k = k0; k < k1; k++) {
            int any = 0;
            for (Py_ssize_t r = 0; r < R; r++)
                any |= valid[r] = tap_row(t, y + r, k, &a[r]);
            if (!any)
                continue;
            const char *base = t->rowp[k] + n * P(t, P_SN);
            for (Py_ssize_t jj = 0; jj < J; jj++) {
                Py_ssize_t b0, b1, x0;
                if (!present(t, k, jj) || !col_taps(t, jj, &b0, &b1, &x0))
                    continue;
                for (Py_ssize_t r = 0; r < R; r++) {
                    if (!valid[r])
                        continue;
                    const Py_ssize_t tap = a[r] - P(t, P_RT0);
                    const double *wrow = t->weights ? t->weights + tap * kc : NULL;
                    add(t, t->acc + (r * N + n) * W * M, base + a[r] * sa + jj * sj, b0, b1, x0, wrow,
                        t->wide ? t->wide + tap * kc * M : NULL);
                    if (n == 0 && weigh[r])
                        add_weights(t, t->wsum + r * W, wrow, b0, b1, x0);
                }
            }
        }
}

/* Output rows [y, y + R): accumulated, then finished into the band (pixels no weight reached filled). A
 * plain mean of every patch weighs each row that as many patch rows sample alike: the reciprocal weights
 * a block's row was finished with are reused by the same row of the next block when they match. */
static void stitch_block(Task *t, Py_ssize_t y, Py_ssize_t R, run_fn add, finish_fn finish)
{
    const Py_ssize_t N = P(t, P_N), W = P(t, P_W), M = P(t, P_M), rep = t->first ? 1 : M;
    const int sum = P(t, P_MODE) == MODE_SUM, plain = t->weights == NULL && P(t, P_PRESENT) == 0;
    Py_ssize_t key[BLOCK_MAX];
    int weigh[BLOCK_MAX];
    for (Py_ssize_t r = 0; r < R; r++) {
        key[r] = plain ? sampling_rows(t, y + r) : -1;
        weigh[r] = !sum && (!plain || key[r] != t->scaled[r]);
    }
    accumulate_block(t, y, R, add, weigh);
    for (Py_ssize_t r = 0; r < R; r++) {
        double *scale = t->scale + r * W * M;
        if (weigh[r]) {
            t->gaps[r] = reciprocals(t->wsum + r * W, scale, t->seen + r * W, W, rep);
            t->scaled[r] = key[r];
        }
        char *out = (char *)P(t, P_OUT) + (y + r - P(t, P_Y0)) * P(t, P_OY);
        for (Py_ssize_t n = 0; n < N; n++)
            finish(t, t->acc + (r * N + n) * W * M, sum ? NULL : scale, out + n * P(t, P_ON), P(t, P_OX),
                   P(t, P_OM));
        if (!sum && t->gaps[r])
            fill_row(t, y + r, t->seen + r * W);
    }
}

/* ---- the last write --------------------------------------------------------------------------------- */

static void copy_elements(char *dst, Py_ssize_t dstep, const char *src, Py_ssize_t sstep, Py_ssize_t count,
                          Py_ssize_t item)
{
    if (dstep == item && sstep == item) {
        memcpy(dst, src, (size_t)(count * item));
        return;
    }
    switch (item) {
    case 1: for (Py_ssize_t e = 0; e < count; e++) dst[e * dstep] = src[e * sstep]; return;
    case 2: for (Py_ssize_t e = 0; e < count; e++) *(uint16_t *)(dst + e * dstep) = *(const uint16_t *)(src + e * sstep); return;
    case 4: for (Py_ssize_t e = 0; e < count; e++) *(uint32_t *)(dst + e * dstep) = *(const uint32_t *)(src + e * sstep); return;
    case 8: for (Py_ssize_t e = 0; e < count; e++) *(uint64_t *)(dst + e * dstep) = *(const uint64_t *)(src + e * sstep); return;
    }
    for (Py_ssize_t e = 0; e < count; e++)
        memcpy(dst + e * dstep, src + e * sstep, (size_t)item);
}

/* Taps [b0, b1) of one patch's tap row into output row `o` from pixel x0. */
static void copy_run(const Task *t, char *o, Py_ssize_t ox, Py_ssize_t om, const char *src, Py_ssize_t b0,
                     Py_ssize_t b1, Py_ssize_t x0)
{
    const Py_ssize_t M = P(t, P_M), item = P(t, P_ITEM), sb = P(t, P_SB), sm = P(t, P_SM), cr = P(t, P_CR);
    const Py_ssize_t len = b1 - b0;
    if (cr == 1 && sm == item && om == item && sb == M * item && ox == M * item) {
        memcpy(o + x0 * ox, src + b0 * sb, (size_t)(len * M * item));
        return;
    }
    if (M == 1 || om > ox * len || sm > sb * len) {  /* channel by channel: runs along the taps */
        for (Py_ssize_t m = 0; m < M; m++)
            copy_elements(o + x0 * ox + m * om, ox * cr, src + b0 * sb + m * sm, sb, len, item);
        return;
    }
    for (Py_ssize_t b = 0; b < len; b++)
        copy_elements(o + (x0 + b * cr) * ox, om, src + (b0 + b) * sb, sm, M, item);
}

/* Output row y as the last write: only the last patch row and, with rate 1, the last patch column that
 * samples a pixel are copied when every patch is there; otherwise every patch in row-major order. */
static void last_row(const Task *t, Py_ssize_t y)
{
    const Py_ssize_t N = P(t, P_N), W = P(t, P_W), J = P(t, P_J), cs = P(t, P_CS), ct0 = P(t, P_CT0);
    const int all = P(t, P_PRESENT) == 0;
    uint8_t *covered = t->seen;
    char *out = (char *)P(t, P_OUT) + (y - P(t, P_Y0)) * P(t, P_OY);
    Py_ssize_t k0, k1;
    row_span(t, y, &k0, &k1);
    memset(covered, 0, (size_t)W);
    if (all)  /* the last patch row that samples y wins everywhere */
        for (Py_ssize_t k = k1 - 1; k >= k0; k--) {
            Py_ssize_t a;
            if (tap_row(t, y, k, &a)) {
                k0 = k;
                k1 = k + 1;
                break;
            }
        }
    for (Py_ssize_t k = k0; k < k1; k++) {
        Py_ssize_t a;
        if (!tap_row(t, y, k, &a))
            continue;
        for (Py_ssize_t jj = 0; jj < J; jj++) {
            Py_ssize_t b0, b1, x0;
            if (!present(t, k, jj) || !col_taps(t, jj, &b0, &b1, &x0))
                continue;
            if (all && P(t, P_CR) == 1 && jj + 1 < J) {  /* up to where the next patch's kept taps begin */
                const Py_ssize_t next = x0 - b0 + cs + ct0;
                b1 = b1 < b0 + (next - x0) ? b1 : b0 + (next - x0);
                if (b1 <= b0)
                    continue;
            }
            for (Py_ssize_t n = 0; n < N; n++)
                copy_run(t, out + n * P(t, P_ON), P(t, P_OX), P(t, P_OM),
                         t->rowp[k] + n * P(t, P_SN) + a * P(t, P_SA) + jj * P(t, P_SJ), b0, b1, x0);
            for (Py_ssize_t b = b0; b < b1; b++)
                covered[x0 + (b - b0) * P(t, P_CR)] = 1;
        }
    }
    fill_row(t, y, covered);
}

/* ---- the module ------------------------------------------------------------------------------------- */

/* Bytes of one call's scratch: each patch column's taps and, for each row of a block, a byte a pixel (which
 * some patch reached) and, but for the last write, accumulators, weight sums and reciprocal weights. */
static Py_ssize_t scratch_size(Py_ssize_t N, Py_ssize_t W, Py_ssize_t M, Py_ssize_t J, Py_ssize_t R, int mode)
{
    const Py_ssize_t taps = 3 * J * (Py_ssize_t)sizeof(Py_ssize_t);
    return taps + (mode == MODE_LAST ? W : R * ((Py_ssize_t)sizeof(double) * (N * W * M + W + W * M) + W));
}

static PyObject *rows(PyObject *self, PyObject *args)
{
    PyObject *params;
    Py_ssize_t rowp, weights, wide;
    Task t;
    run_fn add = NULL;
    finish_fn finish = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nnn", &PyTuple_Type, &params, &rowp, &weights, &wide))
        return NULL;
    if (PyTuple_GET_SIZE(params) != P_COUNT)
        return PyErr_Format(PyExc_ValueError, "params must hold %d integers", (int)P_COUNT);
    for (int k = 0; k < P_COUNT; k++) {
        t.p[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(params, k));
        if (t.p[k] == -1 && PyErr_Occurred())
            return NULL;
    }
    if (P(&t, P_RS) <= 0 || P(&t, P_RR) <= 0 || P(&t, P_CS) <= 0 || P(&t, P_CR) <= 0)
        return PyErr_Format(PyExc_ValueError, "strides and rates must be positive");
    if (P(&t, P_N) <= 0 || P(&t, P_M) <= 0 || P(&t, P_W) <= 0 || P(&t, P_ITEM) <= 0)
        return PyErr_Format(PyExc_ValueError, "batch, channels, width and item size must be positive");
    const int mode = (int)P(&t, P_MODE);
    if (mode != MODE_LAST && !kernels(mode, (int)P(&t, P_CODE), &add, &finish))
        return PyErr_Format(PyExc_ValueError, "no kernel for mode %d and type code %c", mode, (int)P(&t, P_CODE));
    t.rowp = (char *const *)rowp;
    t.weights = (const double *)weights;
    t.wide = (const double *)wide;
    t.first = P(&t, P_M) > 1 && P(&t, P_SM) > P(&t, P_SB);
    t.acc = t.wsum = t.scale = NULL;
    t.seen = NULL;
    const Py_ssize_t N = P(&t, P_N), W = P(&t, P_W), M = P(&t, P_M);
    const Py_ssize_t J = P(&t, P_J), R = mode == MODE_LAST ? 1 : P(&t, P_BLOCK);
    if (R < 1 || R > BLOCK_MAX)
        return PyErr_Format(PyExc_ValueError, "block must be 1 to %d rows", BLOCK_MAX);
    char *scratch = PyMem_RawMalloc((size_t)scratch_size(N, W, M, J, R, mode) + 1);
    if (scratch == NULL)
        return PyErr_NoMemory();
    t.taps = (Py_ssize_t *)scratch;
    for (Py_ssize_t jj = 0; jj < J; jj++)
        if (!col_taps_of(&t, P(&t, P_J0) + jj, &t.taps[3 * jj], &t.taps[3 * jj + 1], &t.taps[3 * jj + 2]))
            t.taps[3 * jj] = t.taps[3 * jj + 1] = 0;
    for (Py_ssize_t r = 0; r < BLOCK_MAX; r++) {
        t.scaled[r] = -1;
        t.gaps[r] = 0;
    }
    t.seen = (uint8_t *)(t.taps + 3 * J);
    if (mode != MODE_LAST) {
        t.acc = (double *)(t.taps + 3 * J);
        t.wsum = t.acc + R * N * W * M;
        t.scale = t.wsum + R * W;
        t.seen = (uint8_t *)(t.scale + R * W * M);
        if (mode == MODE_SUM || mode == MODE_PLAIN)
            memset(t.acc, 0, sizeof(double) * (size_t)(R * N * W * M));
        else
            for (Py_ssize_t e = 0; e < R * N * W * M; e++)
                t.acc[e] = -0.0;
    }
    Py_BEGIN_ALLOW_THREADS
    const Py_ssize_t ya = P(&t, P_YA), yb = P(&t, P_YB);
    for (Py_ssize_t y = ya; y < yb; y += R) {
        if (mode == MODE_LAST)
            last_row(&t, y);
        else
            stitch_block(&t, y, yb - y < R ? yb - y : R, add, finish);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    Py_RETURN_NONE;
}

static PyObject *scratch_bytes(PyObject *self, PyObject *args)
{
    Py_ssize_t n, w, m, j, r;
    int mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnni", &n, &w, &m, &j, &r, &mode))
        return NULL;
    return PyLong_FromSsize_t(scratch_size(n, w, m, j, r, mode));
}

static PyObject *has(PyObject *self, PyObject *args)
{
    int mode, code;
    run_fn add;
    finish_fn finish;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii", &mode, &code))
        return NULL;
    return PyBool_FromLong(mode == MODE_LAST || kernels(mode, code, &add, &finish));
}

static PyObject *param_count(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return Py_BuildValue("i", (int)P_COUNT);
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS, "rows(params, row_pointers_addr, weights_addr, wide_addr): stitch rows [ya, yb)"},
    {"scratch_bytes", scratch_bytes, METH_VARARGS,
     "scratch_bytes(n, w, m, cols, block, mode): bytes one call of rows allocates"},
    {"has", has, METH_VARARGS, "has(mode, type_code): whether rows takes that mode and dtype"},
    {"param_count", param_count, METH_NOARGS, "param_count(): how many integers params holds"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", "Stitching a band's rows in cache.", -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
