#!/usr/bin/env bash
# gpu_session.sh: the one GPU session that trained the second stages of the shipped speech-16k and speech-8k
# (recipe headers), kept as the record of how: set-up, a calibration that sizes each run's schedule to the time
# left, five speech trainings and two priors side by side, bench/gpu_check.sh beside them, packing into $OUT.
# Written for this workplace's lent H200 (no network, 64 MiB carried, files back from $OUT); elsewhere, point
# DATA_DIR at real data and skip the preparation below.
#
# Preparation on the CPU machine (the .gpu/ folder is git-ignored and carried to the device):
#   wheels:  pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .gpu/whl soundfile cffi
#            pycparser soxr librosa audioread decorator pooch platformdirs pystoi
#   speech:  opusenc --bitrate 48 each FLAC of ../shared/data/speech/{train,test} -> .gpu/data/speech/.../*.ogg
#            (the 61 MB of FLAC do not fit in 64 MiB with the repository; the Opus copy is decoded back there)
#   digits:  FSDD as FLAC in .gpu/data/fsdd, MNIST copied to .gpu/data/mnist
# Then, on the device, from the repository root:  END=535 bash bench/gpu_session.sh
# DRY=1 DEVICE=cpu END=900 DATA_DIR=/tmp/d RUNS=/tmp/r OUT=/tmp/o bash bench/gpu_session.sh: a tiny local rehearsal.
set -u
REPO=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
END=${END:-540}          # seconds after start by which every training has stopped
DEVICE=${DEVICE:-cuda}
DRY=${DRY:-0}
RUNS=${RUNS:-/tmp/runs}; DATA=${DATA_DIR:-/tmp/data}
mkdir -p "$RUNS" "$DATA"
exec > >(tee -a "$OUT/session.log") 2>&1
say() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

