#!/usr/bin/env bash
# gpu_session.sh: how vqtok uses a lent GPU machine (this workplace's H200: no network, 64 MiB carried in, files
# back from $OUT), kept as the record of how. One phase per argument, in the order given:
#   setup  the carried wheels into /tmp/site (pesq built from its sdist there), the carried data decoded into
#          $DATA_DIR (speech Opus -> 16 kHz FLAC under the real names, FSDD FLAC -> WAV, MNIST), ../shared/data
#          linked to it so the tests find it; skipped when an earlier call on the same machine did it
#   check  bench/gpu_check.sh alone on the GPU (the suite with pytest-xdist, every recipe, torchrun)
#   suite  the test suite alone with CUDA visible, tests/test_cuda.py first (gpu_check has run to its end once;
#          the suite fixed after it has not run on a GPU yet), then bench/batch_noise.py with and without TF32:
#          `END_AT=560 bash bench/gpu_session.sh setup suite train pack` is the plan for the next lease
#   train  the speech-16k runs of $SPEECH side by side until second $END_AT of the script (or $END s on): a short
#          calibration of all of them together sizes each run's cosine schedule to the time left
#   pack   logs, metrics and weights into $OUT (8 files at most, 16 MiB each)
# e.g. `END_AT=540 bash bench/gpu_session.sh setup check train pack`. Elsewhere: DATA_DIR at real data, no setup.
#
# Preparation on the CPU machine (.gpu/ is ignored by .git/info/exclude and carried to the device):
#   wheels:  pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform
#            manylinux_2_28_x86_64 (...) -d .gpu/whl soundfile cffi pycparser soxr librosa audioread decorator
#            pooch platformdirs pystoi pytest-runner;  pip download --no-deps --no-binary=:all: -d .gpu/src pesq
#            (pesq's setup.py asks for pytest-runner: without its wheel the 2026-12-04 build failed there)
#   speech:  opusenc --bitrate 48 each FLAC of ../shared/data/speech/{train,test} -> .gpu/data/speech/.../*.ogg
#            (the 74 MB of FLAC do not fit in 64 MiB with the repository; the Opus copy is decoded back there)
#   digits:  FSDD as FLAC in .gpu/data/fsdd (sox), MNIST copied to .gpu/data/mnist
#
# Sessions that used it: stage 2 of both shipped speech models and the guided priors (commit eada1b7: five speech
# runs, two priors and gpu_check side by side in one call), and the 2026-12-04 session (check alone, then the
# decoder-only speech-16k runs below; recipes/speech16k.yaml's header gives what they reached).
set -u
REPO=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/tmp/runs}; DATA=${DATA_DIR:-/tmp/data}
mkdir -p "$RUNS" "$DATA"
exec > >(tee -a "$OUT/session.log") 2>&1
say() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
[ -d /tmp/site ] && export PYTHONPATH=$REPO:/tmp/site

# name | init | overrides (comma-separated) for recipes/speech16k.yaml; every run keeps speech-16k's codes.
# One decoder-only run alone by default: on 2026-12-04 the decoder at 4x the CPU batch gained more in 3.8 min beside
# a GAN run (stage 20) than any CPU stage, its loss still falling, and a calibration beside a GAN run still warming
# its discriminators up planned both runs too long. GAN=1 adds the GAN variant beside it.
DEC="loss.decoder_only=true,train.batch_size=${DEC_BATCH:-128},train.lr=${DEC_LR:-2e-4},train.warmup_steps=200"
SPEECH=("s16_dec|speech-16k|$DEC")
[ "${GAN:-0}" = 1 ] && SPEECH+=("s16_dgan|speech-16k|$DEC,loss.adversarial={disc_warmup: 200}")
# DRY=1 DEVICE=cpu OUT=/tmp/o RUNS=/tmp/r DATA_DIR=/tmp/d CHECK_BUDGET=200 END=60 bash bench/gpu_session.sh setup
# check train pack: a rehearsal on a CPU (no wheels installed, the local packages; tiny runs)
DRY=${DRY:-0}
TINY=(); [ "$DRY" = 1 ] && TINY=(train.batch_size=2 data.segment_seconds=0.25 data.valid_items=2)

