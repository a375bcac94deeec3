"""APTS under torch.distributed without the runner: 2 processes (spawn), gloo, synthetic data.

    python examples/apts_distributed.py [--epochs 5] [--out result.json]

Every rank builds the same model and the same mini-batches; each computes the loss of its
shard (the closure) and APTS issues the all-reduces (3 + G per step, counted by Comm).
"""

import argparse
import json
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from apts.optim import APTS
from apts.runtime.lifecycle import exit_rank
from apts.training.comm import Comm

WORLD, BATCH, CLASSES, DIM = 2, 1000, 4, 20


def make_data(n=6000, seed=0):  # Gaussian clusters, one per class; the same on every rank
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(CLASSES, (n,), generator=g)
    x = 0.4 * torch.randn(CLASSES, DIM, generator=g)[y] + torch.randn(n, DIM, generator=g)
    return x[:5000], y[:5000], x[5000:], y[5000:]  # train, validation


def worker(rank, rendezvous, epochs, out):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, CLASSES))
    comm = Comm()  # counted all-reduces over the default process group
    opt, loss_fn = APTS(model.parameters(), comm=comm), nn.CrossEntropyLoss()
    x, y, x_val, y_val = make_data()
    order = torch.Generator().manual_seed(1)  # the same shuffle on every rank
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(x), generator=order).split(BATCH):
            shard = idx.tensor_split(WORLD)[rank]  # this rank's part of the mini-batch
            xs, ys = x[shard], y[shard]

            def closure(xs=xs, ys=ys):
                opt.zero_grad()
                loss = loss_fn(model(xs), ys)  # the mean loss of this rank's shard
                loss.backward()
                return loss

            loss = opt.step(closure)  # the global loss at the accepted point
        with torch.no_grad():
            acc = (model(x_val).argmax(1) == y_val).float().mean().item()
        if rank == 0:
            info = f"radius {opt.last_info['radius']:.3g}  all-reduces {comm.calls['optimizer']}"
            print(f"epoch {epoch}  loss {loss.item():.4f}  val_acc {100 * acc:.2f}%  {info}")
    hi = torch.cat([p.detach().flatten() for p in model.parameters()])
    lo = hi.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)  # every rank holds the same model:
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)  # the largest and smallest copies agree
    if rank == 0 and out:
        result = dict(
            val_acc=acc, allreduces=comm.calls["optimizer"], same_model=torch.equal(hi, lo)
        )
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()
    # Leave without interpreter shutdown, as the runner's ranks do: gloo's threads can outlive
    # the group and abort a process that returns normally ("terminate called without an
    # active exception", SIGABRT; 1 run in 40-80 on two busy cores). exit_rank flushes first.
    exit_rank(0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default=None, help="write rank 0's final figures here (JSON)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(os.path.join(tmp, "rdzv"), args.epochs, args.out), nprocs=WORLD)
