;; Monte-Carlo π as a Hydra Compute WebAssembly module (ABI: docs/wasm.md).
;;
;; The same generator and the same unit as the built-in `pi` kind: a unit is a block of
;; 2^20 samples, sample i of `seed` is output i of SplitMix64 started from `seed` (Stafford's
;; Mix13 finaliser), x = z >> 33, y = z & (2^31 - 1), a hit when x*x + y*y < 2^62. So a
;; job with `--merge sum --param seed=S --param samples=N` answers hits and samples
;; bit-identical to `hydracompute submit pi --samples N --seed S`.
;;
;; Output of a chunk: two little-endian i64, hits and samples.
(module
  (import "hydra" "param_i64" (func $param (param i32 i32 i64) (result i64)))
  (import "hydra" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "seed")
  (data (i32.const 8) "samples")

  ;; min(unit << 20, samples), unsigned
  (func $sample_index (param $unit i64) (param $samples i64) (result i64)
    (local $i i64)
    (local.set $i (i64.shl (local.get $unit) (i64.const 20)))
    (select (local.get $samples) (local.get $i)
            (i64.gt_u (local.get $i) (local.get $samples))))

  (func (export "hydra_run") (param $start i64) (param $stop i64) (result i32)
    (local $samples i64) (local $first i64) (local $last i64) (local $state i64)
    (local $z i64) (local $x i64) (local $y i64) (local $hits i64) (local $i i64)
    (local.set $samples (call $param (i32.const 8) (i32.const 7) (i64.const 0)))
    (local.set $first (call $sample_index (local.get $start) (local.get $samples)))
    (local.set $last (call $sample_index (local.get $stop) (local.get $samples)))
    ;; state = seed + first * gamma: the generator after `first` steps
    (local.set $state
      (i64.add (call $param (i32.const 0) (i32.const 4) (i64.const 0))
               (i64.mul (local.get $first) (i64.const 0x9E3779B97F4A7C15))))
    (local.set $i (local.get $first))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $i) (local.get $last)))
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (i64.mul (i64.xor (local.get $state)
                                        (i64.shr_u (local.get $state) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31))))
        (local.set $x (i64.shr_u (local.get $z) (i64.const 33)))
        (local.set $y (i64.and (local.get $z) (i64.const 0x7FFFFFFF)))
        (local.set $hits
          (i64.add (local.get $hits)
            (i64.extend_i32_u
              (i64.lt_u (i64.add (i64.mul (local.get $x) (local.get $x))
                                 (i64.mul (local.get $y) (local.get $y)))
                        (i64.const 0x4000000000000000)))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (i64.store (i32.const 16) (local.get $hits))
    (i64.store (i32.const 24) (i64.sub (local.get $last) (local.get $first)))
    (call $output (i32.const 16) (i32.const 16))
    (i32.const 0))
)
