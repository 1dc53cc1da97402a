#!/usr/bin/env python3
"""Generate lion-pytorch reference trajectories for Lion.

Writes ``__test__/fixtures/lion.json``: for every case in ``CASES`` (each in
float32 and float64) the initial parameters, the gradients fed at each of
``STEPS`` steps (null where a parameter has no gradient that step), the
parameters after each step and the optimizer state at the end, as produced by
lion-pytorch's ``Lion`` (``pip install lion-pytorch``;
``lion_pytorch/lion_pytorch.py``, without Triton) on CPU, single-threaded.
PyTorch has no Lion of its own. It also writes Lion's defaults, read from the
signature of ``lion_pytorch.Lion.__init__`` (``use_triton``, which only
chooses an implementation, is left out).

Everything is seeded, so the output only depends on the torch and lion-pytorch
versions. Regenerate from the repository root with:

    pip install lion-pytorch
    python3 scripts/gen_fixtures_lion.py

Before writing, each trajectory is checked against lion-pytorch's other CPU
implementation (``lion_pytorch.foreach.Lion``, which interpolates with
``lerp`` and so rounds the momentum differently); the script fails if they
disagree, and prints the largest relative difference.

lion-pytorch's ``decoupled_weight_decay`` divides a group's weight decay by
the lr the optimizer was constructed with (``_init_lr``), not by the group's
current lr; the facade's constructor records that lr as each group's
``initLr``. Each case records the options given to lion-pytorch's constructor
(``constructorOptions``: the first group's, as the facade's constructor gets
them), and the cases with a scheduler (``torch.optim.lr_scheduler``, named in
``scheduler`` with its arguments in the facade's camelCase) record the lr of
each group at each step (``lrs``), which a scheduler moved away from the
constructor's, with groups of different lr and decoupled decay on.

JSON layout (read by ``__test__/lion.spec.ts``), that of ``family.json``::

    {"generator": "scripts/gen_fixtures_lion.py", "torch": "<version>",
     "lionPytorch": "<version>", "defaults": {"Lion": {camelCase option: default}},
     "cases": [{"name", "optimizer", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "constructorOptions": {camelCase},
                "scheduler": {"name", "options": {camelCase}} | null,
                "init": [[p0], [p1], ...],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...],
                           "lrs": [lr of each group at the step]}],
                "finalState": [{buffers by camelCase name}]}]}

``finalState`` holds what ``opt.state[p]`` holds: lion-pytorch keeps
``exp_avg`` and no step count. Float32 values are stored as the (exact) double
of the float32 value, so every number round-trips exactly.
"""

import os
import zlib
from importlib.metadata import version

import torch

import fixture_json
from fixture_json import camel, keyword_defaults, max_rel_diff, to_json_options, trajectory, write_fixture
import lion_pytorch
import lion_pytorch.foreach

OUTPUT = os.path.join("__test__", "fixtures", "lion.json")
STEPS = 20
# Odd sizes either side of 16 and 32 elements (PyTorch's vector loops and their tails).
PARAM_SIZES = (1, 15, 17, 33)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# agreement between lion-pytorch's implementations, whose momenta round apart over the steps:
# |a - b| <= RTOL * max(|a|, |b|, ABS_FLOOR)
RTOL = {"float32": 1e-4, "float64": 1e-10}
# Options that choose an implementation, not the numbers.
IMPLEMENTATION_OPTIONS = {"use_triton"}

