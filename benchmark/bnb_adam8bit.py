"""bitsandbytes' CPU Adam8bit (and fp32 torch.optim.Adam, fused, beside it), timed step by step.

    python3 benchmark/bnb_adam8bit.py [sizes...]      # default 1k 64k 1m 4m 16m 64m

One JSON line per size and optimizer, as benchmark/torch_reference.py answers:

    {"optimizer": "Adam8bit", "reference": "bitsandbytes.optim.Adam8bit (CPU)", "threads": 2,
     "params": 4194304, "seconds": 0.05, "gparamsPerSecond": 0.08}

A warm-up step, then steps back to back until about 2 seconds have passed (at least 3), the best
step's time. Parameters and gradients are fp32, made before timing; `torch.set_num_threads` from
FASTOPTIM_THREADS (default: every core), as the suite sets it.
"""

import json
import os
import sys
import time

import torch


def make(n):
    generator = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.rand(n, generator=generator, dtype=torch.float32) * 0.2 - 0.1)
    p.grad = torch.rand(n, generator=generator, dtype=torch.float32) * 0.02 - 0.01
    return [p]


def best_step(optimizer, seconds=2.0):
    optimizer.step()
    best, started, count = float("inf"), time.perf_counter(), 0
    while count < 3 or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        optimizer.step()
        best = min(best, time.perf_counter() - t)
        count += 1
    return best


def size(text):
    text = text.lower()
    scale = {"k": 1 << 10, "m": 1 << 20}.get(text[-1], 1)
    return int(text.rstrip("km")) * scale


def main():
    import bitsandbytes as bnb

    threads = int(os.environ.get("FASTOPTIM_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    sizes = [size(a) for a in sys.argv[1:]] or [size(s) for s in ("1k", "64k", "1m", "4m", "16m", "64m")]
    for n in sizes:
        for name, reference, make_optimizer in (
            ("Adam8bit", "bitsandbytes.optim.Adam8bit (CPU)", lambda p: bnb.optim.Adam8bit(p)),
            ("Adam", "torch.optim.Adam, fused", lambda p: torch.optim.Adam(p, fused=True)),
        ):
            seconds = best_step(make_optimizer(make(n)))
            print(json.dumps({"optimizer": name, "reference": reference, "threads": threads, "params": n,
                              "seconds": seconds, "gparamsPerSecond": n / seconds / 1e9}), flush=True)


if __name__ == "__main__":
    main()
