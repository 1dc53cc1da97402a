"""Trajectories and checkpoints of bitsandbytes' 8-bit optimizers on the CPU, for fastoptim's
Adam8bit, AdamW8bit and Lion8bit.

Parameters and gradients come from a 32-bit xorshift that __test__/eightbit.spec.ts computes too
(`series` below), so the fixture holds only the results: each case's parameters after its first
step and after the last, and its state then (codes, absmax, maps), as base64 of the raw bytes.
Every case has a tensor under min_8bit_size (float32 state) and one over it whose last block is
partial. The fp32 Adam distance to the 8-bit trajectory is recorded for the record (`fp32Distance`).

The checkpoint case saves bitsandbytes' Adam8bit state after BEFORE steps as a safetensors file
(`state.<i>.<key>` tensors, param groups as JSON in the metadata, the project's layout), then
continues AFTER steps; the spec loads the file, continues and compares.

`python3 scripts/gen_fixtures_eightbit.py` from the repository root (needs torch, bitsandbytes,
safetensors).

`python3 scripts/gen_fixtures_eightbit.py --steps` measures bitsandbytes' CPU quantizer on every
float32 quotient in [-1, 1] (blocks whose absmax is 1, so that the quotient is the element; about 7
minutes) and writes crate/src/quantize_steps.rs: for each map, the quotients at which the code
changes and the code from there on. Its quantizer (a BinSearch "Direct2" index over the map, then
the nearer of two neighbours) is not always the nearest entry, most visibly near 0, and this is
what makes the kernel agree with it code for code. `python3 scripts/gen_fixtures_eightbit.py --continue <file.safetensors>` loads a
checkpoint written by fastoptim into bitsandbytes' Adam8bit, continues it as the spec does, and
prints how far its parameters land from fastoptim's (written beside it as <file>.json).
"""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
import torch
import bitsandbytes as bnb
from safetensors import safe_open
from safetensors.torch import save_file

from fixture_json import camel, write_fixture

OUT = os.path.join("__test__", "fixtures", "eightbit.json")
CHECKPOINT = os.path.join("__test__", "fixtures", "checkpoints", "adam8bit-bnb.safetensors")
STEPS = 15
BEFORE, AFTER = 8, 7


def series(seed, n, exponent):
    """n float32 values k/2^23 - 1 (k from a 32-bit xorshift seeded by `seed`), times 2^exponent: exact in float32."""
    x = (seed * 2654435761) & 0xFFFFFFFF or 1
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = np.float32(((x >> 8) - (1 << 23)) / (1 << 23) * 2.0**exponent)
    return out


def grad_exponent(step):
    """Gradient scales vary by step: 2^-3, 2^-5, 2^-4, ..."""
    return -3 - (step * 7) % 3


def b64(t):
    return base64.b64encode(t.detach().contiguous().numpy().tobytes()).decode()


CASES = [
    ("adam8bit", "Adam8bit", dict(lr=1e-3), [1000, 5000]),
    ("adam8bit-decay", "Adam8bit", dict(lr=1e-2, betas=(0.95, 0.98), eps=1e-6, weight_decay=0.1), [300, 9000]),
    ("adamw8bit", "AdamW8bit", dict(lr=3e-3, betas=(0.8, 0.99)), [4095, 4097]),
    ("lion8bit", "Lion8bit", dict(lr=1e-3, weight_decay=0.1), [700, 5000]),
    ("lion8bit-betas", "Lion8bit", dict(lr=3e-4, betas=(0.95, 0.98)), [17, 6000]),
]


def params_for(seed, sizes):
    return [torch.nn.Parameter(torch.from_numpy(series(seed + i, n, 0))) for i, n in enumerate(sizes)]


def grads_for(seed, step, sizes):
    return [torch.from_numpy(series(1000 * seed + 100 * step + i, n, grad_exponent(step))) for i, n in enumerate(sizes)]


def state_of(opt, params):
    out = []
    for p in params:
        s = opt.state[p]
        out.append({k: (b64(v) if torch.is_tensor(v) else v) for k, v in sorted(s.items())})
    return out


