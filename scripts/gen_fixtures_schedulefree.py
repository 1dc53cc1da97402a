#!/usr/bin/env python3
"""Generate reference trajectories for Schedule-Free AdamW and SGD (pip install schedulefree).

Writes ``__test__/fixtures/schedulefree.json``: for every case in ``CASES`` (each
in float32 and float64) the initial parameters, the gradients fed at each of
``STEPS`` steps (null where a parameter has no gradient that step), the
parameters after each step, the parameters after ``eval()`` (the average x) and
after ``train()`` again where a case switches modes after a step, and at the
end the state of every parameter and of every group, as produced by the
``schedulefree`` package's ``AdamWScheduleFree`` and ``SGDScheduleFree`` (the
plain classes, not the ``*Closure``, ``*Paper`` or ``*Reference`` ones) on CPU,
single-threaded, with ``foreach=False``. Every case calls ``train()`` before its
first step, as the package requires, and ends with ``eval()``.

It also writes each optimizer's defaults, read from the signature of its
``__init__`` (``foreach``, which only chooses an implementation, left out), and
the group state the package keeps in its ``defaults`` beside them (``k``,
``train_mode``, ``weight_sum``, ``lr_max``, ``scheduled_lr``).

Everything is seeded, so the output only depends on the torch and schedulefree
versions. Regenerate from the repository root with:

    pip install schedulefree
    python3 scripts/gen_fixtures_schedulefree.py

Before writing, each trajectory is checked against the package's other
implementation (``foreach=True``, its default); the script fails if they
disagree, and prints the largest relative difference.

JSON layout (read by ``__test__/schedulefree.spec.ts``)::

    {"generator": "scripts/gen_fixtures_schedulefree.py", "torch": "<version>",
     "schedulefree": "<version>",
     "defaults": {"AdamWScheduleFree": {camelCase option: default}, ...},
     "groupState": {"AdamWScheduleFree": {camelCase name: initial value}, ...},
     "cases": [{"name", "optimizer", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "init": [[p0], [p1], [p2]],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...],
                           "eval"?: [[x0], ...], "train"?: [[y0], ...]}],
                "finalState": [{"z", "expAvgSq"?} | null],
                "finalGroups": [{"k", "trainMode", "weightSum", "lrMax", "scheduledLr"}]}]}

``eval`` holds the parameters right after ``eval()`` following that step,
``train`` right after the ``train()`` that follows it; the last step has
``eval`` only. Float32 values are stored as the (exact) double of the float32
value, so every number round-trips exactly.
"""

import os
import zlib
from importlib.metadata import version

import schedulefree
import torch

import fixture_json
from fixture_json import camel, dump, keyword_defaults, max_rel_diff, to_json_options, write_fixture

OUTPUT = os.path.join("__test__", "fixtures", "schedulefree.json")
STEPS = 22
PARAM_SIZES = (1, 9, 27)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# agreement between the package's implementations: |a - b| <= RTOL * max(|a|, |b|, ABS_FLOOR)
RTOL = {"float32": 1e-6, "float64": 1e-13}
OPTIMIZERS = ("AdamWScheduleFree", "SGDScheduleFree")
IMPLEMENTATION_OPTIONS = {"foreach"}
GROUP_STATE = ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr")

# name, optimizer, option overrides, optional param groups, grad skips, mode switches
# groups:   list of (param indices, per-group overrides)
# skip:     {param index: [1-based steps on which that param has grad None]}
# switches: 1-based steps after which eval() then train() are called (the last step always has eval())
CASES = [
    dict(name="adamw-defaults", optimizer="AdamWScheduleFree", options={}, switches=[11]),
    dict(name="adamw-warmup-decay", optimizer="AdamWScheduleFree",
         options=dict(lr=1e-2, warmup_steps=6, weight_decay=1e-2), skip={1: [2, 7]}, switches=[4, 15]),
    dict(name="adamw-options", optimizer="AdamWScheduleFree",
         options=dict(lr=2e-2, betas=(0.5, 0.9), eps=1e-3, r=1.0, weight_lr_power=1.0, warmup_steps=3),
         switches=[8]),
    dict(name="adamw-groups", optimizer="AdamWScheduleFree", options=dict(warmup_steps=4),
         groups=[([0, 1], dict(lr=5e-3)), ([2], dict(lr=2e-2, betas=(0.8, 0.99), weight_decay=5e-2, r=0.5))],
         skip={2: [1, 2, 3, 4, 5]}, switches=[3, 12]),

    dict(name="sgd-defaults", optimizer="SGDScheduleFree", options={}, switches=[11]),
    dict(name="sgd-warmup-decay", optimizer="SGDScheduleFree",
         options=dict(lr=0.2, momentum=0.5, warmup_steps=5, weight_decay=1e-2), skip={1: [3, 9]}, switches=[6]),
    dict(name="sgd-options", optimizer="SGDScheduleFree",
         options=dict(lr=0.1, momentum=0.95, r=2.0, weight_lr_power=0.0), switches=[5, 16]),
    dict(name="sgd-groups", optimizer="SGDScheduleFree", options=dict(warmup_steps=3),
         groups=[([0, 1], dict(lr=0.05)), ([2], dict(lr=0.3, momentum=0.7, weight_decay=1e-1))],
         skip={0: [1, 2, 3, 4]}, switches=[2, 13]),
]


def package_defaults(optimizer):
    """The keyword defaults of schedulefree.<optimizer>.__init__ that affect the numbers."""
    return keyword_defaults(getattr(schedulefree, optimizer), IMPLEMENTATION_OPTIONS)


