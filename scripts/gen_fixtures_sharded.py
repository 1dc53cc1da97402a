"""Sharded optimizer checkpoints between torch.distributed.checkpoint and fastoptim, both ways.

  python3 scripts/gen_fixtures_sharded.py
      Trains a small model with torch.optim.Adam for 3 steps on 2 processes (torch.multiprocessing,
      gloo on localhost), saves the optimizer state with torch.distributed.checkpoint's
      HuggingFaceStorageWriter(save_distributed=True), every buffer a DTensor sharded by rows over
      the 2 ranks, to __test__/fixtures/sharded/torch-2-ranks/, then reads it back with
      HuggingFaceStorageReader; and writes __test__/fixtures/sharded.json: the parameters' names
      and shapes, the options, the parameters and whole state at the save, and 3 more steps'
      gradients with the parameters after each (one process), for fastoptim to continue from.
      A rerun gives the same JSON and the same tensors, byte for byte; only the order of the
      keys in each file's `__metadata__` can change (safetensors writes them from a hash map).

  python3 scripts/gen_fixtures_sharded.py check DIR EXPECTED.json RANKS
      Loads the checkpoint in DIR (written by fastoptim's saveShardedCheckpoint) with
      dcp.load(..., storage_reader=HuggingFaceStorageReader(DIR)) on RANKS gloo processes, every
      buffer a DTensor sharded by rows, and compares each rank's whole tensors with EXPECTED
      ({"state": {tensor name: values, flat}, "shapes": {name: shape}, "dtypes": {name: "float32"
      or "float64"}}), exactly. Prints
      one JSON line: {"ranks": RANKS, "tensors": n, "mismatches": [...]}.

Run from the repository root.
"""
import json
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
FIXTURES = os.path.join(ROOT, "__test__", "fixtures")
CHECKPOINT = os.path.join(FIXTURES, "sharded", "torch-2-ranks")
OUTPUT = os.path.join(FIXTURES, "sharded.json")
RANKS = 2
STEPS_BEFORE = 3
STEPS_AFTER = 3
OPTIONS = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}


class Net(torch.nn.Module):
    """Two linear layers: 7x5 and 3x7 weights cut by rows over the ranks, biases of 7 and 3."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 7)
        self.fc2 = torch.nn.Linear(7, 3)


def make():
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), fused=True, **OPTIONS)
    return net, opt


def grads_of(step, net):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen) for p in net.parameters()]


def train(net, opt, steps):
    for s in steps:
        for p, g in zip(net.parameters(), grads_of(s, net)):
            p.grad = g
        opt.step()


def init(rank, size, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    return init_device_mesh("cpu", (size,))


def state_dict(net, opt, mesh):
    """`state.<fqn>.<key>` for every buffer (a DTensor cut by rows) and step (a plain 0-D tensor)."""
    out = {}
    for fqn, p in net.named_parameters():
        for key, value in opt.state[p].items():
            name = f"state.{fqn}.{key}"
            out[name] = value.clone() if value.dim() == 0 else distribute_tensor(value.clone(), mesh, [Shard(0)])
    return out


def save_rank(rank, size, port):
    mesh = init(rank, size, port)
    net, opt = make()
    train(net, opt, range(STEPS_BEFORE))
    sd = state_dict(net, opt, mesh)
    dcp.save(sd, storage_writer=HuggingFaceStorageWriter(path=CHECKPOINT, save_distributed=True))
    # Read back by PyTorch itself, into zeros of the same layout.
    back = {k: torch.zeros_like(v) for k, v in sd.items()}
    dcp.load(back, storage_reader=HuggingFaceStorageReader(CHECKPOINT))
    for k, v in sd.items():
        a = v.full_tensor() if hasattr(v, "full_tensor") else v
        b = back[k].full_tensor() if hasattr(back[k], "full_tensor") else back[k]
        assert torch.equal(a, b), k
    dist.destroy_process_group()


def flat(t):
    return t.detach().flatten().tolist() if t.dim() else t.item()


def generate():
    for f in os.listdir(CHECKPOINT) if os.path.isdir(CHECKPOINT) else []:
        os.remove(os.path.join(CHECKPOINT, f))
    mp.spawn(save_rank, args=(RANKS, free_port()), nprocs=RANKS, join=True)
    net, opt = make()
    train(net, opt, range(STEPS_BEFORE))
    params = list(net.named_parameters())
    saved = {
        "params": [flat(p) for _, p in params],
        "state": {
            f"state.{fqn}.{k}": flat(v) for fqn, p in params for k, v in opt.state[p].items()
        },
    }
    steps = []
    for s in range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER):
        grads = grads_of(s, net)
        train(net, opt, [s])
        steps.append({"grads": [flat(g) for g in grads], "params": [flat(p) for _, p in params]})
    fixture = {
        "about": "torch.optim.Adam on 2 gloo ranks, saved by torch.distributed.checkpoint "
        "(HuggingFaceStorageWriter, save_distributed) to sharded/torch-2-ranks after "
        f"{STEPS_BEFORE} steps; then {STEPS_AFTER} more steps in one process",
        "torch": torch.__version__,
        "names": [fqn for fqn, _ in params],
        "shapes": [list(p.shape) for _, p in params],
        "options": {"lr": OPTIONS["lr"], "betas": list(OPTIONS["betas"]), "eps": OPTIONS["eps"],
                    "weightDecay": OPTIONS["weight_decay"]},
        "saved": saved,
        "steps": steps,
    }
    with open(OUTPUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    files = sorted(os.listdir(CHECKPOINT))
    print(f"wrote {os.path.relpath(CHECKPOINT)}: {', '.join(files)}; {os.path.relpath(OUTPUT)}")


def check_rank(rank, size, port, directory, expected, out):
    mesh = init(rank, size, port)
    sd = {}
    for name, shape in expected["shapes"].items():
        dtype = getattr(torch, expected["dtypes"][name])
        zeros = torch.zeros(shape, dtype=dtype)
        sd[name] = zeros if len(shape) == 0 else distribute_tensor(zeros, mesh, [Shard(0)])
    dcp.load(sd, storage_reader=HuggingFaceStorageReader(directory))
    mismatches = []
    for name, value in sd.items():
        whole = value.full_tensor() if hasattr(value, "full_tensor") else value
        want = torch.tensor(expected["state"][name], dtype=whole.dtype).reshape(whole.shape)
        if not torch.equal(whole, want):
            mismatches.append(name)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"ranks": size, "tensors": len(sd), "mismatches": mismatches}, f)
    dist.destroy_process_group()


def check(directory, expected_path, ranks):
    with open(expected_path) as f:
        expected = json.load(f)
    out = expected_path + ".result"
    mp.spawn(check_rank, args=(ranks, free_port(), directory, expected, out), nprocs=ranks, join=True)
    with open(out) as f:
        print(f.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        generate()