def run_case(index, name, cls_name, kwargs, sizes):
    seed = index + 1
    params = params_for(seed, sizes)
    init = [p.detach().clone() for p in params]
    opt = getattr(bnb.optim, cls_name)(params, **kwargs)
    reference = params_for(seed, sizes)
    fp32 = (torch.optim.Adam if "Adam" in cls_name else None)
    if fp32:
        fp32 = torch.optim.AdamW(reference, **{**kwargs, "weight_decay": kwargs.get("weight_decay", 1e-2 if cls_name == "AdamW8bit" else 0)})
    first = None
    for step in range(1, STEPS + 1):
        grads = grads_for(seed, step, sizes)
        for p, r, g in zip(params, reference, grads):
            p.grad = g.clone()
            r.grad = g.clone()
        opt.step()
        if fp32:
            fp32.step()
        if step == 1:
            first = {"params": [b64(p) for p in params], "state": state_of(opt, params)}
    moved = sum(float(((p.detach() - i) ** 2).sum()) for p, i in zip(params, init)) ** 0.5
    distance = None
    if fp32:
        distance = sum(float(((p.detach() - r.detach()) ** 2).sum()) for p, r in zip(params, reference)) ** 0.5 / moved
    group = opt.param_groups[0]
    options = {camel(k): (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k in ("lr", "betas", "eps", "weight_decay")}
    if cls_name == "Lion8bit":
        options.pop("eps", None)
    return {
        "name": name,
        "optimizer": cls_name,
        "options": options,
        "seed": seed,
        "sizes": sizes,
        "steps": STEPS,
        "fp32Distance": distance,
        "first": first,
        "final": {"params": [b64(p) for p in params], "state": state_of(opt, params)},
    }


def checkpoint_case():
    """bnb's Adam8bit state after BEFORE steps, written as a checkpoint; then AFTER more steps."""
    sizes = [1000, 5000]
    seed = 50
    params = params_for(seed, sizes)
    kwargs = dict(lr=2e-3, betas=(0.9, 0.99), weight_decay=0.05)
    opt = bnb.optim.Adam8bit(params, **kwargs)
    for step in range(1, BEFORE + 1):
        for p, g in zip(params, grads_for(seed, step, sizes)):
            p.grad = g
        opt.step()
    tensors = {}
    for i, p in enumerate(params):
        for key, value in opt.state[p].items():
            tensors[f"state.{i}.{key}"] = value.clone().contiguous() if torch.is_tensor(value) else torch.tensor(float(value))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"} | {"params": list(range(len(params)))}
              for g in opt.param_groups]
    os.makedirs(os.path.dirname(CHECKPOINT), exist_ok=True)
    save_file(tensors, CHECKPOINT, metadata={"format": "pt", "param_groups": json.dumps(groups)})
    saved = [b64(p) for p in params]
    for step in range(BEFORE + 1, BEFORE + AFTER + 1):
        for p, g in zip(params, grads_for(seed, step, sizes)):
            p.grad = g
        opt.step()
    return {"options": {camel(k): (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}, "seed": seed,
            "sizes": sizes, "before": BEFORE, "after": AFTER, "paramsAtSave": saved,
            "final": {"params": [b64(p) for p in params], "state": state_of(opt, params)}}


def continue_from(path):
    """Loads fastoptim's checkpoint `path` into bnb's Adam8bit, continues, compares with `path`.json."""
    with open(path + ".json") as f:
        ours = json.load(f)
    sizes, seed = ours["sizes"], ours["seed"]
    params = [torch.nn.Parameter(torch.from_numpy(np.frombuffer(base64.b64decode(p), dtype=np.float32).copy())) for p in ours["paramsAtSave"]]
    state = {}
    with safe_open(path, "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        for key in f.keys():
            _, i, name = key.split(".")
            value = f.get_tensor(key)
            state.setdefault(int(i), {})[name] = int(value.item()) if name == "step" else value
    opt = bnb.optim.Adam8bit(params)
    opt.load_state_dict({"state": state, "param_groups": groups})
    for step in range(ours["before"] + 1, ours["before"] + ours["after"] + 1):
        for p, g in zip(params, grads_for(seed, step, sizes)):
            p.grad = g
        opt.step()
    theirs = [np.frombuffer(base64.b64decode(p), dtype=np.float32) for p in ours["finalParams"]]
    for p, t in zip(params, theirs):
        d = np.abs(p.detach().numpy() - t)
        print(f"size {len(t)}: max |bnb - fastoptim| = {d.max():.3e}, equal elements {np.mean(d == 0) * 100:.2f}%")


STEPS_RS = os.path.join("crate", "src", "quantize_steps.rs")


def measure_steps(signed):
    """(quotient, code) at every change of bitsandbytes' code over the float32 values in [-1, 1], ascending."""
    code_map = bnb.functional.create_dynamic_map(signed=signed)
    magnitudes = np.arange(0, 0x3F800000 + 1, dtype=np.uint32)  # +0 .. 1.0 as bits
    steps, previous = [], None
    for negative, bits in ((True, magnitudes[::-1]), (False, magnitudes)):
        for start in range(0, len(bits), 1 << 24):
            z = bits[start:start + (1 << 24)].copy().view(np.float32)
            z = -z if negative else z
            blocks = -(-len(z) // 255)
            a = np.ones((blocks, 256), dtype=np.float32)
            padded = np.zeros(blocks * 255, dtype=np.float32)
            padded[:len(z)] = z
            a[:, 1:] = padded.reshape(blocks, 255)
            q, _ = torch.ops.bitsandbytes.quantize_blockwise(torch.from_numpy(a.reshape(-1)), code_map.clone(), 256)
            codes = q.numpy().reshape(blocks, 256)[:, 1:].reshape(-1)[:len(z)]
            for i in np.concatenate([[0], np.nonzero(np.diff(codes.astype(np.int16)))[0] + 1]):
                if int(codes[i]) != previous:
                    steps.append((float(z[i]), int(codes[i])))
                    previous = int(codes[i])
    assert all(a[1] < b[1] for a, b in zip(steps, steps[1:])), "codes must rise with the quotient"
    return steps


def write_steps(signed_steps, unsigned_steps, path=STEPS_RS):
    def table(name, doc, steps):
        rows = [f"  (0x{np.float32(z).view(np.uint32):08x}, {c})," for z, c in steps]
        return f"/// {doc}\npub(crate) const {name}: [(u32, u8); {len(steps)}] = [\n" + "\n".join(rows) + "\n];\n"
    text = ("// Generated by scripts/gen_fixtures_eightbit.py --steps from bitsandbytes " + bnb.__version__ + "'s CPU quantizer:\n"
            "// (f32 bits of the least quotient, code from there on), ascending. Do not edit.\n\n"
            + table("SIGNED_STEPS", "Where the code changes over quotients in [-1, 1], the signed map.", signed_steps) + "\n"
            + table("UNSIGNED_STEPS", "Where the code changes over quotients in [-1, 1], the unsigned map.", unsigned_steps))
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}: {len(signed_steps)} and {len(unsigned_steps)} steps")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--continue":
        return continue_from(sys.argv[2])
    if len(sys.argv) == 2 and sys.argv[1] == "--steps":
        return write_steps(measure_steps(True), measure_steps(False))
    torch.manual_seed(0)
    qmaps = {"signed": b64(bnb.functional.create_dynamic_map(signed=True)),
             "unsigned": b64(bnb.functional.create_dynamic_map(signed=False))}
    cases = [run_case(i, *case) for i, case in enumerate(CASES)]
    for c in cases:
        if c["fp32Distance"] is not None:
            print(f"{c['name']}: fp32 Adam lands {c['fp32Distance'] * 100:.2f}% of the distance moved away from bnb")
    header = {"generator": "scripts/gen_fixtures_eightbit.py", "bitsandbytes": bnb.__version__, "torch": torch.__version__,
              "qmaps": qmaps, "checkpoint": checkpoint_case()}
    write_fixture(OUT, header, cases, 2_000_000, case_text=lambda c: "  " + json.dumps(c, separators=(",", ":")))


if __name__ == "__main__":
    main()
