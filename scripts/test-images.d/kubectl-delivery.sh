#!/bin/sh
# Stand-in for the mpi-operator's kubectl-delivery image: copies kubectl to $TARGET_DIR, then
# waits until every worker of the MPIJob's hostfile is Running (kubectl's in-cluster
# configuration: the pod's service account), as the launcher's init container.
set -e
cp /usr/bin/kubectl "${TARGET_DIR:-/opt/kube}/kubectl"
chmod 0755 "${TARGET_DIR:-/opt/kube}/kubectl"
for host in $(cut -d' ' -f1 /etc/mpi/hostfile); do
  until [ "$(kubectl get pod "$host" -n "${NAMESPACE:-default}" -o 'jsonpath={.status.phase}' 2>/dev/null)" = Running ]; do
    sleep 0.2
  done
  echo "$host is running"
done
