"""An MPI rank without an MPI library: prints what Open MPI's orted gave it
(`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`) and the pod it runs in (`POD_NAME`, from the
worker's environment), so the launcher's output shows that every rank ran in a worker pod.
"""

import os
import socket
import sys

rank = os.environ.get("OMPI_COMM_WORLD_RANK")
size = os.environ.get("OMPI_COMM_WORLD_SIZE")
if rank is None or size is None:
    print("not started by mpirun (no OMPI_COMM_WORLD_RANK)", flush=True)
    sys.exit(1)
pod = os.environ.get("POD_NAME", "-")
print(f"rank={rank} size={size} pod={pod} host={socket.gethostname()}", flush=True)
