/* One-pass per-unit statistics of an activation viewed as [A, U, B] (contiguous).
 *
 * Per unit, over finite elements: sum x, sum min(x,0), sum x^2, sum min(x,0)^2,
 * count(x <= low), count(x >= high), min, max; non-finite elements are only counted.
 * The results are added into the caller's accumulators, laid out as actaudit's _Acc
 * keeps them: sums[6][U] (float64; rows sum, neg, sq, negsq, low, high), nonfinite[U]
 * (int64), min[U] and max[U] (float64).
 *
 * Each tensor is read once. Contiguous rows sum in the input precision over ROW_SEG
 * elements (vectorised; `omp simd` reductions need no -ffast-math), carried in float64
 * across segments; strided units (units last) sum in float64; counts are exact. Work is split over
 * rows (or over row groups) between the threads of the OpenMP runtime already loaded
 * by torch, so the kernel shares torch's pool instead of competing with it.
 * Plain C99; built by actaudit/backends/torch/native.py with the machine's compiler.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Rows are summed in the input precision over ROW_SEG elements (a few per SIMD lane), then in
 * float64: short float runs keep the sums of squares of units far from zero accurate enough for
 * the centred energies derived from them (E[z^2] - E[z]^2). Strided units sum in float64. */
#define ROW_SEG 128
#define SEG 1024
/* Below this many elements per thread a parallel region costs more than it saves. */
#define MIN_PER_THREAD (1 << 15)

typedef struct {
    double *sum, *neg, *sq, *negsq; /* U each */
    int64_t *lo, *hi, *nf;          /* U each */
    double *mn, *mx;                /* U each */
} part_t;

static int part_alloc(part_t *p, int64_t U)
{
    double *d = (double *)malloc(sizeof(double) * 6 * (size_t)U);
    int64_t *c = (int64_t *)calloc(3 * (size_t)U, sizeof(int64_t));
    if (!d || !c) { free(d); free(c); return -1; }
    p->sum = d; p->neg = d + U; p->sq = d + 2 * U; p->negsq = d + 3 * U; p->mn = d + 4 * U; p->mx = d + 5 * U;
    memset(d, 0, sizeof(double) * 4 * (size_t)U);
    for (int64_t u = 0; u < U; u++) { p->mn[u] = INFINITY; p->mx[u] = -INFINITY; }
    p->lo = c; p->hi = c + U; p->nf = c + 2 * U;
    return 0;
}

static void part_free(part_t *p) { free(p->sum); free(p->lo); }

/* Add a thread's partials into the caller's accumulators (one thread at a time). */
static void part_merge(const part_t *p, int64_t U, double *sums, int64_t *nonfinite, double *mn, double *mx)
{
    for (int64_t u = 0; u < U; u++) {
        sums[u] += p->sum[u];
        sums[U + u] += p->neg[u];
        sums[2 * U + u] += p->sq[u];
        sums[3 * U + u] += p->negsq[u];
        sums[4 * U + u] += (double)p->lo[u];
        sums[5 * U + u] += (double)p->hi[u];
        nonfinite[u] += p->nf[u];
        if (p->mn[u] < mn[u]) mn[u] = p->mn[u];
        if (p->mx[u] > mx[u]) mx[u] = p->mx[u];
    }
}

/* One element of unit u into the segment partials of the vectorised-across-units kernel. */
#define VEC_BODY(T, INF, LOAD)                                                                      \
    double v = (double)(LOAD);                                                                      \
    int fin = (v - v) == 0.0;                                                                       \
    double f = fin ? v : 0.0;                                                                       \
    double d = f < 0.0 ? f : 0.0;                                                                   \
    s[u] += f; q[u] += f * f; ng[u] += d; nq[u] += d * d;                                           \
    cl[u] += (fin && v <= (double)lo) ? 1.0 : 0.0;                                                  \
    ch[u] += (fin && v >= (double)hi) ? 1.0 : 0.0;                                                  \
    nf[u] += fin ? 0.0 : 1.0;                                                                       \
    double a = fin ? v : (double)INFINITY; mn[u] = a < mn[u] ? a : mn[u];                           \
    double b = fin ? v : -(double)INFINITY; mx[u] = b > mx[u] ? b : mx[u];

