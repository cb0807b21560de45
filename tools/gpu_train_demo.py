"""Train the demo model on one GPU within a fixed wall-clock budget, then measure the GPU (one prepared run).

    python tools/gpu_train_demo.py --out OUT [--budget 540]     # on a CUDA machine
    python tools/gpu_train_demo.py --out OUT --dry-run          # the same path on the CPU, a few steps each
    python tools/gpu_train_demo.py --out OUT --init checkpoints/dwgn-small-demo.safetensors --clean-share 0.35 \
        --warmup 0.1 [--weather-weights 2,1,2,1.5,1] [--gpu-check 0] \
        [--train-args "--tone-share 0.5 --weather-side 256"]
                                                                # more Stage 2 for a release (no Stage 1)

What it runs, each as a subprocess with a time limit, printing the exact command first:
0. in the background, from the start: the demo test sets that Stage 2 validates on, built if missing (a fresh
   machine builds them; 37 s on an H100 machine, which Stage 2 spent before training in session 11);
1. the CUDA-graph equality test (tests/test_acceleration.py); the training uses CUDA graphs only if it passes;
2. Stage 1, `pre-training.py` (adversarial decomposition on the fetched training photos), a fixed step count
   (skipped with --init: Stage 2 then goes on from that release, which has had its Stage 1);
3. a 30-step calibration of Stage 2's exact command (its log's images/s), which sizes the real run:
   Stage 2 gets as many steps as fit in what is left of --budget, rounded down to a multiple of 100;
4. Stage 2, `train.py --online-weather` (weather made on the fly from the demo's 40 training photos);
5. the releases (`python -m dwgn.export`: Stage 2's last step, and its best.pt, the step with the best validation
   on the demo sets, as dwgn-small-demo-best.pt), the snapshots of `--train-args "--keep-every N"` and the run
   logs, into --out;
6. `benchmarks/gpu_check.py` (the `paper` network's GPU table) with whatever time is left.
Everything it ran, with step counts, rates and exit codes, goes to OUT/summary.json; the commands it printed are
the recipe (checkpoints/make_demo_checkpoint.sh). It stops early and says why when a step fails.
"""
from __future__ import annotations

import argparse
import atexit
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dwgn, also when run from elsewhere
from dwgn.training.run_dir import read_log_lines  # noqa: E402

PYTHON = sys.executable
STAGE1 = ["pre-training.py", "--config", "configs/pretrain_demo.yaml", "--preset", "small",
          "--batch-size", "16", "--crop", "128", "--lr", "4e-4", "--log-every", "10", "--save-every", "50"]
STAGE2 = ["train.py", "--config", "configs/finetune_demo.yaml", "--preset", "small", "--online-weather",
          "--crop", "128", "--ema-decay", "0.995", "--val-images", "10"]
STAGE2_BATCH = 32
RESERVE_S = 25.0   # export and packing after Stage 2
CALIB_STEPS = 30
# train.py flags this script sets for Stage 2 itself (its own options or the calibration's sizing): --train-args
# may not set them, or the calibrated run would not be the run that the summary describes
OWNED_FLAGS = {"--steps", "--warmup-steps", "--out", "--init", "--lr", "--clean-share", "--weather-weights",
               "--batch-size", "--val-every", "--save-every", "--val-data", "--cuda-graphs", "--num-workers",
               "--preset", "--config", "--restart"}


