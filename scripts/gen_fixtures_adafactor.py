#!/usr/bin/env python3
"""Generate PyTorch reference trajectories for Adafactor.

Writes ``__test__/fixtures/adafactor.json``: for every case in ``CASES`` (each in
float32 and float64) the shapes and initial values of the parameters, the
gradients fed at each of ``STEPS`` steps (null where a parameter has no gradient
that step), the parameters after each step and the optimizer state at the end,
as produced by ``torch.optim.Adafactor`` with ``foreach=False`` on CPU
(single-threaded): the single-tensor implementation, which is also what PyTorch
runs by default (Adafactor only uses its foreach path when asked to). It also
writes Adafactor's defaults, read from the signature of
``torch.optim.Adafactor.__init__`` (``foreach``, which only chooses an
implementation, is left out).

The parameters are 0-D, 1-D, 2-D and 3-D: Adafactor keeps a full ``variance``
for tensors of at most one dimension and factors the second moment into
``row_var`` and ``col_var`` over the last two dimensions of the others.

Everything is seeded, so the output only depends on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures_adafactor.py

Before writing, each trajectory is checked against PyTorch's other
implementation (``foreach=True``); the script fails if they disagree, and
prints the largest relative difference. Parameters are compared relative to
the larger of each element and the parameter's RMS: Adafactor's step is
relative to RMS(p), so an element that ends near zero carries the rounding
of steps on the scale of RMS(p), and the two implementations differ by up to
about 1e-4 of such an element in float32 (a few ulps of RMS(p)).

JSON layout (the conventions of ``family.json``, plus shapes)::

    {"generator": "scripts/gen_fixtures_adafactor.py", "torch": "<version>",
     "defaults": {"Adafactor": {camelCase option: default}},
     "cases": [{"name", "optimizer": "Adafactor", "dtype",
                "groups": [{"params": [param indices], "options": {camelCase}}],
                "shapes": [[shape of p0], [shape of p1], ...],
                "init": [[p0], [p1], ...],
                "steps": [{"grads": [[g0] | null, ...], "params": [[p0], ...]}],
                "finalState": [{"step", "variance" | "rowVar" and "colVar"}],
                "stateShapes": [{"variance": [...]} | {"rowVar": [...], "colVar": [...]}]}]}

Every tensor is stored flat, in row-major (C) order; ``shapes[i]`` is the shape
of parameter i (``[]`` for a 0-D tensor, stored as a list of one number), and
``stateShapes[i]`` the shapes of its state buffers as PyTorch's state_dict holds
them (``row_var`` is the parameter's shape with the last dimension 1,
``col_var`` with the second-to-last dimension 1). ``step`` is a float32 0-D
tensor in PyTorch; it is stored here as an integer. ``eps`` is a pair whose
first element may be null (meaning the dtype's machine epsilon). Float32 values
are stored as the (exact) double of the float32 value, so every number
round-trips exactly. Inputs are rounded to a few significant bits (initial
values to 8, gradients to 4), which makes them exact in both dtypes and short
to write: most of the file is the 20 steps of the [17, 40] parameter.
"""

import inspect
import json
import math
import os
import zlib

import torch

from fixture_json import ABS_FLOOR, camel, dump, sprinkle, step_through, to_json_options

OUTPUT = os.path.join("__test__", "fixtures", "adafactor.json")
STEPS = 20
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# agreement between PyTorch's implementations: |a - b| <= RTOL * max(|a|, |b|, ABS_FLOOR)
RTOL = {"float32": 1e-5, "float64": 1e-12}
IMPLEMENTATION_OPTIONS = {"foreach", "fused", "capturable", "differentiable"}
MAX_BYTES = 2_000_000

# (shape, scale of the initial values). The scales put the parameters' RMS on both sides of
# eps2's default (1e-3) and of 0.1, so that alpha = max(eps2, RMS(p)) * rho takes either branch.
SMALL = [([7], 1.0), ([5, 3], 0.05), ([1, 9], 2.0), ([9, 1], 2.0 ** -11), ([2, 4, 6], 0.5), ([], 1.0)]
LARGE = [([33], 0.5), ([17, 40], 1.0)]

