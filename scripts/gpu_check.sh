#!/usr/bin/env bash
# The GPU check of issue 16, prepared to run unattended on one CUDA machine in under 8 minutes.
#
#   bash scripts/gpu_check.sh [CIFAR10_DIR] [OUT_DIR]
#
# CIFAR10_DIR: a folder holding torchvision's cifar-10-batches-py/ (default: the first of
# ./cifar-10-batches-py/.., ../shared/data/cifar10, ../data/cifar10 that exists). Without one the
# script writes a synthetic CIFAR-10-shaped image folder (50,000 random 32x32 RGB PNGs in 10
# classes): the same shapes and therefore the same step costs, meaningless accuracies. (The real
# set, 178 MB, is over the 64 MiB a session may carry to the device machine.)
# OUT_DIR (default: $OUT if set, else gpu_check_out): everything the check writes.
#
# Steps, each under its own timeout inside a total budget (GPU_CHECK_BUDGET, default 450 s);
# a step that fails or times out is recorded and the next one runs:
#   env          device, torch, CUDA, cuDNN
#   tests        pytest -m cuda (the CUDA tests: real CUDA graphs of a supernet, the controller)
#   bench_eager  scripts/bench.py --config paper, items a b e c d (bf16, channels-last auto)
#   bench_graphs the same ENAS and DARTS items with --cuda-graphs on
#   data         CIFAR-10 or the synthetic fallback
#   search       `enas search --preset paper --epochs 2` on CIFAR-10 (the faster of eager / graphs):
#                epoch 2's wall time (from log.txt) x 150 is the projected 150-epoch search
#   bench_layout item a with --channels-last off, bf16 and with --amp off (the CUDA `auto` rule)
#   bench_flat_off item a with --flat off (per-tensor SGD instead of the flat buffers)
#   bench_compile item a with --compile on (whatever budget is left; compile time included)
# Results: OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (the table for docs/performance.md),
# rewritten after every step, so a killed run still leaves what it measured.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DATA="${1:-}"
OUT_DIR="${2:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
BUDGET="${GPU_CHECK_BUDGET:-450}"
START=$(date +%s)
: > "$OUT_DIR/steps.jsonl"

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT_DIR/gpu_check.log" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

summarize() {
    "$PY" - "$OUT_DIR" <<'PYEOF' || log "summary failed (the raw files are in $OUT_DIR)"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]
res = {"steps": steps, "bench": {}, "search": None, "env": None}
def load(name):
    p = out / f"{name}.out"
    try:
        return json.loads(p.read_text())
    except Exception:
        return None
res["env"] = load("env")
for name in ("bench_eager", "bench_graphs", "bench_nchw_bf16", "bench_nchw_fp32", "bench_flat_off", "bench_compile"):
    r = load(name)
    if r:
        res["bench"][name] = r
s = out / "search_timing.json"
if s.exists():
    res["search"] = json.loads(s.read_text())
(out / "gpu_check.json").write_text(json.dumps(res, indent=1))
env = res["env"] or {}
md = [f"GPU check: {env.get('device_name', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
      f"date {env.get('date', '?')}", "",
      "| step | status | seconds |", "|---|---|---:|"]
md += [f"| {s['step']} | {s['status']} | {s.get('seconds', '')} |" for s in steps]
md += ["", "| run | item | images/s | median ms | peak MiB (CUDA; RSS on CPU) |", "|---|---|---:|---:|---:|"]
for name, r in res["bench"].items():
    cfg = next(iter(r.get("results", {}).values()), {})
    for key, v in cfg.items():
        if isinstance(v, dict) and "step_ms" in v:
            md.append(f"| {name} | {key} | {v['images_per_s']:.0f} | {v['step_ms']['median']:.1f} | "
                      f"{v.get('peak_cuda_mib', v.get('peak_rss_mib', 0)):.0f} |")
    e = cfg.get("epoch_estimate")
    if e:
        md.append(f"| {name} | epoch estimate | | {1e3 * e['epoch_s']:.0f} (150 epochs: {e['search_150_epochs_h']:.2f} h) | |")
    c = cfg.get("controller")
    if c:
        md.append(f"| {name} | controller: sample {c['sample_ms']['median']:.2f} ms, update "
                  f"{c['update_ms']['median']:.1f} ms, batched {c['sample_batch']['per_arch_ms']:.3f} ms/arch | | | |")
