#!/usr/bin/env python3
"""Generate PyTorch reference sequences for the learning-rate scheduler tests.

Writes ``__test__/fixtures/schedulers.json``: for every case in ``CASES``, the
learning rate of each param group right after the scheduler is built and after
each of its ``steps`` steps, as ``torch.optim.lr_scheduler`` produces them over a
real torch optimizer (SGD with momentum, or Adam) with two param groups of
different learning rates. OneCycleLR cases also record the momentum (SGD) or
``betas[0]`` (Adam) it cycles; ReduceLROnPlateau cases the metric fed at each
step; SequentialLR cases the schedulers it chains; resume cases a second
scheduler built with ``last_epoch`` on the same optimizer after the first has
taken ``resumeAfter`` steps.

Nothing here is random: the sequences depend only on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures_schedulers.py

JSON layout (read by ``__test__/schedulers.spec.ts``)::

    {"generator": "scripts/gen_fixtures_schedulers.py", "torch": "<version>",
     "lambdas": {name: python source},
     "cases": [{"name", "scheduler", "optimizer": "SGD" | "Adam",
                "groups": [{camelCase optimizer options}],
                "args": {camelCase scheduler arguments},
                "steps", "resumeAfter"?, "metrics"?: [...],
                "lrs": [[lr of each group] for the state after construction and each step],
                "momentums"?: [[momentum or betas[0] of each group], same indexing]}]}

Arguments use fastoptim's camelCase names (``tMax`` is PyTorch's ``T_max``); a
``lrLambda`` is the name of one of ``LAMBDAS`` (or a list of names, one per
group), which the test maps to the same function in JavaScript; SequentialLR's
``schedulers`` are ``{"scheduler", "args"}`` objects built in order, before it.
"""

import json
import math
import os
import warnings

import torch
from torch.optim import lr_scheduler

OUTPUT = os.path.join("__test__", "fixtures", "schedulers.json")
STEPS = 120

# Written in the subset of Python that reads the same in JavaScript once `//` is Math.floor.
LAMBDAS = {
    "exp095": lambda epoch: 0.95**epoch,
    "stair30": lambda epoch: epoch // 30,
    "warmup10": lambda epoch: min(1.0, (epoch + 1) / 10),
    "inverse": lambda epoch: 1 / (1 + 0.1 * epoch),
}
LAMBDA_SOURCE = {
    "exp095": "0.95 ** epoch",
    "stair30": "epoch // 30",
    "warmup10": "min(1.0, (epoch + 1) / 10)",
    "inverse": "1 / (1 + 0.1 * epoch)",
}

SGD_GROUPS = [dict(lr=0.1, momentum=0.9), dict(lr=0.03, momentum=0.8)]
ADAM_GROUPS = [dict(lr=1e-3, betas=[0.9, 0.999]), dict(lr=3e-4, betas=[0.85, 0.99])]


def metrics(kind):
    """A fixed metric sequence: improving, then plateaus with small wiggles, then a drop."""
    out = []
    for t in range(STEPS):
        if t < 20:
            value = 2.0 - 0.05 * t
        elif t < 60:
            value = 1.0 + 0.001 * ((t * 7) % 5)
        elif t < 70:
            value = 0.9 - 0.01 * (t - 60)
        else:
            value = 0.8 + 0.00005 * ((t * 3) % 4)
        out.append(round(value if kind == "min" else -value, 9))
    return out


