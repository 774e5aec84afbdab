#!/usr/bin/env bash
# The GPU campaign of results/README.md: every committed GPU table comes from one phase here.
#
#   bash scripts/gpu_campaign.sh PHASE [PHASE ...]
#
# Phases (each fits one 10-minute call on an offline GPU host; run them in this order):
#   tf-setup     install bitsandbytes + hydra from a wheelhouse chunk into $SITE_TF (no vLLM needed)
#   claim1       fp16 / bnb_int8 / bnb_nf4 on modernbert-base and qwen2.5-0.5b (classify, then generate)
#   claim3       llama-3.1-8b fp32 / fp16 / bnb_int8, 100 new tokens, batch 1 and 16
#   claim4       qwen2.5-1.5b and qwen2.5-7b fp16 / bnb_int8 at batch 1 and 16 (with claim1 + claim3: 0.5B..8B)
#   vllm-setup   install the vLLM wheel set (scripts/wheelhouse.py chunks) into ${SITE_PREFIX}_vllm
#   vllm32a      qwen32b over vllm_fp16, awq, gptq            (offline throughput)
#   vllm32b      qwen32b over fp8, awq_gemm
#   vllm05       qwen2.5-0.5b over vllm_fp16, awq, awq_gemm, gptq, fp8, vllm_bnb
#   fidelity     vLLM's own `vllm bench throughput` vs quantbench on the same workload
# Env: WHEELS (chunk folders, default .wheelhouse/py/chunks), RESULTS (default results/gpu),
#      QUANTBENCH_CACHE (default /tmp/qbcache), OUT (if set, results are packed into $OUT/results.tgz).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=${WHEELS:-.wheelhouse/py/chunks}
RESULTS=${RESULTS:-results/gpu}
SITE_PREFIX=${SITE_PREFIX:-/tmp/site}
SITE_TF=${SITE_TF:-${SITE_PREFIX}_tf}
export QUANTBENCH_CACHE=${QUANTBENCH_CACHE:-/tmp/qbcache}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TVM_FFI_DISABLE_TORCH_C_DLPACK=1
PY=${PYTHON:-python3}
mkdir -p "$RESULTS"

say() { printf '\n[campaign %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

use_tf() { export PYTHONPATH=$SITE_TF; }
use_vllm() { export PYTHONPATH=${SITE_PREFIX}_vllm; }

# One sweep = one table directory; a sweep cut short by its time limit keeps the records it wrote.
sweep() {
  local name=$1 limit=$2; shift 2
  say "sweep $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=20 "$limit" \
    "$PY" -m runners.bench -m "$@" "hydra.sweep.dir=$RESULTS/$name" || say "sweep $name ended with $?"
  "$PY" -m runners.report "$RESULTS/$name" >/dev/null 2>&1 || true
}

SHORT_GEN="workload=generate workload.prompt_tokens=128 workload.warmup=1 workload.repeats=5"
# Offline throughput: 64 requests of 512 + 256 tokens. Smaller than vLLM's 1024 + 256 x 256 so that
# a 32B fp16 model, whose KV cache has ~6 GiB left on an 80 GB H100, finishes a repeat in seconds.
THROUGHPUT="workload=throughput workload.batch_sizes=[64] workload.prompt_tokens=512 workload.new_tokens=256 workload.warmup=1 workload.repeats=3"

phase() {
  case $1 in
    tf-setup)
      say "install bitsandbytes + hydra into $SITE_TF"
      local chunk
      chunk=$(dirname "$(ls "$WHEELS"/*/bitsandbytes-*.whl | head -1)")
      "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE_TF" \
        "$chunk"/bitsandbytes-*.whl "$chunk"/hydra_core-*.whl "$chunk"/omegaconf-*.whl \
        "$chunk"/antlr4_python3_runtime-*.whl
      use_tf; "$PY" -c "import bitsandbytes, hydra; print('bnb', bitsandbytes.__version__, 'hydra', hydra.__version__)"
      ;;
    claim1)
      use_tf
      sweep claim1_classify 330 backend=fp16,bnb_int8,bnb_nf4 model=modernbert-base,qwen2.5-0.5b \
        workload=classify workload.seq_len=128 workload.batch_sizes=[1,16] weights=synthetic
      sweep claim1_generate 240 backend=fp16,bnb_int8,bnb_nf4 model=qwen2.5-0.5b $SHORT_GEN \
        workload.new_tokens=64 workload.batch_sizes=[1,16] weights=synthetic
      ;;
    claim3)
      use_tf
      sweep claim3_llama8b 570 backend=fp16,fp32,bnb_int8 model=llama-3.1-8b workload=generate \
        workload.prompt_tokens=128 workload.new_tokens=100 workload.batch_sizes=[1,16] workload.warmup=1 \
        workload.repeats=3 weights=synthetic
      ;;
    claim4)
      use_tf
      sweep claim4_sizes 570 backend=fp16,bnb_int8 model=qwen2.5-1.5b,qwen2.5-7b $SHORT_GEN \
        workload.new_tokens=32 workload.batch_sizes=[1,16] workload.repeats=3 weights=synthetic
      ;;
    vllm-setup)
      say "install the vLLM wheel set"
      PYTHON=$PY SITE_PREFIX=$SITE_PREFIX bash "$WHEELS/01/install.sh" "$WHEELS" vllm
      use_vllm; "$PY" -c "import vllm, bitsandbytes, hydra; print('vllm', vllm.__version__)"
      ;;
    vllm32a)
      use_vllm
      sweep vllm_qwen32b/a 570 backend=vllm_fp16,awq,gptq model=qwen32b $THROUGHPUT weights=synthetic timeout_s=300
      ;;
    vllm32b)
      use_vllm
      # A second sweep under the same folder: `runners.report results/gpu/vllm_qwen32b` makes one table.
      sweep vllm_qwen32b/b 570 backend=fp8,awq_gemm model=qwen32b $THROUGHPUT weights=synthetic timeout_s=300
      "$PY" -m runners.report "$RESULTS/vllm_qwen32b" --baseline vllm_fp16 >/dev/null 2>&1 || true
      ;;
    vllm05)
      use_vllm
      sweep vllm_qwen05b 570 backend=vllm_fp16,awq,awq_gemm,gptq,fp8,vllm_bnb model=qwen2.5-0.5b $THROUGHPUT \
        weights=synthetic timeout_s=240
      ;;
    fidelity)
      use_vllm
      say "fidelity: vllm bench throughput vs quantbench"
      timeout 570 "$PY" scripts/vllm_fidelity.py --backend vllm_fp16 --model qwen2.5-0.5b --input-len 512 \
        --output-len 256 --num-prompts 64 --out "$RESULTS/fidelity_vllm_fp16_qwen2.5-0.5b.json" \
        "++model.tokenizer=$PWD/.carry/tok-smollm2" || say "fidelity ended with $?"
      ;;
    *) echo "unknown phase '$1'; phases: tf-setup claim1 claim3 claim4 vllm-setup vllm32a vllm32b vllm05 fidelity" >&2
       return 2 ;;
  esac
}

for p in "$@"; do phase "$p"; done
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/results.tgz" --exclude='*.tmp*' "$RESULTS" && ls -la "$OUT"
fi
