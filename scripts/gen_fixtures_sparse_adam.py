#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for SparseAdam.

Writes ``__test__/fixtures/sparse-adam.json``: for every case in ``CASES`` (each in float32
and float64) the shapes and initial values of the parameters, the row-sparse gradient fed to
each parameter at each of ``STEPS`` steps (null where a parameter has no gradient that step),
the parameters after each step and the optimizer state at the end, as produced by
``torch.optim.SparseAdam`` on CPU, whose only implementation is ``_functional.sparse_adam``.
It also writes SparseAdam's defaults, read from the signature of
``torch.optim.SparseAdam.__init__``.

The parameters are embedding-like tables: a [50, 8] matrix (rows of 8), a flat [7] vector
(rows of one element) and a 3-D [6, 2, 3] tensor (rows of 6). Each step's gradient names a few
rows in no particular order, some of them more than once (PyTorch's ``coalesce()`` sums them),
some with values that are exactly 0 (a named row still decays its moments); some rows are never
named, some steps name no row at all (the step still counts), and some steps give a parameter
no gradient (it is skipped and its step does not count).

Everything is seeded, so the output only depends on the torch version. Regenerate from the
repository root with:

    python3 scripts/gen_fixtures_sparse_adam.py

Before writing, each float64 trajectory is checked against the equations written out plainly
here (Adam's moments and step on the rows named, duplicates summed), within 1e-12; the script
fails if they disagree.

JSON layout (the conventions of ``family.json``, plus shapes and sparse gradients)::

    {"generator": "scripts/gen_fixtures_sparse_adam.py", "torch": "<version>",
     "defaults": {"SparseAdam": {camelCase option: default}},
     "cases": [{"name", "optimizer": "SparseAdam", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "shapes": [[shape of p0], ...],
                "init": [[p0], [p1], ...],
                "steps": [{"grads": [{"indices": [...], "values": [...]} | null, ...],
                           "params": [[p0], ...]}],
                "finalState": [{"step", "expAvg", "expAvgSq"} | null]}]}

Every tensor is stored flat, in row-major (C) order; ``values`` holds one row per entry of
``indices``, in that order. ``step`` is stored as an integer. Float32 values are stored as the
(exact) double of the float32 value, so every number round-trips exactly. Inputs are rounded to
a few significant bits (initial values to 8, gradients to 4), which makes them exact in both
dtypes.
"""

import inspect
import json
import math
import os
import re

import torch

OUTPUT = os.path.join("__test__", "fixtures", "sparse-adam.json")
STEPS = 24
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SHAPES = [[50, 8], [7], [6, 2, 3]]
# Rows that no step of any case names, per parameter.
NEVER = [{0, 13, 27, 49}, {5}, {2}]

# name, option overrides, optional param groups, optional skips, optional empty steps.
# groups: list of (param indices, per-group overrides)
# skip:   {param index: [1-based steps on which that param has grad None]}
# empty:  {param index: [1-based steps on which that param's gradient names no row]}
CASES = [
    dict(name="sparse-adam-defaults", options={}),
    dict(name="sparse-adam-options", options=dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3)),
    dict(name="sparse-adam-maximize", options=dict(lr=0.01, maximize=True)),
    dict(name="sparse-adam-groups", options=dict(lr=0.02),
         groups=[([0], dict(betas=(0.8, 0.99))), ([1, 2], dict(lr=0.1, eps=1e-6))],
         skip={0: [3, 4], 1: [1, 10], 2: [24]}, empty={0: [7], 2: [2, 15]}),
]


def camel(name):
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def torch_defaults():
    """The keyword defaults of torch.optim.SparseAdam.__init__."""
    signature = inspect.signature(torch.optim.SparseAdam.__init__)
    return {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def round_bits(t, bits):
    """Round every element to `bits` significant bits (exact in float32 and float64)."""
    mantissa, exponent = torch.frexp(t)
    return torch.ldexp(torch.round(mantissa * 2 ** bits) / 2 ** bits, exponent.to(t.dtype))


def make_inputs(seed, case):
    """Initial params and per-step sparse grads (float64 values, exact in float32 too), seeded."""
    gen = torch.Generator().manual_seed(seed)
    init = [round_bits(torch.randn(shape, generator=gen, dtype=torch.float64), 8) for shape in SHAPES]
    grads = []
    for step in range(1, STEPS + 1):
        step_grads = []
        for i, shape in enumerate(SHAPES):
            if step in case.get("skip", {}).get(i, []):
                step_grads.append(None)
                continue
            rows = shape[0]
            row_shape = shape[1:]
            if step in case.get("empty", {}).get(i, []):
                count = 0
            else:
                count = int(torch.randint(1, max(2, rows // 3) + 1, (1,), generator=gen))
            allowed = [r for r in range(rows) if r not in NEVER[i]]
            picks = [allowed[int(k)] for k in torch.randint(0, len(allowed), (count,), generator=gen)]
            # A row named twice or three times, now and then.
            if count and step % 3 == 0:
                picks += [picks[0], picks[-1]]
            if count and step % 5 == 0:
                picks += [picks[0]]
            values = torch.randn([len(picks)] + row_shape, generator=gen, dtype=torch.float64)
            values *= torch.exp(2 * torch.randn([len(picks)] + [1] * len(row_shape), generator=gen, dtype=torch.float64))
            if len(picks) > 1 and step % 4 == 1:
                values[1] = 0.0  # a row named with a zero gradient
            step_grads.append((torch.tensor(picks, dtype=torch.int64), round_bits(values, 4)))
        grads.append(step_grads)
    return init, grads


def sparse(grad, shape, dtype):
    indices, values = grad
    return torch.sparse_coo_tensor(indices.unsqueeze(0), values.to(dtype), shape, dtype=dtype, check_invariants=True)


def group_options(case):
    """[(param indices, complete explicit torch options)] for the case."""
    base = {**torch_defaults(), **case["options"]}
    groups = case.get("groups") or [(list(range(len(SHAPES))), {})]
    return [(idx, {**base, **overrides}) for idx, overrides in groups]


def run_case(groups, init, grads, dtype):
    """Run SparseAdam; returns (params after each step, final state per param)."""
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    torch_groups = [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]
    opt = torch.optim.SparseAdam(torch_groups, **groups[0][1])
    trajectory = []
    for step_grads in grads:
        for p, g, shape in zip(params, step_grads, SHAPES):
            p.grad = None if g is None else sparse(g, shape, dtype)
        opt.step()
        trajectory.append([p.detach().clone() for p in params])
    saved = opt.state_dict()["state"]
    state = []
    for i in range(len(params)):
        entry = {}
        for key, value in saved.get(i, {}).items():
            entry[camel(key)] = int(value) if key == "step" else value.detach().clone()
        state.append(entry or None)
    return trajectory, state


def plain(groups, init, grads):
    """The equations written out plainly, in float64: the parameters after each step."""
    options = {i: opts for idx, opts in groups for i in idx}
    params = [p.clone().reshape(p.shape[0], -1) for p in init]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    steps = [0] * len(params)
    trajectory = []
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            if g is None:
                continue
            steps[i] += 1
            o = options[i]
            (b1, b2), lr, eps, t = o["betas"], o["lr"], o["eps"], steps[i]
            summed = {}
            for row, value in zip(g[0].tolist(), g[1].reshape(len(g[0]), params[i].shape[1])):
                summed[row] = summed[row] + value if row in summed else value.clone()
            for row, value in summed.items():
                grad = -value if o["maximize"] else value
                m[i][row] = b1 * m[i][row] + (1 - b1) * grad
                v[i][row] = b2 * v[i][row] + (1 - b2) * grad * grad
                step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                params[i][row] -= step_size * m[i][row] / (v[i][row].sqrt() + eps)
        trajectory.append([p.reshape(-1).clone() for p in params])
    return trajectory


def flat(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def main():
    torch.set_num_threads(1)
    cases = []
    for k, case in enumerate(CASES):
        init, grads = make_inputs(1000 + k, case)
        groups = group_options(case)
        for dtype_name, dtype in DTYPES.items():
            trajectory, state = run_case(groups, init, grads, dtype)
            if dtype == torch.float64:
                want = plain(groups, init, grads)
                worst = max(((a.reshape(-1) - b).abs() / b.abs().clamp(min=1e-3)).max().item()
                            for step_a, step_b in zip(trajectory, want) for a, b in zip(step_a, step_b))
                print(f"{case['name']}: PyTorch against the plain equations, max relative difference {worst:.2e}")
                assert worst <= 1e-12, worst
            cases.append({
                "name": f"{case['name']}-{dtype_name}",
                "optimizer": "SparseAdam",
                "dtype": dtype_name,
                "groups": [{"params": idx, "options": {camel(key): value for key, value in opts.items()}}
                           for idx, opts in groups],
                "shapes": SHAPES,
                "init": [flat(p.to(dtype)) for p in init],
                "steps": [{
                    "grads": [None if g is None else {"indices": g[0].tolist(), "values": flat(g[1].to(dtype))}
                              for g in step_grads],
                    "params": [flat(p) for p in params],
                } for step_grads, params in zip(grads, trajectory)],
                "finalState": [None if entry is None else {
                    key: value if key == "step" else flat(value) for key, value in entry.items()
                } for entry in state],
            })
    defaults = {camel(key): value for key, value in torch_defaults().items()}
    out = {"generator": "scripts/gen_fixtures_sparse_adam.py", "torch": torch.__version__,
           "defaults": {"SparseAdam": defaults}, "cases": cases}
    with open(OUTPUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUTPUT} ({os.path.getsize(OUTPUT)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
