/*
 * CPU kernels of enas (built and loaded by enas/native/__init__.py): batch norm, optionally followed
 * by a ReLU, and the depthwise convolution weight gradient, over channels-last float32 tensors.
 *
 * A channels-last (B, C, H, W) tensor is the matrix (M, C), M = B*H*W pixels. The kernels read it
 * as R = M / k "super-rows" of L = k*C floats (k pixels each, k*C a multiple of 16 where M allows)
 * so that every inner loop runs over a whole number of vector registers; per-channel vectors are
 * passed tiled to length L. Forward: one pass for the statistics, one for y = a*x + b (and the
 * ReLU). Backward: one pass for the two per-channel sums, one for dx = a*gy + slope*(x - mean) + offset,
 * where gy is the incoming gradient masked by a*x + b > 0 when the ReLU is fused: the mask is
 * recomputed with the forward's exact arithmetic (built with -ffp-contract=off), so it equals
 * "output > 0" without reading the output. Same maths as torch.nn.BatchNorm2d (Ioffe & Szegedy
 * 2015, Alg. 1); sums are taken in float over blocks of 32 super-rows and added up in double.
 * Every loop marked "vectorized" must vectorize for AVX2 and AVX-512 (tests/test_native_build.py):
 * one that falls back to scalar code with a branch per element runs about 12x slower.
 *
 * Every entry point returns 0, or 1 when out of memory.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

/* One copy of each hot loop per x86-64 level (AVX-512, AVX2, baseline), picked at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(ENAS_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define BLOCK 32

static void split(int64_t n, int t, int nt, int64_t *lo, int64_t *hi) {
    *lo = n * t / nt;
    *hi = n * (t + 1) / nt;
}

/* Block sums of up to this many columns live on the thread's stack (64 KiB), wider ones on the heap
 * (block_sums): a layer of 32,769 channels would overflow a 4 MiB stack. The stack copy is faster
 * (measured 5-7 % on the forward at (96, 36, 32, 32)). */
#define STACK_L 8192

/* s += sum(x - p), q += sum((x - p)^2) per column, over super-rows [r0, r1). */
static inline __attribute__((always_inline)) void stats_rows(const float *restrict x, int64_t r0, int64_t r1,
        int64_t L, const float *restrict p, double *restrict s, double *restrict q, float *restrict fs,
        float *restrict fq) {
    for (int64_t r = r0; r < r1;) {
        int64_t e = r + BLOCK < r1 ? r + BLOCK : r1;
        for (int64_t j = 0; j < L; j++) fs[j] = fq[j] = 0.f;
        for (; r < e; r++) {
            const float *xr = x + r * L;
            for (int64_t j = 0; j < L; j++) { /* vectorized */
                float d = xr[j] - p[j];
                fs[j] += d;
                fq[j] += d * d;
            }
        }
        for (int64_t j = 0; j < L; j++) { s[j] += fs[j]; q[j] += fq[j]; }
    }
}

CLONES static void stats_part(const float *restrict x, int64_t r0, int64_t r1, int64_t L,
                              const float *restrict p, double *restrict s, double *restrict q, float *heap) {
    if (L <= STACK_L) {
        float fs[L], fq[L];
        stats_rows(x, r0, r1, L, p, s, q, fs, fq);
    } else {
        stats_rows(x, r0, r1, L, p, s, q, heap, heap + L);
    }
}

/* y = sc * (a*x + b) (ReLU'd), over super-rows [r0, r1); sc: the row's sample factor ss[r / per], or 1. */
CLONES static void apply_part(const float *restrict x, float *restrict y, int64_t r0, int64_t r1, int64_t L,
                              const float *restrict a, const float *restrict b, int relu,
                              const float *restrict ss, int64_t per) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * L;
        float *yr = y + r * L;
        const float sc = ss ? ss[r / per] : 1.f; /* times 1 is exact: no factor, same bits */
        if (relu) {
            for (int64_t j = 0; j < L; j++) { /* vectorized */
                float v = xr[j] * a[j] + b[j];
                yr[j] = sc * (v > 0.f ? v : 0.f);
            }
        } else {
            for (int64_t j = 0; j < L; j++) yr[j] = sc * (xr[j] * a[j] + b[j]); /* vectorized */
        }
    }
}

