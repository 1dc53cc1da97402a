/*
 * The C references of `npm run bench` (benchmark/references.ts compiles this file at bench time with
 * `cc -O3 -march=native -fno-math-errno -fopenmp`): fp32 Adam as a plain C loop, and kernels that
 * move an optimizer's bytes with one addition each: `traffic` moves Adam's 28 bytes per parameter
 * (reads p, g, m, v; writes p, m, v), and `traffic:B:W` the bytes of an optimizer with B state
 * buffers read and written and W (0 or 1) only written (SGD with momentum, Adagrad, RMSprop and
 * Lion are `traffic:1:0`; ASGD before averaging starts, whose average is a copy of p, `traffic:0:1`,
 * that buffer stored around the caches where the processor can). Arrays are 64-byte aligned,
 * filled by the threads that later update them, and split among threads by OpenMP's static
 * schedule.
 *
 * It runs as a server: each line read from stdin is one measurement, answered by one line of JSON,
 * so that the benchmark alternates it with fastoptim and PyTorch without restarting anything:
 *
 *   <kernel: adam|traffic|traffic:B:W> <mode: back|train> <threads> <params> <seconds> <batch> <evict bytes> <train steps>
 *
 * "back" times steps back to back: a warm-up, then batches until `seconds` have passed (at least 3),
 * the best batch (of `batch` steps)'s time per step. "train" runs `train steps` steps, each after
 * adding one to every double in `evict bytes` of another buffer (`evict_caches`: a stand-in for a
 * training step's forward and backward pass, untimed), and reports the median step.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __SSE__
#include <immintrin.h>
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
  float *p, *g, *m, *v;
  long n;
  long t;
} Arrays;

/* The arguments of both kernels: the arrays of one tensor, its length and the step count. */
#define KERNEL_ARGS float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n, long t

/* PyTorch's Adam with its defaults (lr 1e-3, betas 0.9 and 0.999, eps 1e-8), one pass. */
static void adam(KERNEL_ARGS) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, lr = 1e-3f;
  const float step_size = lr / (1.0f - powf(b1, (float)t));
  const float bc2_sqrt = sqrtf(1.0f - powf(b2, (float)t));
#pragma omp parallel for simd schedule(static) aligned(p, g, m, v : 64)
  for (long i = 0; i < n; i++) {
    float gi = g[i];
    float mi = m[i] + (1.0f - b1) * (gi - m[i]);
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

/* The same traffic as `adam`, one addition per array written. */
static void traffic(KERNEL_ARGS) {
  (void)t;
#pragma omp parallel for simd schedule(static) aligned(p, g, m, v : 64)
  for (long i = 0; i < n; i++) {
    float gi = g[i];
    m[i] += gi;
    v[i] += gi;
    p[i] += gi;
  }
}

/* One state buffer read and written (SGD with momentum, Adagrad, RMSprop, Lion): 20 bytes. */
static void traffic_1_0(KERNEL_ARGS) {
  (void)t;
  (void)v;
#pragma omp parallel for simd schedule(static) aligned(p, g, m : 64)
  for (long i = 0; i < n; i++) {
    float gi = g[i];
    m[i] += gi;
    p[i] += gi;
  }
}

/* No state buffer (SGD without momentum): 12 bytes. */
static void traffic_0_0(KERNEL_ARGS) {
  (void)t;
  (void)m;
  (void)v;
#pragma omp parallel for simd schedule(static) aligned(p, g : 64)
  for (long i = 0; i < n; i++) p[i] += g[i];
}

/*
 * One state buffer only written, a copy of p (ASGD before averaging starts): 16 bytes. Its stores
 * go around the caches where the processor has streaming stores, so that they move 4 bytes, not 8
 * (a line read for ownership, then written back); fastoptim's ASGD does the same at this size.
 */
static void traffic_0_1(KERNEL_ARGS) {
  (void)t;
  (void)v;
  const long blocks = n / 16;
#pragma omp parallel for schedule(static)
  for (long b = 0; b < blocks; b++) {
    float *restrict pb = p + 16 * b, *restrict mb = m + 16 * b;
    const float *restrict gb = g + 16 * b;
#pragma omp simd aligned(pb, gb : 64)
    for (int i = 0; i < 16; i++) pb[i] += gb[i];
#if defined(__AVX512F__)
    _mm512_stream_ps(mb, _mm512_load_ps(pb));
#elif defined(__SSE__)
    for (int i = 0; i < 16; i += 4) _mm_stream_ps(mb + i, _mm_load_ps(pb + i));
#else
    for (int i = 0; i < 16; i++) mb[i] = pb[i];
#endif
  }
#ifdef __SSE__
  _mm_sfence();
#endif
  for (long i = 16 * blocks; i < n; i++) {
    p[i] += g[i];
    m[i] = p[i];
  }
}

/* The kernel a request names, or NULL. */
static void (*kernel_named(const char *name))(KERNEL_ARGS) {
  if (strcmp(name, "adam") == 0) return adam;
  if (strcmp(name, "traffic") == 0 || strcmp(name, "traffic:2:0") == 0) return traffic;
  if (strcmp(name, "traffic:1:0") == 0) return traffic_1_0;
  if (strcmp(name, "traffic:0:0") == 0) return traffic_0_0;
  if (strcmp(name, "traffic:0:1") == 0) return traffic_0_1;
  return NULL;
}

/*
 * The work between two training steps: adds one to each of the `n` doubles of `evict`, reading and
 * writing every cache line with ordinary loads and stores, as benchmark/references.ts does. Not
 * memset: a large memset is a string store that the processor may keep out of the caches, which
 * would evict little.
 */
static void evict_caches(double *evict, long n) {
  for (long i = 0; i < n; i++) evict[i] += 1.0;
  /* The buffer is never read: keep the compiler from dropping the loop. */
  __asm__ volatile("" : : "r"(evict) : "memory");
}

/* One step of `kernel` over `a`. */
static void step_with(void (*kernel)(KERNEL_ARGS), Arrays *a) {
  a->t++;
  kernel(a->p, a->g, a->m, a->v, a->n, a->t);
}

static float *aligned(long n) {
  size_t bytes = ((size_t)n * sizeof(float) + 63) / 64 * 64;
  float *out = aligned_alloc(64, bytes ? bytes : 64);
  if (!out) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return out;
}

/* Deterministic values in (-0.1, 0.1), written by the thread that will update them. */
static void fill(Arrays *a) {
  const long n = a->n;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) {
    uint32_t x = (uint32_t)i * 2654435761u + 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    a->p[i] = ((float)x / 4294967296.0f * 2.0f - 1.0f) * 0.1f;
    a->g[i] = ((float)(x * 747796405u) / 4294967296.0f * 2.0f - 1.0f) * 0.1f;
    a->m[i] = 0.0f;
    a->v[i] = 0.0f;
  }
}

