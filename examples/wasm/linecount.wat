;; Counts the bytes, lines and the sum of the bytes of the job's input, as a Hydra Compute
;; WebAssembly module (ABI: docs/wasm.md). A unit is a block of 64 KiB of the input; units
;; past its end count nothing, so `--units` may round up.
;;
;; Output of a chunk: three little-endian i64, bytes, newlines and the sum of the bytes;
;; with `--merge sum` the job's answer is the whole input's.
(module
  (import "hydra" "input_read" (func $read (param i32 i64 i32) (result i32)))
  (import "hydra" "output" (func $output (param i32 i32)))
  (memory (export "memory") 2)

  (func (export "hydra_run") (param $start i64) (param $stop i64) (result i32)
    (local $unit i64) (local $got i32) (local $p i32) (local $byte i32)
    (local $bytes i64) (local $lines i64) (local $sum i64)
    (local.set $unit (local.get $start))
    (block $units_done
      (loop $next_unit
        (br_if $units_done (i64.ge_u (local.get $unit) (local.get $stop)))
        ;; the block goes to the second page of memory
        (local.set $got (call $read (i32.const 65536)
                                    (i64.shl (local.get $unit) (i64.const 16))
                                    (i32.const 65536)))
        (local.set $bytes (i64.add (local.get $bytes) (i64.extend_i32_u (local.get $got))))
        (local.set $p (i32.const 0))
        (block $block_done
          (loop $next_byte
            (br_if $block_done (i32.ge_u (local.get $p) (local.get $got)))
            (local.set $byte (i32.load8_u offset=65536 (local.get $p)))
            (local.set $sum (i64.add (local.get $sum) (i64.extend_i32_u (local.get $byte))))
            (local.set $lines
              (i64.add (local.get $lines)
                       (i64.extend_i32_u (i32.eq (local.get $byte) (i32.const 10)))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $next_byte)))
        (local.set $unit (i64.add (local.get $unit) (i64.const 1)))
        (br $next_unit)))
    (i64.store (i32.const 0) (local.get $bytes))
    (i64.store (i32.const 8) (local.get $lines))
    (i64.store (i32.const 16) (local.get $sum))
    (call $output (i32.const 0) (i32.const 24))
    (i32.const 0))
)
