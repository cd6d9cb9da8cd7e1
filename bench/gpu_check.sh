#!/usr/bin/env bash
# gpu_check.sh: one prepared check of vqtok on a CUDA machine, in under 10 minutes on one GPU.
#   1. install: the machine's torch if it has one (else `pip install torch`), the other dependencies from
#      $WHEELS if given (pip --no-index: machines that reach no registry), then the package, editable;
#   2. the test suite (default selection) with CUDA visible: tests/test_cuda.py trains, quantizes and encodes on
#      the GPU; the rest keeps 'auto' on the CPU (VQTOK_DEVICE=cpu, tests/conftest.py), as its numbers are CPU's;
#   3. each tokenizer recipe of recipes/ (debug.yaml aside) for $STEPS steps under bf16 autocast
#      (train.device=cuda train.precision=bf16), then each prior recipe on the short run of its tokenizer;
#   4. each recipe (of $DDP_RECIPES) once more under `torchrun --nproc_per_node=1` ($DDP_STEPS steps), right after
#      its plain run;
#   5. a table: steps/s on the GPU (the last logged window, so start-up is not counted), alone and under
#      torchrun, against the CPU figure of each recipe's header comment (its "CPU speed: X steps/s" where it
#      has one, else the first "X steps/s", else steps over "CPU time").
# Every stage runs under `timeout` and the whole script keeps to $BUDGET seconds: what no longer fits is
# skipped with a row saying so.
#
#   bash bench/gpu_check.sh [RECIPE.yaml ...]          (from the repository root; default: every recipe)
#
# Environment (defaults in brackets):
#   DATA [../shared/data]  data folder (mnist/, fsdd/recordings, speech/); a recipe's ../shared/data is replaced
#   STEPS [300] DDP_STEPS [150] BUDGET [570 s] TEST_TIMEOUT [180 s] PYTHON [python3]
#   DDP_RECIPES [all]  the recipes that also run under torchrun, e.g. "mnist.yaml speech16k.yaml mnist_prior.yaml"
#   PYTEST_ARGS  extra pytest arguments, e.g. "-n 8" where pytest-xdist is installed
#   WHEELS   a folder of wheels for what the machine lacks (soundfile, soxr, librosa and its needs, pesq, pystoi)
#   WORK     where runs and logs go [a new temporary folder]; $OUT/gpu_check.log too when OUT is set
#   DEVICE [cuda] PRECISION [bf16] SKIP_INSTALL [0] SKIP_TESTS [0]: `DEVICE=cpu PRECISION=fp32 STEPS=4
#   DDP_STEPS=2 SKIP_INSTALL=1 SKIP_TESTS=1 bash bench/gpu_check.sh mnist.yaml mnist_prior.yaml` runs the same
#   flow on a CPU, which is how this script was checked on a machine without a GPU.
# On a machine that reaches nothing (this workplace's device machines), carry the data and wheels inside the
# checkout (a folder that .git/info/exclude ignores) and point DATA and WHEELS at them.
set -u -o pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-300}
DDP_STEPS=${DDP_STEPS:-150}
BUDGET=${BUDGET:-570}
TEST_TIMEOUT=${TEST_TIMEOUT:-180}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
WORK=${WORK:-$(mktemp -d /tmp/vqtok_gpu_check.XXXXXX)}
MIN_RUN=40  # seconds: a training run (start-up, data loading, steps, one validation) needs at least this
mkdir -p "$WORK"
LOG=${OUT:+$OUT/gpu_check.log}
LOG=${LOG:-$WORK/gpu_check.log}
exec > >(tee -a "$LOG") 2>&1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # the checkout even where the editable install fails
export PYTHONUNBUFFERED=1

say() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }
left() { echo $((BUDGET - SECONDS)); }

