#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for Adadelta, ASGD and Rprop.

Writes ``__test__/fixtures/torch-more.json``: for every case in ``CASES`` (each in
float32 and float64) the initial parameters, the gradients fed at each of
``STEPS`` steps (null where a parameter has no gradient that step), the
parameters after each step and the optimizer state at the end, as produced by
``torch.optim.<Optimizer>`` with ``foreach=False`` on CPU (single-threaded):
the single-tensor implementation, which is what PyTorch runs on CPU by default.
It also writes each optimizer's defaults, read from the signature of
``torch.optim.<Optimizer>.__init__`` (options that only choose an
implementation, such as ``foreach`` or ``capturable``, are left out).

Everything is seeded, so the output only depends on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures_torch_more.py

Before writing, each trajectory is checked against PyTorch's other
implementation (``foreach=True``); the script fails if they disagree, and
prints the largest relative difference.

JSON layout (that of ``family.json``, read by ``__test__/torch-more.spec.ts``)::

    {"generator": "scripts/gen_fixtures_torch_more.py", "torch": "<version>",
     "defaults": {"Adadelta": {camelCase option: default}, ...},
     "cases": [{"name", "optimizer", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "init": [[p0], [p1], [p2]],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...]}],
                "finalState": [{"step", "eta"?, "mu"?, buffers by camelCase name}]}]}