static int by_value(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

int main(void) {
  char line[512];
  double *evict = NULL;
  long evict_len = 0;
  while (fgets(line, sizeof line, stdin)) {
    char kernel[16], mode[16];
    int threads;
    long n, batch, evict_bytes, train_steps;
    double seconds;
    if (sscanf(line, "%15s %15s %d %ld %lf %ld %ld %ld", kernel, mode, &threads, &n, &seconds, &batch, &evict_bytes,
               &train_steps) != 8 ||
        n < 0 || batch < 1 || evict_bytes < 0 || train_steps < 1 || threads < 1 || !kernel_named(kernel)) {
      printf("{\"error\":\"bad request\"}\n");
      fflush(stdout);
      continue;
    }
    void (*const update)(KERNEL_ARGS) = kernel_named(kernel);
    omp_set_num_threads(threads);
    Arrays a = {aligned(n), aligned(n), aligned(n), aligned(n), n, 0};
    fill(&a);
    double result;
    if (strcmp(mode, "train") == 0) {
      const long evict_doubles = evict_bytes / (long)sizeof(double);
      if (evict_len < evict_doubles) {
        free(evict);
        evict = calloc((size_t)evict_doubles, sizeof(double));
        if (!evict) {
          fprintf(stderr, "out of memory\n");
          exit(1);
        }
        evict_len = evict_doubles;
      }
      double *times = malloc(sizeof(double) * (size_t)train_steps);
      for (int k = 0; k < 3; k++) step_with(update, &a);
      for (long k = 0; k < train_steps; k++) {
        evict_caches(evict, evict_doubles);
        /* As references.ts does: the first reading brings the clock's code back, the second counts. */
        now();
        double started = now();
        step_with(update, &a);
        times[k] = now() - started;
      }
      qsort(times, (size_t)train_steps, sizeof(double), by_value);
      result = times[train_steps / 2];
      free(times);
    } else {
      for (long k = 0; k < (batch < 50 ? batch : 50); k++) step_with(update, &a);
      double best = INFINITY, started = now();
      for (int batches = 0; batches < 3 || now() - started < seconds; batches++) {
        double t = now();
        for (long k = 0; k < batch; k++) step_with(update, &a);
        double per = (now() - t) / (double)batch;
        best = per < best ? per : best;
      }
      result = best;
    }
    /* Keeps the updates observable, so that nothing is optimised away. */
    double check = 0;
    for (long i = 0; i < n; i += 4099) check += a.p[i];
    /*
     * Freed before the answer, not after: giving a large array back to the system keeps a core
     * busy for a tenth of a second or more at 64M parameters, which would slow whichever contender
     * the benchmark times next.
     */
    free(a.p);
    free(a.g);
    free(a.m);
    free(a.v);
    printf("{\"usPerStep\":%.4f,\"check\":%.6g}\n", result * 1e6, check);
    fflush(stdout);
  }
  free(evict);
  return 0;
}