class Session:
    def __init__(self, out: Path, budget: float, dry: bool):
        self.out, self.budget, self.dry = out, budget, dry
        self.t0 = time.monotonic()
        self.record: dict = {"budget_s": budget, "dry_run": dry, "steps": []}
        self.log = open(out / "session.log", "a", buffering=1)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self, name: str, args: list[str], timeout: float) -> int:
        """Run `python args...` in the repository root; output to the console and session.log."""
        cmd = [PYTHON, *args]
        self.say(f"{name}: $ {shlex.join(['python', *args])}   (limit {timeout:.0f} s)")
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # a timer, not a check per output line: a step that prints nothing is stopped on time too
            killed = threading.Event()
            watchdog = threading.Timer(max(timeout, 1.0), lambda: (killed.set(), proc.kill()))
            watchdog.start()
            assert proc.stdout is not None
            for line in proc.stdout:  # tqdm's redraws arrive as \r-joined lines: keep their last state
                self.log.write(line.rsplit("\r", 1)[-1])
                if "\r" not in line:
                    print(line, end="", flush=True)
            rc = proc.wait(timeout=30)
            watchdog.cancel()
            rc, note = (124, "killed at its time limit") if killed.is_set() else (rc, "")
        except Exception as err:  # a step that cannot even start is recorded, not fatal to the session
            rc, note = -1, f"{type(err).__name__}: {err}"
        return self._record(name, args, rc, time.monotonic() - start, note)

    def start(self, name: str, args: list[str]) -> "Background":
        """Run `python args...` in the background, its output to OUT/<name>.log; `finish` waits for it."""
        self.say(f"{name} (in the background): $ {shlex.join(['python', *args])}")
        return Background(name, args, self.out / f"{name.replace(' ', '_')}.log")

    def finish(self, job: "Background", timeout: float) -> int:
        """Wait for a `start`ed step (killed after `timeout` s) and record it like `run` does (its seconds run from
        its start to the end of this wait)."""
        rc, note = job.wait(timeout)
        return self._record(job.name, job.args, rc, time.monotonic() - job.started, note)

    def _record(self, name: str, args: list[str], rc: int, seconds: float, note: str) -> int:
        """A finished step into summary.json and the log; returns its exit code."""
        self.record["steps"].append({"name": name, "command": shlex.join(["python", *args]), "rc": rc,
                                     "seconds": round(seconds, 1), **({"note": note} if note else {})})
        self.say(f"{name}: exit {rc} after {seconds:.0f} s {note}")
        self.save()
        return rc

    def save(self) -> None:
        self.record["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        (self.out / "summary.json").write_text(json.dumps(self.record, indent=2) + "\n")


class Background:
    """A step run beside the others (a subprocess in the repository root); stopped if the session ends first."""

    def __init__(self, name: str, args: list[str], log: Path):
        self.name, self.args, self.started = name, args, time.monotonic()
        self.log = open(log, "w")
        self.proc = subprocess.Popen([PYTHON, *args], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            return self.proc.wait(timeout=max(timeout, 1.0)), ""
        except subprocess.TimeoutExpired:
            self.stop()
            return 124, "killed at its time limit"
        finally:
            self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def last_rate(run_dir: Path) -> float | None:
    """images/s of the last training line of a run's log.jsonl (the calibration's steady steps)."""
    log = run_dir / "log.jsonl"
    rates = [row["images_per_s"] for row in read_log_lines(log) if "images_per_s" in row] if log.is_file() else []
    return rates[-1] if rates else None


def stage1(s: Session, runs: Path, extra: list[str], steps: int, cuda: bool) -> Path | None:
    """pre-training.py on the fetched training photos (else its default, the packaged ones), once more in float32
    if bf16 fails on CUDA; returns its last.pt, or None (said why) when it left none."""
    from dwgn.data.photo_sources import fetched_photos

    photos = fetched_photos("train")
    data = ["--data", str(photos[0].parent)] if photos else []
    if not photos:
        s.say("no fetched photos (python dataset/fetch_photos.py): Stage 1 pre-trains on the packaged photos")
    args = [*STAGE1, *data, *extra, "--steps", str(steps), "--out", str(runs / "pretrain")]
    init = runs / "pretrain" / "last.pt"
    if s.run("stage 1", args, s.left() * 0.2) not in (0, 124) and cuda:
        s.say("stage 1 failed under bf16 autocast: once more in float32")  # a fresh run directory, same steps
        args = [*args[:-1], str(runs / "pretrain-fp32"), "--amp", "none"]
        init = runs / "pretrain-fp32" / "last.pt"
        s.run("stage 1 (fp32)", args, min(120.0, s.left() * 0.25))
    if not (ROOT / init).is_file():
        s.say(f"stage 1 left no {init}: stopping")
        return None
    return init


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the releases, logs and summary go")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for everything")
    parser.add_argument("--stage1-steps", type=int, default=300,
                        help="Stage 1 steps (at most a fifth of --budget: 400 took 262 s on an H100 before the "
                             "grouped-conv fix)")
    parser.add_argument("--gpu-check", type=float, default=75.0,
                        help="seconds kept for gpu_check at the end (0: no gpu_check, Stage 2 gets that time too)")
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu-demo"), help="run directories go here")
    parser.add_argument("--init", type=Path, default=None,
                        help="a `small` release or checkpoint to go on from: Stage 1 is skipped, Stage 2 starts there")
    parser.add_argument("--lr", type=float, default=4e-4, help="Stage 2's peak learning rate")
    parser.add_argument("--clean-share", type=float, default=0.2, help="Stage 2's share of clean -> clean pairs")
    parser.add_argument("--weather-weights", default=None, metavar="W,W,W,W,W",
                        help="Stage 2's relative shares of snow, rainfog, raindrop, rain, haze (train.py's flag; "
                             "default: uniform)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="Stage 2's linear warm-up as a share of its steps (train.py --warmup-steps); 0.1 suits --init")
    parser.add_argument("--train-args", default="", metavar="FLAGS",
                        help="more train.py flags for Stage 2 and its calibration, one quoted string (e.g. "
                             "\"--tone-share 0.5 --weather-side 256 --keep-every 500\"); checked by train.py itself")
    parser.add_argument("--dry-run", action="store_true", help="CPU, a few steps per stage: checks the path only")
    args = parser.parse_args(argv)
    if args.init is not None and not (ROOT / args.init).is_file():
        parser.error(f"--init {args.init}: no such file (a release such as checkpoints/dwgn-small-demo.safetensors, "
                     "or a run's last.pt)")
    if not 0.0 <= args.warmup < 1.0:
        parser.error(f"--warmup {args.warmup:g}: a share of Stage 2's steps in [0, 1), such as 0.1")
    try:
        extra = shlex.split(args.train_args)
    except ValueError as err:
        parser.error(f"--train-args {args.train_args!r}: {err} (one quoted string of train.py flags)")
    owned = sorted({f.split("=")[0] for f in extra
                    if f.startswith("--") and "--" + f[2:].split("=")[0].replace("_", "-") in OWNED_FLAGS})
    if owned:
        parser.error(f"--train-args sets {', '.join(owned)}, which this script sizes or sets itself "
                     f"(use its own --lr, --clean-share, --weather-weights, --warmup, --init, --budget instead)")
    if extra:  # a bad flag or value is refused here, not after the GPU has started and calibrated
        from dwgn.training.config import ConfigError, FinetuneConfig, parse_config

        base = [str(ROOT / a) if a.endswith(".yaml") else a for a in STAGE2[1:]]
        try:
            parse_config(FinetuneConfig, [*base, *extra], prog="train.py")
        except ConfigError as err:
            parser.error(f"--train-args {args.train_args!r}: {err}")
    args.out.mkdir(parents=True, exist_ok=True)
    s = Session(args.out, args.budget, args.dry_run)
    runs = args.runs
    workers = ["--num-workers", "2" if args.dry_run else "12"]

    import torch

    cuda = torch.cuda.is_available()
    s.record["torch"] = torch.__version__
    s.record["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    s.say(f"torch {torch.__version__}, device {s.record['device']}")
    if not cuda and not args.dry_run:
        s.say("no CUDA device: nothing trained (use --dry-run to check the path on the CPU)")
        return 1

    # Stage 2 validates on the demo test sets; on a fresh machine they are built first (37 s on an H100 machine's
    # CPUs in session 11): build them now, beside the GPU steps before Stage 2
    demo = s.start("demo set", ["-c", "from dwgn.data.datasets import test_sets; test_sets(['demo'])"])
    atexit.register(demo.stop)  # a session that stops early leaves nothing running

    # 1. CUDA graphs only if the equality test passes here
    graphs = False
    if cuda:
        rc = s.run("cuda-graph test", ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                       "tests/test_acceleration.py::test_cuda_graph_step_equals_eager_steps"], 120)
        graphs = rc == 0
    s.record["cuda_graphs"] = graphs

    # 2. Stage 1 (not with --init: that release has had it)
    if args.init is not None:
        init = args.init
        s.say(f"--init {init}: no Stage 1; Stage 2 goes on from it")
    else:
        small = ["--batch-size", "2", "--crop", "64"] if args.dry_run else []
        init = stage1(s, runs, [*workers, *small], 4 if args.dry_run else args.stage1_steps, cuda)
        if init is None:
            return 1
    s.record["stage1_init"] = str(init)

    # 3. calibrate Stage 2's command (same flags, a throw-away run directory)
    batch = 2 if args.dry_run else STAGE2_BATCH
    stage2 = [*STAGE2, "--lr", f"{args.lr:g}", "--clean-share", f"{args.clean_share:g}", "--batch-size", str(batch),
              *workers, "--init", str(init)]
    if args.weather_weights is not None:
        stage2 += ["--weather-weights", args.weather_weights]
    stage2 += extra
    if args.dry_run:
        stage2 += ["--crop", "64", "--val-images", "2"]
    rate = None
    for use_graphs in ([True, False] if graphs else [False]):
        flags = ["--cuda-graphs", "--grad-clip", "0"] if use_graphs else []
        calib = runs / ("calib-graphs" if use_graphs else "calib-eager")
        rc = s.run(f"stage 2 calibration ({'cuda graphs' if use_graphs else 'eager'})",
                   [*stage2, *flags, "--steps", str(CALIB_STEPS), "--log-every", "10", "--val-data", "none",
                    "--save-every", "1000", "--out", str(calib)], 120)
        rate = last_rate(ROOT / calib) if rc == 0 else None
        if rate:
            s.record["stage2_mode"] = "cuda graphs" if use_graphs else "eager"
            stage2 += flags
            break
    if not rate:
        s.say("stage 2 calibration failed in every mode: stopping")
        return 1
    steps_per_s = rate / batch
    # Stage 2's own start (loading, its first validation): 20 s; 45 s if it must still build the demo test sets
    startup = 20.0 if s.finish(demo, 180.0) == 0 else 45.0
    room = s.left() - RESERVE_S - (args.gpu_check if cuda else 0.0) - startup - 5.0
    n2 = 6 if args.dry_run else max(100, int(steps_per_s * room * 0.97) // 100 * 100)
    s.record.update(stage2_calibrated_images_per_s=round(rate, 1), stage2_steps=n2)
    s.say(f"stage 2: {rate:.0f} images/s at batch {batch} -> {n2} steps in ~{room:.0f} s")

    # 4. Stage 2
    every = max(n2 // 10, 1)
    out2 = runs / "finetune"
    s.run("stage 2", [*stage2, "--steps", str(n2), "--warmup-steps", str(int(n2 * args.warmup)),
                      "--val-every", str(every), "--save-every", str(every), "--out", str(out2)],
          max(s.left() - RESERVE_S - (args.gpu_check if cuda else 0.0) + 15.0, 30.0))

    # 5. releases and logs
    if (ROOT / out2 / "last.pt").is_file():
        s.run("export stage 2", ["-m", "dwgn.export", str(out2 / "last.pt"), str(args.out / "dwgn-small-demo.pt")], 60)
    if (ROOT / out2 / "best.pt").is_file():  # the step with the best demo-set validation: a candidate named beforehand
        s.run("export stage 2 best", ["-m", "dwgn.export", str(out2 / "best.pt"),
                                      str(args.out / "dwgn-small-demo-best.pt")], 60)
    snapshots = sorted((ROOT / out2 / "snapshots").glob("step-*.safetensors"))
    if snapshots:
        (args.out / "snapshots").mkdir(exist_ok=True)
        for snap in snapshots:
            shutil.copy2(snap, args.out / "snapshots" / snap.name)
        s.say(f"{len(snapshots)} snapshots (--keep-every) copied to {args.out / 'snapshots'}")
    if args.init is None and (ROOT / init).is_file():
        s.run("export stage 1", ["-m", "dwgn.export", str(init), str(args.out / "pretrain-small.pt")], 60)
    with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted((ROOT / runs).rglob("*")):
            if path.is_file() and path.suffix not in (".pt", ".safetensors"):  # weights: exported or copied above
                tar.add(path, arcname=str(path.relative_to(ROOT / runs)))
    s.save()

    # 6. the paper network's GPU table with what is left
    if cuda and args.gpu_check > 0 and s.left() > 40:
        s.run("gpu_check", ["benchmarks/gpu_check.py", "--batches", "32", "--steps", "5",
                            "--budget", str(int(s.left() - 20))], s.left() - 5)
    s.say("done")
    s.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
