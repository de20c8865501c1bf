"""Stand-in for /opt/tf-mnist-with-summaries/mnist.py of the Katib image the Kubeflow TFJob
examples run (TensorFlow is not in Debian): it reads TF_CONFIG as TensorFlow's cluster
resolver does, listens on its own task's port, reaches every other task of the cluster by
the names TF_CONFIG gives, and ends when it has reached all of them and all of them it."""
import argparse
import json
import os
import socket
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--log-path", default="/tmp/tf-mnist")
p.parse_args()
config = json.loads(os.environ["TF_CONFIG"])
me = (config["task"]["type"], int(config["task"]["index"]))
tasks = {(t, i): addr for t, addrs in config["cluster"].items() for i, addr in enumerate(addrs)}
peers = [k for k in tasks if k != me]
print(f"TF_CONFIG task {me[0]}:{me[1]} of {sorted(tasks)}", flush=True)
listener = socket.create_server(("0.0.0.0", int(tasks[me].rsplit(":", 1)[1])))
heard = set()


def accept():
    while len(heard) < len(peers):
        conn, _ = listener.accept()
        with conn:
            heard.add(conn.recv(256).decode())


threading.Thread(target=accept, daemon=True).start()
for peer in peers:
    host, port = tasks[peer].rsplit(":", 1)
    deadline = time.time() + 120
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(f"{me[0]}:{me[1]}".encode())
            print(f"reached {peer[0]}:{peer[1]} at {tasks[peer]}", flush=True)
            break
        except OSError as e:
            if time.time() > deadline:
                raise SystemExit(f"cannot reach {peer[0]}:{peer[1]} at {tasks[peer]}: {e}")
            time.sleep(0.5)
while len(heard) < len(peers):
    time.sleep(0.1)
print(f"heard from {sorted(heard)}; accuracy=0.9", flush=True)