setup() {
    if [ -f /tmp/site/.done ] && [ -f "$DATA/.done" ]; then say "setup: done by an earlier call"; return; fi
    mkdir -p /tmp/site
    [ "$DRY" = 1 ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl/*.whl || { say "FAILED: wheels"; exit 3; }
    export PYTHONPATH=$REPO:/tmp/site
    # pesq has no wheels: built from its sdist with the machine's numpy and cython (in the background)
    # (its setup.py fetches pytest-runner through pip: PIP_FIND_LINKS points that at the carried wheel; not yet seen
    # working there)
    ( [ "$DRY" = 1 ] || PIP_NO_INDEX=1 PIP_FIND_LINKS=$REPO/.gpu/whl timeout 120 python3 -m pip install -q --no-index \
        --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .gpu/src/pesq-*.tar.gz \
        >/tmp/pesq_build.log 2>&1 && say "pesq built" \
        || say "pesq did not build (its tests are skipped): $(tail -n 1 /tmp/pesq_build.log)" ) &
    local pesq=$!
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    say "decoding the carried data into $DATA"
    cp -r .gpu/data/mnist "$DATA/"
    python3 - "$DATA" <<'EOF' || { say "FAILED: data"; exit 3; }
import concurrent.futures as cf, pathlib, sys
import numpy as np, soundfile as sf, soxr
data = pathlib.Path(sys.argv[1])
def speech(f):  # Opus (48 kHz inside) -> the 16 kHz 16-bit FLAC of the original's name
    out = data / "speech" / f.relative_to(".gpu/data/speech").with_suffix(".flac")
    x, sr = sf.read(f, dtype="float32")
    x = x.mean(1) if x.ndim > 1 else x
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, np.clip(soxr.resample(x, sr, 16000), -1, 1), 16000, subtype="PCM_16")
def digits(f):  # FLAC -> the 8 kHz WAV of FSDD's layout (lossless)
    out = data / "fsdd" / "recordings" / f.with_suffix(".wav").name
    x, sr = sf.read(f, dtype="int16")
    sf.write(out, x, sr, subtype="PCM_16")
(data / "fsdd" / "recordings").mkdir(parents=True, exist_ok=True)
with cf.ProcessPoolExecutor(16) as ex:
    n = len(list(ex.map(speech, sorted(pathlib.Path(".gpu/data/speech").rglob("*.ogg")))))
    m = len(list(ex.map(digits, sorted(pathlib.Path(".gpu/data/fsdd").glob("*.flac")))))
print(n, "speech files,", m, "digit files")
EOF
    mkdir -p ../shared && { [ -e ../shared/data ] || ln -s "$DATA" ../shared/data; }  # for the test suite
    wait "$pesq"
    python3 - <<'EOF' || { say "FAILED: imports"; exit 3; }
import torch, soundfile, soxr, librosa, pystoi, vqtok
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "vqtok", vqtok.__file__)
EOF
    touch /tmp/site/.done "$DATA/.done"
    say "setup done"
}

check() {
    say "bench/gpu_check.sh, alone on the GPU"
    local dry=(); [ "$DRY" = 1 ] && dry=(DEVICE=cpu PRECISION=fp32 STEPS=4 DDP_STEPS=2 SKIP_TESTS=1)
    env SKIP_INSTALL=1 DATA="$DATA" STEPS=${STEPS:-200} DDP_STEPS=${DDP_STEPS:-100} TEST_TIMEOUT=${TEST_TIMEOUT:-150} \
        BUDGET=${CHECK_BUDGET:-330} PYTEST_ARGS="-n 8" DDP_RECIPES="mnist.yaml speech16k.yaml mnist_prior.yaml" \
        WORK=/tmp/gpu_check "${dry[@]}" bash bench/gpu_check.sh >"$OUT/gpu_check.log" 2>&1
    say "gpu_check exit $?"
    tail -n 16 "$OUT/gpu_check.log"
}

suite() {  # the test suite with CUDA visible: tests/test_cuda.py first (verbose), then all of it
    say "tests/test_cuda.py, then the suite (-n 8), CUDA visible"
    local t=${TEST_TIMEOUT:-150} par=()
    python3 -c "import xdist" 2>/dev/null && par=(-n 8)  # pytest-xdist: there on the 2026-12-04 machine
    timeout "$t" python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tail -n 15
    timeout "$t" python3 -m pytest -q -p no:cacheprovider -x "${par[@]}" 2>&1 | tail -n 25
    # how far batching moves the encoder's latents on this GPU (streaming.LATENT_RTOL there is a guess, 1e-2)
    timeout 90 python3 bench/batch_noise.py --device "$DEVICE" --n 30 2>&1 | tail -n 6
    timeout 90 python3 bench/batch_noise.py --device "$DEVICE" --n 30 --no-tf32 2>&1 | tail -n 6
    say "suite done"
}

speech_run() {  # name init steps [override...]
    local name=$1 init=$2 steps=$3; shift 3
    python3 -m vqtok train recipes/speech16k.yaml --out "$RUNS/$name" --init-from "$init" --quiet stages=null \
        train.device="$DEVICE" data.root="$DATA/speech" data.num_workers=3 train.threads=2 \
        train.max_steps="$steps" train.log_every=$(( steps / 10 > 0 ? steps / 10 : 1 )) \
        train.valid_every=$(( steps / 2 > 0 ? steps / 2 : 1 )) train.save_every=250 "$@" "${TINY[@]}" \
        >"$RUNS/$name.log" 2>&1
}
rate() {  # steps/s of a run's last logged window
    python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get('split') == 'train' and 'steps_per_s' in r]
print(rows[-1]['steps_per_s'] if rows else 0)" "$RUNS/$1/metrics.jsonl" 2>/dev/null || echo 0
}

train() {
    # END_AT: the script's second by which the runs stop (a whole call's plan); else END seconds from now
    local end=${END_AT:-$(( SECONDS + ${END:-300} ))} cal=${CAL:-40} pids=() spec name init extra
    [ $(( end - SECONDS )) -lt 90 ] && { say "train: only $(( end - SECONDS )) s left, skipped"; return; }
    say "calibration: the runs together, $cal steps each"
    for spec in "${SPEECH[@]}"; do
        IFS='|' read -r name init extra <<<"$spec"
        IFS=',' read -r -a over <<<"$extra"
        speech_run "cal_$name" "$init" "$cal" data.valid_items=4 "${over[@]}" &
        pids+=($!)
    done
    wait "${pids[@]}"; pids=()
    for spec in "${SPEECH[@]}"; do
        IFS='|' read -r name init extra <<<"$spec"
        IFS=',' read -r -a over <<<"$extra"
        local r steps
        r=$(rate "cal_$name")
        # the time left less ~30 s of start-up, validation and save, 0.85 for the start beside the others
        steps=$(python3 -c "print(max(20, int($r * ($end - $SECONDS - 30) * 0.85 / 10) * 10))")
        say "  $name: $r steps/s in calibration -> max_steps $steps"; tail -n 2 "$RUNS/cal_$name.log"
        ( timeout -s TERM $(( end - SECONDS )) bash -c "$(declare -f speech_run); $(declare -p TINY); DEVICE=$DEVICE \
            DATA=$DATA RUNS=$RUNS; speech_run $name $init $steps $(printf '%q ' "${over[@]}")"
          say "  $name finished (exit $?)" ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    say "trainings stopped"; nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null
}

pack() {
    for f in "$RUNS"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 6 "$f"; }; done >"$OUT/train_logs.txt"
    [ -d /tmp/gpu_check ] && (cd /tmp/gpu_check && tar czf "$OUT/gpu_check_runs.tgz" --exclude='*.safetensors' \
        --exclude='state.pt' --exclude='codes' --exclude='*.png' .)
    [ -d "$RUNS" ] && (cd "$RUNS" && tar cf - --exclude='state.pt' --exclude='codes' --exclude='cal_*' \
        --exclude='*.wav' . | gzip -1 | split -b 15M -d - "$OUT/runs.tgz.")
    ls -la "$OUT"
}

for phase in "$@"; do
    case $phase in
        setup|check|suite|train|pack) say "== $phase"; $phase ;;
        *) say "unknown phase $phase (setup, check, suite, train, pack)"; exit 2 ;;
    esac
done
say "done"
