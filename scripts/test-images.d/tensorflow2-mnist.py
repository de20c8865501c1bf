"""Stand-in for /examples/tensorflow2_mnist.py of the Horovod image the Kubeflow MPIJob example
runs (Horovod and TensorFlow are not in Debian): started by mpirun on each worker, it reports
the rank and size Open MPI gave it; the launcher's mpirun collects every rank's output."""
import os
import socket

rank = os.environ.get("OMPI_COMM_WORLD_RANK")
size = os.environ.get("OMPI_COMM_WORLD_SIZE")
print(f"mnist rank {rank} of {size} on {socket.gethostname()}", flush=True)
