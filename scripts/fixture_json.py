"""What the trajectory fixture generators share: camelCase option names, seeded inputs with
extreme values sprinkled in, each case's options, the comparison of a reference's implementations,
and the fixture file's layout (one line per key and per step: compact but diffable).

Imported by scripts/gen_fixtures*.py; run those from the repository root
(`python3 scripts/gen_fixtures_family.py`), which puts this folder on the path.
"""
import inspect
import json
import os
import re

import torch


def camel(name):
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def to_json_options(opts):
    return {camel(key): list(value) if isinstance(value, tuple) else value for key, value in opts.items()}


def sprinkle(t, gen, value, count):
    """Set `count` random elements of `t` (any shape, contiguous) to +-value, in place."""
    if t.numel() <= 1:
        return
    idx = torch.randperm(t.numel(), generator=gen)[:count]
    signs = torch.randint(0, 2, (count,), generator=gen, dtype=torch.float64) * 2 - 1
    t.view(-1)[idx] = signs * value


def make_inputs(seed, sizes, steps, param_extremes, grad_extremes, shape=lambda t: t):
    """Initial params and per-step grads, float64, from one generator seeded with `seed`.

    Parameter i is randn times (1, 0.5, 2, 1)[i], passed through `shape`, with each (value, count)
    of `param_extremes` sprinkled in, in order; each step's grads are randn through `shape`, about
    a tenth of them zeroed, with `grad_extremes` sprinkled in likewise.
    """
    gen = torch.Generator().manual_seed(seed)
    init = []
    for size, scale in zip(sizes, (1.0, 0.5, 2.0, 1.0)):
        p = shape(torch.randn(size, generator=gen, dtype=torch.float64) * scale)
        for value, count in param_extremes:
            sprinkle(p, gen, value, count)
        init.append(p)
    grads = []
    for _ in range(steps):
        step = []
        for size in sizes:
            g = shape(torch.randn(size, generator=gen, dtype=torch.float64))
            g[torch.rand(size, generator=gen, dtype=torch.float64) < 0.1] = 0.0
            for value, count in grad_extremes:
                sprinkle(g, gen, value, count)
            step.append(g)
        grads.append(step)
    return init, grads


def keyword_defaults(cls, skip):
    """The keyword defaults of `cls.__init__` that affect the numbers: all but the names in `skip`."""
    signature = inspect.signature(cls.__init__)
    return {name: p.default for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty and name not in skip}


def group_options(case, base, count):
    """[(param indices, complete explicit options)] for `case`: `base` under the case's `options`,
    under each of its `groups`' overrides (one group of all `count` parameters if it has none)."""
    base = {**base, **case["options"]}
    groups = case.get("groups") or [(list(range(count)), {})]
    return [(idx, {**base, **overrides}) for idx, overrides in groups]


def drop_skipped(case, grads):
    """Sets to None, in place, the grads of the case's `skip`: {param index: [1-based steps]}."""
    for i, steps in case.get("skip", {}).items():
        for s in steps:
            grads[s - 1][i] = None


def step_through(opt, params, grads, dtype):
    """Steps `opt` once per entry of `grads`, each param given that step's grad in `dtype` (None:
    no grad); returns the params after each step."""
    trajectory = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            # A copy: some implementations update grads in place (foreach Nesterov SGD adds the buffer).
            p.grad = None if g is None else g.to(dtype, copy=True)
        opt.step()
        trajectory.append([p.detach().clone() for p in params])
    return trajectory


def run_torch(cls, groups, init, grads, dtype, impl):
    """Runs the torch.optim class `cls` from `init` over `grads` (None: no grad that step), all in
    `dtype`, with `groups` ([(param indices, options)]) and the implementation options `impl`.
    Returns (params after each step, final state per param: its `step` an int, other 0-d values
    floats, keys in camelCase).

    The first group's options are also passed to the constructor, as the facade does with its
    `options`: Adagrad reads `initial_accumulator_value` from there only, whatever the groups say.
    """
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    torch_groups = [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]
    opt = cls(torch_groups, **groups[0][1], **impl)
    trajectory = step_through(opt, params, grads, dtype)

    state = []
    for p in params:
        entry = {}
        for key, value in opt.state.get(p, {}).items():
            if key == "step":
                entry["step"] = int(value.item())
            elif value.dim() == 0:
                entry[camel(key)] = value.item()
            else:
                entry[camel(key)] = value.detach().clone()
        state.append(entry)
    return trajectory, state


ABS_FLOOR = 1e-3
"""Differences are relative to max(|a|, |b|, ABS_FLOOR): below the floor they are absolute."""


def max_rel_diff(a_list, b_list, rtol, floors=None):
    """Max of |a - b| / max(|a|, |b|, ABS_FLOOR, floors[k]) over pairs of tensors (or lists; a pair
    of None is skipped); asserts it is within rtol."""
    worst = 0.0
    for k, (a, b) in enumerate(zip(a_list, b_list)):
        if a is None and b is None:
            continue
        if not torch.is_tensor(a):
            a, b = torch.tensor(a), torch.tensor(b)
        scale = torch.maximum(a.abs(), b.abs()).clamp_min(ABS_FLOOR)
        if floors is not None:
            scale = torch.maximum(scale, floors[k])
        rel = ((a - b).abs() / scale).max().item() if a.numel() else 0.0
        worst = max(worst, rel)
    assert worst <= rtol, f"implementations disagree: {worst:.3g} > {rtol:g}"
    return worst


def trajectory(init, grads, traj, state, as_list):
    """A case's `init`, `steps` (each step's grads and the params after it) and `finalState`,
    every tensor through `as_list` (None stays None)."""
    return {
        "init": [as_list(p) for p in init],
        "steps": [{"grads": [as_list(g) for g in step_grads], "params": [as_list(p) for p in params]}
                  for step_grads, params in zip(grads, traj)],
        "finalState": [{k: as_list(v) for k, v in s.items()} for s in state],
    }


def dump(obj):
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def format_case(case):
    """One line per key, one line per step: compact but diffable."""
    lines = [f"    {dump(k)}: {dump(v)}" for k, v in case.items() if k != "steps"]
    steps = ",\n".join(f"      {dump(s)}" for s in case["steps"])
    lines.insert(len(lines) - 1, f'    "steps": [\n{steps}\n    ]')
    return "  {\n" + ",\n".join(lines) + "\n  }"


def write_fixture(output, header, cases, max_bytes, case_text=format_case):
    """Writes `header`'s keys, then `cases` (each laid out by `case_text`), as one JSON object."""
    text = "{\n" + "".join(f"  {dump(k)}: {dump(v)},\n" for k, v in header.items())
    text += '  "cases": [\n' + ",\n".join(case_text(c) for c in cases) + "\n  ]\n}\n"
    json.loads(text)  # make sure the hand-assembled layout is valid JSON
    assert len(text) < max_bytes, f"{len(text)} bytes: keep the fixture under {max_bytes:,} bytes"
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        f.write(text)
    print(f"wrote {output}: {len(cases)} cases, {len(text)} bytes")
