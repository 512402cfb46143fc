"""The CPU's peak, against which benchmarks/bench_models.py's GFLOP/s are read: the core clock (measured), the
floating-point operations a core can issue per cycle (from the core's design), their product for every core torch
uses, and what a large matrix product reaches in fp32 and bf16 (the attainable peak: oneDNN's and MKL's best case).

    python benchmarks/cpu_peak.py [--size 4096]

The clock is measured by a chain of dependent integer additions (one cycle each on every x86 core), compiled with the
machine's C compiler; without one, only the matrix products are reported. FLOP per cycle per core, fp32 / bf16
(bf16 through AVX512-BF16's dot product, VDPBF16PS, two multiply-adds per fp32 lane):
Zen 4 (AMD family 25 with AVX-512): two 256-bit FMA pipes, 512-bit instructions in two halves: 32 / 64.
Zen 5 (AMD family 26): two 512-bit FMA pipes: 64 / 128.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

# (vendor, family) of a core with AVX-512 -> (fp32, bf16) FLOP per cycle per core
FLOP_PER_CYCLE = {("AuthenticAMD", 25): (32, 64), ("AuthenticAMD", 26): (64, 128)}
CHAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]), x = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)  /* 16 dependent additions: 16 cycles, the loop's own work runs beside them */
        __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                         "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                         "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0" : "+r"(x));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f %ld\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9, x);
    return 0;
}
"""


def clock_ghz() -> float | None:
    """The core clock in GHz from 16 dependent additions per iteration, the best of 5 runs; None without a C
    compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "chain.c", Path(tmp) / "chain"
        source.write_text(CHAIN)
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
        n = 100_000_000
        seconds = min(
            float(subprocess.run([str(binary), str(n)], capture_output=True, text=True, check=True).stdout.split()[0])
            for _ in range(5)
        )
    return 16 * n / seconds / 1e9


def cpu_id() -> tuple[str, int, bool]:
    """(vendor, family, AVX-512 present) from /proc/cpuinfo."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if key.strip() == "flags":
            break
    return fields.get("vendor_id", ""), int(fields.get("cpu family", 0)), "avx512f" in fields.get("flags", "")


def matmul_gflops(dtype: torch.dtype, size: int, rounds: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(rounds))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="side of the square matrices multiplied")
    args = parser.parse_args()
    cores = torch.get_num_threads()
    vendor, family, avx512 = cpu_id()
    ghz = clock_ghz()
    print(f"{vendor} family {family}, AVX-512 {'yes' if avx512 else 'no'}, {cores} threads")
    per_cycle = FLOP_PER_CYCLE.get((vendor, family)) if avx512 else None
    if ghz is not None:
        print(f"clock: {ghz:.2f} GHz (16 dependent additions per iteration)")
    if ghz is not None and per_cycle is not None:
        fp32, bf16 = (cores * ghz * flops for flops in per_cycle)
        print(
            f"peak from the design: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s "
            f"({per_cycle[0]} / {per_cycle[1]} FLOP per cycle per core x {cores} cores x {ghz:.2f} GHz)"
        )
    else:
        print("peak from the design: unknown for this CPU (the matrix products below are the attainable peak)")
    for dtype in (torch.float32, torch.bfloat16):
        print(
            f"{args.size}x{args.size} matrix product, {str(dtype)[6:]}: {matmul_gflops(dtype, args.size):.0f} GFLOP/s"
        )


if __name__ == "__main__":
    main()
