/* Monte-Carlo π as a Hydra Compute WebAssembly module, in C (ABI: docs/wasm.md).
 *
 * The same generator and the same unit as the built-in `pi` kind and examples/wasm/pi.wat:
 * a unit is a block of 2^20 samples; sample i of `seed` is output i of SplitMix64 started
 * from `seed` (Stafford's Mix13 finaliser); x = z >> 33, y = z & (2^31 - 1); a hit when
 * x*x + y*y < 2^62, in unsigned 64-bit integers. So a job with `--merge sum -p seed=S
 * -p samples=N` answers hits and samples bit-identical to `hydracompute submit pi
 * --samples N --seed S`. Output of a chunk: two little-endian i64, hits and samples.
 *
 * Build (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32):
 *   clang --target=wasm32-wasi --sysroot=/usr/share/wasi-sysroot -O3 -nostartfiles \
 *       -Wl,--no-entry -o pi.wasm pi.c
 * Built natively (gcc -O3 -shared -fPIC), the same file gives `pi_count_hits` alone: the
 * kernel the benchmark compares the module with.
 */
#include <stdint.h>

#define GAMMA UINT64_C(0x9E3779B97F4A7C15)
#define MIX1 UINT64_C(0xBF58476D1CE4E5B9)
#define MIX2 UINT64_C(0x94D049BB133111EB)
#define BLOCK_SHIFT 20

/* Hits among samples start .. start + count - 1 of seed. */
int64_t pi_count_hits(uint64_t seed, uint64_t start, int64_t count)
{
    uint64_t state = seed + start * GAMMA; /* the generator after `start` steps */
    int64_t hits = 0;
    for (int64_t j = 0; j < count; j++) {
        state += GAMMA;
        uint64_t z = (state ^ (state >> 30)) * MIX1;
        z = (z ^ (z >> 27)) * MIX2;
        z ^= z >> 31;
        uint64_t x = z >> 33, y = z & UINT64_C(0x7FFFFFFF);
        hits += (x * x + y * y) < (UINT64_C(1) << 62);
    }
    return hits;
}

#ifdef __wasm__
__attribute__((import_module("hydra"), import_name("param_i64")))
int64_t hydra_param_i64(const char *name, int32_t name_len, int64_t fallback);
__attribute__((import_module("hydra"), import_name("output")))
void hydra_output(const void *data, int32_t len);

/* min(unit * 2^20, samples), unsigned: units past the samples count nothing. */
static uint64_t sample_index(uint64_t unit, uint64_t samples)
{
    uint64_t i = unit << BLOCK_SHIFT;
    return i > samples ? samples : i;
}

__attribute__((export_name("hydra_run")))
int32_t hydra_run(int64_t start, int64_t stop)
{
    uint64_t seed = (uint64_t)hydra_param_i64("seed", 4, 0);
    uint64_t samples = (uint64_t)hydra_param_i64("samples", 7, 0);
    uint64_t first = sample_index((uint64_t)start, samples);
    uint64_t last = sample_index((uint64_t)stop, samples);
    int64_t result[2] = {0, 0};
    if (last > first) {
        result[0] = pi_count_hits(seed, first, (int64_t)(last - first));
        result[1] = (int64_t)(last - first);
    }
    hydra_output(result, sizeof result);
    return 0;
}
#endif