if res["search"]:
    t = res["search"]
    md += ["", f"2-epoch search ({t.get('switches')}, {t.get('data')}): epoch 1 {t.get('epoch1_s')} s, epoch 2 "
           f"{t.get('epoch2_s')} s, whole run {t.get('total_s')} s; projected 150 epochs: "
           f"{t.get('projected_150_epochs_h')} h (goal: under 1 h)"]
(out / "gpu_check.md").write_text("\n".join(md) + "\n")
PYEOF
}

# step NAME TIMEOUT CMD...: stdout -> NAME.out, stderr -> NAME.err; never stops the script.
step() {
    local name=$1 limit=$2 remaining rc=0 t0 status
    shift 2
    remaining=$(left)
    if (( remaining < 15 )); then
        log "skip $name: budget spent"
        echo "{\"step\": \"$name\", \"status\": \"skipped (budget)\"}" >> "$OUT_DIR/steps.jsonl"
        summarize
        return 0
    fi
    (( limit > remaining )) && limit=$remaining
    log "start $name (timeout ${limit}s)"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err" || rc=$?
    if (( rc == 0 )); then status=ok; elif (( rc == 124 || rc == 137 )); then status=timeout; else status="failed ($rc)"; fi
    log "end $name: $status after $(( $(date +%s) - t0 ))s"
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT_DIR/steps.jsonl"
    summarize
    return 0
}

median_ms() {  # median ms of the ENAS step in a bench JSON, or 1e18 when missing
    "$PY" -c "import json,sys
try: print(next(iter(json.load(open(sys.argv[1]))['results'].values()))['enas_step']['step_ms']['median'])
except Exception: print(1e18)" "$1"
}

# GPU_CHECK_DRY=1: the same steps on the CPU at toy sizes, to check this script without a GPU.
if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
    DEVICE=cpu; CONFIG=tiny; PER_CLASS=20; SEARCH_ARGS=(--preset quick --device cpu --set data.batch_size=16)
else
    DEVICE=cuda; CONFIG=paper; PER_CLASS=5000; SEARCH_ARGS=(--preset paper --device cuda)
fi
BENCH=("$PY" scripts/bench.py --device "$DEVICE" --config "$CONFIG")
step env 60 "$PY" -c "import datetime, json, torch
ok = torch.cuda.is_available()
print(json.dumps({'date': datetime.datetime.now().isoformat(timespec='seconds'), 'torch': torch.__version__,
                  'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), 'available': ok,
                  'device_name': torch.cuda.get_device_name(0) if ok else None,
                  'memory_gib': torch.cuda.get_device_properties(0).total_memory / 2**30 if ok else None}))
assert ok or '$DEVICE' == 'cpu', 'no CUDA device'"
step tests 90 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/
step bench_eager 100 "${BENCH[@]}" --only a,b,e,c,d --warmup 10 --repeats 30
step bench_graphs 100 "${BENCH[@]}" --only a,b,c --cuda-graphs on --warmup 40 --repeats 30

# Data: CIFAR-10 if present, else the synthetic image folder.
if [[ -z "$DATA" ]]; then
    for d in "$ROOT" "$ROOT/../shared/data/cifar10" "$ROOT/../data/cifar10"; do
        if [[ -f "$d/cifar-10-batches-py/data_batch_1" ]]; then DATA="$d"; break; fi
    done
