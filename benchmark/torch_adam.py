"""PyTorch's fused CPU Adam on the sizes and thread counts of `npm run bench`, run by hand.

    python3 benchmark/torch_adam.py            # writes benchmark/results/torch.json

fp32, default options (lr 1e-3, betas (0.9, 0.999), eps 1e-8), `torch.optim.Adam(fused=True)`,
on 1 thread and on every thread the process may use (`torch.set_num_threads`). Each size gets
its own parameters and gradients, made before timing; a step is timed in batches after a warm-up,
and the best batch counts, as in `cargo bench`. benchmark/report.ts puts these figures beside
fastoptim's in the same table.
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

SIZES = [1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26]
RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_SECONDS = float(os.environ.get("FASTOPTIM_BENCH_SECONDS", "1"))


def label(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return str(n)


def make(sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.rand(n, generator=generator, dtype=torch.float32) * 0.2 - 0.1)
        p.grad = torch.rand(n, generator=generator, dtype=torch.float32) * 0.2 - 0.1
        params.append(p)
    return params


def time_step(optimizer, elements: int) -> float:
    """Seconds per step: the best batch after a warm-up."""
    batch = max(1, min(10_000, 4_000_000 // max(elements, 1)))
    for _ in range(min(batch, 50)):
        optimizer.step()
    best = float("inf")
    started = time.perf_counter()
    batches = 0
    while batches < 3 or time.perf_counter() - started < BUDGET_SECONDS:
        t = time.perf_counter()
        for _ in range(batch):
            optimizer.step()
        best = min(best, (time.perf_counter() - t) / batch)
        batches += 1
    return best


def main():
    all_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    models = [(label(n), [n]) for n in SIZES] + [("200x1K", [1 << 10] * 200), ("1x200K", [200 << 10])]
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        for name, sizes in models:
            params = make(sizes)
            optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
            elements = sum(sizes)
            seconds = time_step(optimizer, elements)
            row = {
                "model": name,
                "params": elements,
                "tensors": len(sizes),
                "threads": threads,
                "usPerStep": seconds * 1e6,
                "gparamPerSecond": elements / seconds / 1e9,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            del params, optimizer
    RESULTS.mkdir(exist_ok=True)
    out = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "allThreads": all_threads,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    (RESULTS / "torch.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
