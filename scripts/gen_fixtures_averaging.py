#!/usr/bin/env python3
"""Generate PyTorch reference values for weight averaging and SWALR (__test__/averaging.spec.ts).

Writes ``__test__/fixtures/averaging.json``:

* ``averaging``: for each case, ``torch.optim.swa_utils.AveragedModel`` over an
  ``nn.ParameterList`` of tensors of 0 to 3 dimensions (one of them empty), either an EMA
  (``multi_avg_fn=get_ema_multi_avg_fn(decay)``) or SWA (the default: on the CPU,
  ``get_swa_avg_fn``'s ``a + (p - a)/(n + 1)``), in float32 or float64. ``init`` is each
  parameter when the averaged model is made, ``steps[k].params`` the parameters at update k
  (each a seeded random walk from the last) and ``steps[k].averaged`` the averages after it.
* ``swalr``: ``torch.optim.swa_utils.SWALR`` over SGD with two param groups of different
  learning rates, both anneal strategies, several ``anneal_epochs`` (0 included) and
  ``swa_lr`` as one number or one per group: each group's lr after construction and after
  each of ``steps`` steps.

and ``__test__/fixtures/averaging.safetensors``: the ``state_dict()`` of an EMA
``AveragedModel`` after three updates (``n_averaged`` and ``module.<i>``), as
``safetensors.torch.save_file`` writes it, with the parameters it was fed in ``expected``
of averaging.json's ``checkpoint``.

Regenerate from the repository root with ``python3 scripts/gen_fixtures_averaging.py``.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn

sys.path.insert(0, os.path.dirname(__file__))
from fixture_json import write_fixture  # noqa: E402

OUTPUT = os.path.join("__test__", "fixtures", "averaging.json")
CHECKPOINT = os.path.join("__test__", "fixtures", "averaging.safetensors")
SHAPES = [[7], [3, 4], [], [0], [2, 2, 3]]
UPDATES = 25
SWALR_STEPS = 120


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def averaging_case(name, dtype, decay, seed):
    gen = torch.Generator().manual_seed(seed)
    params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES])
    if decay is None:
        model = AveragedModel(params)
    else:
        model = AveragedModel(params, multi_avg_fn=get_ema_multi_avg_fn(decay))
    case = {
        "name": name,
        "strategy": "SWA" if decay is None else "EMA",
        "dtype": "float32" if dtype == torch.float32 else "float64",
        "shapes": SHAPES,
        "init": [flat(p) for p in params],
    }
    if decay is not None:
        case["decay"] = decay
    steps = []
    with torch.no_grad():
        for _ in range(UPDATES):
            for p in params:
                p.add_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.5)
            model.update_parameters(params)
            steps.append({"params": [flat(p) for p in params], "averaged": [flat(p) for p in model.module]})
    assert int(model.n_averaged) == UPDATES
    case["nAveraged"] = UPDATES
    case["steps"] = steps
    return case


def swalr_case(name, swa_lr, anneal_epochs, anneal_strategy):
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1},
              {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.03}]
    initial = [{"lr": g["lr"]} for g in groups]  # SGD keeps these dicts as its param groups
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    sched = SWALR(opt, swa_lr=swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=anneal_strategy)
    lrs = [[g["lr"] for g in opt.param_groups]]
    for _ in range(SWALR_STEPS):
        opt.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    return {
        "name": name,
        "groups": initial,
        "args": {"swaLr": swa_lr, "annealEpochs": anneal_epochs, "annealStrategy": anneal_strategy},
        "steps": lrs,
    }


def checkpoint():
    gen = torch.Generator().manual_seed(7)
    params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [[4], [2, 3]]])
    model = AveragedModel(params, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    fed = []
    with torch.no_grad():
        for _ in range(3):
            for p in params:
                p.add_(torch.randn(p.shape, generator=gen))
            fed.append([flat(p) for p in params])
            model.update_parameters(params)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, CHECKPOINT)
    return {
        "decay": 0.9,
        "shapes": [[4], [2, 3]],
        "fed": fed,
        "keys": sorted(state),
        "nAveraged": int(model.n_averaged),
        "averaged": [flat(p) for p in model.module],
    }


def main():
    torch.set_num_threads(1)
    cases = []
    seed = 0
    for dtype in (torch.float32, torch.float64):
        for decay in (0.999, 0.9, 0.5, 0.3, 0.0, None):
            seed += 1
            label = "swa" if decay is None else f"ema-{decay}"
            cases.append(averaging_case(f"{label}-{'f32' if dtype == torch.float32 else 'f64'}", dtype, decay, seed))
    swalr = []
    for strategy in ("cos", "linear"):
        for epochs in (10, 5, 1, 0, 37):
            swalr.append(swalr_case(f"{strategy}-{epochs}", 0.01, epochs, strategy))
        swalr.append(swalr_case(f"{strategy}-per-group", [0.02, 0.005], 10, strategy))
    header = {
        "generator": "scripts/gen_fixtures_averaging.py",
        "torch": torch.__version__,
        "swalr": swalr,
        "checkpoint": checkpoint(),
    }
    write_fixture(OUTPUT, header, cases, 2_000_000)


if __name__ == "__main__":
    main()