# name, option overrides, optional param groups, optional grad skips, optional scheduler
# groups:    list of (param indices, per-group overrides)
# skip:      {param index: [1-based steps on which that param has grad None]}
# scheduler: (torch.optim.lr_scheduler class name, its keyword arguments, the facade's camelCase
#            names of them), stepped after every optimizer step
CASES = [
    dict(name="lion-defaults", options={}),
    dict(name="lion-lr-betas", options=dict(lr=3e-3, betas=(0.8, 0.95)), skip={1: [1, 4, 9]}),
    dict(name="lion-decoupled", options=dict(lr=2e-4, weight_decay=1e-3, decoupled_weight_decay=True),
         skip={2: [3, 7]}),
    dict(name="lion-groups", options=dict(weight_decay=0.3),
         groups=[([0, 1], dict(lr=1e-3)), ([2, 3], dict(lr=1e-4, betas=(0.95, 0.98), weight_decay=0.0))],
         skip={0: [2, 5], 3: [2, 3, 15]}),
    # The ends of the closed range: the direction is the gradient and the momentum stays zero;
    # then the direction is the momentum alone, which is the last gradient.
    dict(name="lion-betas-bounds", options={},
         groups=[([0, 1], dict(betas=(0.0, 1.0))), ([2, 3], dict(lr=1e-3, betas=(1.0, 0.0)))],
         skip={3: [1, 6]}),
    # Decoupled decay under a scheduler: λ is divided by the constructor's lr (2e-3) while each
    # group's lr follows the schedule, the second group's from its own 5e-4.
    dict(name="lion-decoupled-cosine", options=dict(lr=2e-3, weight_decay=0.02, decoupled_weight_decay=True),
         groups=[([0, 1], {}), ([2, 3], dict(lr=5e-4, weight_decay=0.05))],
         scheduler=("CosineAnnealingLR", dict(T_max=STEPS // 2, eta_min=1e-5), dict(tMax=STEPS // 2, etaMin=1e-5)),
         skip={1: [2, 11]}),
    dict(name="lion-decoupled-exponential", options=dict(lr=1e-3, betas=(0.8, 0.95), weight_decay=0.05,
                                                         decoupled_weight_decay=True),
         scheduler=("ExponentialLR", dict(gamma=0.85), dict(gamma=0.85)), skip={0: [4]}),
]


def lion_defaults():
    """The keyword defaults of lion_pytorch.Lion.__init__ that affect the numbers."""
    return keyword_defaults(lion_pytorch.Lion, IMPLEMENTATION_OPTIONS)


# ---------------------------------------------------------------- inputs


def make_inputs(seed):
    """Initial params and per-step grads (float64), seeded. Zero gradients too: with a zero momentum
    the direction is 0 and its sign too."""
    return fixture_json.make_inputs(seed, PARAM_SIZES, STEPS, [(1e-20, 3), (1e3, 2)], [(1e-20, 2), (1e4, 1)])


# ---------------------------------------------------------------- running

def group_options(case):
    """[(param indices, complete explicit options)] for the case."""
    groups = fixture_json.group_options(case, lion_defaults(), len(PARAM_SIZES))
    # lion-pytorch reads the flag from its constructor only, the facade from each group.
    first = groups[0][1]
    assert all(opts["decoupled_weight_decay"] == first["decoupled_weight_decay"] for _, opts in groups), case["name"]
    return groups


def run_case(module, groups, init, grads, dtype, scheduler=None):
    """Run one implementation; returns (params after each step, final state per param, each
    group's lr at each step).

    The first group's options are also passed to the constructor, as the facade's test does with
    its `options`: lion-pytorch reads `decoupled_weight_decay` and the initial lr from there only.
    `scheduler` (a class name of torch.optim.lr_scheduler and its arguments) is stepped after
    every step.
    """
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    per_group = ("lr", "betas", "weight_decay")
    torch_groups = [dict(params=[params[i] for i in idx], **{k: v for k, v in opts.items() if k in per_group})
                    for idx, opts in groups]
    opt = module.Lion(torch_groups, **groups[0][1])
    schedule = None
    if scheduler is not None:
        name, kwargs, _ = scheduler
        schedule = getattr(torch.optim.lr_scheduler, name)(opt, **kwargs)

    trajectory, lrs = [], []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.to(dtype, copy=True)
        lrs.append([group["lr"] for group in opt.param_groups])
        opt.step()
        trajectory.append([p.detach().clone() for p in params])
        if schedule is not None:
            schedule.step()

    state = []
    for p in params:
        entry = {}
        for key, value in opt.state.get(p, {}).items():
            assert key != "step", "lion-pytorch keeps no step count"
            entry[camel(key)] = value.detach().clone()
        state.append(entry)
    return trajectory, state, lrs


def check_foreach(groups, init, grads, dtype_name, reference, scheduler):
    """The largest difference between the reference run and lion-pytorch's foreach implementation."""
    traj, state, lrs = reference
    other_traj, other_state, other_lrs = run_case(lion_pytorch.foreach, groups, init, grads, DTYPES[dtype_name],
                                                  scheduler)
    assert lrs == other_lrs
    rtol = RTOL[dtype_name]
    worst = max(max_rel_diff(a, b, rtol) for a, b in zip(traj, other_traj))
    for s, r in zip(state, other_state):
        assert s.keys() == r.keys(), (s.keys(), r.keys())
        worst = max(worst, max_rel_diff([s[k] for k in s], [r[k] for k in s], rtol))
    return worst


# ---------------------------------------------------------------- output


def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()))
    for i, steps in case.get("skip", {}).items():
        for s in steps:
            grads[s - 1][i] = None
    groups = group_options(case)

    scheduler = case.get("scheduler")
    reference = run_case(lion_pytorch, groups, init, grads, dtype, scheduler)
    worst = check_foreach(groups, init, grads, dtype_name, reference, scheduler)
    traj, state, lrs = reference
    if scheduler is not None:
        # The schedule moves every group's lr away from where it started, so that dividing λ by
        # the current lr instead of the constructor's would change the decay.
        assert all(step != lrs[0] for step in lrs[1:]), case["name"]

    as_list = lambda t: None if t is None else t.to(dtype).tolist()  # noqa: E731
    data = trajectory(init, grads, traj, state, as_list)
    for step, step_lrs in zip(data["steps"], lrs):
        step["lrs"] = step_lrs
    return worst, {
        "name": f"{case['name']}-{dtype_name}",
        "optimizer": "Lion",
        "dtype": dtype_name,
        "groups": [{"params": idx, "options": to_json_options(opts)} for idx, opts in groups],
        "constructorOptions": to_json_options(groups[0][1]),
        "scheduler": None if scheduler is None else {"name": scheduler[0], "options": scheduler[2]},
        **data,
    }


def main():
    torch.set_num_threads(1)
    cases = []
    for case in CASES:
        for dtype_name in DTYPES:
            worst, data = build_case(case, dtype_name)
            print(f"{data['name']:<32} max rel diff to lion-pytorch's foreach Lion: {worst:.3e}")
            cases.append(data)

    header = {
        "generator": "scripts/gen_fixtures_lion.py",
        "torch": torch.__version__,
        "lionPytorch": version("lion-pytorch"),
        "defaults": {"Lion": to_json_options(lion_defaults())},
    }
    write_fixture(OUTPUT, header, cases, 800_000)


if __name__ == "__main__":
    main()
