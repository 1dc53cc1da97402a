"""Checkpoints written by PyTorch, for fastoptim to load and continue from.

For each case, a torch.optim optimizer over three parameters (two param groups with different
learning rates) takes 10 steps; its state dict is then written as a safetensors file whose tensor
names are PyTorch's state_dict keys (`state.0.exp_avg`, `state.0.step`, ...) and whose metadata
holds the param groups as JSON (`param_groups`, PyTorch's own names and values). The script also
records the parameters at that point and 10 more steps of gradients and resulting parameters, so a
test can load the checkpoint into fastoptim, continue, and compare.

Writes __test__/fixtures/checkpoints/<case>.safetensors and __test__/fixtures/checkpoints/cases.json.
Regenerate with `python3 scripts/gen_fixtures_checkpoint.py` from the repository root
(needs torch and safetensors).
"""

import json
import os
import zlib

import torch
from safetensors.torch import save_file

OUT = os.path.join("__test__", "fixtures", "checkpoints")
SIZES = (1, 37, 99)
BEFORE, AFTER = 10, 10

# name, torch class, optimizer-level kwargs, group-1 overrides, fastoptim options (camelCase) for the same
CASES = [
    ("adam-amsgrad", "Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01), dict(lr=3e-2)),
    ("adamw", "AdamW", dict(lr=1e-2, weight_decay=0.1), dict(lr=5e-3, betas=(0.8, 0.99))),
    ("sgd-nesterov", "SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3), dict(lr=2e-2)),
    ("rmsprop-centered", "RMSprop", dict(lr=1e-3, momentum=0.5, centered=True), dict(lr=2e-3)),
    ("adagrad", "Adagrad", dict(lr=1e-2, lr_decay=1e-3, initial_accumulator_value=0.1), dict(lr=2e-2)),
    ("adamax", "Adamax", dict(lr=2e-3, weight_decay=0.01), dict(lr=4e-3)),
    ("nadam", "NAdam", dict(lr=2e-3, momentum_decay=4e-3), dict(lr=4e-3)),
    ("radam", "RAdam", dict(lr=1e-3, decoupled_weight_decay=True, weight_decay=0.01), dict(lr=2e-3)),
]
DTYPES = (torch.float32, torch.float64)
IMPLEMENTATION_ONLY = {"foreach", "fused", "capturable", "differentiable", "params"}


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def options_for(group):
    """A torch param group's math options in fastoptim's camelCase form."""
    return {camel(k): (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k not in IMPLEMENTATION_ONLY}


def run_case(name, cls_name, kwargs, overrides, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    params = [torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)) for n in SIZES]
    cls = getattr(torch.optim, cls_name)
    opt = cls([{"params": params[:2]}, {"params": params[2:], **overrides}], **kwargs)

    def grads():
        return [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in SIZES]

    for _ in range(BEFORE):
        for p, g in zip(params, grads()):
            p.grad = g
        opt.step()

    state = opt.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().clone().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    file = f"{name}-{str(dtype).removeprefix('torch.')}.safetensors"
    save_file(tensors, os.path.join(OUT, file), metadata={"format": "pt", "param_groups": json.dumps(groups)})

    at_checkpoint = [p.detach().tolist() for p in params]
    steps = []
    for _ in range(AFTER):
        gs = grads()
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()
        steps.append({"grads": [g.tolist() for g in gs], "params": [p.detach().tolist() for p in params]})

    return {
        "name": f"{name}-{str(dtype).removeprefix('torch.')}",
        "optimizer": cls_name,
        "dtype": str(dtype).removeprefix("torch."),
        "file": file,
        "groups": [{"params": [0, 1], "options": options_for(opt.param_groups[0])},
                   {"params": [2], "options": options_for(opt.param_groups[1])}],
        "paramsAtCheckpoint": at_checkpoint,
        "steps": steps,
    }


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    cases = [run_case(*case, dtype) for case in CASES for dtype in DTYPES]
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/gen_fixtures_checkpoint.py", "torch": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"{len(cases)} cases written to {OUT}")


if __name__ == "__main__":
    main()