``finalState`` holds what ``opt.state[p]`` holds; ASGD's ``eta`` and ``mu`` are
PyTorch's float32 scalars. Parameters after each step and state are stored as
the (exact) double of the value in its dtype, so they round-trip exactly. To keep
the file small, the initial parameters and the gradients are decimals of 4
significant digits (and the sprinkled ±1e-20 and ±1e4): PyTorch rounds each to the
case's dtype from its double, as ``Float32Array.from`` does, so both sides start
from the same bits.
"""

import os
import zlib

import torch

import fixture_json
from fixture_json import keyword_defaults, max_rel_diff, to_json_options, write_fixture

OUTPUT = os.path.join("__test__", "fixtures", "torch-more.json")
STEPS = 21
# One element, a few (scalar code only), and 35: two AVX-512 vectors of float32 (four of
# float64) and a tail.
PARAM_SIZES = (1, 7, 35)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# agreement between PyTorch's implementations: |a - b| <= RTOL * max(|a|, |b|, ABS_FLOOR)
RTOL = {"float32": 1e-5, "float64": 1e-12}
# PyTorch's foreach ASGD computes the next η from the float32 step tensor (λ·γ·t, the power and
# the quotient in float32), the single-tensor path in double from the step's value: the two
# η differ by float32 rounding whatever the parameters' dtype.
RTOL_FOREACH = {"ASGD": {"float32": 1e-5, "float64": 1e-5}}
OPTIMIZERS = ("Adadelta", "ASGD", "Rprop")
# Options that choose an implementation, not the numbers.
IMPLEMENTATION_OPTIONS = {"foreach", "fused", "capturable", "differentiable"}

# name, optimizer, option overrides, optional param groups, optional grad skips
# groups: list of (param indices, per-group overrides)
# skip:   {param index: [1-based steps on which that param has grad None]}
CASES = [
    dict(name="adadelta-defaults", optimizer="Adadelta", options={}),
    dict(name="adadelta-weight-decay", optimizer="Adadelta",
         options=dict(lr=0.5, rho=0.5, weight_decay=0.1), skip={1: [1, 4, 9]}),
    dict(name="adadelta-options", optimizer="Adadelta", options=dict(rho=0.99, eps=1e-3, maximize=True)),
    dict(name="adadelta-groups", optimizer="Adadelta", options={},
         groups=[([0, 1], dict(lr=0.1)), ([2], dict(lr=2.0, rho=0.3, weight_decay=1e-2))], skip={2: [2, 5]}),

    dict(name="asgd-defaults", optimizer="ASGD", options={}),
    # Averaging from step 7 on (t0 = 5), a steep step-size decay and weight decay.
    dict(name="asgd-averaging", optimizer="ASGD",
         options=dict(lr=0.05, lambd=0.5, alpha=1.0, t0=5.0, weight_decay=0.05), skip={1: [1, 6]}),
    dict(name="asgd-options", optimizer="ASGD", options=dict(lr=0.1, lambd=1e-2, alpha=0.5, t0=0.0, maximize=True)),
    dict(name="asgd-groups", optimizer="ASGD", options=dict(lambd=0.1),
         groups=[([0, 1], dict(lr=2e-2, t0=10.0)), ([2], dict(lr=0.2, alpha=0.25, t0=-3.0, weight_decay=1e-3))],
         skip={0: [1, 2, 8]}),

    dict(name="rprop-defaults", optimizer="Rprop", options={}),
    dict(name="rprop-options", optimizer="Rprop",
         options=dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True), skip={1: [2, 7]}),
    # The bounds bind at once: lr above the largest step size, then the smallest reached.
    dict(name="rprop-bounds", optimizer="Rprop", options=dict(lr=0.5, etas=(0.1, 3.0), step_sizes=(1e-2, 0.25))),
    dict(name="rprop-groups", optimizer="Rprop", options={},
         groups=[([0, 1], dict(lr=1e-3)), ([2], dict(lr=0.1, etas=(0.7, 1.1), step_sizes=(0.0, 1.0)))],
         skip={0: [3, 4], 2: [1]}),
]


def torch_defaults(optimizer):
    """The keyword defaults of torch.optim.<optimizer>.__init__ that affect the numbers."""
    return keyword_defaults(getattr(torch.optim, optimizer), IMPLEMENTATION_OPTIONS)


# ---------------------------------------------------------------- inputs

def short(t):
    """Each element rounded to 4 significant decimal digits (a double with a short repr)."""
    return torch.tensor([float(f"{x:.4g}") for x in t.tolist()], dtype=torch.float64)


def make_inputs(seed, repeat_signs):
    """Initial params and per-step grads (float64, each value `short`), seeded."""
    init, grads = fixture_json.make_inputs(
        seed, PARAM_SIZES, STEPS, [(1e-20, 2), (1e3, 1)], [(1e-20, 1), (1e4, 1)], shape=short)
    if repeat_signs:
        # For Rprop, which reacts to signs only: every third step repeats the signs of the step
        # before, so that step sizes grow for a while as well as shrink.
        for s in range(1, STEPS, 3):
            for i in range(len(PARAM_SIZES)):
                grads[s][i] = grads[s][i].abs() * grads[s - 1][i].sign().where(grads[s - 1][i] != 0, torch.ones(()))
    return init, grads


# ---------------------------------------------------------------- running

def group_options(case):
    """[(param indices, complete explicit torch options)] for the case."""
    return fixture_json.group_options(case, torch_defaults(case["optimizer"]), len(PARAM_SIZES))


def run_case(optimizer, groups, init, grads, dtype, impl):
    """Run one optimizer; returns (params after each step, final state per param)."""
    return fixture_json.run_torch(getattr(torch.optim, optimizer), groups, init, grads, dtype, impl)


def check_foreach(groups, optimizer, init, grads, dtype_name, reference):
    """The largest difference between the reference run and PyTorch's foreach implementation.

    Each element is measured against the largest magnitude it has had so far: ASGD's foreach
    path rounds p − η(g + λp) where the other rounds p(1 − λη) − ηg, and where a gradient of
    1e4 is undone by one of −1e4 the rounding of the large value stays behind in the small one.
    """
    traj, state = reference
    other_traj, other_state = run_case(optimizer, groups, init, grads, DTYPES[dtype_name], dict(foreach=True))
    rtol = RTOL_FOREACH.get(optimizer, RTOL)[dtype_name]
    floors = [p.to(DTYPES[dtype_name]).abs() for p in init]
    worst = 0.0
    for a, b in zip(traj, other_traj):
        floors = [torch.maximum(f, torch.maximum(x.abs(), y.abs())) for f, x, y in zip(floors, a, b)]
        worst = max(worst, max_rel_diff(a, b, rtol, floors))
    for i, (s, r) in enumerate(zip(state, other_state)):
        assert s.keys() == r.keys(), (s.keys(), r.keys())
        assert s.get("step") == r.get("step"), (s.get("step"), r.get("step"))
        keys = [k for k in s if k != "step"]
        # ASGD's average follows the parameter: the same floors.
        state_floors = [floors[i] if torch.is_tensor(s[k]) else torch.tensor(0.0) for k in keys]
        worst = max(worst, max_rel_diff([s[k] for k in keys], [r[k] for k in keys], rtol, state_floors))
    return worst


# ---------------------------------------------------------------- output


def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()), case["optimizer"] == "Rprop")
    fixture_json.drop_skipped(case, grads)
    groups = group_options(case)

    reference = run_case(case["optimizer"], groups, init, grads, dtype, dict(foreach=False))
    worst = check_foreach(groups, case["optimizer"], init, grads, dtype_name, reference)
    traj, state = reference

    for i, steps in case.get("skip", {}).items():  # skipped steps don't count
        assert state[i]["step"] == STEPS - len(steps), (state[i]["step"], STEPS - len(steps))

    as_list = lambda t: None if t is None else t.to(dtype).tolist()  # noqa: E731
    return worst, {
        "name": f"{case['name']}-{dtype_name}",
        "optimizer": case["optimizer"],
        "dtype": dtype_name,
        "groups": [{"params": idx, "options": to_json_options(opts)} for idx, opts in groups],
        # The decimals themselves: each side rounds them to the dtype.
        "init": [p.tolist() for p in init],
        "steps": [{"grads": [None if g is None else g.tolist() for g in step_grads],
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
            print(f"{data['name']:<40} max rel diff to foreach: {worst:.3e}")
            cases.append(data)
    covered = {c["optimizer"] for c in cases}
    assert covered == set(OPTIMIZERS), covered

    header = {
        "generator": "scripts/gen_fixtures_torch_more.py",
        "torch": torch.__version__,
        "defaults": {name: to_json_options(torch_defaults(name)) for name in OPTIMIZERS},
    }
    write_fixture(OUTPUT, header, cases, 700_000)


if __name__ == "__main__":
    main()
