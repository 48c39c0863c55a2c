/* Word count of the job's input as a Hydra Compute WebAssembly module, in C (ABI:
 * docs/wasm.md): the bytes, lines (newline characters) and words of the input, where a
 * word is a maximal run of bytes other than ASCII whitespace (space, \t, \n, \v, \f, \r),
 * as Python's `bytes.split()` and `wc` in the C locale count them.
 *
 * A unit is a block of 64 KiB of the input; units past its end count nothing, so `--units`
 * may round up. A word is counted in the block holding its first byte, so each chunk reads
 * the byte before its first block to know whether a word starts there: the counts add up
 * exactly over any chunking. Output of a chunk: three little-endian i64, bytes, lines and
 * words; with `--merge sum` the job's answer is the whole input's.
 *
 * Build: clang --target=wasm32-wasi --sysroot=/usr/share/wasi-sysroot -O3 -nostartfiles \
 *            -Wl,--no-entry -o wordcount.wasm wordcount.c
 */
#include <stdint.h>

#define BLOCK 65536

__attribute__((import_module("hydra"), import_name("input_read")))
int32_t hydra_input_read(void *dst, int64_t offset, int32_t len);
__attribute__((import_module("hydra"), import_name("output")))
void hydra_output(const void *data, int32_t len);

static unsigned char block[BLOCK];

static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

__attribute__((export_name("hydra_run")))
int32_t hydra_run(int64_t start, int64_t stop)
{
    int64_t counts[3] = {0, 0, 0}; /* bytes, lines, words */
    int previous_is_space = 1;     /* the start of the input, or the byte before the chunk */
    if (start > 0) {
        unsigned char before;
        if (hydra_input_read(&before, start * BLOCK - 1, 1) == 1)
            previous_is_space = is_space(before);
    }
    for (int64_t unit = start; unit < stop; unit++) {
        int32_t got = hydra_input_read(block, unit * BLOCK, BLOCK);
        if (got <= 0)
            break;
        counts[0] += got;
        for (int32_t p = 0; p < got; p++) {
            int space = is_space(block[p]);
            counts[1] += block[p] == '\n';
            counts[2] += !space && previous_is_space;
            previous_is_space = space;
        }
    }
    hydra_output(counts, sizeof counts);
    return 0;
}