CASES = [
    # StepLR
    dict(name="step-default-gamma", scheduler="StepLR", args=dict(stepSize=30)),
    dict(name="step-7-half", scheduler="StepLR", args=dict(stepSize=7, gamma=0.5), optimizer="Adam"),
    dict(name="step-1-growth", scheduler="StepLR", args=dict(stepSize=1, gamma=1.01)),
    # MultiStepLR
    dict(name="multistep", scheduler="MultiStepLR", args=dict(milestones=[10, 40, 90], gamma=0.3)),
    dict(name="multistep-repeated-unsorted", scheduler="MultiStepLR",
         args=dict(milestones=[50, 5, 50, 100])),
    # ExponentialLR
    dict(name="exponential-095", scheduler="ExponentialLR", args=dict(gamma=0.95)),
    dict(name="exponential-0999", scheduler="ExponentialLR", args=dict(gamma=0.999), optimizer="Adam"),
    # CosineAnnealingLR: past tMax it keeps following the recursion (cosine back up)
    dict(name="cosine-tmax-100", scheduler="CosineAnnealingLR", args=dict(tMax=100)),
    dict(name="cosine-tmax-30-etamin", scheduler="CosineAnnealingLR", args=dict(tMax=30, etaMin=1e-4)),
    dict(name="cosine-tmax-7", scheduler="CosineAnnealingLR", args=dict(tMax=7, etaMin=0.001),
         optimizer="Adam"),
    # LinearLR
    dict(name="linear-default", scheduler="LinearLR", args={}),
    dict(name="linear-warmup-50", scheduler="LinearLR",
         args=dict(startFactor=0.01, endFactor=1.0, totalIters=50)),
    dict(name="linear-decay", scheduler="LinearLR",
         args=dict(startFactor=1.0, endFactor=0.05, totalIters=100), optimizer="Adam"),
    # LambdaLR
    dict(name="lambda-exp", scheduler="LambdaLR", args=dict(lrLambda="exp095")),
    dict(name="lambda-per-group", scheduler="LambdaLR", args=dict(lrLambda=["warmup10", "stair30"])),
    dict(name="lambda-inverse", scheduler="LambdaLR", args=dict(lrLambda="inverse"), optimizer="Adam"),
    # OneCycleLR: momentum (SGD) or betas[0] (Adam) cycles too
    dict(name="onecycle-cos-sgd", scheduler="OneCycleLR", args=dict(maxLr=0.5, totalSteps=STEPS)),
    dict(name="onecycle-linear-three-phase-adam", scheduler="OneCycleLR",
         args=dict(maxLr=[0.01, 0.004], totalSteps=STEPS, annealStrategy="linear", threePhase=True),
         optimizer="Adam"),
    dict(name="onecycle-epochs-custom", scheduler="OneCycleLR",
         args=dict(maxLr=[1.0, 0.2], epochs=12, stepsPerEpoch=10, pctStart=0.25,
                   baseMomentum=[0.8, 0.7], maxMomentum=0.97, divFactor=10.0,
                   finalDivFactor=100.0)),
    dict(name="onecycle-three-phase-cos-adam", scheduler="OneCycleLR",
         args=dict(maxLr=0.003, totalSteps=150, threePhase=True, pctStart=0.4), optimizer="Adam",
         steps=150),
    dict(name="onecycle-no-momentum", scheduler="OneCycleLR",
         args=dict(maxLr=0.2, totalSteps=STEPS, cycleMomentum=False)),
    # ReduceLROnPlateau, fed metrics(mode)
    dict(name="plateau-min-rel", scheduler="ReduceLROnPlateau", args=dict(patience=3)),
    dict(name="plateau-min-abs-cooldown", scheduler="ReduceLROnPlateau",
         args=dict(factor=0.5, patience=2, threshold=0.01, thresholdMode="abs", cooldown=4,
                   minLr=[0.01, 0.005])),
    dict(name="plateau-max-rel", scheduler="ReduceLROnPlateau",
         args=dict(mode="max", factor=0.3, patience=0, threshold=1e-3, minLr=1e-3)),
    dict(name="plateau-eps", scheduler="ReduceLROnPlateau",
         args=dict(factor=0.5, patience=1, eps=1e-4), optimizer="Adam"),
    # SequentialLR: the chained schedulers are built first, in order
    dict(name="sequential-warmup-cosine", scheduler="SequentialLR",
         args=dict(schedulers=[dict(scheduler="LinearLR", args=dict(startFactor=0.1, totalIters=10)),
                               dict(scheduler="CosineAnnealingLR", args=dict(tMax=90))],
                   milestones=[10])),
    dict(name="sequential-three", scheduler="SequentialLR",
         args=dict(schedulers=[dict(scheduler="ExponentialLR", args=dict(gamma=0.9)),
                               dict(scheduler="StepLR", args=dict(stepSize=20, gamma=0.5)),
                               dict(scheduler="LambdaLR", args=dict(lrLambda="warmup10"))],
                   milestones=[15, 50])),
    dict(name="sequential-lambda-multistep", scheduler="SequentialLR", optimizer="Adam",
         args=dict(schedulers=[dict(scheduler="LambdaLR", args=dict(lrLambda="warmup10")),
                               dict(scheduler="MultiStepLR", args=dict(milestones=[20, 60], gamma=0.2))],
                   milestones=[8])),
    # lastEpoch: a second scheduler resumes on the optimizer the first one stepped
    dict(name="resume-step", scheduler="StepLR", args=dict(stepSize=10, gamma=0.5), resumeAfter=25),
    dict(name="resume-cosine", scheduler="CosineAnnealingLR", args=dict(tMax=50), resumeAfter=20),
    dict(name="resume-exponential", scheduler="ExponentialLR", args=dict(gamma=0.97), resumeAfter=13),
    dict(name="resume-linear", scheduler="LinearLR", args=dict(startFactor=0.2, totalIters=40),
         resumeAfter=9),
    dict(name="resume-lambda", scheduler="LambdaLR", args=dict(lrLambda="inverse"), resumeAfter=30),
    dict(name="resume-multistep", scheduler="MultiStepLR", args=dict(milestones=[10, 30, 60]),
         resumeAfter=30),
    dict(name="resume-onecycle", scheduler="OneCycleLR", args=dict(maxLr=0.4, totalSteps=STEPS),
         resumeAfter=40),
]

