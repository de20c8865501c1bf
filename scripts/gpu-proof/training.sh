#!/usr/bin/env bash
# GPU proof of the Kubeflow PyTorchJob engine: DistributedDataParallel over NCCL on this
# machine's real GPUs, through a PyTorchJob (1 Master + N-1 Workers, one GPU each) run by a
# fresh `ferry up`, beside a baseline of the same training with torchrun and no Ferry.
# Prints each figure and PASS or FAIL; exits 0 on PASS. Re-runnable: everything lives in a
# temporary directory that is removed at the end.
#
#   FERRY=target/release/ferry PYTHON=/usr/bin/python3 scripts/gpu-proof/training.sh
#
# Needs: root (pod sandboxes), nvidia-smi, kubectl, a Python with a CUDA build of torch.
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
FERRY=${FERRY:-$here/target/release/ferry}
PYTHON=${PYTHON:-/usr/bin/python3}
KUBECTL=${KUBECTL:-kubectl}
STEPS=${STEPS:-200}
TARGET=${TARGET:-0.1}
PORT=${PORT:-16443}
train=$here/examples/pytorch/train.py

fail() { echo "FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (pod sandboxes)"
[ -x "$FERRY" ] || fail "no ferry binary at $FERRY (cargo build --release -p ferry, or set FERRY)"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver"
command -v "$KUBECTL" >/dev/null || fail "kubectl not found"
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.distributed.is_nccl_available() else 1)' \
  || fail "$PYTHON has no CUDA build of torch with NCCL"
gpus=$(nvidia-smi -L | grep -c '^GPU')
[ "$gpus" -ge 1 ] || fail "no GPU listed by nvidia-smi"
ranks=$(( gpus < 4 ? gpus : 4 ))
workers=$(( ranks - 1 ))
echo "GPUs: $gpus ($(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs)); ranks: $ranks"

work=$(mktemp -d /tmp/ferry-gpu-proof.XXXXXX)
ferry_pid=
cleanup() {
  [ -n "$ferry_pid" ] && kill "$ferry_pid" 2>/dev/null && wait "$ferry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Baseline: the same training with torchrun on the host, no Ferry.
t0=$(date +%s.%N)
"$PYTHON" -m torch.distributed.run --redirects 1 --tee 1 --standalone --nproc_per_node "$ranks" \
  "$train" --steps "$STEPS" --target-loss "$TARGET" --backend nccl >"$work/baseline.log" 2>&1 \
  || { tail -20 "$work/baseline.log"; fail "the baseline torchrun run failed"; }
t1=$(date +%s.%N)
baseline=$(echo "$t1 - $t0" | bc)
echo "baseline (torchrun --nproc_per_node $ranks, no Ferry): ${baseline}s, $(grep -o 'done steps=.*' "$work/baseline.log" | head -1)"

"$FERRY" up --data-dir "$work/data" --listen "127.0.0.1:$PORT" --no-containerd \
  --metrics-listen 127.0.0.1:0 >"$work/ferry.log" 2>&1 &
ferry_pid=$!
export KUBECONFIG=$work/data/kubeconfig
for _ in $(seq 120); do
  [ -f "$KUBECONFIG" ] && "$KUBECTL" get nodes -o name 2>/dev/null | grep -q node && break
  sleep 1
done
"$KUBECTL" wait --for=condition=Ready nodes --all --timeout=120s >/dev/null \
  || { tail -20 "$work/ferry.log"; fail "the node did not become Ready"; }
alloc=$("$KUBECTL" get nodes -o jsonpath='{.items[0].status.allocatable.nvidia\.com/gpu}')
echo "node allocatable nvidia.com/gpu: $alloc"
[ "${alloc:-0}" -ge "$ranks" ] || fail "the node advertises ${alloc:-0} GPUs, $ranks wanted"

replica() { # replicas
  cat <<YAML
      replicas: $1
      restartPolicy: OnFailure
      template:
        spec:
          containers:
          - name: pytorch
            command: ["/bin/sh", "-c", "echo visible=\$CUDA_VISIBLE_DEVICES; exec $PYTHON $train --steps $STEPS --target-loss $TARGET --backend nccl"]
            resources:
              limits:
                nvidia.com/gpu: 1
YAML
}
{
  cat <<YAML
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata:
  name: gpu-ddp
  namespace: default
spec:
  pytorchReplicaSpecs:
    Master:
YAML
  replica 1
  if [ "$workers" -gt 0 ]; then echo "    Worker:"; replica "$workers"; fi
} >"$work/job.yaml"

t0=$(date +%s.%N)
"$KUBECTL" apply -f "$work/job.yaml" >/dev/null || fail "kubectl apply of the PyTorchJob failed"
"$KUBECTL" wait --for=condition=Running pytorchjob/gpu-ddp --timeout=300s >/dev/null \
  || { "$KUBECTL" get pytorchjob gpu-ddp -o yaml; "$KUBECTL" get pods -o wide; fail "the job never ran"; }
t_run=$(date +%s.%N)
if ! "$KUBECTL" wait --for=condition=Succeeded pytorchjob/gpu-ddp --timeout=900s >/dev/null; then
  "$KUBECTL" get pytorchjob gpu-ddp -o yaml
  for p in $("$KUBECTL" get pods -o name); do echo "== $p"; "$KUBECTL" logs "$p" | tail -20; done
  fail "the PyTorchJob did not succeed"
fi
t1=$(date +%s.%N)
echo "PyTorchJob: submit to Running $(echo "$t_run - $t0" | bc)s, submit to Succeeded $(echo "$t1 - $t0" | bc)s (baseline ${baseline}s)"

ok=1
devices=""
for p in $("$KUBECTL" get pods -l training.kubeflow.org/job-name=gpu-ddp -o name); do
  log=$("$KUBECTL" logs "$p")
  vis=$(echo "$log" | sed -n 's/^visible=//p' | head -1)
  done_line=$(echo "$log" | grep -o 'done steps=.*' | tail -1)
  world=$(echo "$log" | grep -o 'world=[0-9]*' | head -1)
  echo "$p: devices=$vis $world $done_line"
  [ -n "$vis" ] || { echo "  $p saw no GPU"; ok=0; }
  devices="$devices $vis"
  [ "$world" = "world=$ranks" ] || { echo "  $p: wrong world size"; ok=0; }
  loss=${done_line##*loss=}
  [ -n "$done_line" ] && [ "$(echo "$loss < $TARGET" | bc)" = 1 ] || { echo "  $p: loss not below $TARGET"; ok=0; }
done
distinct=$(echo "$devices" | tr ' ' '\n' | grep -v '^$' | sort -u | wc -l)
[ "$distinct" -eq "$ranks" ] || { echo "  the ranks did not get $ranks distinct GPUs ($devices)"; ok=0; }
[ "$ok" = 1 ] && echo "PASS: NCCL DDP over $ranks GPU(s) through a PyTorchJob" && exit 0
fail "see above"
