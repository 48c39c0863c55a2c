/* C reference for hydracompute.kinds.pi_kernel.count_hits: same generator, same count.
 *
 * Sample i of seed is output i of SplitMix64 started from state seed (Stafford Mix13
 * finaliser); x = z >> 33, y = z & (2^31 - 1); a hit when x*x + y*y < 2^62.
 * Built by bench/bench_kernels.py with gcc -O3 -march=native -ffp-contract=off.
 */
#include <stdint.h>

#define GAMMA UINT64_C(0x9E3779B97F4A7C15)
#define MIX1 UINT64_C(0xBF58476D1CE4E5B9)
#define MIX2 UINT64_C(0x94D049BB133111EB)

/* Hits among samples start .. start + count - 1 of seed. */
int64_t pi_count_hits(uint64_t seed, uint64_t start, int64_t count)
{
    uint64_t state = seed + start * GAMMA;
    int64_t hits = 0;
    for (int64_t j = 0; j < count; j++) {
        state += GAMMA;
        uint64_t z = (state ^ (state >> 30)) * MIX1;
        z = (z ^ (z >> 27)) * MIX2;
        z ^= z >> 31;
        /* 32-bit operands so gcc emits a 32x32->64 multiply (vpmuludq) for the squares;
         * the products are the same as in 64-bit arithmetic since x, y < 2^31. */
        uint32_t x = (uint32_t)(z >> 33);
        uint32_t y = (uint32_t)z & UINT32_C(0x7FFFFFFF);
        hits += ((uint64_t)x * x + (uint64_t)y * y) < (UINT64_C(1) << 62);
    }
    return hits;
}