def group_state_defaults(optimizer):
    """The group state the package's constructor puts in its defaults."""
    opt = getattr(schedulefree, optimizer)([torch.zeros(1, requires_grad=True)])
    return {key: opt.defaults[key] for key in GROUP_STATE}


# ---------------------------------------------------------------- inputs


def make_inputs(seed):
    """Initial params and per-step grads (float64), seeded."""
    return fixture_json.make_inputs(seed, PARAM_SIZES, STEPS, [(1e-20, 2)], [(1e-20, 1), (1e2, 1)])


# ---------------------------------------------------------------- running

def group_options(case):
    """[(param indices, complete explicit options)] for the case."""
    return fixture_json.group_options(case, package_defaults(case["optimizer"]), len(PARAM_SIZES))


def run_case(case, groups, init, grads, dtype, foreach):
    """Run one case; returns (per step: params, eval params or None, train params or None),
    the final state per param and the final group state."""
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    torch_groups = [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]
    opt = getattr(schedulefree, case["optimizer"])(torch_groups, foreach=foreach)
    snapshot = lambda: [p.detach().clone() for p in params]  # noqa: E731

    opt.train()
    trajectory = []
    for s, step_grads in enumerate(grads, start=1):
        for p, g in zip(params, step_grads):
            # A copy: the package overwrites the gradient with its normalized form.
            p.grad = None if g is None else g.to(dtype, copy=True)
        opt.step()
        after, evaluated, trained = snapshot(), None, None
        if s in case.get("switches", []) or s == STEPS:
            opt.eval()
            evaluated = snapshot()
            if s != STEPS:
                opt.train()
                trained = snapshot()
        trajectory.append((after, evaluated, trained))

    state = []
    for p in params:
        entry = {camel(key): value.detach().clone() for key, value in opt.state.get(p, {}).items()}
        state.append(entry or None)
    final_groups = [{camel(key): group[key] for key in GROUP_STATE} for group in opt.param_groups]
    return trajectory, state, final_groups


def check_foreach(case, groups, init, grads, dtype_name, reference):
    """The largest difference between the reference run and the package's foreach implementation."""
    traj, state, final_groups = reference
    other_traj, other_state, other_groups = run_case(case, groups, init, grads, DTYPES[dtype_name], True)
    rtol = RTOL[dtype_name]
    worst = 0.0
    for mine, theirs in zip(traj, other_traj):
        for a, b in zip(mine, theirs):
            if a is not None:
                worst = max(worst, max_rel_diff(a, b, rtol))
    for s, r in zip(state, other_state):
        assert (s is None) == (r is None) and (s is None or s.keys() == r.keys()), (s, r)
        if s is not None:
            worst = max(worst, max_rel_diff([s[k] for k in s], [r[k] for k in s], rtol))
    assert final_groups == other_groups, (final_groups, other_groups)
    return worst


# ---------------------------------------------------------------- output


def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()))
    for i, steps in case.get("skip", {}).items():
        for s in steps:
            grads[s - 1][i] = None
    groups = group_options(case)

    reference = run_case(case, groups, init, grads, dtype, foreach=False)
    worst = check_foreach(case, groups, init, grads, dtype_name, reference)
    traj, state, final_groups = reference
    assert all(g["k"] == STEPS for g in final_groups), final_groups

    as_list = lambda t: None if t is None else t.to(dtype).tolist()  # noqa: E731

    def step_entry(step_grads, after, evaluated, trained):
        entry = {"grads": [as_list(g) for g in step_grads], "params": [as_list(p) for p in after]}
        if evaluated is not None:
            entry["eval"] = [as_list(p) for p in evaluated]
        if trained is not None:
            entry["train"] = [as_list(p) for p in trained]
        return entry

    return worst, {
        "name": f"{case['name']}-{dtype_name}",
        "optimizer": case["optimizer"],
        "dtype": dtype_name,
        "groups": [{"params": idx, "options": to_json_options(opts)} for idx, opts in groups],
        "init": [as_list(p) for p in init],
        "steps": [step_entry(g, *t) for g, t in zip(grads, traj)],
        "finalState": [None if s is None else {k: as_list(v) for k, v in s.items()} for s in state],
        "finalGroups": final_groups,
    }


def format_case(case):
    """One line per key, one line per step: compact but diffable."""
    lines = [f"    {dump(k)}: {dump(v)}" for k, v in case.items() if k != "steps"]
    steps = ",\n".join(f"      {dump(s)}" for s in case["steps"])
    lines.insert(len(lines) - 2, f'    "steps": [\n{steps}\n    ]')
    return "  {\n" + ",\n".join(lines) + "\n  }"


def main():
    torch.set_num_threads(1)
    cases = []
    for case in CASES:
        for dtype_name in DTYPES:
            worst, data = build_case(case, dtype_name)
            print(f"{data['name']:<32} max rel diff to foreach: {worst:.3e}")
            cases.append(data)
    covered = {c["optimizer"] for c in cases}
    assert covered == set(OPTIMIZERS), covered

    header = {
        "generator": "scripts/gen_fixtures_schedulefree.py",
        "torch": torch.__version__,
        "schedulefree": version("schedulefree"),
        "defaults": {name: to_json_options(package_defaults(name)) for name in OPTIMIZERS},
        "groupState": {name: to_json_options(group_state_defaults(name)) for name in OPTIMIZERS},
    }
    write_fixture(OUTPUT, header, cases, 1_000_000, case_text=format_case)


if __name__ == "__main__":
    main()
