#!/usr/bin/env bash
# The real-cluster path: a kind cluster, this image, the chart in trial mode, the
# examples, a backup to Completed, the API, and a restore. Needs docker, kind, kubectl
# and helm; CI runs it on every push (.github/workflows/e2e.yaml). It cannot run on the
# machines this project is developed on (no container engine there).
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-mbo-e2e}
IMAGE=minio-backup-operator:e2e
NS=backups
RELEASE=backups

kind create cluster --name "$CLUSTER" --wait 120s
trap 'kubectl get all,backups -A || true; kind delete cluster --name "$CLUSTER"' EXIT
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

helm install "$RELEASE" charts/minio-backup-operator --namespace "$NS" --create-namespace \
  --set trial.enabled=true --set image.repository=minio-backup-operator --set image.tag=e2e \
  --set image.pullPolicy=Never --wait --timeout 5m

# A PVC with a file in it, written by a pod, then backed up by the example BackupJob.
kubectl -n "$NS" apply -f - <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: app-data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 100Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: busybox:1.36
      command: [sh, -c, "mkdir -p /data/uploads && echo hello > /data/uploads/hello.txt"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: app-data}}]
YAML
kubectl -n "$NS" wait pod/writer --for=jsonpath='{.status.phase}'=Succeeded --timeout 120s
kubectl -n "$NS" delete pod writer
kubectl -n "$NS" create secret generic minio-credentials \
  --from-literal=accessKey=backups \
  --from-literal=secretKey="$(kubectl -n "$NS" get secret "$RELEASE-minio-backup-operator-trial" -o jsonpath='{.data.minio}' | base64 -d)"
sed 's/bucket: app-backups/bucket: app-backups/' examples/backupjob-pvc.yaml | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait backupjob/app-data-nightly --for=jsonpath='{.status.phase}'=Completed --timeout 300s
kubectl -n "$NS" get backups

# The API: the job and its file; then a restore through the API into the API pod's /tmp.
TOKEN=$(kubectl -n "$NS" get secret "$RELEASE-minio-backup-operator-api-tokens" -o jsonpath='{.data.API_TOKENS}' | base64 -d | cut -d, -f1)
kubectl -n "$NS" port-forward "svc/$RELEASE-minio-backup-operator-api" 18000:8000 &
sleep 3
JOB=$(kubectl -n "$NS" get backupjob app-data-nightly -o jsonpath='{.status.jobId}')
curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18000/backup-jobs/$JOB"
curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18000/files/?job_id=$JOB" | grep hello.txt
curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -d '{"target": "/tmp/restore", "path": "hello.txt"}' "http://127.0.0.1:18000/backup-jobs/$JOB/restore"
API_POD=$(kubectl -n "$NS" get pod -l app.kubernetes.io/component=api -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$NS" exec "$API_POD" -- cat /tmp/restore/hello.txt | grep hello
echo "e2e: passed"