# ---------------------------------------------------------------- 1. install
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    if "$PY" -c "import torch" 2>/dev/null; then
        say "torch already here: $("$PY" -c 'import torch; print(torch.__version__)') (kept)"
    else
        say "no torch: pip install torch"
        timeout 300 "$PY" -m pip install -q torch || { say "FAILED: pip install torch"; exit 1; }
    fi
    if [ -n "${WHEELS:-}" ]; then
        say "dependencies from $WHEELS"
        timeout 120 "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl \
            || say "WARNING: some wheels of $WHEELS did not install"
    fi
    # --no-deps: pip must not replace the machine's CUDA torch with the CPU build of pyproject's pin.
    timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
        || say "WARNING: editable install failed; using PYTHONPATH=$REPO"
    missing=$("$PY" - <<'EOF'
import importlib.util
# import name -> pip name, for pyproject's dependencies and the dev and eval extras
names = {"numpy": "numpy", "soundfile": "soundfile", "soxr": "soxr", "librosa": "librosa", "einops": "einops",
         "click": "click", "yaml": "pyyaml", "safetensors": "safetensors", "tqdm": "tqdm", "PIL": "pillow",
         "matplotlib": "matplotlib", "pytest": "pytest", "pesq": "pesq", "pystoi": "pystoi"}
print(" ".join(pip for name, pip in names.items() if importlib.util.find_spec(name) is None))
EOF
)
    if [ -n "$missing" ]; then
        say "missing: $missing; trying pip"
        # shellcheck disable=SC2086
        timeout 180 "$PY" -m pip install -q $missing || say "WARNING: still missing: $missing"
    fi
fi
"$PY" - <<EOF || { say "FAILED: vqtok or torch does not import"; exit 1; }
import torch, vqtok
cuda = torch.cuda.is_available()
print(f"vqtok {vqtok.__version__} from {vqtok.__file__}; torch {torch.__version__}; CUDA available: {cuda}"
      + (f" ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))" if cuda else ""))
if "$DEVICE".startswith("cuda") and not cuda:
    raise SystemExit("DEVICE=$DEVICE but torch sees no CUDA device")
EOF

# ---------------------------------------------------------------- 2. tests
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    t=$TEST_TIMEOUT; [ "$t" -gt "$(left)" ] && t=$(left)
    say "test suite (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all}), timeout ${t}s"
    # shellcheck disable=SC2086
    timeout "$t" "$PY" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tail -n 25
    say "test suite exit status ${PIPESTATUS[0]} (124: timed out)"
fi

# ---------------------------------------------------------------- 3-4. training runs
# One line per recipe: kind (tokenizer|prior), data.root with DATA in place of ../shared/data, the
# tokenizer run a prior needs, and the steps/s that the header comment states or implies.
recipe_info() {
    "$PY" - "$1" "$DATA" <<'EOF'
import re, sys, yaml
path, data = sys.argv[1], sys.argv[2]
text = open(path).read()
recipe = yaml.safe_load(text)
root = str((recipe.get("data") or {}).get("root", ""))
root = root.replace("../shared/data", data, 1) if root.startswith("../shared/data") else root
tok = str(recipe.get("tokenizer", "")).rstrip("/").split("/")[-1] if recipe.get("task") == "prior" else ""
header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
header = header.replace(",", "")
cpu = "?"
if m := re.search(r"CPU speed: ([\d.]+) steps/s", header):  # the tag a header gives when its prose has several
    cpu = m.group(1)
elif m := re.search(r"([\d.]+) steps/s", header):
    cpu = m.group(1)
elif (steps := re.search(r"(\d+) steps", header)) and (t := re.search(r"CPU time:\D*?(\d+) min(?: (\d+) s)?", header)):
    cpu = f"{int(steps.group(1)) / (int(t.group(1)) * 60 + int(t.group(2) or 0)):.2f}"
print("prior" if recipe.get("task") == "prior" else "tokenizer", root or "-", tok or "-", cpu)
EOF
}

