#!/usr/bin/env python3
"""Generate PyTorch reference sequences for the learning-rate scheduler tests.

Writes ``__test__/fixtures/schedulers.json``: for every case in ``CASES``, the
learning rate of each param group right after the scheduler is built and after
each of its ``steps`` steps, as ``torch.optim.lr_scheduler`` produces them over a
real torch optimizer (SGD with momentum, or Adam) with two param groups of
different learning rates. Cases with a OneCycleLR or a CyclicLR also record the
momentum (SGD) or ``betas[0]`` (Adam) it cycles; ReduceLROnPlateau cases the
metric fed at each step; CosineAnnealingWarmRestarts cases may give the epoch
of each step (``step(epoch)``, fractional or not; null for a plain ``step()``);
SequentialLR and ChainedScheduler cases the schedulers they hold; resume cases
a second scheduler built with ``last_epoch`` on the same optimizer after the
first has taken ``resumeAfter`` steps.

Nothing here is random: the sequences depend only on the torch version.
Regenerate from the repository root with:

    python3 scripts/gen_fixtures_schedulers.py

JSON layout (read by ``__test__/schedulers.spec.ts``)::

    {"generator": "scripts/gen_fixtures_schedulers.py", "torch": "<version>",
     "lambdas": {name: python source},
     "cases": [{"name", "scheduler", "optimizer": "SGD" | "Adam",
                "groups": [{camelCase optimizer options}],
                "args": {camelCase scheduler arguments},
                "steps", "resumeAfter"?, "metrics"?: [...], "epochs"?: [epoch or null],
                "lrs": [[lr of each group] for the state after construction and each step],
                "momentums"?: [[momentum or betas[0] of each group], same indexing]}]}

Arguments use fastoptim's camelCase names (``tMax`` is PyTorch's ``T_max``); a
``lrLambda`` or ``scaleFn`` is the name of one of ``LAMBDAS`` (or a list of
names, one per group), which the test maps to the same function in JavaScript;
SequentialLR's and ChainedScheduler's ``schedulers`` are ``{"scheduler", "args"}``
objects built in order, before them; ChainedScheduler's ``"optimizer": true``
passes the optimizer too (without it, PyTorch takes the first scheduler's).
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
    "constant095": lambda epoch: 0.95,
    "slowdown": lambda epoch: 1 - 0.002 * epoch,
}
LAMBDA_SOURCE = {
    "exp095": "0.95 ** epoch",
    "stair30": "epoch // 30",
    "warmup10": "min(1.0, (epoch + 1) / 10)",
    "inverse": "1 / (1 + 0.1 * epoch)",
    "constant095": "0.95",
    "slowdown": "1 - 0.002 * epoch",
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


def fractional(iters, epochs):
    """The epoch after each of `iters` batches of each epoch, as PyTorch's docs step it."""
    return [epoch + i / iters for epoch in range(epochs) for i in range(iters)]


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
    # ConstantLR: totalIters 0 keeps the factor for good, as PyTorch's does
    dict(name="constant-default", scheduler="ConstantLR", args={}),
    dict(name="constant-half-40", scheduler="ConstantLR", args=dict(factor=0.5, totalIters=40),
         optimizer="Adam"),
    dict(name="constant-total-zero", scheduler="ConstantLR", args=dict(factor=0.25, totalIters=0)),
    # PolynomialLR: past totalIters the lr stays 0
    dict(name="polynomial-default", scheduler="PolynomialLR", args={}),
    dict(name="polynomial-100-square", scheduler="PolynomialLR", args=dict(totalIters=100, power=2.0)),
    dict(name="polynomial-50-power09", scheduler="PolynomialLR", args=dict(totalIters=50, power=0.9),
         optimizer="Adam"),
    # CosineAnnealingWarmRestarts, by step() and by step(epoch)
    dict(name="warm-restarts-t0-10", scheduler="CosineAnnealingWarmRestarts", args=dict(t0=10)),
    dict(name="warm-restarts-tmult-2", scheduler="CosineAnnealingWarmRestarts",
         args=dict(t0=5, tMult=2, etaMin=1e-3), optimizer="Adam"),
    dict(name="warm-restarts-tmult-3", scheduler="CosineAnnealingWarmRestarts", args=dict(t0=3, tMult=3)),
    dict(name="warm-restarts-fractional-tmult-2", scheduler="CosineAnnealingWarmRestarts",
         args=dict(t0=4, tMult=2, etaMin=1e-4), epochs=fractional(5, 24)),
    dict(name="warm-restarts-fractional-tmult-1", scheduler="CosineAnnealingWarmRestarts",
         args=dict(t0=7, etaMin=5e-5), epochs=fractional(3, 40), optimizer="Adam"),
    dict(name="warm-restarts-interleaved", scheduler="CosineAnnealingWarmRestarts",
         args=dict(t0=6, tMult=2),
         epochs=[None] * 20 + [26] + [None] * 30 + [10.5] + [None] * 20 + [100.25, 3] + [None] * 46),
    # MultiplicativeLR
    dict(name="multiplicative-constant", scheduler="MultiplicativeLR", args=dict(lrLambda="constant095")),
    dict(name="multiplicative-per-group", scheduler="MultiplicativeLR",
         args=dict(lrLambda=["slowdown", "warmup10"])),
    dict(name="multiplicative-slowdown", scheduler="MultiplicativeLR", args=dict(lrLambda="slowdown"),
         optimizer="Adam"),
    # CyclicLR: momentum (SGD) or betas[0] (Adam) cycles too
    dict(name="cyclic-triangular-sgd", scheduler="CyclicLR", args=dict(baseLr=0.01, maxLr=0.1, stepSizeUp=10)),
    dict(name="cyclic-triangular2-adam", scheduler="CyclicLR",
         args=dict(baseLr=[1e-4, 5e-5], maxLr=[1e-3, 6e-4], stepSizeUp=8, stepSizeDown=12,
                   mode="triangular2"), optimizer="Adam"),
    dict(name="cyclic-exp-range", scheduler="CyclicLR",
         args=dict(baseLr=0.001, maxLr=0.05, stepSizeUp=7, mode="exp_range", gamma=0.98,
                   baseMomentum=[0.7, 0.75], maxMomentum=0.95)),
    dict(name="cyclic-scale-fn-cycle", scheduler="CyclicLR",
         args=dict(baseLr=0.02, maxLr=0.2, stepSizeUp=5, stepSizeDown=15, scaleFn="exp095")),
    dict(name="cyclic-scale-fn-iterations-adam", scheduler="CyclicLR",
         args=dict(baseLr=2e-4, maxLr=2e-3, stepSizeUp=9, scaleFn="inverse", scaleMode="iterations",
                   baseMomentum=0.85, maxMomentum=[0.95, 0.9]), optimizer="Adam"),
    dict(name="cyclic-sawtooth-no-momentum", scheduler="CyclicLR",
         args=dict(baseLr=[0.05, 0.01], maxLr=0.3, stepSizeUp=12, stepSizeDown=0, cycleMomentum=False)),
    # ChainedScheduler: each scheduler steps on what the ones before it wrote
    dict(name="chained-constant-exponential", scheduler="ChainedScheduler",
         args=dict(schedulers=[dict(scheduler="ConstantLR", args=dict(factor=0.1, totalIters=20)),
                               dict(scheduler="ExponentialLR", args=dict(gamma=0.97))])),
    dict(name="chained-with-optimizer-adam", scheduler="ChainedScheduler", optimizer="Adam",
         args=dict(schedulers=[dict(scheduler="LinearLR", args=dict(startFactor=0.25, totalIters=8)),
                               dict(scheduler="CosineAnnealingWarmRestarts", args=dict(t0=15)),
                               dict(scheduler="MultiplicativeLR", args=dict(lrLambda="slowdown"))],
                   optimizer=True)),
    dict(name="chained-cyclic-constant-adam", scheduler="ChainedScheduler", optimizer="Adam",
         args=dict(schedulers=[dict(scheduler="CyclicLR", args=dict(baseLr=1e-4, maxLr=1e-3, stepSizeUp=10)),
                               dict(scheduler="ConstantLR", args=dict(factor=0.5, totalIters=30))])),
    dict(name="chained-sequential-polynomial", scheduler="ChainedScheduler",
         args=dict(schedulers=[
             dict(scheduler="SequentialLR",
                  args=dict(schedulers=[dict(scheduler="LinearLR", args=dict(startFactor=0.1, totalIters=5)),
                                        dict(scheduler="ExponentialLR", args=dict(gamma=0.95))],
                            milestones=[5])),
             dict(scheduler="PolynomialLR", args=dict(totalIters=100, power=0.5))])),
    # SequentialLR over the schedulers above; a ChainedScheduler only first
    dict(name="sequential-chained-first", scheduler="SequentialLR",
         args=dict(schedulers=[
             dict(scheduler="ChainedScheduler",
                  args=dict(schedulers=[dict(scheduler="ConstantLR", args=dict(factor=0.5, totalIters=4)),
                                        dict(scheduler="ExponentialLR", args=dict(gamma=0.9))])),
             dict(scheduler="CosineAnnealingLR", args=dict(tMax=100))],
             milestones=[12])),
    dict(name="sequential-constant-polynomial-restarts", scheduler="SequentialLR",
         args=dict(schedulers=[dict(scheduler="ConstantLR", args=dict(factor=0.25, totalIters=10)),
                               dict(scheduler="PolynomialLR", args=dict(totalIters=40, power=1.5)),
                               dict(scheduler="CosineAnnealingWarmRestarts", args=dict(t0=8, tMult=2))],
                   milestones=[10, 50])),
    dict(name="sequential-multiplicative-cyclic-adam", scheduler="SequentialLR", optimizer="Adam",
         args=dict(schedulers=[dict(scheduler="MultiplicativeLR", args=dict(lrLambda="constant095")),
                               dict(scheduler="CyclicLR", args=dict(baseLr=1e-4, maxLr=1e-3, stepSizeUp=10))],
                   milestones=[20])),
    dict(name="sequential-cyclic-first", scheduler="SequentialLR",
         args=dict(schedulers=[dict(scheduler="CyclicLR", args=dict(baseLr=0.01, maxLr=0.1, stepSizeUp=10)),
                               dict(scheduler="ExponentialLR", args=dict(gamma=0.95))],
                   milestones=[40])),
    # lastEpoch for the new schedulers (ChainedScheduler has none); PyTorch's warm restarts resume
    # with T_cur = last_epoch and at most one restart, which with tMult 2 is not where they were
    dict(name="resume-constant-at-total", scheduler="ConstantLR", args=dict(factor=0.5, totalIters=30),
         resumeAfter=29),
    dict(name="resume-polynomial", scheduler="PolynomialLR", args=dict(totalIters=80, power=0.5),
         resumeAfter=20, optimizer="Adam"),
    dict(name="resume-warm-restarts", scheduler="CosineAnnealingWarmRestarts", args=dict(t0=10),
         resumeAfter=25),
    dict(name="resume-warm-restarts-tmult-2", scheduler="CosineAnnealingWarmRestarts",
         args=dict(t0=4, tMult=2), resumeAfter=17),
    dict(name="resume-multiplicative", scheduler="MultiplicativeLR", args=dict(lrLambda="slowdown"),
         resumeAfter=12),
    dict(name="resume-cyclic", scheduler="CyclicLR", args=dict(baseLr=0.01, maxLr=0.1, stepSizeUp=6),
         resumeAfter=15),
    dict(name="resume-cyclic-adam", scheduler="CyclicLR",
         args=dict(baseLr=1e-4, maxLr=1e-3, stepSizeUp=4, stepSizeDown=8, mode="triangular2"),
         resumeAfter=30, optimizer="Adam"),
]

