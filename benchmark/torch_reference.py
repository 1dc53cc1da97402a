"""PyTorch's side of `npm run bench`: each optimizer's PyTorch counterpart, timed as fastoptim is.

    python3 benchmark/torch_reference.py       # a server: one JSON request a line on stdin

benchmark/references.ts starts it once and alternates its measurements with fastoptim's and the
C kernels', so that all of them meet the same machine. A request names the fastoptim optimizer,
the mode, the threads (`torch.set_num_threads`) and the size; the answer is one line of JSON:

    {"optimizer": "Adam", "mode": "back", "threads": 2, "params": 4194304, "seconds": 1,
     "batch": 1, "evictBytes": 33554432, "trainSteps": 100}

The counterpart is the one the registry names (torch.optim's class, lion_pytorch's Lion,
schedulefree's classes), with its fused CPU path where PyTorch has one (SGD, Adam, AdamW, Adagrad)
and its foreach path otherwise; options are both libraries' defaults (SGD with momentum 0.9, as the
suite times it), on fp32 parameters made before timing. "back" times steps back to back: a warm-up,
then batches of `batch` steps until `seconds` have passed (at least 3), the best batch's time
per step. "train" runs
`trainSteps` steps, each after adding one to every float64 in `evictBytes` of a numpy buffer on
this thread (a stand-in for a training step's forward and backward pass, untimed; ordinary loads
and stores, as benchmark/references.ts does, not a fill, which the processor may keep out of the
caches), and reports the median step.
"""

import json
import os
import platform
import sys
import time

import torch

FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
OPTIONS = {"SGD": {"momentum": 0.9}}


def counterpart(name: str, params):
    """The optimizer `name` names in PyTorch's world, and which of its code paths runs."""
    options = dict(OPTIONS.get(name, {}))
    if name == "Lion":
        from lion_pytorch import Lion

        return Lion(params, use_triton=False), "lion_pytorch.Lion"
    if name in ("AdamWScheduleFree", "SGDScheduleFree"):
        import schedulefree

        optimizer = getattr(schedulefree, name)(params, foreach=True, **options)
        optimizer.train()
        return optimizer, f"schedulefree.{name}, foreach"
    path = "fused" if name in FUSED else "foreach"
    return getattr(torch.optim, name)(params, **{path: True}, **options), f"torch.optim.{name}, {path}"


def make(n: int):
    generator = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.rand(n, generator=generator, dtype=torch.float32) * 0.2 - 0.1)
    p.grad = torch.rand(n, generator=generator, dtype=torch.float32) * 0.2 - 0.1
    return [p]


def back_to_back(step, batch: int, seconds: float) -> float:
    for _ in range(min(batch, 50)):
        step()
    best = float("inf")
    started = time.perf_counter()
    batches = 0
    while batches < 3 or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        for _ in range(batch):
            step()
        best = min(best, (time.perf_counter() - t) / batch)
        batches += 1
    return best


def training_loop(step, evict_bytes: int, steps: int) -> float:
    import numpy

    evict = numpy.zeros(evict_bytes // 8, dtype=numpy.float64)
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        numpy.add(evict, 1.0, out=evict)
        # As references.ts does: the first reading brings the clock's code back, the second counts.
        time.perf_counter()
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure(request):
    torch.set_num_threads(request["threads"])
    params = make(request["params"])
    optimizer, path = counterpart(request["optimizer"], params)
    if request["mode"] == "train":
        seconds = training_loop(optimizer.step, request["evictBytes"], request["trainSteps"])
    else:
        seconds = back_to_back(optimizer.step, request["batch"], request["seconds"])
    return {"usPerStep": seconds * 1e6, "path": path}


def main():
    hello = {"torch": torch.__version__, "python": platform.python_version(), "pid": os.getpid()}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = measure(json.loads(line))
        except Exception as error:  # reported to the benchmark as this case's note
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
