/* C reference for hydracompute.kinds.mandelbrot_kernel.render_tile: same pixel convention,
 * same operation order, same counts.
 *
 * Pixel (i, j) of the width x height image samples
 *     re(c) = x_min + (i + 0.5) * ((x_max - x_min) / width)
 *     im(c) = y_max - (j + 0.5) * ((y_max - y_min) / height)
 * and its count is the number of iterations z <- z^2 + c (from z = 0) done while
 * |z|^2 <= 4, at most max_iter. Built by bench/bench_kernels.py with
 * gcc -O3 -march=native -ffp-contract=off (no FMA contraction: counts must match).
 *
 * Two versions: a plain scalar loop, and the numba kernel's algorithm -- LANES pixels in
 * lock-step, BATCH iterations per pass over the group, a mask freezing escaped lanes' counts,
 * the pixels' coordinates stepped along the tile's rows -- which gcc vectorises.
 *
 * The masks are int64 (0 or -1) here and, with AVX-512, booleans in the numba kernel, each
 * the form its compiler vectorises best: LLVM keeps numba's booleans in mask registers,
 * while gcc 12 does not vectorise this loop with _Bool masks at all (0.86 G iter/s against
 * 3.70 on the AMD EPYC machine, 2026-12-08; with the numba kernel's masked count too, and
 * with a _Bool mask only within the pass, 2.8-3.3).
 */
#include <stdint.h>

/* As the numba kernel chooses for the CPU it compiles for. */
#ifdef __AVX512F__
#define LANES 32
#define BATCH 2
#else
#define LANES 16
#define BATCH 4
#endif

static inline double pixel_re(double x_min, double dx, int64_t col)
{
    return x_min + ((double)col + 0.5) * dx;
}

static inline double pixel_im(double y_max, double dy, int64_t row)
{
    return y_max - ((double)row + 0.5) * dy;
}

/* out is tile_h x tile_w, row-major. */
void mandelbrot_scalar(double x_min, double x_max, double y_min, double y_max, int64_t width,
                       int64_t height, int64_t max_iter, int64_t col0, int64_t row0,
                       int64_t tile_w, int64_t tile_h, uint32_t *out)
{
    double dx = (x_max - x_min) / (double)width;
    double dy = (y_max - y_min) / (double)height;
    for (int64_t r = 0; r < tile_h; r++) {
        double ci = pixel_im(y_max, dy, row0 + r);
        for (int64_t k = 0; k < tile_w; k++) {
            double cr = pixel_re(x_min, dx, col0 + k);
            double zr = 0.0, zi = 0.0;
            int64_t n = 0;
            while (n < max_iter) {
                double zr2 = zr * zr, zi2 = zi * zi;
                if (zr2 + zi2 > 4.0)
                    break;
                zi = 2.0 * zr * zi + ci;
                zr = zr2 - zi2 + cr;
                n++;
            }
            out[r * tile_w + k] = (uint32_t)n;
        }
    }
}

void mandelbrot_lockstep(double x_min, double x_max, double y_min, double y_max, int64_t width,
                         int64_t height, int64_t max_iter, int64_t col0, int64_t row0,
                         int64_t tile_w, int64_t tile_h, uint32_t *out)
{
    double dx = (x_max - x_min) / (double)width;
    double dy = (y_max - y_min) / (double)height;
    int64_t n_pixels = tile_w * tile_h;
    int64_t n_batches = max_iter / BATCH;
    double zr[LANES], zi[LANES], cr[LANES], ci[LANES];
    int64_t alive[LANES], count[LANES];
    int64_t col = 0, row = 0; /* tile column and row of the group's first pixel */
    for (int64_t first = 0; first < n_pixels; first += LANES) {
        if (first + LANES <= n_pixels && col + LANES <= tile_w) {
            /* the whole group lies in one row */
            double c_im = pixel_im(y_max, dy, row0 + row);
            for (int k = 0; k < LANES; k++) {
                cr[k] = pixel_re(x_min, dx, col0 + col + k);
                ci[k] = c_im;
                alive[k] = -1;
            }
            col += LANES;
            if (col == tile_w) {
                col = 0;
                row++;
            }
        } else {
            for (int k = 0; k < LANES; k++) {
                /* lanes past the end of the tile repeat the last pixel, born dead */
                cr[k] = pixel_re(x_min, dx, col0 + col);
                ci[k] = pixel_im(y_max, dy, row0 + row);
                alive[k] = first + k < n_pixels ? -1 : 0;
                if (first + k < n_pixels - 1 && ++col == tile_w) {
                    col = 0;
                    row++;
                }
            }
        }
        for (int k = 0; k < LANES; k++) {
            zr[k] = zi[k] = 0.0;
            count[k] = 0;
        }
        int64_t any_alive = -1;
        for (int64_t batch = 0; batch < n_batches; batch++) {
            any_alive = 0;
            for (int k = 0; k < LANES; k++) {
                double a = zr[k], b = zi[k], c_re = cr[k], c_im = ci[k];
                int64_t live = alive[k], n = count[k];
                for (int t = 0; t < BATCH; t++) {
                    double a2 = a * a, b2 = b * b;
                    live &= -(int64_t)(a2 + b2 <= 4.0);
                    n -= live;
                    b = 2.0 * a * b + c_im;
                    a = a2 - b2 + c_re;
                }
                zr[k] = a;
                zi[k] = b;
                alive[k] = live;
                count[k] = n;
                any_alive |= live;
            }
            if (!any_alive)
                break;
        }
        if (any_alive) {
            for (int64_t t = n_batches * BATCH; t < max_iter; t++) {
                for (int k = 0; k < LANES; k++) {
                    double a = zr[k], b = zi[k];
                    double a2 = a * a, b2 = b * b;
                    int64_t live = alive[k] & -(int64_t)(a2 + b2 <= 4.0);
                    alive[k] = live;
                    count[k] -= live;
                    zi[k] = 2.0 * a * b + ci[k];
                    zr[k] = a2 - b2 + cr[k];
                }
            }
        }
        for (int k = 0; k < LANES && first + k < n_pixels; k++)
            out[first + k] = (uint32_t)count[k];
    }
}
