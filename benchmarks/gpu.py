"""GPU benchmark (issue 19, item 7): engines on CPU against CUDA, fractional-GPU actors, a spec on GPU.

Run it through `benchmarks/gpu.sh [OUT_DIR] [--n N]`. It measures, in images per second on the same
synthetic cards:

1. EasyOCR (torch), RapidOCR (ONNX Runtime's CUDA provider) and the orientation CNN (its ONNX variant on
   ONNX Runtime), each on the CPU and on CUDA;
2. two EasyOCR actors with `num_gpus: 0.5` sharing one device, against one actor holding the whole device;
3. `raypipe run` of configs/icp-quick.yaml (and, time allowing, configs/icp-easyocr.yaml) on the GPU machine.

Without CUDA it measures the CPU side, says what it skipped and why, writes its results and exits 0.
Results go to OUT_DIR/gpu.json and OUT_DIR/gpu.md after every part, so a stopped run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENGINES = ("easyocr", "rapidocr", "orient-cnn")
CNN_VARIANT = "onnx-int8"  # the orientation CNN's ONNX form: the one ONNX Runtime can put on CUDA
SPECS = ("configs/icp-quick.yaml", "configs/icp-easyocr.yaml")


def cuda_status() -> dict[str, Any]:
    """What this machine offers: the driver's view, torch's and ONNX Runtime's."""
    status: dict[str, Any] = {"nvidia_smi": None, "torch_cuda": False, "gpu_name": None, "ort_providers": []}
    try:
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30)
        status["nvidia_smi"] = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        import torch

        status["torch_cuda"] = bool(torch.cuda.is_available())
        if status["torch_cuda"]:
            status["gpu_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import onnxruntime

    status["ort_providers"] = list(onnxruntime.get_available_providers())
    return status


def cuda_missing(engine: str, status: dict[str, Any]) -> str | None:
    """Why `engine` cannot run on CUDA here, or None when it can."""
    if engine == "easyocr":
        return None if status["torch_cuda"] else "torch sees no CUDA device"
    if "CUDAExecutionProvider" not in status["ort_providers"]:
        return (
            "ONNX Runtime has no CUDAExecutionProvider "
            f"(available: {', '.join(status['ort_providers'])}); "
            "install onnxruntime-gpu in place of onnxruntime"
        )
    return None


def make_engine(engine: str, device: str) -> tuple[Callable[[Any], Any], str]:
    """(the stage, the device it really runs on) for `engine` on 'cpu' or 'cuda'."""
    if engine == "easyocr":
        from raypipe.tasks.idcard.stages.ocr_easyocr import EasyOCR

        stage = EasyOCR(lang=("en",), gpu=device == "cuda")
        return stage, stage.device
    if engine == "rapidocr":
        from raypipe.tasks.idcard.stages.ocr_rapid import RapidOCR

        stage = RapidOCR(device=device)
        return stage, stage.device
    from raypipe.engine.models import onnx_session
    from raypipe.tasks.idcard.stages.orient_cnn import OrientCNN, variant_path

    stage = OrientCNN(variant=CNN_VARIANT)
    if device == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        stage.backend.session = onnx_session(variant_path(CNN_VARIANT), providers=providers)
    return stage, stage.backend.session.get_providers()[0]


def card_images(n: int) -> list[Any]:
    """`n` generated cards of the mixed profile, decoded (RGB arrays), the same on every device."""
    from raypipe.spec.registry import resolve_task

    task = resolve_task("idcard")
    table = task.generate("mixed", n, seed=0)
    return [task.decode(data) for data in task.inputs(table).to_pylist()]


def images_per_second(stage: Callable[[Any], Any], images: list[Any]) -> dict[str, float]:
    """One untimed call (one-off costs), then every image once, timed."""
    stage(images[0])
    started = time.perf_counter()
    for image in images:
        stage(image)
    seconds = time.perf_counter() - started
    return {
        "images": len(images),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(images) / seconds, 3),
    }


def measure_engines(images: list[Any], status: dict[str, Any], results: dict, save: Callable) -> None:
    for engine in ENGINES:
        for device in ("cpu", "cuda"):
            key = f"{engine}/{device}"
            why = cuda_missing(engine, status) if device == "cuda" else None
            if why:
                results["engines"][key] = {"status": "skipped", "why": why}
                say(f"{key}: skipped ({why})")
                continue
            try:
                stage, runs_on = make_engine(engine, device)
                results["engines"][key] = {
                    "status": "measured",
                    "runs_on": runs_on,
                    **images_per_second(stage, images),
                }
            except Exception as exc:  # noqa: BLE001 - one engine failing must not lose the others' figures
                results["engines"][key] = {"status": "failed", "why": f"{type(exc).__name__}: {exc}"}
            say(f"{key}: {results['engines'][key]}")
            save()


