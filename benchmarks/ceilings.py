"""The card's two ceilings, measured once per run: device-to-device copy bandwidth and bf16 matmul rate.

    python benchmarks/ceilings.py --out ceilings.json

Copy: `dst.copy_(src)` of 1 GiB, GB/s counting bytes read plus bytes written. Matmul: 8192^3 bf16 on random
normal data (zeros run faster), TFLOP/s = 2 n^3 / t. Both are the median of CUDA-event timings after a
warm-up. Without a GPU it measures the CPU with small sizes (a smoke test of the script, not a ceiling
anyone should quote).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _median_seconds(fn, *, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_gbps(device: str, nbytes: int) -> float:
    """Device-to-device copy bandwidth, bytes read plus bytes written per second, in GB/s."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = _median_seconds(lambda: dst.copy_(src), warmup=3, reps=20)
    return 2 * nbytes / seconds / 1e9


def matmul_tflops(device: str, n: int, dtype: torch.dtype) -> float:
    """n x n x n matrix product rate on random normal data, in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    seconds = _median_seconds(lambda: torch.mm(a, b, out=out), warmup=3, reps=10)
    return 2 * n**3 / seconds / 1e12


def measure() -> dict:
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    info: dict = {"device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if on_gpu:
        props = torch.cuda.get_device_properties(0)
        info.update(cuda=torch.version.cuda, sm_count=props.multi_processor_count,
                    memory_gib=props.total_memory / 2**30, l2_mib=getattr(props, "L2_cache_size", 0) / 2**20)
    copy_bytes, n, dtype = (2**30, 8192, torch.bfloat16) if on_gpu else (2**26, 1024, torch.float32)
    info["copy_bytes"] = copy_bytes
    info["copy_gbps"] = copy_gbps(device, copy_bytes)
    info["matmul"] = f"{n}^3 {str(dtype).removeprefix('torch.')}"
    info["matmul_tflops"] = matmul_tflops(device, n, dtype)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the numbers here as JSON")
    args = parser.parse_args()
    info = measure()
    print(f"{info['device']}: copy {info['copy_gbps']:.0f} GB/s, {info['matmul']} matmul "
          f"{info['matmul_tflops']:.1f} TFLOP/s")
    if args.out:
        args.out.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
