"""Stand-in for /opt/mnist/src/mnist.py of the Katib pytorch-mnist image the Kubeflow
PyTorchJob examples run: the same flags, DistributedDataParallel over gloo from the
environment the training operator sets (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK), on
synthetic 28x28 images instead of the downloaded MNIST (the test machines are offline)."""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


def main():
    p = argparse.ArgumentParser(description="PyTorch MNIST (synthetic data)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=4)
    p.add_argument("--backend", default="gloo")
    args = p.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group(args.backend)
        print(f"Using distributed PyTorch with {args.backend} backend: rank {rank} of {world}, "
              f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)
    torch.manual_seed(args.seed)
    # Ten well separated classes: a class's images are its template plus noise.
    templates = torch.randn(10, 28 * 28)
    labels = torch.randint(0, 10, (1024,))
    images = (templates[labels] + 0.5 * torch.randn(1024, 28 * 28)).view(-1, 1, 28, 28)
    shard = slice(rank, None, world)
    images, labels = images[shard], labels[shard]
    model = Net()
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    for epoch in range(1, args.epochs + 1):
        for i, start in enumerate(range(0, len(labels), args.batch_size)):
            x = images[start:start + args.batch_size]
            y = labels[start:start + args.batch_size]
            opt.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
            if i % args.log_interval == 0:
                print(f"Train Epoch: {epoch} [{start}/{len(labels)}]\tloss={loss.item():.4f}", flush=True)
        with torch.no_grad():
            accuracy = (model(images).argmax(1) == labels).float().mean().item()
        print(f"Validation-accuracy={accuracy:.4f}", flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
