#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for the Adam / AdamW tests.

Writes ``__test__/fixtures/adam.json``: for every case in ``CASES`` (each in
float32 and float64) the initial parameters, the gradients fed at each of
``STEPS`` steps, the parameters after each step and the optimizer state at the
end, as produced by ``torch.optim.Adam`` / ``torch.optim.AdamW`` with
``fused=True`` on CPU (single-threaded).

Everything is seeded, so the output only depends on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures.py

Before writing, the fused trajectories are checked against the plain
``foreach=False`` implementation (the script fails if they disagree) and the
largest relative difference per case is printed.

JSON layout (read by the tests)::

    {"generator": "scripts/gen_fixtures.py", "torch": "<version>",
     "cases": [{"name", "optimizer", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "init": [[p0], [p1], [p2]],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...]}],
                "finalState": [{"step", "expAvg", "expAvgSq", "maxExpAvgSq"?} | null]}]}

Float32 values are stored as the (exact) double of the float32 value, so every
number round-trips exactly.
"""

import inspect
import os
import zlib

import torch

import fixture_json
from fixture_json import max_rel_diff, to_json_options, write_fixture

OUTPUT = os.path.join("__test__", "fixtures", "adam.json")
STEPS = 25
PARAM_SIZES = (1, 37, 99)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# fused-vs-foreach agreement: |a - b| <= RTOL * max(|a|, |b|, ABS_FLOOR)
RTOL = {"float32": 1e-5, "float64": 1e-12}

# Every case passes these to torch explicitly; the case overrides some of them.
BASE_OPTIONS = {
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, maximize=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                  amsgrad=False, maximize=False),
}
HAS_DECOUPLED = "decoupled_weight_decay" in inspect.signature(torch.optim.Adam).parameters

# name, optimizer, option overrides, optional param groups, optional grad skips
# groups: list of (param indices, per-group overrides)
# skip:   {param index: [1-based steps on which that param has grad None]}
CASES = [
    dict(name="adam-defaults", optimizer="Adam", options={}),
    dict(name="adam-l2", optimizer="Adam",
         options=dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
         skip={1: [3, 7]}),
    dict(name="adam-amsgrad", optimizer="Adam",
         options=dict(amsgrad=True, weight_decay=0.01)),
    dict(name="adam-maximize", optimizer="Adam",
         options=dict(maximize=True, lr=3e-3)),
    dict(name="adam-decoupled", optimizer="Adam",
         options=dict(decoupled_weight_decay=True, weight_decay=0.05),
         enabled=HAS_DECOUPLED),
    dict(name="adamw-defaults", optimizer="AdamW", options={}),
    dict(name="adamw-amsgrad", optimizer="AdamW",
         options=dict(lr=5e-3, weight_decay=0.1, amsgrad=True),
         skip={1: [3, 7]}),
    dict(name="adamw-low-beta1", optimizer="AdamW",
         options=dict(betas=(0.3, 0.9), eps=1e-3)),
    dict(name="adam-groups", optimizer="Adam", options={},
         groups=[([0, 1], dict(lr=1e-3)), ([2], dict(lr=1e-2, betas=(0.85, 0.95)))]),
    dict(name="adamw-groups", optimizer="AdamW", options={},
         groups=[([0, 1], dict(lr=1e-3)), ([2], dict(lr=1e-2, betas=(0.85, 0.95)))]),
]



# ---------------------------------------------------------------- inputs

def make_inputs(seed):
    """Initial params and per-step grads (float64, None = no grad), seeded."""
    return fixture_json.make_inputs(seed, PARAM_SIZES, STEPS, [(1e-20, 3), (1e3, 2)], [(1e-20, 2), (1e4, 1)])


# ---------------------------------------------------------------- running

def group_options(case):
    """[(param indices, complete explicit torch options)] for the case."""
    return fixture_json.group_options(case, BASE_OPTIONS[case["optimizer"]], len(PARAM_SIZES))


def run_case(optimizer, groups, init, grads, dtype, fused):
    """Run one optimizer; returns (params after each step, final state per param)."""
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    impl = dict(fused=True) if fused else dict(fused=False, foreach=False)
    torch_groups = [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]
    opt = getattr(torch.optim, optimizer)(torch_groups, **impl)

    trajectory = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.to(dtype)
        opt.step()
        trajectory.append([p.detach().clone() for p in params])

    state = []
    for p in params:
        s = opt.state.get(p)
        if not s:
            state.append(None)
            continue
        entry = {"step": int(s["step"].item()), "expAvg": s["exp_avg"].clone(),
                 "expAvgSq": s["exp_avg_sq"].clone()}
        if "max_exp_avg_sq" in s:
            entry["maxExpAvgSq"] = s["max_exp_avg_sq"].clone()
        state.append(entry)
    return trajectory, state


def check_against_foreach(case, groups, init, grads, dtype_name, fused_run):
    dtype = DTYPES[dtype_name]
    traj, state = fused_run
    ref_traj, ref_state = run_case(case["optimizer"], groups, init, grads, dtype, fused=False)
    rtol = RTOL[dtype_name]
    worst = max(max_rel_diff(a, b, rtol) for a, b in zip(traj, ref_traj))
    for s, r in zip(state, ref_state):
        assert (s is None) == (r is None)
        if s is None:
            continue
        assert s["step"] == r["step"], (s["step"], r["step"])
        keys = [k for k in s if k != "step"]
        assert keys == [k for k in r if k != "step"]
        worst = max(worst, max_rel_diff([s[k] for k in keys], [r[k] for k in keys], rtol))
    return worst


# ---------------------------------------------------------------- output

def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()))
    for i, steps in case.get("skip", {}).items():
        for s in steps:
            grads[s - 1][i] = None
    groups = group_options(case)

    fused_run = run_case(case["optimizer"], groups, init, grads, dtype, fused=True)
    worst = check_against_foreach(case, groups, init, grads, dtype_name, fused_run)
    traj, state = fused_run

    for i, steps in case.get("skip", {}).items():  # skipped steps don't count
        assert state[i]["step"] == STEPS - len(steps), state[i]["step"]

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
        "finalState": [None if s is None else
                       {k: (v if k == "step" else as_list(v)) for k, v in s.items()}
                       for s in state],
    }


def main():
    torch.set_num_threads(1)
    cases = []
    for case in CASES:
        if not case.get("enabled", True):
            print(f"skipping {case['name']}: not supported by torch {torch.__version__}")
            continue
        for dtype_name in DTYPES:
            worst, data = build_case(case, dtype_name)
            print(f"{data['name']:<24} fused vs foreach max rel diff: {worst:.3e}")
            cases.append(data)
    header = {"generator": "scripts/gen_fixtures.py", "torch": torch.__version__}
    write_fixture(OUTPUT, header, cases, 4_000_000)


if __name__ == "__main__":
    main()
