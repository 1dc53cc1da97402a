"""What the trajectory fixture generators share: camelCase option names, seeded input
perturbation, and the fixture file's layout (one line per key and per step: compact but diffable).

Imported by scripts/gen_fixtures_{family,lion,muon,schedulefree,torch_more}.py; run those from the
repository root (`python3 scripts/gen_fixtures_family.py`), which puts this folder on the path.
"""
import json
import os
import re

import torch


def camel(name):
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def to_json_options(opts):
    return {camel(key): list(value) if isinstance(value, tuple) else value for key, value in opts.items()}


def sprinkle(t, gen, value, count):
    """Set `count` random elements of `t` to +-value (in place)."""
    if t.numel() <= 1:
        return
    idx = torch.randperm(t.numel(), generator=gen)[:count]
    signs = torch.randint(0, 2, (count,), generator=gen, dtype=torch.float64) * 2 - 1
    t[idx] = signs * value


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