/* s += sum(gy), q += sum(gy * (x - m)) per column; gy = sc * g, masked by a*x + b > 0 with the ReLU. */
static inline __attribute__((always_inline)) void grad_sums_rows(const float *restrict g, const float *restrict x,
        int64_t r0, int64_t r1, int64_t L, const float *restrict m, const float *restrict a, const float *restrict b,
        int relu, const float *restrict ss, int64_t per, double *restrict s, double *restrict q, float *restrict fs,
        float *restrict fq) {
    for (int64_t r = r0; r < r1;) {
        int64_t e = r + BLOCK < r1 ? r + BLOCK : r1;
        for (int64_t j = 0; j < L; j++) fs[j] = fq[j] = 0.f;
        for (; r < e; r++) {
            const float *gr = g + r * L, *xr = x + r * L;
            const float sc = ss ? ss[r / per] : 1.f;
            if (relu) {
                for (int64_t j = 0; j < L; j++) { /* vectorized */
                    float gy = xr[j] * a[j] + b[j] > 0.f ? sc * gr[j] : 0.f;
                    fs[j] += gy;
                    fq[j] += gy * (xr[j] - m[j]);
                }
            } else {
                for (int64_t j = 0; j < L; j++) { /* vectorized */
                    float gy = sc * gr[j];
                    fs[j] += gy;
                    fq[j] += gy * (xr[j] - m[j]);
                }
            }
        }
        for (int64_t j = 0; j < L; j++) { s[j] += fs[j]; q[j] += fq[j]; }
    }
}

CLONES static void grad_sums_part(const float *restrict g, const float *restrict x, int64_t r0, int64_t r1,
                                  int64_t L, const float *restrict m, const float *restrict a,
                                  const float *restrict b, int relu, const float *restrict ss, int64_t per,
                                  double *restrict s, double *restrict q, float *heap) {
    if (L <= STACK_L) {
        float fs[L], fq[L];
        grad_sums_rows(g, x, r0, r1, L, m, a, b, relu, ss, per, s, q, fs, fq);
    } else {
        grad_sums_rows(g, x, r0, r1, L, m, a, b, relu, ss, per, s, q, heap, heap + L);
    }
}

CLONES static void grad_input_part(const float *restrict g, const float *restrict x, float *restrict dx, int64_t r0,
                                   int64_t r1, int64_t L, const float *restrict m, const float *restrict a,
                                   const float *restrict b, int relu, const float *restrict ss, int64_t per,
                                   const float *restrict slope, const float *restrict offset) {
    for (int64_t r = r0; r < r1; r++) {
        const float *gr = g + r * L, *xr = x + r * L;
        float *dr = dx + r * L;
        const float sc = ss ? ss[r / per] : 1.f;
        if (relu) {
            for (int64_t j = 0; j < L; j++) { /* vectorized */
                float gy = xr[j] * a[j] + b[j] > 0.f ? sc * gr[j] : 0.f;
                dr[j] = a[j] * gy + slope[j] * (xr[j] - m[j]) + offset[j];
            }
        } else {
            for (int64_t j = 0; j < L; j++) /* vectorized */
                dr[j] = a[j] * (sc * gr[j]) + slope[j] * (xr[j] - m[j]) + offset[j];
        }
    }
}

/* Zeroed per-thread column sums (nt x 2L doubles), followed by room for each thread's float block sums
 * (2L floats at block_sums(t), a cache line apart: both threads update theirs on every row), used when
 * L > STACK_L. */
#define FSTRIDE(L) ((2 * (L) + 31) / 16 * 16)
static double *partials(int nt, int64_t L) {
    return calloc((size_t)nt * 2 * L * sizeof(double) + (size_t)nt * FSTRIDE(L) * sizeof(float) + 64, 1);
}

static float *block_sums(double *part, int nt, int64_t L, int64_t t) {
    uintptr_t base = ((uintptr_t)(part + (int64_t)nt * 2 * L) + 63) & ~(uintptr_t)63;
    return (float *)base + t * FSTRIDE(L);
}

/* Column sums of all threads, folded to per-channel sums: out[c] = sum over t and the k copies. */
static void fold_sums(const double *part, int nt, int64_t L, int64_t C, double *s, double *q) {
    for (int64_t c = 0; c < C; c++) s[c] = q[c] = 0.0;
    for (int t = 0; t < nt; t++)
        for (int64_t j = 0; j < L; j++) {
            s[j % C] += part[(int64_t)t * 2 * L + j];
            q[j % C] += part[(int64_t)t * 2 * L + L + j];
        }
}

/*
 * y = ss[n] * bn(x) (ReLU'd when relu): ss, when not NULL, holds one factor per sample (DARTS's drop
 * path, already divided by the keep probability), per = H*W/k super-rows per sample. use_batch: normalise with the batch statistics (training), update
 * running_mean / running_var when given (momentum = torch's factor), write save_mean / save_invstd;
 * otherwise normalise with the running statistics. a, b (L,) receive the tiled affine map.
 */
