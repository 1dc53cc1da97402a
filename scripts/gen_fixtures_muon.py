#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for Muon (``torch.optim.Muon``).

Writes ``__test__/fixtures/muon.json``: for every case in ``CASES`` (each in
float32 and float64) the parameters' shapes and initial values, the gradients
fed at each of ``STEPS`` steps (null where a parameter has no gradient that
step), and the parameters after each step and the momentum buffers at the end,
twice:

- ``params`` / ``finalState``: ``torch.optim.Muon`` as PyTorch ships it, whose
  Newton–Schulz iteration runs in bfloat16 whatever the parameter's dtype;
- ``finalParamsInDtype`` / ``finalStateInDtype``: the same ``torch.optim.Muon``
  with its Newton–Schulz function (``torch.optim._muon._zeropower_via_newtonschulz``)
  replaced by one that runs the very same operations in the parameter's dtype,
  as fastoptim does (the parameters after the last step only, to keep the file small).

``__test__/muon.spec.ts`` holds fastoptim to the second within float rounding
and to the first within what bfloat16 allows. The script prints, for every
case, the largest difference of the two trajectories, and checks it against
the bound the spec uses.

Everything is seeded, so the output only depends on the torch version.
Regenerate from the repository root with:

    pip install torch
    python3 scripts/gen_fixtures_muon.py

JSON layout, that of ``family.json`` with ``shapes`` per parameter::

    {"generator": "scripts/gen_fixtures_muon.py", "torch": "<version>",
     "defaults": {"Muon": {camelCase option: default}},
     "cases": [{"name", "optimizer", "dtype", "shapes": [[rows, cols], ...],
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "init": [[p0], [p1], ...],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...]}],
                "finalState": [{"momentumBuffer": [...]}],
                "finalParamsInDtype": [[p0], ...], "finalStateInDtype": [...]}]}