/* The kernels are written once per element type T (float, double). */
#define DEFINE_KERNELS(T, SUFFIX, INF)                                                              \
    /* One contiguous run of n elements of unit u. */                                               \
    static void run_##SUFFIX(const T *x, int64_t n, T lo, T hi, part_t *p, int64_t u)               \
    {                                                                                               \
        double S = 0, N = 0, Q = 0, NQ = 0;                                                         \
        int64_t CL = 0, CH = 0, NF = 0;                                                             \
        T mn = (T)p->mn[u], mx = (T)p->mx[u];                                                       \
        for (int64_t i0 = 0; i0 < n; i0 += ROW_SEG) {                                               \
            int64_t i1 = n - i0 < ROW_SEG ? n : i0 + ROW_SEG;                                       \
            T s = 0, ng = 0, q = 0, nq = 0;                                                         \
            int32_t cl = 0, ch = 0, nf = 0;                                                         \
            _Pragma("omp simd reduction(+:s,ng,q,nq,cl,ch,nf) reduction(min:mn) reduction(max:mx)") \
            for (int64_t i = i0; i < i1; i++) {                                                     \
                T v = x[i];                                                                         \
                int fin = (v - v) == (T)0;                                                          \
                T f = fin ? v : (T)0;                                                               \
                T d = f < (T)0 ? f : (T)0;                                                          \
                s += f; q += f * f; ng += d; nq += d * d;                                           \
                cl += fin & (v <= lo);                                                              \
                ch += fin & (v >= hi);                                                              \
                nf += !fin;                                                                         \
                T a = fin ? v : INF; mn = a < mn ? a : mn;                                          \
                T b = fin ? v : -INF; mx = b > mx ? b : mx;                                         \
            }                                                                                       \
            if (!isfinite(s) || !isfinite(q)) { /* finite values whose sums overflow T: redo in double */ \
                double s2 = 0, ng2 = 0, q2 = 0, nq2 = 0;                                            \
                for (int64_t i = i0; i < i1; i++) {                                                 \
                    double v = (double)x[i];                                                        \
                    if (!isfinite(v)) continue;                                                     \
                    s2 += v; q2 += v * v;                                                           \
                    if (v < 0) { ng2 += v; nq2 += v * v; }                                          \
                }                                                                                   \
                S += s2; N += ng2; Q += q2; NQ += nq2;                                              \
            } else {                                                                                \
                S += s; N += ng; Q += q; NQ += nq;                                                  \
            }                                                                                       \
            CL += cl; CH += ch; NF += nf;                                                           \
        }                                                                                           \
        p->sum[u] += S; p->neg[u] += N; p->sq[u] += Q; p->negsq[u] += NQ;                           \
        p->lo[u] += CL; p->hi[u] += CH; p->nf[u] += NF;                                             \
        p->mn[u] = mn; p->mx[u] = mx;                                                               \
    }                                                                                               \
                                                                                                    \
    /* Units strided by B (short rows, units last when B == 1): vectorised across units. */         \
    static void vec_##SUFFIX(const T *x, int64_t r0, int64_t r1, int64_t U, int64_t B, T lo, T hi,  \
                             part_t *p, double *seg)                                                \
    {                                                                                               \
        double *s = seg, *ng = seg + U, *q = seg + 2 * U, *nq = seg + 3 * U, *mn = seg + 4 * U,     \
               *mx = seg + 5 * U, *cl = seg + 6 * U, *ch = seg + 7 * U, *nf = seg + 8 * U;          \
        for (int64_t u = 0; u < U; u++) { mn[u] = p->mn[u]; mx[u] = p->mx[u]; }                     \
        for (int64_t g0 = r0; g0 < r1; g0 += SEG) {                                                 \
            int64_t g1 = r1 - g0 < SEG ? r1 : g0 + SEG;                                             \
            memset(s, 0, sizeof(double) * 4 * (size_t)U);                                           \
            memset(cl, 0, sizeof(double) * 3 * (size_t)U);                                          \
            for (int64_t r = g0; r < g1; r++) {                                                     \
                const T *xr = x + (r / B) * U * B + (r % B);                                        \
                if (B == 1) {                                                                       \
                    _Pragma("omp simd")                                                             \
                    for (int64_t u = 0; u < U; u++) { VEC_BODY(T, INF, xr[u]) }                     \
                } else {                                                                            \
                    _Pragma("omp simd")                                                             \
                    for (int64_t u = 0; u < U; u++) { VEC_BODY(T, INF, xr[u * B]) }                 \
                }                                                                                   \
            }                                                                                       \
            for (int64_t u = 0; u < U; u++) {                                                       \
                if (!isfinite(s[u]) || !isfinite(q[u])) { /* overflow in T: this unit again in double */ \
                    double s2 = 0, ng2 = 0, q2 = 0, nq2 = 0;                                        \
                    for (int64_t r = g0; r < g1; r++) {                                             \
                        double v = (double)x[(r / B) * U * B + (r % B) + u * B];                    \
                        if (!isfinite(v)) continue;                                                 \
                        s2 += v; q2 += v * v;                                                       \
                        if (v < 0) { ng2 += v; nq2 += v * v; }                                      \
                    }                                                                               \
                    s[u] = 0; ng[u] = 0; q[u] = 0; nq[u] = 0;                                       \
                    p->sum[u] += s2; p->neg[u] += ng2; p->sq[u] += q2; p->negsq[u] += nq2;          \
                }                                                                                   \
                p->sum[u] += s[u]; p->neg[u] += ng[u]; p->sq[u] += q[u]; p->negsq[u] += nq[u];      \
                p->lo[u] += (int64_t)cl[u]; p->hi[u] += (int64_t)ch[u]; p->nf[u] += (int64_t)nf[u]; \
            }                                                                                       \
        }                                                                                           \
        for (int64_t u = 0; u < U; u++) { p->mn[u] = mn[u]; p->mx[u] = mx[u]; }                     \
    }                                                                                               \
                                                                                                    \
    static int stats_##SUFFIX(const T *x, int64_t A, int64_t U, int64_t B, double low, double high, \
                              double *sums, int64_t *nonfinite, double *mn, double *mx, int threads) \
    {                                                                                               \
        const T lo = (T)low, hi = (T)high;                                                          \
        const int rows = B >= 16;                    /* reduce along contiguous rows of B */        \
        const int64_t items = rows ? A * U : A * B; /* a row, or a vector of U strided units */     \
        int err = 0;                                                                                \
        if (threads < 1) threads = 1;                                                               \
        if (threads > items) threads = (int)items;                                                  \
        if ((A * U * B) / threads < MIN_PER_THREAD) threads = (int)((A * U * B) / MIN_PER_THREAD) + 1; \
        if (threads > items) threads = (int)items;                                                  \
        _Pragma("omp parallel num_threads(threads) reduction(|:err)")                               \
        {                                                                                           \
            int t = 0, nt = 1;                                                                      \
            OMP_IDS(t, nt);                                                                         \
            int64_t i0 = items * t / nt, i1 = items * (t + 1) / nt;                                 \
            part_t p;                                                                               \
            if (part_alloc(&p, U) != 0) {                                                           \
                err = 1;                                                                            \
            } else {                                                                                \
                if (rows) {                                                                         \
                    for (int64_t i = i0; i < i1; i++)                                               \
                        run_##SUFFIX(x + i * B, B, lo, hi, &p, i % U);                              \
                } else {                                                                            \
                    double *seg = (double *)malloc(sizeof(double) * 9 * (size_t)U);                 \
                    if (!seg) err = 1;                                                              \
                    else vec_##SUFFIX(x, i0, i1, U, B, lo, hi, &p, seg);                            \
                    free(seg);                                                                      \
                }                                                                                   \
                if (!err) {                                                                         \
                    _Pragma("omp critical") part_merge(&p, U, sums, nonfinite, mn, mx);             \
                }                                                                                   \
                part_free(&p);                                                                      \
            }                                                                                       \
        }                                                                                           \
        return err;                                                                                 \
    }

#ifdef _OPENMP
#define OMP_IDS(t, nt) do { t = omp_get_thread_num(); nt = omp_get_num_threads(); } while (0)
#else
#define OMP_IDS(t, nt) do { t = 0; nt = 1; } while (0)
#endif

DEFINE_KERNELS(float, f32, INFINITY)
DEFINE_KERNELS(double, f64, (double)INFINITY)

/* dtype: 0 float32, 1 float64. Returns 0, or non-zero when memory ran out (nothing added then
 * only if no thread had merged; the caller treats any error as fatal for the batch). */
int actaudit_unit_stats(const void *x, int dtype, int64_t A, int64_t U, int64_t B, double low, double high,
                        double *sums, int64_t *nonfinite, double *mn, double *mx, int threads)
{
    if (A <= 0 || U <= 0 || B <= 0) return 0;
    if (dtype == 0) return stats_f32((const float *)x, A, U, B, low, high, sums, nonfinite, mn, mx, threads);
    if (dtype == 1) return stats_f64((const double *)x, A, U, B, low, high, sums, nonfinite, mn, mx, threads);
    return 2;
}

int actaudit_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int actaudit_kernel_version(void) { return 1; }
