#!/usr/bin/env python3
"""Generate PyTorch reference results for the gradient-clipping tests.

Writes ``__test__/fixtures/clip.json``: for every case, the gradients before
clipping, the total norm ``torch.nn.utils.clip_grad_norm_`` returns (for norm
cases) and the gradients after ``clip_grad_norm_`` or ``clip_grad_value_``, in
float32 and float64 (and one case mixing them), with ``foreach=False`` (the
per-tensor loop; ``foreach=None`` is checked to agree bit for bit).

Gradients are seeded, so the output depends only on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures_clip.py

JSON layout (read by ``__test__/clip.spec.ts``)::

    {"generator": "scripts/gen_fixtures_clip.py", "torch": "<version>",
     "cases": [{"name", "kind": "norm" | "value",
                "maxNorm", "normType", "errorIfNonfinite"  (norm cases; normType may be "Infinity"),
                "clipValue"                                (value cases),
                "grads": [null | {"dtype", "values": [...]} | {"dtype", "wave": length}],
                "total": norm returned (norm cases),
                "reference": the same norm computed in float64 (norm cases),
                "after": [null | {"values": [...]} | {"indices": [...], "values": [...]}]}]}

A ``wave`` gradient is ``((i * 7919) % 2001 - 1000) / 256`` for i < length, which
the test rebuilds exactly; it is long enough to span several reduction chunks,
so only every 97th element of it (and its last) is stored after clipping.
NaN and infinities are written as the strings "NaN", "Infinity", "-Infinity".

``reference`` is the total norm as fastoptim defines it: each tensor's norm in
float64, rounded to the tensor's dtype, then the norm of those in float64,
rounded to float32 if every gradient is float32. PyTorch reduces float32 tensors
in float32, so on long tensors its own total can be ~1e-6 away from it; the
test allows PyTorch that error on top of its tolerance.
"""

import json
import math
import os
import zlib

import torch

OUTPUT = os.path.join("__test__", "fixtures", "clip.json")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SIZES = (0, 1, 7, 33, 1001, 257)
WAVE = 3 * 16384 + 17
SAMPLE = 97