Tensors are flattened row-major. Float32 values are stored as the (exact)
double of the float32 value, so every number round-trips exactly.
"""

import inspect
import os
import zlib

import torch
import torch.optim._muon as muon_module

from fixture_json import camel, sprinkle, step_through, to_json_options, trajectory, write_fixture

OUTPUT = os.path.join("__test__", "fixtures", "muon.json")
STEPS = 10
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Tall, wide and square; odd sizes; a row, a column and a single element.
SHAPES = ((7, 3), (3, 7), (5, 5), (11, 9), (1, 9), (9, 1), (1, 1), (4, 6))
# The bound the spec holds fastoptim to against PyTorch's bfloat16 iteration: each step, an element
# of the orthogonalised update O may differ by this much (O's elements are at most about 1; bfloat16
# keeps 8 significant bits, and the iteration amplifies their rounding on matrices with small
# singular values: 0.06 on the first step of a 13 x 11 matrix), so a parameter element by this
# much times the step's adjusted lr, summed over the steps.
BF16_UPDATE_TOLERANCE = 0.15

# name, option overrides, optional param groups, optional grad skips
# groups: list of (param indices, per-group overrides)
# skip:   {param index: [1-based steps on which that param has grad None]}
CASES = [
    dict(name="muon-defaults", options={}),
    dict(name="muon-original", options=dict(lr=0.02, adjust_lr_fn="original"), skip={2: [1, 5]}),
    dict(name="muon-match-rms-adamw", options=dict(lr=0.01, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")),
    dict(name="muon-spectral-unclamped", options=dict(lr=0.01, adjust_lr_fn="spectral_unclamped", nesterov=False)),
    dict(name="muon-plain-momentum", options=dict(lr=0.02, nesterov=False, momentum=0.9, weight_decay=0.0),
         skip={0: [3], 7: [2, 3]}),
    dict(name="muon-ns", options=dict(lr=0.01, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=3, eps=1e-3)),
    dict(name="muon-groups", options=dict(lr=0.02),
         groups=[([0, 2, 4, 6], dict(adjust_lr_fn="match_rms_adamw", momentum=0.8)),
                 ([1, 3, 5, 7], dict(lr=0.005, nesterov=False, weight_decay=0.3, ns_steps=7))],
         skip={1: [4], 6: [1, 2]}),
]


def muon_defaults():
    """The keyword defaults of torch.optim.Muon.__init__."""
    signature = inspect.signature(torch.optim.Muon.__init__)
    return {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def newton_schulz_in_dtype(grad, ns_coefficients, ns_steps, eps):
    """PyTorch's `_zeropower_via_newtonschulz`, operation for operation, in `grad`'s dtype."""
    a, b, c = ns_coefficients
    ortho_grad = grad.clone()
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram_matrix = ortho_grad @ ortho_grad.T
        gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
        ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


# ---------------------------------------------------------------- inputs


def make_inputs(seed):
    """Initial params and per-step grads (float64), seeded."""
    gen = torch.Generator().manual_seed(seed)
    init = []
    for shape in SHAPES:
        p = torch.randn(shape, generator=gen, dtype=torch.float64)
        sprinkle(p.view(-1), gen, 0.0, 1)
        init.append(p)
    grads = []
    for _ in range(STEPS):
        step = []
        for shape in SHAPES:
            g = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.5
            sprinkle(g.view(-1), gen, 4.0, 1)
            step.append(g)
        grads.append(step)
    return init, grads


# ---------------------------------------------------------------- running


def group_options(case):
    """[(param indices, complete explicit options)] for the case."""
    base = {**muon_defaults(), **case["options"]}
    groups = case.get("groups") or [(list(range(len(SHAPES))), {})]
    return [(idx, {**base, **overrides}) for idx, overrides in groups]


def run_case(groups, init, grads, dtype, in_dtype):
    """Run torch.optim.Muon (its iteration in `dtype` if `in_dtype`); returns (params after each
    step, final state per param)."""
    original = muon_module._zeropower_via_newtonschulz
    if in_dtype:
        muon_module._zeropower_via_newtonschulz = newton_schulz_in_dtype
    try:
        params = [p.to(dtype).clone().requires_grad_(True) for p in init]
        torch_groups = [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]
        opt = torch.optim.Muon(torch_groups)
        trajectory = step_through(opt, params, grads, dtype)
    finally:
        muon_module._zeropower_via_newtonschulz = original
    state = [{camel(k): v.detach().clone() for k, v in opt.state.get(p, {}).items()} for p in params]
    return trajectory, state


def adjusted_lr(opts, shape):
    return muon_module._adjust_lr(opts["lr"], opts["adjust_lr_fn"], torch.Size(shape))


def check_bf16_bound(groups, init, grads, exact, shipped):
    """The largest |shipped − exact| over every parameter element and step, as a fraction of the
    bound the spec allows; fails past 1."""
    group_of = {i: opts for idx, opts in groups for i in idx}
    worst = 0.0
    for i, shape in enumerate(SHAPES):
        allowed = 0.0
        for s, (a, b) in enumerate(zip(exact, shipped)):
            if grads[s][i] is not None:
                allowed += BF16_UPDATE_TOLERANCE * adjusted_lr(group_of[i], shape)
            diff = (a[i].double() - b[i].double()).abs().max().item()
            worst = max(worst, diff / allowed if allowed else diff)
    assert worst <= 1.0, f"bfloat16 and in-dtype trajectories differ past the spec's bound: {worst:.3g}"
    return worst


# ---------------------------------------------------------------- output


def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()))
    for i, steps in case.get("skip", {}).items():
        for s in steps:
            grads[s - 1][i] = None
    groups = group_options(case)

    traj, state = run_case(groups, init, grads, dtype, in_dtype=False)
    traj_exact, state_exact = run_case(groups, init, grads, dtype, in_dtype=True)
    worst = check_bf16_bound(groups, init, grads, traj_exact, traj)

    as_list = lambda t: None if t is None else t.to(dtype).reshape(-1).tolist()  # noqa: E731
    return worst, {
        "name": f"{case['name']}-{dtype_name}",
        "optimizer": "Muon",
        "dtype": dtype_name,
        "shapes": [list(s) for s in SHAPES],
        "groups": [{"params": idx, "options": to_json_options(opts)} for idx, opts in groups],
        **trajectory(init, grads, traj, state, as_list),
        "finalParamsInDtype": [as_list(p) for p in traj_exact[-1]],
        "finalStateInDtype": [{k: as_list(v) for k, v in s.items()} for s in state_exact],
    }


def main():
    torch.set_num_threads(1)
    cases = []
    for case in CASES:
        for dtype_name in DTYPES:
            worst, data = build_case(case, dtype_name)
            print(f"{data['name']:<36} bfloat16 vs in-dtype: {worst:.3f} of the spec's bound")
            cases.append(data)
    header = {
        "generator": "scripts/gen_fixtures_muon.py",
        "torch": torch.__version__,
        "bf16UpdateTolerance": BF16_UPDATE_TOLERANCE,
        "defaults": {"Muon": to_json_options(muon_defaults())},
    }
    write_fixture(OUTPUT, header, cases, 1_500_000)


if __name__ == "__main__":
    main()