def measure_fractional(
    images: list[Any], status: dict[str, Any], engine: str = "easyocr", device: str = "cuda", **ray_init: Any
) -> dict[str, Any]:
    """`engine` on CUDA: one actor with the whole device, then two with num_gpus 0.5 at once (`device` and
    `ray_init` let a CPU machine check the mechanics: ray_init num_gpus=1 declares a device it lacks)."""
    why = cuda_missing(engine, status) if device == "cuda" else None
    if why:
        return {"status": "skipped", "why": why}
    import ray

    @ray.remote
    class EngineActor:
        def __init__(self) -> None:
            self.stage, self.runs_on = make_engine(engine, device)
            self.stage(images[0])  # warm: model on the device, kernels compiled

        def run(self) -> dict[str, Any]:
            started = time.perf_counter()
            for image in images:
                self.stage(image)
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "gpu_ids": ray.get_gpu_ids(), "runs_on": self.runs_on}

    env = {"env_vars": {"PYTHONPATH": str(REPO), "OMP_THREAD_LIMIT": "1", "ORT_DISABLE_TELEMETRY": "1"}}
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env=env, **ray_init)
    try:
        out: dict[str, Any] = {"status": "measured", "engine": engine, "images_per_actor": len(images)}
        for name, n_actors, share in (
            ("one actor, num_gpus 1", 1, 1.0),
            ("two actors, num_gpus 0.5", 2, 0.5),
        ):
            actors = [EngineActor.options(num_gpus=share).remote() for _ in range(n_actors)]
            ray.get([a.__ray_ready__.remote() for a in actors])
            started = time.perf_counter()
            runs = ray.get([a.run.remote() for a in actors])
            wall = time.perf_counter() - started
            out[name] = {
                "wall_s": round(wall, 3),
                "images_per_s": round(n_actors * len(images) / wall, 3),
                "gpu_ids": [r["gpu_ids"] for r in runs],
                "runs_on": [r["runs_on"] for r in runs],
            }
            for actor in actors:
                ray.kill(actor)
        return out
    finally:
        ray.shutdown()


def run_spec(spec: str, out: Path, limit: int) -> dict[str, Any]:
    """`raypipe run SPEC` as a user would, on a fresh cache; its terminal output is kept beside the
    results."""
    name = Path(spec).stem
    run_dir, cache = out / f"run-{name}", out / f"cache-{name}"
    cmd = [str(Path(sys.executable).parent / "raypipe"), "run", spec, "--out", str(run_dir)]
    cmd += ["--cache-dir", str(cache), "--limit", str(limit)]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (out / f"{name}.txt").write_text(done.stdout + done.stderr, encoding="utf-8")
    return {
        "exit_code": done.returncode,
        "seconds": round(seconds, 1),
        "output": f"{name}.txt",
        "run_dir": str(run_dir),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = ["# GPU benchmark", "", f"Machine: {results['machine']}", ""]
    lines += ["| engine | device | runs on | images/s | note |", "| --- | --- | --- | --- | --- |"]
    for key, row in results["engines"].items():
        engine, device = key.split("/")
        rate = f"{row['images_per_s']:.2f}" if "images_per_s" in row else "-"
        note = row.get("why", f"{row.get('images', '')} images in {row.get('seconds', '')} s")
        lines.append(f"| {engine} | {device} | {row.get('runs_on', '-')} | {rate} | {note} |")
    frac = results.get("fractional", {})
    lines += ["", f"## Fractional-GPU actors ({frac.get('engine', 'easyocr')} on CUDA)", ""]
    if frac.get("status") == "measured":
        for name in ("one actor, num_gpus 1", "two actors, num_gpus 0.5"):
            r = frac[name]
            lines.append(f"- {name}: {r['images_per_s']:.2f} images/s in all, GPU ids {r['gpu_ids']}")
    else:
        lines.append(f"- {frac.get('status', 'not run')}: {frac.get('why', '')}")
    lines += ["", "## The quick spec on GPU", ""]
    for spec, r in results.get("specs", {}).items():
        detail = r.get("why") or f"exit {r['exit_code']}, {r['seconds']} s; table in {r['output']}"
        lines.append(f"- {spec}: {detail}")
    return "\n".join(lines) + "\n"


def say(message: str) -> None:
    print(f"[gpu.sh] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="benchmarks/results/gpu", help="results folder")
    parser.add_argument("--n", type=int, default=24, help="cards per measurement (2 for a quick check)")
    parser.add_argument(
        "--budget-s", type=float, default=420, help="skip the parts that would start after it"
    )
    args = parser.parse_args(argv)
    started, out = time.monotonic(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    status = cuda_status()
    gpu = status["gpu_name"] or (status["nvidia_smi"] or "").split(",")[0] or None
    machine = f"{os.cpu_count()} CPUs, " + (f"GPU {gpu}" if gpu else "no CUDA device")
    results: dict[str, Any] = {"machine": machine, "cuda": status, "n": args.n, "engines": {}, "specs": {}}

    def save() -> None:
        (out / "gpu.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        (out / "gpu.md").write_text(markdown(results), encoding="utf-8")

    if not status["torch_cuda"] and "CUDAExecutionProvider" not in status["ort_providers"]:
        say(
            "NO CUDA on this machine: measuring the CPU side only; "
            "the CUDA, fractional-GPU and GPU-table parts are skipped"
        )
    images = card_images(args.n)
    measure_engines(images, status, results, save)
    if time.monotonic() - started < args.budget_s:
        results["fractional"] = measure_fractional(images, status)
    else:
        results["fractional"] = {"status": "skipped", "why": f"past the {args.budget_s:g} s budget"}
    say(f"fractional GPU actors: {results['fractional']}")
    save()
    for spec in SPECS:
        if not status["torch_cuda"]:
            results["specs"][spec] = {"status": "skipped", "why": "no CUDA device: the GPU table needs one"}
        elif time.monotonic() - started > args.budget_s:
            results["specs"][spec] = {"status": "skipped", "why": f"past the {args.budget_s:g} s budget"}
        else:
            results["specs"][spec] = run_spec(spec, out, args.n)
        say(f"{spec}: {results['specs'][spec]}")
        save()
    results["seconds"] = round(time.monotonic() - started, 1)
    save()
    say(f"done in {results['seconds']} s: {out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