# ------------------------------------------------------------------ 1. packages and data
if [ "$DRY" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/whl/*.whl || { say "FAILED: wheels"; exit 3; }
    export PYTHONPATH=$REPO:/tmp/site
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
python3 - <<'EOF' || { say "FAILED: imports"; exit 3; }
import torch, soundfile, soxr, librosa, vqtok
from vqtok.tokenizer.checkpoint import load_tokenizer
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "vqtok", vqtok.__file__)
load_tokenizer("speech-16k")
EOF
say "decoding speech (Opus 48 kbit/s carried; test/ cut to 25 files) to 16 kHz WAV; mnist; fsdd"
cp -r .gpu/data/mnist "$DATA/" 2>/dev/null
mkdir -p "$DATA/fsdd/recordings" && cp .gpu/data/fsdd/*.flac "$DATA/fsdd/recordings/"  # FSDD, FLAC (lossless)
python3 - "$DATA" "$RUNS" <<'EOF' || { say "FAILED: data"; exit 3; }
import concurrent.futures as cf, pathlib, sys
import numpy as np, soundfile as sf, soxr
data, runs = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
src, dst = pathlib.Path(".gpu/data/speech"), data / "speech"
def one(f):
    out = dst / f.relative_to(src).with_suffix(".wav")
    if out.exists():
        return
    x, sr = sf.read(f, dtype="float32")
    x = x.mean(1) if x.ndim > 1 else x
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, np.clip(soxr.resample(x, sr, 16000), -1, 1), 16000, subtype="PCM_16")
files = sorted(src.rglob("*.ogg"))
with cf.ProcessPoolExecutor(16) as ex:
    list(ex.map(one, files))
print(len(files), "speech files")
EOF
mkdir -p ../shared && { [ -e ../shared/data ] || ln -s "$DATA" ../shared/data; }  # for the test suite
say "data ready"

# ------------------------------------------------------------------ 2. the trainings
# name | recipe | init | extra overrides
# As run (commit eada1b7): speech16k.yaml then had the GAN block that speech8k.yaml has, so s16_gan had it and
# s16_rec switched it off; speech-16k / speech-8k were the stage-1 weights (git show ebe5a38:vqtok/pretrained/...).
# The *_fast runs start from scratch: patch stem, 2 residual blocks per stage, leaky ReLU, iSTFT decoder head.
FAST="model.net.encoder_stem=patch,model.net.res_depth=2,model.activation=leaky_relu,model.net.decoder_head=istft,train.lr=6.0e-4"
SPEECH=(
  "s16_gan|speech16k.yaml|speech-16k|"
  "s16_rec|speech16k.yaml|speech-16k|loss.adversarial=null"
  "s16_fast|speech16k.yaml|-|$FAST"
  "s8_gan|speech8k.yaml|speech-8k|"
  "s8_fast|speech8k.yaml|-|$FAST"
)
common=(train.device="$DEVICE" data.root="$DATA/speech" data.num_workers=1 train.threads=1)
[ "$DRY" = 1 ] && common+=(train.batch_size=2 data.segment_seconds=0.25 data.valid_items=2 train.warmup_steps=1)
speech_run() {  # name recipe init steps [extra...]
    local name=$1 recipe=$2 init=$3 steps=$4 from=(); shift 4
    [ "$init" != - ] && from=(--init-from "$init")
    python3 -m vqtok train "recipes/$recipe" --out "$RUNS/$name" "${from[@]}" --quiet "${common[@]}" \
        train.max_steps="$steps" train.log_every=$(( steps / 10 > 0 ? steps / 10 : 1 )) train.valid_every="$steps" \
        train.save_every=250 "$@" >"$RUNS/$name.log" 2>&1
}
rate() {  # steps/s of the last logged window
    python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get('split') == 'train' and 'steps_per_s' in r]
print(rows[-1]['steps_per_s'] if rows else 0)" "$RUNS/$1/metrics.jsonl" 2>/dev/null || echo 0
}

CAL=${CAL:-60}; [ "$DRY" = 1 ] && CAL=2
pids=()
say "calibration: the speech runs together, $CAL steps each"
for spec in "${SPEECH[@]}"; do
    IFS='|' read -r name recipe init extra <<<"$spec"
    speech_run "cal_$name" "$recipe" "$init" "$CAL" data.valid_items=4 ${extra//,/ } &
    pids+=($!)
done
wait "${pids[@]}"  # a bare `wait` would also wait for the `tee` of the log (bash >= 5.1)
pids=()
declare -A STEPS
for spec in "${SPEECH[@]}"; do
    IFS='|' read -r name recipe init extra <<<"$spec"
    r=$(rate "cal_$name")
    # Left: END minus now, minus ~40 s of start-up, final validation and save; 0.8 for the runs starting beside them.
    STEPS[$name]=$(python3 -c "import sys; r, left = float(sys.argv[1]), $END - $SECONDS - 40; print(max(20, min(30000, int(r * left * 0.8 / 10) * 10)))" "$r")
    [ "$DRY" = 1 ] && STEPS[$name]=3
    say "  $name: $r steps/s in calibration -> max_steps ${STEPS[$name]}"
    tail -n 3 "$RUNS/cal_$name.log"
done

say "launch the speech runs"
for spec in "${SPEECH[@]}"; do
    IFS='|' read -r name recipe init extra <<<"$spec"
    ( timeout -s TERM $(( END - SECONDS )) bash -c "$(declare -f speech_run); $(declare -p common); RUNS=$RUNS; speech_run $name $recipe $init ${STEPS[$name]} ${extra//,/ }"
      say "  $name finished (exit $?)" ) &
    pids+=($!)
done

say "launch the priors (issue 12)"
pr=(train.device="$DEVICE" train.threads=1)
[ "$DRY" = 1 ] && pr+=(train.max_steps=2 train.batch_size=2)
(
  timeout -s TERM $(( END - SECONDS )) python3 -m vqtok train recipes/mnist_vqvae2.yaml --out "$RUNS/mnist_vqvae2" --quiet \
      "${pr[@]}" data.root="$DATA/mnist" >"$RUNS/mnist_vqvae2.log" 2>&1
  say "  mnist_vqvae2 finished (exit $?)"
  timeout -s TERM $(( END - SECONDS )) python3 -m vqtok train recipes/mnist_vqvae2_prior.yaml --out "$RUNS/mnist_vqvae2_prior" \
      --quiet "${pr[@]}" tokenizer="$RUNS/mnist_vqvae2" data.root="$DATA/mnist" >"$RUNS/mnist_vqvae2_prior.log" 2>&1
  say "  mnist_vqvae2_prior finished (exit $?)"
) &
pids+=($!)
(
  timeout -s TERM $(( END - SECONDS )) python3 -m vqtok train recipes/speech_prior.yaml --out "$RUNS/speech_prior" --quiet \
      "${pr[@]}" data.root="$DATA/fsdd" >"$RUNS/speech_prior.log" 2>&1
  say "  speech_prior finished (exit $?)"
) &
pids+=($!)

# ------------------------------------------------------------------ 3. gpu_check.sh beside them
if [ "$DRY" != 1 ]; then
    say "bench/gpu_check.sh (beside the trainings: its steps/s are shared-GPU figures)"
    SKIP_INSTALL=1 DATA="$DATA" STEPS=150 DDP_STEPS=60 TEST_TIMEOUT=150 BUDGET=$(( END - SECONDS - 20 )) \
        WORK=/tmp/gpu_check timeout $(( END - SECONDS )) bash bench/gpu_check.sh mnist.yaml speech16k.yaml mnist_prior.yaml \
        >"$OUT/gpu_check.log" 2>&1
    say "gpu_check exit $?"
fi
wait "${pids[@]}"
say "all trainings stopped"
nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null

# ------------------------------------------------------------------ 4. packing (8 files at most, 16 MiB each)
cd "$RUNS" || exit 3
for f in *.log; do echo "== $f"; tail -n 4 "$f"; done > "$OUT/train_logs.txt"
tar cf - --exclude='state.pt' --exclude='codes' --exclude='cal_*' --exclude='*.wav' . | gzip -1 | split -b 15M -d - "$OUT/runs.tgz."
ls -la "$OUT"
say "done"