# name, option overrides, optional shapes, optional param groups, optional grad skips,
# first_step_zeros: whether some gradient elements may be exactly zero on the first step, and
# tiny_first_step: {param index: [e0, e1, ...]}, slice k (along dim 0) of that param's first
# gradient scaled by 2**ek (no spike), so that the mean of row_var is below eps1 in some slices
# and not in others: the clamp then changes the slices' updates relative to each other, which
# the clipping by RMS(U) does not undo. -15 clamps in float32 only, -33 in both.
# groups: list of (param indices, per-group overrides)
# skip:   {param index: [1-based steps on which that param has grad None]}
CASES = [
    dict(name="adafactor-defaults", options={}, shapes=SMALL + LARGE, tiny_first_step={4: [-15, -33]}),
    dict(name="adafactor-weight-decay", options=dict(lr=0.05, weight_decay=0.1)),
    dict(name="adafactor-beta2-decay-d", options=dict(beta2_decay=-0.5, d=2.0)),
    # With eps1 = 1e-30, eps1 * eps1 is 0 in float32, so a second-moment estimate of exactly 0
    # (a gradient element that has been 0 on every step so far) gives rsqrt(0) * 0 = NaN in
    # PyTorch: no exact zeros on the first step here, so that every estimate is positive.
    dict(name="adafactor-eps1-tiny", options=dict(eps=(1e-30, 1e-3)), first_step_zeros=False),
    dict(name="adafactor-eps2-large", options=dict(eps=(None, 0.1))),
    dict(name="adafactor-maximize", options=dict(maximize=True)),
    # Group 1's lr exceeds 1/sqrt(t) from step 7 on, so rho_t = 1/sqrt(t) there.
    dict(name="adafactor-groups", options={},
         groups=[([0, 1, 2], dict(lr=0.02, weight_decay=0.05)),
                 ([3, 4, 5], dict(lr=0.4, beta2_decay=-0.6, eps=(None, 0.01), d=1.5))],
         skip={1: [1, 2, 9], 4: [5, 6, 7], 5: [1, 20]}),
]


def torch_defaults():
    """The keyword defaults of torch.optim.Adafactor.__init__ that affect the numbers."""
    signature = inspect.signature(torch.optim.Adafactor.__init__)
    return {name: p.default for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty and name not in IMPLEMENTATION_OPTIONS}


# ---------------------------------------------------------------- inputs

def round_bits(t, bits):
    """Round every element to `bits` significant bits (exact in float32 and float64)."""
    mantissa, exponent = torch.frexp(t)
    return torch.ldexp(torch.round(mantissa * 2 ** bits) / 2 ** bits, exponent.to(t.dtype))


def make_inputs(seed, shapes, first_step_zeros, tiny_first_step):
    """Initial params and per-step grads (float64, exact in float32 too), seeded."""
    gen = torch.Generator().manual_seed(seed)
    init = []
    for shape, scale in shapes:
        p = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
        sprinkle(p, gen, 2.0 ** -66, 2)     # about 1.4e-20
        init.append(round_bits(p, 8))
    # Per-row and per-column gradient scales, so that the factored second moment has structure.
    factors = []
    for shape, _ in shapes:
        if len(shape) >= 2:
            rows = torch.exp(torch.randn(shape[:-1] + [1], generator=gen, dtype=torch.float64))
            cols = torch.exp(torch.randn(shape[:-2] + [1, shape[-1]], generator=gen, dtype=torch.float64))
            factors.append(rows * cols)
        else:
            factors.append(torch.ones(shape, dtype=torch.float64))
    grads = []
    for step in range(STEPS):
        step_grads = []
        for i, ((shape, _), factor) in enumerate(zip(shapes, factors)):
            g = torch.randn(shape, generator=gen, dtype=torch.float64) * factor
            zero = torch.rand(shape, generator=gen, dtype=torch.float64) < 0.1
            if step > 0 or first_step_zeros:
                g[zero] = 0.0
            sprinkle(g, gen, 2.0 ** -66, 2)
            if step == 0 and i in tiny_first_step:
                for k, e in enumerate(tiny_first_step[i]):
                    g[k] *= 2.0 ** e
            else:
                sprinkle(g, gen, 8192.0, 1)
            step_grads.append(round_bits(g, 4))
        grads.append(step_grads)
    return init, grads