int enas_bn_forward(const float *x, float *y, int64_t M, int64_t C, int64_t k, const float *weight,
                    const float *bias, float *running_mean, float *running_var, int use_batch, double momentum,
                    double eps, int relu, const float *ss, int64_t per, float *save_mean, float *save_invstd,
                    float *a, float *b, int nt) {
    int64_t L = k * C, R = M / k;
    double *mean = malloc(sizeof(double) * 2 * C);
    if (!mean) return 1;
    double *var = mean + C;
    if (use_batch) {
        double *part = partials(nt, L);
        if (!part) { free(mean); return 1; }
        const float *p = x; /* the first super-row as pivot: sums of x - p do not cancel */
#pragma omp parallel num_threads(nt)
        {
            int64_t lo, hi, t = omp_get_thread_num();
            float *f = block_sums(part, nt, L, t);
            split(R, t, omp_get_num_threads(), &lo, &hi);
            stats_part(x, lo, hi, L, p, part + t * 2 * L, part + t * 2 * L + L, f);
        }
        /* Per column j: sum(x - p_j) and sum((x - p_j)^2); move each to the channel mean. */
        for (int64_t c = 0; c < C; c++) mean[c] = 0.0;
        for (int t = 0; t < nt; t++)
            for (int64_t j = 0; j < L; j++) mean[j % C] += part[(int64_t)t * 2 * L + j];
        for (int64_t j = 0; j < L; j++) mean[j % C] += (double)R * p[j];
        for (int64_t c = 0; c < C; c++) { mean[c] /= (double)M; var[c] = 0.0; }
        for (int64_t j = 0; j < L; j++) {
            double sj = 0.0, qj = 0.0, dm = (double)p[j] - mean[j % C];
            for (int t = 0; t < nt; t++) { sj += part[(int64_t)t * 2 * L + j]; qj += part[(int64_t)t * 2 * L + L + j]; }
            var[j % C] += qj + 2.0 * dm * sj + (double)R * dm * dm;
        }
        for (int64_t c = 0; c < C; c++) {
            var[c] = var[c] > 0.0 ? var[c] / (double)M : 0.0;
            save_mean[c] = (float)mean[c];
            save_invstd[c] = (float)(1.0 / sqrt(var[c] + eps));
            if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
            if (running_var) {
                double unbiased = var[c] * (double)M / (double)(M > 1 ? M - 1 : 1);
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
            }
        }
        free(part);
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = running_mean[c];
            save_mean[c] = running_mean[c];
            save_invstd[c] = (float)(1.0 / sqrt((double)running_var[c] + eps));
        }
    }
    for (int64_t j = 0; j < L; j++) {
        int64_t c = j % C;
        double sc = (double)save_invstd[c] * (weight ? weight[c] : 1.0);
        a[j] = (float)sc;
        b[j] = (float)((bias ? bias[c] : 0.0) - mean[c] * sc);
    }
    free(mean);
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        split(R, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        apply_part(x, y, lo, hi, L, a, b, relu, ss, per);
    }
    return 0;
}

/*
 * Gradients of enas_bn_forward for the incoming gradient g: dx (when not NULL), and the per-channel
 * sums grad_weight = sum(gy * x_hat), grad_bias = sum(gy) (when not NULL). mean / invstd: the
 * statistics the forward normalised with; a, b: its tiled affine map.
 */