SNAKE = {"tMax": "T_max", "etaMin": "eta_min", "lrLambda": "lr_lambda"}


def snake(name):
    if name in SNAKE:
        return SNAKE[name]
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def torch_args(args):
    out = {}
    for key, value in args.items():
        if key == "lrLambda":
            value = [LAMBDAS[v] for v in value] if isinstance(value, list) else LAMBDAS[value]
        out[snake(key)] = value
    return out


def make_optimizer(kind):
    params = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    if kind == "SGD":
        groups = [dict(params=[p], **g) for p, g in zip(params, SGD_GROUPS)]
        return torch.optim.SGD(groups), SGD_GROUPS
    groups = [dict(params=[p], **{**g, "betas": tuple(g["betas"])}) for p, g in zip(params, ADAM_GROUPS)]
    return torch.optim.Adam(groups), ADAM_GROUPS


def build(opt, name, args, last_epoch=-1):
    cls = getattr(lr_scheduler, name)
    if name == "SequentialLR":
        inner = [build(opt, s["scheduler"], s["args"]) for s in args["schedulers"]]
        return cls(opt, schedulers=inner, milestones=args["milestones"])
    extra = {} if last_epoch == -1 else dict(last_epoch=last_epoch)
    return cls(opt, **torch_args(args), **extra)


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def run_case(case):
    kind = case.get("optimizer", "SGD")
    opt, groups = make_optimizer(kind)
    steps = case.get("steps", STEPS)
    sched = build(opt, case["scheduler"], case["args"])
    resume = case.get("resumeAfter")
    if resume is not None:
        for _ in range(resume):
            opt.step()
            sched.step()
        sched = build(opt, case["scheduler"], case["args"], last_epoch=resume)
        # Building with last_epoch=k already computes epoch k + 1, as PyTorch does.
        steps -= resume + 1
    feed = metrics(case["args"].get("mode", "min"))[:steps] if case["scheduler"] == "ReduceLROnPlateau" else None

    lrs = [[g["lr"] for g in opt.param_groups]]
    momentums = [[momentum_of(g) for g in opt.param_groups]]
    for t in range(steps):
        opt.step()
        if feed is None:
            sched.step()
        else:
            sched.step(feed[t])
        lrs.append([g["lr"] for g in opt.param_groups])
        momentums.append([momentum_of(g) for g in opt.param_groups])
        assert sched.get_last_lr() == lrs[-1]

    out = dict(name=case["name"], scheduler=case["scheduler"], optimizer=kind,
               groups=groups, args=case["args"], steps=steps)
    if resume is not None:
        out["resumeAfter"] = resume
    if feed is not None:
        out["metrics"] = feed
    out["lrs"] = lrs
    if case["scheduler"] == "OneCycleLR":
        out["momentums"] = momentums
    for row in lrs:
        assert all(isinstance(x, float) and math.isfinite(x) for x in row), case["name"]
    return out


def main():
    warnings.simplefilter("ignore")
    cases = [run_case(case) for case in CASES]
    for c in cases:
        first, last = c["lrs"][0], c["lrs"][-1]
        print(f"{c['name']:36s} {c['steps']:4d} steps  lr {first} -> {last}")
    with open(OUTPUT, "w") as f:
        json.dump(dict(generator="scripts/gen_fixtures_schedulers.py", torch=torch.__version__,
                       lambdas=LAMBDA_SOURCE, cases=cases), f, indent=1)
        f.write("\n")
    print(f"wrote {OUTPUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
