"""LBFGS trajectories from PyTorch's torch.optim.LBFGS, for __test__/lbfgs.spec.ts.

Two problems, each split over two parameters so that the flat vector spans both:
  rosenbrock  f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 over x = cat(a, b)
  logistic    f(w, b) = mean(softplus(-y (X w + b))) + 0.005 |w|^2 over fixed data X, y (in the file)
with and without the strong-Wolfe line search, several history sizes and iteration limits, in
float32 and float64. Each case records, after every outer step, the loss step() returned, the
parameters, and the counters func_evals and n_iter; and the whole state at the end.

Run from the repository root: python3 scripts/gen_fixtures_lbfgs.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixture_json import to_json_options, write_fixture  # noqa: E402

OUTPUT = "__test__/fixtures/lbfgs.json"
STEPS = 12
L2 = 0.01


def rosenbrock(params, _data):
    x = torch.cat(params)
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def logistic(params, data):
    w, b = params
    X, y = data
    z = X @ w + b
    return torch.nn.functional.softplus(-y * z).mean() + 0.5 * L2 * (w * w).sum()


PROBLEMS = {"rosenbrock": rosenbrock, "logistic": logistic}


def logistic_data(dtype):
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    w = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    y = torch.where(X @ w + 0.3 * torch.randn(16, generator=gen, dtype=torch.float64) > 0, 1.0, -1.0)
    return X.to(dtype), y.to(dtype)


def init(problem, dtype):
    if problem == "rosenbrock":
        return [torch.tensor([-1.2, 1.0], dtype=dtype), torch.tensor([-0.5, 0.8], dtype=dtype)]
    return [torch.tensor([0.1, -0.2, 0.3], dtype=dtype), torch.tensor([0.0], dtype=dtype)]


def state_json(state):
    out = {}
    for key, value in state.items():
        if key in ("old_dirs", "old_stps"):
            out[key] = [v.tolist() for v in value]
        elif key == "ro":
            out[key] = [float(v) for v in value]
        elif key == "al":
            out[key] = [float(v) for v in value if v is not None]
        elif isinstance(value, torch.Tensor):
            out[key] = value.tolist()
        else:
            out[key] = float(value) if not isinstance(value, int) else value
    # camelCase, with H_diag as hDiag.
    rename = {"H_diag": "hDiag"}
    return {rename.get(k, "".join(w if i == 0 else w.capitalize() for i, w in enumerate(k.split("_")))): v for k, v in out.items()}


def run(name, problem, dtype, options, maximize_sign=1):
    params = [p.clone().requires_grad_(True) for p in init(problem, dtype)]
    data = logistic_data(dtype) if problem == "logistic" else None
    opt = torch.optim.LBFGS(params, **options)
    f = PROBLEMS[problem]

    def closure():
        opt.zero_grad()
        loss = maximize_sign * f(params, data)
        loss.backward()
        return loss

    steps = []
    for _ in range(STEPS):
        loss = opt.step(closure)
        state = opt.state[params[0]]
        steps.append(
            {
                "loss": float(loss.detach()),
                "params": [p.detach().tolist() for p in params],
                "funcEvals": state["func_evals"],
                "nIter": state["n_iter"],
            }
        )
    case = {
        "name": name,
        "problem": problem,
        "dtype": "float32" if dtype == torch.float32 else "float64",
        "sign": maximize_sign,
        "options": to_json_options({k: v for k, v in options.items()}),
        "init": [p.tolist() for p in init(problem, dtype)],
    }
    if data is not None:
        case["data"] = {"X": data[0].tolist(), "y": data[1].tolist()}
    case["finalState"] = state_json(opt.state[params[0]])
    case["steps"] = steps
    return case


def main():
    torch.set_num_threads(1)
    both = (torch.float64, torch.float32)
    # float32 cases stop short of the float32 noise floor: there, where PyTorch's own float32
    # reductions decide which iterate comes next, no other summation order can follow it.
    variants = [
        (both, "rosenbrock", {"lr": 0.01, "max_iter": 5, "history_size": 100}),
        (both, "rosenbrock", {"lr": 0.01, "max_iter": 3, "history_size": 2}),
        ((torch.float64,), "rosenbrock", {"lr": 1, "max_iter": 2, "history_size": 5, "line_search_fn": "strong_wolfe"}),
        (both, "rosenbrock", {"lr": 1, "max_iter": 1, "history_size": 100, "line_search_fn": "strong_wolfe"}),
        ((torch.float64,), "logistic", {"lr": 0.5, "max_iter": 4, "history_size": 3}),
        ((torch.float32,), "logistic", {"lr": 0.1, "max_iter": 1, "history_size": 3}),
        ((torch.float64,), "logistic", {"lr": 1, "max_iter": 6, "max_eval": 8, "history_size": 10, "line_search_fn": "strong_wolfe"}),
        ((torch.float64,), "logistic", {"lr": 0.5, "max_iter": 1, "history_size": 1, "line_search_fn": "strong_wolfe"}),
        ((torch.float32,), "logistic", {"lr": 0.2, "max_iter": 1, "history_size": 4, "line_search_fn": "strong_wolfe"}),
    ]
    cases = []
    for dtypes, problem, options in variants:
        for dtype in dtypes:
            suffix = ",".join(f"{k}={v}" for k, v in options.items())
            cases.append(run(f"{problem} {suffix}", problem, dtype, options))
    # maximize: the same minimum, reached by maximizing the negated loss.
    cases.append(
        run(
            "logistic maximize",
            "logistic",
            torch.float64,
            {"lr": 1, "max_iter": 5, "history_size": 4, "line_search_fn": "strong_wolfe", "maximize": True},
            maximize_sign=-1,
        )
    )
    header = {
        "generator": "scripts/gen_fixtures_lbfgs.py",
        "torch": torch.__version__.split("+")[0],
        "l2": L2,
    }
    write_fixture(OUTPUT, header, cases, 400_000)


if __name__ == "__main__":
    main()