int enas_bn_backward(const float *g, const float *x, float *dx, int64_t M, int64_t C, int64_t k, const float *mean,
                     const float *invstd, const float *a, const float *b, int use_batch, int relu,
                     const float *ss, int64_t per, float *grad_weight, float *grad_bias, int nt) {
    int64_t L = k * C, R = M / k;
    float *buf = malloc(sizeof(float) * 3 * L);
    double *sq = malloc(sizeof(double) * 2 * C);
    if (!buf || !sq) { free(buf); free(sq); return 1; }
    float *m = buf, *slope = buf + L, *offset = buf + 2 * L;
    double *s = sq, *q = sq + C;
    for (int64_t j = 0; j < L; j++) m[j] = mean[j % C];
    int need_sums = use_batch || grad_weight || grad_bias;
    if (need_sums) {
        double *part = partials(nt, L);
        if (!part) { free(buf); free(sq); return 1; }
#pragma omp parallel num_threads(nt)
        {
            int64_t lo, hi, t = omp_get_thread_num();
            float *f = block_sums(part, nt, L, t);
            split(R, t, omp_get_num_threads(), &lo, &hi);
            grad_sums_part(g, x, lo, hi, L, m, a, b, relu, ss, per, part + t * 2 * L, part + t * 2 * L + L, f);
        }
        fold_sums(part, nt, L, C, s, q);
        free(part);
        for (int64_t c = 0; c < C; c++) {
            if (grad_weight) grad_weight[c] = (float)(q[c] * invstd[c]);
            if (grad_bias) grad_bias[c] = (float)s[c];
        }
    }
    if (dx) {
        for (int64_t j = 0; j < L; j++) {
            int64_t c = j % C;
            /* dx = a*gy - a*sum(gy)/M - a*x_hat*sum(gy*x_hat)/M, x_hat = (x - mean)*invstd */
            slope[j] = use_batch ? (float)(-(double)a[j] * invstd[c] * invstd[c] * q[c] / (double)M) : 0.f;
            offset[j] = use_batch ? (float)(-(double)a[j] * s[c] / (double)M) : 0.f;
        }
#pragma omp parallel num_threads(nt)
        {
            int64_t lo, hi;
            split(R, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
            grad_input_part(g, x, dx, lo, hi, L, m, a, b, relu, ss, per, slope, offset);
        }
    }
    free(buf);
    free(sq);
    return 0;
}

/*
 * Depthwise convolution weight gradient (stride 1, "same" zero padding) of channels-last float32
 * tensors: gw[c][i][j] = sum over n, h, w of g[n][h][w][c] * x[n][h + i*dh - ph][w + j*dw - pw][c].
 * oneDNN's kernel slows down sharply above a kernel width of 3 (docs/performance.md). Each
 * thread takes whole rows (n, h); every tap's products are summed in registers across a row
 * (16 channels at a time), in float per row and in double across rows.
 */
#define DW_TAP(WIDTH)                                                                    \
    do {                                                                                 \
        float v[WIDTH] = {0};                                                            \
        for (int64_t w = w0; w < w1; w++) {                                              \
            const float *gp = grow + w * C + cb, *xp = xrow + (w + off) * C + cb;        \
            for (int cc = 0; cc < WIDTH; cc++) v[cc] += gp[cc] * xp[cc];                 \
        }                                                                                \
        for (int cc = 0; cc < WIDTH; cc++) a[cb + cc] += v[cc];                          \
    } while (0)

CLONES static void dw_wgrad_rows(const float *restrict g, const float *restrict x, int64_t r0, int64_t r1,
                                 int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw, int64_t dh, int64_t dw,
                                 int64_t ph, int64_t pw, float *restrict fa, double *restrict acc) {
    int64_t taps = kh * kw * C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / H, h = r % H;
        const float *grow = g + r * W * C;
        for (int64_t t = 0; t < taps; t++) fa[t] = 0.f;
        for (int64_t i = 0; i < kh; i++) {
            int64_t hin = h + i * dh - ph;
            if (hin < 0 || hin >= H) continue;
            const float *xrow = x + (n * H + hin) * W * C;
            for (int64_t j = 0; j < kw; j++) {
                int64_t off = j * dw - pw;
                int64_t w0 = off < 0 ? -off : 0, w1 = off > 0 ? W - off : W;
                float *a = fa + (i * kw + j) * C;
                int64_t cb = 0;
                for (; cb + 16 <= C; cb += 16) DW_TAP(16);
                for (; cb + 8 <= C; cb += 8) DW_TAP(8);
                for (; cb + 4 <= C; cb += 4) DW_TAP(4);
                for (; cb < C; cb++) DW_TAP(1);
            }
        }
        for (int64_t t = 0; t < taps; t++) acc[t] += fa[t];
    }
}

/* gw: (C, 1, kh, kw) contiguous. g, x: (N, C, H, W) channels-last, same shape. */
int enas_dw_wgrad(const float *g, const float *x, float *gw, int64_t N, int64_t C, int64_t H, int64_t W,
                  int64_t kh, int64_t kw, int64_t dh, int64_t dw, int64_t ph, int64_t pw, int nt) {
    int64_t taps = kh * kw * C;
    double *part = calloc((size_t)nt * taps, sizeof(double));
    float *fa = malloc(sizeof(float) * (size_t)nt * taps);
    if (!part || !fa) { free(part); free(fa); return 1; }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        int64_t lo, hi;
        split(N * H, t, omp_get_num_threads(), &lo, &hi);
        dw_wgrad_rows(g, x, lo, hi, H, W, C, kh, kw, dh, dw, ph, pw, fa + (int64_t)t * taps, part + (int64_t)t * taps);
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t k = 0; k < kh * kw; k++) {
            double s = 0.0;
            for (int t = 0; t < nt; t++) s += part[(int64_t)t * taps + k * C + c];
            gw[c * kh * kw + k] = (float)s;
        }
    free(part);
    free(fa);
    return 0;
}