last_steps_per_s() {  # the steps/s of the last training log line of a run folder
    "$PY" -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl') if l.strip()]
rows = [r for r in rows if r.get('split') == 'train' and 'steps_per_s' in r]
print(f\"{rows[-1]['steps_per_s']:.2f}\" if rows else '?')" "$1" 2>/dev/null || echo "?"
}

# Train one recipe: $1 recipe, $2 run name, $3 steps, $4 "ddp" or "". Prints steps/s or a reason.
train() {
    local recipe=$1 name=$2 steps=$3 ddp=$4 kind root tok cpu t rc
    read -r kind root tok cpu <<<"$(recipe_info "$recipe")"
    local args=(train.max_steps="$steps" train.log_every=$((steps / 3 > 0 ? steps / 3 : 1))
                train.valid_every="$steps" train.save_every="$steps" train.device="$DEVICE"
                train.precision="$PRECISION")
    [ "$root" != "-" ] && args+=(data.root="$root")
    if [ "$kind" = prior ]; then
        # the recipe's run folder (runs/mnist_vqvae2), else the recipe before its first _ (runs/speech_digits: speech)
        [ -f "$WORK/$tok/tokenizer.safetensors" ] || tok=${tok%%_*}
        [ -f "$WORK/$tok/tokenizer.safetensors" ] || { echo "no tokenizer run $tok"; return; }
        args+=(tokenizer="$WORK/$tok")
    fi
    t=$(( $(left) - 10 ))
    [ "$t" -lt "$MIN_RUN" ] && { echo "skipped: budget"; return; }
    local cmd=("$PY" -m vqtok train)
    [ "$ddp" = ddp ] && cmd=("$PY" -m torch.distributed.run --nproc_per_node=1 -m vqtok train)
    # stages=null: a staged recipe's base, once (its stages replay a whole training procedure)
    timeout "$t" "${cmd[@]}" "$recipe" --out "$WORK/$name" --quiet stages=null "${args[@]}" >"$WORK/$name.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        { echo "--- $name failed (exit $rc; 124: timed out), last lines of $WORK/$name.log:"
          tail -n 8 "$WORK/$name.log"; } >&2
        echo "failed (exit $rc)"
        return
    fi
    echo "$(last_steps_per_s "$WORK/$name") steps/s"
}

if [ $# -gt 0 ]; then
    recipes=()
    for r in "$@"; do recipes+=("recipes/$(basename "$r")"); done
else
    mapfile -t recipes < <(ls recipes/*.yaml | grep -v '/debug\.yaml$')
fi
# Tokenizers first: the priors train on their short runs.
ordered=()
for r in "${recipes[@]}"; do [ "$(recipe_info "$r" | cut -d' ' -f1)" = tokenizer ] && ordered+=("$r"); done
for r in "${recipes[@]}"; do [ "$(recipe_info "$r" | cut -d' ' -f1)" = prior ] && ordered+=("$r"); done

declare -A single ddp_sps
# Each recipe's torchrun run right after its plain one, so that a budget cut costs the last recipes both
# columns rather than every recipe its torchrun column (as on the H200 on 2026-12-04).
for r in "${ordered[@]}"; do
    name=$(basename "$r" .yaml)
    say "train $name: $STEPS steps on $DEVICE ($PRECISION)"
    single[$name]=$(train "$r" "$name" "$STEPS" "")
    say "  $name: ${single[$name]}"
    if [ -n "${DDP_RECIPES:-}" ] && [[ " $DDP_RECIPES " != *" $name.yaml "* ]]; then
        ddp_sps[$name]="not asked"; continue
    fi
    say "torchrun --nproc_per_node=1 $name: $DDP_STEPS steps"
    ddp_sps[$name]=$(train "$r" "${name}_ddp" "$DDP_STEPS" ddp)
    say "  ${name} (torchrun): ${ddp_sps[$name]}"
done

# ---------------------------------------------------------------- 5. table
echo
echo "steps/s on $DEVICE ($PRECISION autocast), $STEPS steps alone and $DDP_STEPS under torchrun;" \
     "CPU: the recipe header"
echo "| recipe | $DEVICE steps/s | torchrun steps/s | CPU steps/s (header) | speed-up |"
echo "|---|---:|---:|---:|---:|"
for r in "${ordered[@]}"; do
    name=$(basename "$r" .yaml)
    cpu=$(recipe_info "$r" | cut -d' ' -f4)
    gpu=${single[$name]% steps/s}
    ratio=$("$PY" -c "import sys; g, c = sys.argv[1:]; print(f'{float(g) / float(c):.1f}x')" "$gpu" "$cpu" 2>/dev/null \
            || echo "-")
    echo "| $name | $gpu | ${ddp_sps[$name]% steps/s} | $cpu | $ratio |"
done
say "done in ${SECONDS}s (budget ${BUDGET}s); runs and logs in $WORK"
