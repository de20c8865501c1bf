"""A small distributed training job: DistributedDataParallel over gloo (or NCCL on GPUs) on
synthetic data, with a checkpoint so that a restarted or re-formed group carries on from the
step it reached.

It runs unchanged as a Kubeflow PyTorchJob replica (MASTER_ADDR, MASTER_PORT, RANK and
WORLD_SIZE from the operator), under torchrun (static or elastic `--nnodes=MIN:MAX`, whose
agents re-form the group when a rank fails or the group grows or shrinks) and as a Trainer v2
TrainJob through the `torch-distributed` runtime.

Each step prints one line `step=<n> world=<size> rank=<rank> loss=<value>`; at the end it
prints `done steps=<n> loss=<value>` and exits 0 when the loss is below --target-loss, 1 otherwise.
"""

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="steps in all (across restarts)")
    p.add_argument("--batch", type=int, default=64, help="samples per rank and step")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--target-loss", type=float, default=0.1,
                   help="the final loss must be below this")
    p.add_argument("--step-seconds", type=float, default=0.0,
                   help="sleep after each step (to watch a job grow, shrink or recover)")
    p.add_argument("--slow-until", default="",
                   help="sleep --step-seconds only until this file exists (a signal to finish)")
    p.add_argument("--checkpoint-dir", default=os.environ.get("CHECKPOINT_DIR", ""),
                   help="where rank 0 saves and every rank resumes (empty: no checkpoint)")
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--backend", default="nccl" if torch.cuda.is_available() else "gloo")
    return p.parse_args()


# The model learns y = x . W_TRUE + 0.5 from noisy samples.
FEATURES = 8
W_TRUE = torch.arange(1, FEATURES + 1, dtype=torch.float32) / FEATURES


def batch(step, rank, size, device):
    g = torch.Generator().manual_seed(step * 1000 + rank)
    x = torch.randn(size, FEATURES, generator=g)
    y = x @ W_TRUE + 0.5 + 0.01 * torch.randn(size, generator=g)
    return x.to(device), y.unsqueeze(1).to(device)


def main():
    args = parse_args()
    dist.init_process_group(args.backend, init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    start = 0
    path = os.path.join(args.checkpoint_dir, "checkpoint.pt") if args.checkpoint_dir else ""
    if path:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
    if path and os.path.exists(path):
        state = torch.load(path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resumed step={start} world={world} rank={rank}", flush=True)
    ddp = DistributedDataParallel(model)
    loss_fn = torch.nn.MSELoss()

    loss = torch.tensor(float("inf"))
    for step in range(start + 1, args.steps + 1):
        x, y = batch(step, rank, args.batch, device)
        optimizer.zero_grad()
        loss = loss_fn(ddp(x), y)
        loss.backward()
        optimizer.step()
        # The mean loss over the group (every rank prints the same value).
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= world
        print(f"step={step} world={world} rank={rank} loss={mean.item():.5f}", flush=True)
        if path and rank == 0 and step % args.checkpoint_every == 0:
            tmp = path + ".tmp"
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step}, tmp)
            os.replace(tmp, path)
        if args.step_seconds and not (args.slow_until and os.path.exists(args.slow_until)):
            time.sleep(args.step_seconds)
        loss = mean

    if path and rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": args.steps}, path)
    dist.barrier()
    dist.destroy_process_group()
    final = loss.item()
    print(f"done steps={args.steps} loss={final:.5f}", flush=True)
    sys.exit(0 if final < args.target_loss else 1)


if __name__ == "__main__":
    main()
