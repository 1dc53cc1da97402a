#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for SGD, RMSprop, Adagrad, Adamax, NAdam and RAdam.

Writes ``__test__/fixtures/family.json``: for every case in ``CASES`` (each in
float32 and float64) the initial parameters, the gradients fed at each of
``STEPS`` steps (null where a parameter has no gradient that step), the
parameters after each step and the optimizer state at the end, as produced by
``torch.optim.<Optimizer>`` with ``foreach=False`` on CPU (single-threaded):
the single-tensor implementation, which is what PyTorch runs on CPU by default.
It also writes each optimizer's defaults, read from the signature of
``torch.optim.<Optimizer>.__init__`` (options that only choose an
implementation, such as ``foreach`` or ``fused``, are left out).

Everything is seeded, so the output only depends on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures_family.py

Before writing, each trajectory is checked against PyTorch's other
implementations (``foreach=True``, and ``fused=True`` where the CPU has one);
the script fails if they disagree, and prints the largest relative difference.

JSON layout (read by ``__test__/family.spec.ts``)::

    {"generator": "scripts/gen_fixtures_family.py", "torch": "<version>",
     "defaults": {"SGD": {camelCase option: default}, ...},
     "cases": [{"name", "optimizer", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "init": [[p0], [p1], [p2]],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...]}],
                "finalState": [{"step"?, "muProduct"?, buffers by camelCase name}]}]}

``finalState`` holds what ``opt.state[p]`` holds: SGD keeps no step count, and
no state at all without momentum (an empty object). Float32 values are stored
as the (exact) double of the float32 value, so every number round-trips exactly.
"""

import os
import zlib

import torch

import fixture_json
from fixture_json import keyword_defaults, max_rel_diff, to_json_options, write_fixture

OUTPUT = os.path.join("__test__", "fixtures", "family.json")
STEPS = 22
PARAM_SIZES = (1, 19, 45)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# agreement between PyTorch's implementations: |a - b| <= RTOL * max(|a|, |b|, ABS_FLOOR)
RTOL = {"float32": 1e-5, "float64": 1e-12}
OPTIMIZERS = ("SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam")
# Options that choose an implementation, not the numbers.
IMPLEMENTATION_OPTIONS = {"foreach", "fused", "capturable", "differentiable"}
HAS_FUSED_CPU = {"SGD", "Adagrad"}

# name, optimizer, option overrides, optional param groups, optional grad skips
# groups: list of (param indices, per-group overrides)
# skip:   {param index: [1-based steps on which that param has grad None]}
CASES = [
    dict(name="sgd-defaults", optimizer="SGD", options={}),
    dict(name="sgd-momentum", optimizer="SGD", options=dict(lr=1e-2, momentum=0.9), skip={1: [1, 4, 9]}),
    dict(name="sgd-dampening", optimizer="SGD",
         options=dict(lr=5e-3, momentum=0.8, dampening=0.3, weight_decay=1e-2, maximize=True)),
    dict(name="sgd-nesterov", optimizer="SGD", options=dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    dict(name="sgd-weight-decay", optimizer="SGD", options=dict(lr=2e-2, weight_decay=0.1)),
    dict(name="sgd-groups", optimizer="SGD", options=dict(momentum=0.5),
         groups=[([0, 1], dict(lr=1e-3)), ([2], dict(lr=3e-2, nesterov=True))], skip={0: [2, 5]}),

    dict(name="rmsprop-defaults", optimizer="RMSprop", options={}),
    dict(name="rmsprop-centered", optimizer="RMSprop", options=dict(centered=True, lr=1e-3), skip={1: [3, 7]}),
    dict(name="rmsprop-momentum", optimizer="RMSprop", options=dict(momentum=0.9, lr=1e-3, weight_decay=1e-2)),
    dict(name="rmsprop-centered-momentum", optimizer="RMSprop",
         options=dict(centered=True, momentum=0.5, alpha=0.9, eps=1e-6, maximize=True)),
    dict(name="rmsprop-low-alpha", optimizer="RMSprop", options=dict(alpha=0.3, centered=True, lr=1e-3)),
    dict(name="rmsprop-groups", optimizer="RMSprop", options={},
         groups=[([0, 1], dict(lr=1e-3)), ([2], dict(lr=1e-2, momentum=0.9))], skip={2: [2, 6]}),

    dict(name="adagrad-defaults", optimizer="Adagrad", options={}),
    dict(name="adagrad-lr-decay", optimizer="Adagrad", options=dict(lr_decay=0.1, weight_decay=0.05), skip={1: [1, 5]}),
    dict(name="adagrad-initial-accumulator", optimizer="Adagrad",
         options=dict(initial_accumulator_value=0.1, eps=1e-3, maximize=True)),
    dict(name="adagrad-groups", optimizer="Adagrad", options=dict(initial_accumulator_value=0.5),
         groups=[([0, 1], dict(lr=1e-2)), ([2], dict(lr=1e-1, lr_decay=0.01))], skip={0: [3, 4]}),

    dict(name="adamax-defaults", optimizer="Adamax", options={}),
    dict(name="adamax-options", optimizer="Adamax",
         options=dict(weight_decay=0.1, maximize=True, betas=(0.3, 0.9), eps=1e-3), skip={1: [2, 8]}),
    dict(name="adamax-groups", optimizer="Adamax", options={},
         groups=[([0, 1], dict(lr=2e-3)), ([2], dict(lr=2e-2, betas=(0.85, 0.95)))], skip={2: [1, 10]}),

    dict(name="nadam-defaults", optimizer="NAdam", options={}),
    dict(name="nadam-l2", optimizer="NAdam", options=dict(weight_decay=0.1, lr=1e-2), skip={1: [3, 7]}),
    dict(name="nadam-decoupled", optimizer="NAdam",
         options=dict(weight_decay=0.05, decoupled_weight_decay=True, momentum_decay=1e-2)),
    dict(name="nadam-options", optimizer="NAdam", options=dict(betas=(0.3, 0.9), eps=1e-3, maximize=True)),
    dict(name="nadam-groups", optimizer="NAdam", options={},
         groups=[([0, 1], dict(lr=2e-3)), ([2], dict(lr=2e-2, momentum_decay=0.0))], skip={0: [2, 9]}),

    dict(name="radam-defaults", optimizer="RAdam", options={}),
    dict(name="radam-l2", optimizer="RAdam", options=dict(weight_decay=0.1, lr=1e-2), skip={1: [3, 7]}),
    dict(name="radam-decoupled", optimizer="RAdam", options=dict(weight_decay=0.05, decoupled_weight_decay=True)),
    dict(name="radam-options", optimizer="RAdam", options=dict(betas=(0.8, 0.9), eps=1e-3, maximize=True)),
    dict(name="radam-groups", optimizer="RAdam", options={},
         groups=[([0, 1], dict(lr=1e-3)), ([2], dict(lr=1e-2, betas=(0.5, 0.5)))], skip={2: [4, 5]}),
]


def torch_defaults(optimizer):
    """The keyword defaults of torch.optim.<optimizer>.__init__ that affect the numbers."""
    return keyword_defaults(getattr(torch.optim, optimizer), IMPLEMENTATION_OPTIONS)


# ---------------------------------------------------------------- inputs


def make_inputs(seed):
    """Initial params and per-step grads (float64), seeded."""
    return fixture_json.make_inputs(seed, PARAM_SIZES, STEPS, [(1e-20, 3), (1e3, 2)], [(1e-20, 2), (1e4, 1)])


# ---------------------------------------------------------------- running

def group_options(case):
    """[(param indices, complete explicit torch options)] for the case."""
    groups = fixture_json.group_options(case, torch_defaults(case["optimizer"]), len(PARAM_SIZES))
    # PyTorch's Adagrad ignores a group's own initial_accumulator_value (it reads the
    # constructor's), while the facade honours it: keep the cases to where both agree.
    assert all("initial_accumulator_value" not in overrides for _, overrides in case.get("groups") or []), case["name"]
    return groups


def run_case(optimizer, groups, init, grads, dtype, impl):
    """Run one optimizer; returns (params after each step, final state per param)."""
    return fixture_json.run_torch(getattr(torch.optim, optimizer), groups, init, grads, dtype, impl)


def check_other_implementations(case, groups, init, grads, dtype_name, reference):
    """The largest difference between the reference run and PyTorch's other implementations."""
    dtype = DTYPES[dtype_name]
    traj, state = reference
    others = [dict(foreach=True)]
    # Fused SGD cannot start a momentum buffer for a parameter that missed the first step.
    if case["optimizer"] in HAS_FUSED_CPU and not case.get("skip"):
        others.append(dict(fused=True))
    worst = 0.0
    for impl in others:
        other_traj, other_state = run_case(case["optimizer"], groups, init, grads, dtype, impl)
        rtol = RTOL[dtype_name]
        worst = max(worst, max(max_rel_diff(a, b, rtol) for a, b in zip(traj, other_traj)))
        for s, r in zip(state, other_state):
            assert s.keys() == r.keys(), (impl, s.keys(), r.keys())
            assert s.get("step") == r.get("step"), (impl, s.get("step"), r.get("step"))
            keys = [k for k in s if k != "step"]
            worst = max(worst, max_rel_diff([s[k] for k in keys], [r[k] for k in keys], rtol))
    return worst