# ---------------------------------------------------------------- running

def group_options(case, count):
    """[(param indices, complete explicit torch options)] for the case."""
    base = {**torch_defaults(), **case["options"]}
    groups = case.get("groups") or [(list(range(count)), {})]
    return [(idx, {**base, **overrides}) for idx, overrides in groups]


def run_case(groups, init, grads, dtype, impl):
    """Run Adafactor; returns (params after each step, final state per param, state shapes)."""
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    torch_groups = [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]
    opt = torch.optim.Adafactor(torch_groups, **groups[0][1], **impl)
    trajectory = step_through(opt, params, grads, dtype)

    # What the state_dict holds: the same tensors, by parameter index.
    saved = opt.state_dict()["state"]
    state, shapes = [], []
    for i in range(len(params)):
        entry, entry_shapes = {}, {}
        for key, value in saved.get(i, {}).items():
            if key == "step":
                assert value.dtype == torch.float32 and value.dim() == 0, value
                entry["step"] = int(value.item())
            else:
                assert value.dtype == dtype, (key, value.dtype)
                entry[camel(key)] = value.detach().clone()
                entry_shapes[camel(key)] = list(value.shape)
        state.append(entry)
        shapes.append(entry_shapes)
    return trajectory, state, shapes


def rms(t):
    return t.double().pow(2).mean().sqrt().item() if t.numel() else 0.0


def max_rel_diff(a_list, b_list, rtol, own_scale=False):
    """Max of |a-b| / max(|a|, |b|, floor) over all tensors; asserts within rtol.

    The floor is ABS_FLOOR, or the larger of it and the tensor's RMS with `own_scale`.
    """
    worst = 0.0
    for a, b in zip(a_list, b_list):
        assert a.shape == b.shape, (a.shape, b.shape)
        floor = max(ABS_FLOOR, rms(a)) if own_scale else ABS_FLOOR
        scale = torch.maximum(a.abs(), b.abs()).clamp_min(floor)
        rel = ((a - b).abs() / scale).max().item() if a.numel() else 0.0
        worst = max(worst, rel)
    assert worst <= rtol, f"implementations disagree: {worst:.3g} > {rtol:g}"
    return worst


def check_foreach(groups, init, grads, dtype_name, reference):
    """The largest difference between the reference run and PyTorch's foreach implementation."""
    traj, state, shapes = reference
    other_traj, other_state, other_shapes = run_case(groups, init, grads, DTYPES[dtype_name], dict(foreach=True))
    rtol = RTOL[dtype_name]
    assert shapes == other_shapes, (shapes, other_shapes)
    worst = max(max_rel_diff(a, b, rtol, own_scale=True) for a, b in zip(traj, other_traj))
    for s, r in zip(state, other_state):
        assert s.keys() == r.keys(), (s.keys(), r.keys())
        assert s["step"] == r["step"], (s["step"], r["step"])
        keys = [k for k in s if k != "step"]
        worst = max(worst, max_rel_diff([s[k] for k in keys], [r[k] for k in keys], rtol))
    return worst


# ---------------------------------------------------------------- output

def check_state_shapes(shape, entry_shapes):
    """row_var: shape with the last dim 1, col_var: the second-to-last dim 1; else variance."""
    if len(shape) > 1:
        assert entry_shapes == {"rowVar": shape[:-1] + [1], "colVar": shape[:-2] + [1, shape[-1]]}, entry_shapes
    else:
        assert entry_shapes == {"variance": shape}, entry_shapes


