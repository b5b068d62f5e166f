#!/usr/bin/env bash
# The prepared GPU check: ONE command on a GPU machine with no network, done in at most 8 minutes.
# Here first: bench/gpu_wheels.sh (fills .whl/ with the wheels the GPU image lacks and MiniLM's
# config + tokenizer). Then on the device, from the repo root, carrying .whl:
#   run(carry=[".whl"], timeout_s=560, command="bash bench/gpu_check.sh")
# It installs the wheels into /tmp/site, runs `python3 -m bench.gpu_check` under a hard limit (it
# writes its JSON after every phase and on SIGTERM, so a cut-short run keeps what it measured) and
# leaves in $OUT (at most 8 files come back): gpu-check.json, gpu-check.log, nvidia-smi.txt,
# pip-check.txt, logs.tar.gz (server logs, the tune's report and trials).
# Locally (a CPU dry run that starts servers: never beside a running benchmark):
#   OUT=/tmp/gpu-out PY=.venv/bin/python GPU_CHECK_ARGS="--device cpu --quick" bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
LIMIT_S=${GPU_CHECK_LIMIT_S:-480}  # the whole script, install included
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-check-out}
WORK=${GPU_CHECK_WORK:-/tmp/servetune-gpu-check}
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1

echo "[gpu-check.sh] $(date -u +%FT%TZ) on $(hostname), limit ${LIMIT_S}s"
timeout 20 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed (see nvidia-smi.txt)"
if compgen -G ".whl/*.whl" >/dev/null; then
    timeout 150 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || echo "[gpu-check.sh] wheel install FAILED (rc $?)"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "[gpu-check.sh] no .whl/*.whl: using the packages already installed"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export BENTOML_DO_NOT_TRACK=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
timeout 30 "$PY" -m pip check >"$OUT/pip-check.txt" 2>&1
check_rc=$?
echo "[gpu-check.sh] installed after $(($(date +%s) - started))s; pip check rc $check_rc (pip-check.txt)"

left=$((LIMIT_S - ($(date +%s) - started) - 25))  # 25 s: stopping servers, the archive
[ "$left" -ge 90 ] || left=90
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of options
timeout -s TERM -k 15 "$left" "$PY" -m bench.gpu_check --json "$OUT/gpu-check.json" \
    --work "$WORK" --budget-s "$((left - 15))" ${GPU_CHECK_ARGS:-}
rc=$?
echo "[gpu-check.sh] bench.gpu_check rc $rc after $(($(date +%s) - started))s"

# Server and Locust logs, the tune's report and trials; big logs are cut to their last 2 MB.
find "$WORK" -name '*.log' -size +2M -exec sh -c 'tail -c 2000000 "$1" >"$1.tail" && mv "$1.tail" "$1"' _ {} \;
(cd "$WORK" && find . \( -name '*.log' -o -name '*.jsonl' -o -name 'study.json' -o -name 'report.*' \
    -o -name 'winner.yaml' -o -name 'profile.json' \) -print0 | tar czf "$OUT/logs.tar.gz" --null -T -)
echo "[gpu-check.sh] done after $(($(date +%s) - started))s; files in $OUT:" && ls -la "$OUT"
sleep 0.5  # let tee write the log's last lines
exit "$rc"