fi
if [[ -n "$DATA" && -f "$DATA/cifar-10-batches-py/data_batch_1" ]]; then
    DATASET=(--dataset cifar10 --data-dir "$DATA"); DATA_NOTE="CIFAR-10 at $DATA"
else
    SYN="${TMPDIR:-/tmp}/gpu_check_synthetic"
    step data 60 "$PY" - "$SYN" "$PER_CLASS" <<'PYEOF'
import sys
from multiprocessing import Pool
from pathlib import Path
import numpy as np
from PIL import Image
root, per_class = Path(sys.argv[1]), int(sys.argv[2])
def write(args):
    split, cls, start, n = args
    rng = np.random.default_rng(hash((split, cls, start)) % 2**32)
    d = root / split / f"class{cls}"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i:05d}.png")
chunk = min(500, per_class)
jobs = [("train", c, s, min(chunk, per_class - s)) for c in range(10) for s in range(0, per_class, chunk)]
jobs += [("test", c, 0, 10) for c in range(10)]
with Pool() as pool:
    pool.map(write, jobs)
print(sum(1 for _ in root.rglob("*.png")))
PYEOF
    DATASET=(--dataset imagefolder --data-dir "$SYN"); DATA_NOTE="synthetic image folder (random pixels)"
fi

# The 2-epoch search with the faster of eager and CUDA graphs (bench item a).
SWITCH=()
if [[ -f "$OUT_DIR/bench_graphs.out" ]] && "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" \
        "$(median_ms "$OUT_DIR/bench_graphs.out")" "$(median_ms "$OUT_DIR/bench_eager.out")"; then
    SWITCH=(--set run.cuda_graphs=true)
fi
SEARCH_DIR="$OUT_DIR/search"
rm -rf "$SEARCH_DIR"
SEARCH_T0=$(date +%s)
step search 170 "$PY" -m enas search "${SEARCH_ARGS[@]}" --epochs 2 "${DATASET[@]}" ${SWITCH[@]+"${SWITCH[@]}"} \
    --out "$SEARCH_DIR"
"$PY" - "$SEARCH_DIR" "$OUT_DIR/search_timing.json" "$(( $(date +%s) - SEARCH_T0 ))" "${SWITCH[*]:-eager}" "$DATA_NOTE" <<'PYEOF' || true
import datetime, json, re, sys
from pathlib import Path
run, dest, total, switches, data = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
stamps = {}
log = run / "log.txt"
lines = log.read_text().splitlines() if log.exists() else []
def t(line):
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
start = t(lines[0]) if lines else None
for line in lines:
    m = re.search(r"epoch (\d+)/\d+: ", line)
    if m and "enas.search.driver" in line:
        stamps[int(m.group(1))] = t(line)
e1 = (stamps[1] - start).total_seconds() if 1 in stamps and start else None
e2 = (stamps[2] - stamps[1]).total_seconds() if 2 in stamps and 1 in stamps else None
per_epoch = e2 or e1
dest.write_text(json.dumps({
    "switches": switches, "data": data, "total_s": total, "epoch1_s": e1, "epoch2_s": e2,
    "epoch1_includes": "startup, data loading, first-use compilation or capture",
    "projected_150_epochs_h": round(150 * per_epoch / 3600, 3) if per_epoch else None,
    "projection_from": "epoch 2" if e2 else "epoch 1" if e1 else None,
    "genotype": (run / "genotype.json").exists()}, indent=1))
PYEOF
summarize

step bench_nchw_bf16 45 "${BENCH[@]}" --only a --channels-last off --warmup 5 --repeats 20
step bench_nchw_fp32 45 "${BENCH[@]}" --only a --channels-last off --amp off --warmup 5 --repeats 20
step bench_flat_off 45 "${BENCH[@]}" --only a --flat off --warmup 5 --repeats 20
step bench_compile "$(left)" "${BENCH[@]}" --only a --compile on --warmup 20 --repeats 20
log "done: $OUT_DIR/gpu_check.json, $OUT_DIR/gpu_check.md"