def build_case(case, dtype_name):
    dtype = DTYPES[dtype_name]
    spec = case.get("shapes", SMALL)
    shapes = [shape for shape, _ in spec]
    init, grads = make_inputs(zlib.crc32(case["name"].encode()), spec, case.get("first_step_zeros", True),
                              case.get("tiny_first_step", {}))
    for i, steps in case.get("skip", {}).items():
        for s in steps:
            grads[s - 1][i] = None
    groups = group_options(case, len(spec))

    reference = run_case(groups, init, grads, dtype, dict(foreach=False))
    worst = check_foreach(groups, init, grads, dtype_name, reference)
    traj, state, state_shapes = reference

    for i, shape in enumerate(shapes):
        check_state_shapes(shape, state_shapes[i])
        skipped = len(case.get("skip", {}).get(i, []))
        assert state[i]["step"] == STEPS - skipped, (state[i]["step"], STEPS - skipped)

    flat = lambda t: None if t is None else t.to(dtype).reshape(-1).tolist()  # noqa: E731
    return worst, {
        "name": f"{case['name']}-{dtype_name}",
        "optimizer": "Adafactor",
        "dtype": dtype_name,
        "groups": [{"params": idx, "options": to_json_options(opts)} for idx, opts in groups],
        "shapes": shapes,
        "init": [flat(p) for p in init],
        "steps": [{"grads": [flat(g) for g in step_grads],
                   "params": [flat(p) for p in params]}
                  for step_grads, params in zip(grads, traj)],
        "finalState": [{k: flat(v) if torch.is_tensor(v) else v for k, v in s.items()} for s in state],
        "stateShapes": state_shapes,
    }


def format_case(case):
    """One line per key, one line per step: compact but diffable."""
    lines = []
    for key, value in case.items():
        if key == "steps":
            steps = ",\n".join(f"      {dump(s)}" for s in value)
            lines.append(f'    "steps": [\n{steps}\n    ]')
        else:
            lines.append(f"    {dump(key)}: {dump(value)}")
    return "  {\n" + ",\n".join(lines) + "\n  }"


def check_round_trip(case, dtype_name):
    """Every number written is exactly a value of the case's dtype."""
    def values(obj):
        if isinstance(obj, list):
            for item in obj:
                yield from values(item)
        elif isinstance(obj, float):
            yield obj
    numbers = list(values([case["init"], case["steps"], case["finalState"]]))
    assert all(math.isfinite(x) for x in numbers)
    if dtype_name == "float32":
        as_f32 = torch.tensor(numbers, dtype=torch.float64).to(torch.float32).to(torch.float64).tolist()
        assert as_f32 == numbers


def main():
    torch.set_num_threads(1)
    cases = []
    for case in CASES:
        for dtype_name in DTYPES:
            worst, data = build_case(case, dtype_name)
            check_round_trip(data, dtype_name)
            print(f"{data['name']:<40} max rel diff to foreach: {worst:.3e}")
            cases.append(data)

    header = {
        "generator": "scripts/gen_fixtures_adafactor.py",
        "torch": torch.__version__,
        "defaults": {"Adafactor": to_json_options(torch_defaults())},
    }
    text = "{\n" + "".join(f"  {dump(k)}: {dump(v)},\n" for k, v in header.items())
    text += '  "cases": [\n' + ",\n".join(format_case(c) for c in cases) + "\n  ]\n}\n"
    assert json.loads(text)["cases"] == cases  # the hand-assembled layout is valid and lossless
    assert len(text) < MAX_BYTES, f"{len(text)} bytes: keep the fixture under {MAX_BYTES} bytes"

    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    with open(OUTPUT, "w") as f:
        f.write(text)
    print(f"wrote {OUTPUT}: {len(cases)} cases, {len(text)} bytes")


if __name__ == "__main__":
    main()