SNAKE = {"tMax": "T_max", "etaMin": "eta_min", "lrLambda": "lr_lambda", "t0": "T_0", "tMult": "T_mult"}


def snake(name):
    if name in SNAKE:
        return SNAKE[name]
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def torch_args(args):
    out = {}
    for key, value in args.items():
        if key in ("lrLambda", "scaleFn"):
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
    if name in ("SequentialLR", "ChainedScheduler"):
        inner = [build(opt, s["scheduler"], s["args"]) for s in args["schedulers"]]
        if name == "ChainedScheduler":
            return cls(inner, optimizer=opt if args.get("optimizer") else None)
        return cls(opt, schedulers=inner, milestones=args["milestones"])
    extra = {} if last_epoch == -1 else dict(last_epoch=last_epoch)
    return cls(opt, **torch_args(args), **extra)


def cycles_momentum(name, args):
    """Whether the scheduler, or one it holds, writes momentum."""
    inner = args.get("schedulers", []) if name in ("SequentialLR", "ChainedScheduler") else []
    return name in ("OneCycleLR", "CyclicLR") or any(cycles_momentum(s["scheduler"], s["args"]) for s in inner)


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def run_case(case):
    kind = case.get("optimizer", "SGD")
    opt, groups = make_optimizer(kind)
    epochs = case.get("epochs")
    steps = len(epochs) if epochs is not None else case.get("steps", STEPS)
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
        if feed is not None:
            sched.step(feed[t])
        elif epochs is not None and epochs[t] is not None:
            sched.step(epochs[t])
        else:
            sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        momentums.append([momentum_of(g) for g in opt.param_groups])
        assert sched.get_last_lr() == lrs[-1]

    out = dict(name=case["name"], scheduler=case["scheduler"], optimizer=kind,
               groups=groups, args=case["args"], steps=steps)
    if resume is not None:
        out["resumeAfter"] = resume
    if feed is not None:
        out["metrics"] = feed
    if epochs is not None:
        out["epochs"] = epochs
    out["lrs"] = lrs
    if cycles_momentum(case["scheduler"], case["args"]):
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