def number(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def wave(length, dtype):
    i = torch.arange(length, dtype=torch.int64)
    return (((i * 7919) % 2001 - 1000).to(torch.float64) / 256).to(dtype)


def make_grads(name, dtypes, sizes, scales=(1.0, 1e-3, 30.0)):
    """Seeded gradients: normal values at a few scales, exact zeros, and None for one parameter."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    grads = []
    for k, size in enumerate(sizes):
        dtype = dtypes[k % len(dtypes)]
        g = torch.randn(size, generator=gen, dtype=torch.float64) * scales[k % len(scales)]
        g[torch.rand(size, generator=gen, dtype=torch.float64) < 0.1] = 0.0
        grads.append(g.to(dtype))
    return grads


def params_of(grads):
    params = []
    for g in grads:
        if g is None:
            p = torch.nn.Parameter(torch.zeros(3))
        else:
            p = torch.nn.Parameter(torch.zeros_like(g))
            p.grad = g.clone()
        params.append(p)
    return params


def encode_grad(g, is_wave):
    if g is None:
        return None
    dtype = "float32" if g.dtype == torch.float32 else "float64"
    if is_wave:
        return {"dtype": dtype, "wave": g.numel()}
    return {"dtype": dtype, "values": [number(x) for x in g.tolist()]}


def encode_after(g, is_wave):
    if g is None:
        return None
    values = g.tolist()
    if is_wave:
        indices = list(range(0, len(values), SAMPLE)) + [len(values) - 1]
        return {"indices": indices, "values": [number(values[i]) for i in indices]}
    return {"values": [number(x) for x in values]}


def run_norm(grads, max_norm, norm_type, foreach):
    params = params_of(grads)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type, foreach=foreach)
    return total, [p.grad for p in params]


def reference_norm(grads, norm_type):
    present = [g for g in grads if g is not None]
    if not present:
        return 0.0
    norms = [torch.linalg.vector_norm(g.double(), norm_type).to(g.dtype).double() for g in present]
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
    return total.float().item() if all(g.dtype == torch.float32 for g in present) else total.item()


def norm_case(name, grads, norm_type, max_norm=None, fraction=None, waves=()):
    """max_norm given, or a `fraction` of the total norm (below it if < 1, above if > 1)."""
    if max_norm is None:
        present = [g for g in grads if g is not None]
        total = torch.nn.utils.get_total_norm(present, norm_type=norm_type).item()
        max_norm = float(f"{total * fraction:.6g}")
    total, after = run_norm(grads, max_norm, norm_type, foreach=False)
    total_foreach, after_foreach = run_norm(grads, max_norm, norm_type, foreach=None)
    same = lambda a, b: torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num())
    assert same(total, total_foreach), (name, total, total_foreach)
    for a, b in zip(after, after_foreach):
        assert (a is None) == (b is None) and (a is None or same(a, b)), name
    return {
        "name": name, "kind": "norm", "maxNorm": max_norm, "normType": number(float(norm_type)),
        "errorIfNonfinite": False,
        "grads": [encode_grad(g, i in waves) for i, g in enumerate(grads)],
        "total": number(total.item()),
        "reference": number(reference_norm(grads, norm_type)),
        "after": [encode_after(g, i in waves) for i, g in enumerate(after)],
    }


def value_case(name, grads, clip_value, waves=()):
    params = params_of(grads)
    torch.nn.utils.clip_grad_value_(params, clip_value, foreach=False)
    return {
        "name": name, "kind": "value", "clipValue": clip_value,
        "grads": [encode_grad(g, i in waves) for i, g in enumerate(grads)],
        "after": [encode_after(p.grad if g is not None else None, i in waves) for i, (g, p) in enumerate(zip(grads, params))],
    }


def main():
    cases = []
    for dtype_name, dtype in DTYPES.items():
        def grads(name, sizes=SIZES, skip=3):
            g = make_grads(f"{name}-{dtype_name}", [dtype], sizes)
            g.insert(skip, None)
            return g

        no_empty = tuple(s for s in SIZES if s > 0)
        for p, label in ((2.0, "2"), (1.0, "1"), (math.inf, "inf"), (3.0, "3")):
            sizes = no_empty if math.isinf(p) else SIZES  # PyTorch refuses the inf-norm of an empty tensor
            name = f"norm{label}-below-{dtype_name}"
            cases.append(norm_case(name, grads(name, sizes), p, fraction=0.37))
            name = f"norm{label}-above-{dtype_name}"
            cases.append(norm_case(name, grads(name, sizes), p, fraction=3.0))
        name = f"norm2-max-norm-zero-{dtype_name}"
        cases.append(norm_case(name, grads(name), 2.0, max_norm=0.0))
        name = f"norm0.5-below-{dtype_name}"
        cases.append(norm_case(name, grads(name), 0.5, fraction=0.2))
        for p, label in ((2.0, "2"), (math.inf, "inf")):
            name = f"norm{label}-wave-{dtype_name}"
            g = grads(name, sizes=(5, 1001), skip=1)
            g.insert(2, wave(WAVE, dtype))
            cases.append(norm_case(name, g, p, fraction=0.5, waves=(2,)))
        name = f"norm2-infinite-{dtype_name}"
        g = grads(name, sizes=(7, 5))
        g[0][3] = math.inf
        cases.append(norm_case(name, g, 2.0, max_norm=1.0))
        name = f"norm2-nan-{dtype_name}"
        g = grads(name, sizes=(7, 5))
        g[1][2] = math.nan
        cases.append(norm_case(name, g, 2.0, max_norm=1.0))
        for clip_value in (0.05, 1.5):
            name = f"value-{clip_value}-{dtype_name}"
            g = grads(name, sizes=(0, 9, 1001, 33))
            g.append(wave(WAVE, dtype))
            g[1][4] = math.nan
            cases.append(value_case(name, g, clip_value, waves=(5,)))

    mixed = make_grads("mixed", [torch.float32, torch.float64], (33, 7, 1001, 1))
    cases.append(norm_case("norm2-mixed-dtypes", mixed, 2.0, fraction=0.37))
    cases.append(norm_case("norm-no-grads", [None, None], 2.0, max_norm=1.0))

    for c in cases:
        extra = ""
        if c["kind"] == "norm" and isinstance(c["total"], float) and c["total"] != 0:
            extra = f"  PyTorch vs float64 reference: {abs(c['total'] - c['reference']) / c['reference']:.2e}"
        print(f"{c['name']:32s} total {c.get('total', '-')}{extra}")
    with open(OUTPUT, "w") as f:
        json.dump({"generator": "scripts/gen_fixtures_clip.py", "torch": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {OUTPUT}: {len(cases)} cases, {os.path.getsize(OUTPUT)} bytes")


if __name__ == "__main__":
    main()