# ---------------------------------------------------------------- output


def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()))
    fixture_json.drop_skipped(case, grads)
    groups = group_options(case)

    reference = run_case(case["optimizer"], groups, init, grads, dtype, dict(foreach=False))
    worst = check_other_implementations(case, groups, init, grads, dtype_name, reference)
    traj, state = reference

    for i, steps in case.get("skip", {}).items():  # skipped steps don't count
        if "step" in state[i]:
            expected = STEPS - len(steps)
            assert state[i]["step"] == expected, (state[i]["step"], expected)

    as_list = lambda t: None if t is None else t.to(dtype).tolist()  # noqa: E731
    return worst, {
        "name": f"{case['name']}-{dtype_name}",
        "optimizer": case["optimizer"],
        "dtype": dtype_name,
        "groups": [{"params": idx, "options": to_json_options(opts)} for idx, opts in groups],
        "init": [as_list(p) for p in init],
        "steps": [{"grads": [as_list(g) for g in step_grads],
                   "params": [as_list(p) for p in params]}
                  for step_grads, params in zip(grads, traj)],
        "finalState": [{k: as_list(v) if torch.is_tensor(v) else v for k, v in s.items()} for s in state],
    }


def main():
    torch.set_num_threads(1)
    cases = []
    for case in CASES:
        for dtype_name in DTYPES:
            worst, data = build_case(case, dtype_name)
            print(f"{data['name']:<40} max rel diff to other implementations: {worst:.3e}")
            cases.append(data)
    covered = {c["optimizer"] for c in cases}
    assert covered == set(OPTIMIZERS), covered

    header = {
        "generator": "scripts/gen_fixtures_family.py",
        "torch": torch.__version__,
        "defaults": {name: to_json_options(torch_defaults(name)) for name in OPTIMIZERS},
    }
    write_fixture(OUTPUT, header, cases, 4_000_000)


if __name__ == "__main__":
    main()
