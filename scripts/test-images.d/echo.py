"""Stand-in for echo.py of the Kubeflow elastic example image: run under torchrun (which
the image's PET_REDIRECTS/PET_TEE set up for Debian's torch 1.13 on Python 3.11), it joins
the rendezvous's process group, checks every member with an all-reduce, and echoes what
torchrun gave it."""
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ones = torch.ones(1)
dist.all_reduce(ones)
assert int(ones.item()) == world, f"all_reduce gave {ones.item()}, world size {world}"
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR"]
print("echo " + " ".join(f"{k}={os.environ.get(k)}" for k in keys), flush=True)
dist.barrier()
dist.destroy_process_group()
