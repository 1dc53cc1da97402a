#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for bfloat16 optimizer state (``stateDtype: 'bfloat16'``).

Writes ``__test__/fixtures/bf16.json``: for Adam (AMSGrad off and on), AdamW, NAdam, RAdam,
Adamax and SGD with momentum (Nesterov off and on), float32 parameters of odd sizes in two param
groups, stepped ``STEPS`` times with their state held as ``torch.bfloat16`` tensors. Each step
widens the state to float32 (``.float()``, exact), puts it in ``opt.state[p]``, runs
``torch.optim.<Optimizer>(foreach=False)``'s step (the single-tensor implementation, PyTorch's
default on CPU) on the float32 parameters, and stores the new state back with
``.to(torch.bfloat16)`` (round to nearest, ties to even). That is fastoptim's definition of
bfloat16 state: the optimizer's float32 update, unchanged, between a widening and a rounding.

Everything is seeded, so the output only depends on the torch version. Regenerate from the
repository root with:

    python3 scripts/gen_fixtures_bf16.py

JSON layout (read by ``__test__/bf16.spec.ts``), as ``family.json``'s, with ``dtype`` float32
(the parameters') and ``finalState`` holding each bfloat16 buffer as its raw 16-bit patterns
(integers 0..65535, as fastoptim's Uint16Arrays hold them) beside ``step`` and ``muProduct``::

    {"generator": "scripts/gen_fixtures_bf16.py", "torch": "<version>",
     "cases": [{"name", "optimizer", "dtype", "groups", "init", "steps", "finalState"}]}
"""

import os

import torch

from fixture_json import camel, sprinkle, to_json_options, write_fixture

OUTPUT = os.path.join("__test__", "fixtures", "bf16.json")
STEPS = 12
PARAM_SIZES = (1, 19, 45, 131)
GROUPS = [([0, 1], {}), ([2, 3], dict(lr=3e-3))]

CASES = [
    dict(name="adam", optimizer="Adam", options=dict(lr=1e-2), skip={1: [3]}),
    dict(name="adam-amsgrad", optimizer="Adam", options=dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    dict(name="adamw", optimizer="AdamW", options=dict(lr=1e-2, betas=(0.8, 0.99))),
    dict(name="nadam", optimizer="NAdam", options=dict(lr=1e-2, weight_decay=1e-3)),
    dict(name="radam", optimizer="RAdam", options=dict(lr=1e-2)),
    dict(name="adamax", optimizer="Adamax", options=dict(lr=1e-2, weight_decay=1e-2)),
    dict(name="sgd-momentum", optimizer="SGD", options=dict(lr=1e-2, momentum=0.9, dampening=0.1)),
    dict(name="sgd-nesterov", optimizer="SGD", options=dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3)),
]

BUFFERS = {
    "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "NAdam": ("exp_avg", "exp_avg_sq"),
    "RAdam": ("exp_avg", "exp_avg_sq"),
    "Adamax": ("exp_avg", "exp_inf"),
    "SGD": ("momentum_buffer",),
}


def f32_list(t):
    return None if t is None else [float(x) for x in t.detach().to(torch.float64).reshape(-1).tolist()]


def bits(t):
    """A bfloat16 tensor's raw 16-bit patterns, as integers 0..65535."""
    return [int(x) & 0xFFFF for x in t.reshape(-1).view(torch.int16).tolist()]


def run_case(case, seed):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(n, generator=gen, dtype=torch.float32) for n in PARAM_SIZES]
    params = [p.clone().requires_grad_(False) for p in init]
    groups = [dict(params=[params[i] for i in idx], **over) for idx, over in GROUPS]
    cls = getattr(torch.optim, case["optimizer"])
    opt = cls(groups, foreach=False, **case["options"])
    names = BUFFERS[case["optimizer"]]
    held = [{} for _ in params]  # each parameter's state as bfloat16 tensors
    grads, traj = [], []
    for step in range(1, STEPS + 1):
        step_grads = []
        for i, p in enumerate(params):
            if step in case.get("skip", {}).get(i, []):
                p.grad = None
            else:
                g = torch.randn(p.numel(), generator=gen, dtype=torch.float64) * (0.1 + step % 4)
                sprinkle(g, gen, 1e-3, min(3, p.numel()))
                p.grad = g.to(torch.float32)
            step_grads.append(p.grad)
            for name, value in held[i].items():
                opt.state[p][name] = value.float()
        opt.step()
        for i, p in enumerate(params):
            for name in names:
                if name in opt.state[p] and opt.state[p][name] is not None:
                    held[i][name] = opt.state[p][name].to(torch.bfloat16)
        grads.append([f32_list(g) for g in step_grads])
        traj.append([p.detach().clone() for p in params])
    state = []
    for i, p in enumerate(params):
        entry = {}
        for key, value in opt.state[p].items():
            if key in names:
                entry[camel(key)] = bits(held[i][key])
            elif torch.is_tensor(value):
                entry[camel(key)] = float(value.item())
            else:
                entry[camel(key)] = float(value)
        state.append(entry)
    return {
        "init": [f32_list(p) for p in init],
        "steps": [{"grads": g, "params": [f32_list(p) for p in ps]} for g, ps in zip(grads, traj)],
        "finalState": state,
    }


def main():
    torch.set_num_threads(1)
    cases = []
    for k, case in enumerate(CASES):
        result = run_case(case, 1000 + k)
        options = to_json_options(case["options"])
        group_list = [{"params": idx, "options": {**options, **to_json_options(over)}} for idx, over in GROUPS]
        cases.append({"name": case["name"], "optimizer": case["optimizer"], "dtype": "float32", "groups": group_list,
                      "init": result["init"], "steps": result["steps"], "finalState": result["finalState"]})
    header = {"generator": "scripts/gen_fixtures_bf16.py", "torch": torch.__version__}
    write_fixture(OUTPUT, header, cases, 1_500_000)


if __name__ == "__main__":
    main()
