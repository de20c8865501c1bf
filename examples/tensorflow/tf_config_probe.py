"""A TFJob replica without TensorFlow: reads TF_CONFIG as TensorFlow's ClusterResolver does,
listens on its own address and reaches every other task by the names TF_CONFIG gives.

Each task serves `<type>-<index>` on its port, connects to every other task until it answers
with the identity TF_CONFIG says lives there, and waits until every other task has reached it
too, then prints `done <type>-<index> reached=<n> reached_by=<n>` and exits 0 (1 on a wrong
identity or after --timeout seconds).
"""

import argparse
import json
import os
import socket
import sys
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        print("TF_CONFIG is not set", flush=True)
        return 1
    cfg = json.loads(raw)
    cluster, task = cfg["cluster"], cfg["task"]
    me = f"{task['type']}-{task['index']}"
    print(f"task={me} cluster={json.dumps(cluster, sort_keys=True)}", flush=True)
    peers = {
        f"{t}-{i}": addr
        for t, addrs in cluster.items()
        for i, addr in enumerate(addrs)
    }
    own = peers.pop(me)
    port = int(own.rsplit(":", 1)[1])

    reached_by = set()
    lock = threading.Lock()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(16)

    def serve():
        while True:
            conn, _ = server.accept()
            with conn:
                who = conn.recv(256).decode().strip()
                conn.sendall(me.encode())
                with lock:
                    reached_by.add(who)

    threading.Thread(target=serve, daemon=True).start()

    deadline = time.monotonic() + args.timeout
    reached = set()
    while len(reached) < len(peers):
        for name, addr in peers.items():
            if name in reached:
                continue
            host, p = addr.rsplit(":", 1)
            try:
                with socket.create_connection((host, int(p)), timeout=2) as s:
                    s.sendall(me.encode())
                    answer = s.recv(256).decode().strip()
            except OSError:
                continue
            if answer != name:
                print(f"{addr} answered {answer!r}, expected {name!r}", flush=True)
                return 1
            print(f"{me} reached {name} at {addr}", flush=True)
            reached.add(name)
        if time.monotonic() > deadline:
            print(f"timed out: reached {sorted(reached)} of {sorted(peers)}", flush=True)
            return 1
        time.sleep(0.2)

    while True:
        with lock:
            if set(peers) <= reached_by:
                break
        if time.monotonic() > deadline:
            print(f"timed out: reached by {sorted(reached_by)} of {sorted(peers)}", flush=True)
            return 1
        time.sleep(0.1)
    # Let the last peer read our answer before the server goes away.
    time.sleep(0.5)
    print(f"done {me} reached={len(reached)} reached_by={len(reached_by)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
