"""``make demo``: the main job (``kedro run --pipelines=eagle_coco``) end to end on the first few images, in a
folder of its own, for people trying the project out: 2 images, 8 regions each, 8 pixel-protocol steps
(``DEMO_PARAMS``; 23 s on 2 quiet CPU cores: the Makefile's comment).

The folder (``demo/`` by default, ignored by git) is a Kedro project that shares the checkout's ``pyproject.toml``,
``conf/`` and shipped checkpoints (``data/06_models/*``, as links) and has its own ``data/`` and ``mlruns/``: its
report is ``demo/data/08_reporting/eagle_coco/latest/report.html``, and the checkout's ``data/``, ``mlruns/`` and
``make run``'s metrics are never touched. Running it again resumes what is there.

    python -m eagle_pipelines.demo [--images 2] [--folder demo] [-- more kedro run options]

A ``--params`` among the kedro options is added after the demo's own (a key given there wins).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

#: the checkout's entries the demo project reads as they are (.telemetry only where the checkout has one)
SHARED = ("pyproject.toml", "conf", ".telemetry")
MODELS = Path("data") / "06_models"


def _link(target: Path, link: Path) -> None:
    """`link` -> `target` (relative), replacing an older link; a real file or folder there is an error."""
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link made by the demo; remove it or choose --folder")
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())


def prepare(project: Path, folder: Path) -> Path:
    """Makes `folder` a Kedro project beside `project`'s (shared configuration and checkpoints, its own data)."""
    project, folder = project.resolve(), folder.resolve()
    if not (project / "pyproject.toml").is_file() or not (project / "conf").is_dir():
        raise FileNotFoundError(f"{project} is not the eagle_pipelines checkout (no pyproject.toml and conf/); run "
                                f"`make demo` from the checkout's root")
    if folder == project:
        raise ValueError("--folder must not be the checkout itself: the demo keeps its data apart")
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        if (project / name).exists():  # .telemetry: the consent given in the checkout, when there is one
            _link(project / name, folder / name)
    (folder / "src").mkdir(exist_ok=True)  # Kedro wants the source folder inside the project; the package is installed
    (folder / MODELS).mkdir(parents=True, exist_ok=True)
    for checkpoint in sorted((project / MODELS).iterdir()):
        if checkpoint.is_dir():
            _link(checkpoint, folder / MODELS / checkpoint.name)
    return folder


#: the demo's settings beside its image count: fewer regions and pixel-protocol steps than `make run` (16, 16)
DEMO_PARAMS = "superpixels.n_segments=8,evaluation.pixel_steps=8"


def command(images: int, extra: list[str]) -> list[str]:
    """The kedro run of the demo: one ``--params`` (Kedro keeps only the last one given), the demo's settings
    first, then the user's ``--params`` value from `extra` (later keys win)."""
    params, rest, i = [f"eagle_coco.max_images={images}", DEMO_PARAMS], [], 0
    while i < len(extra):
        if extra[i] == "--params" and i + 1 < len(extra):
            params.append(extra[i + 1])
            i += 2
            continue
        if extra[i].startswith("--params="):
            params.append(extra[i].split("=", 1)[1])
        else:
            rest.append(extra[i])
        i += 1
    return [sys.executable, "-m", "kedro", "run", "--pipelines=eagle_coco", f"--params={','.join(params)}", *rest]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eagle_pipelines.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, help="the first N images of the evaluation split (default 2)")
    parser.add_argument("--folder", type=Path, default=Path("demo"), help="the demo's project folder (default demo/)")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the checkout (default: here)")
    parser.add_argument("kedro_args", nargs=argparse.REMAINDER, help="after --: more `kedro run` options")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be at least 1; got {args.images}")
    extra = args.kedro_args[1:] if args.kedro_args[:1] == ["--"] else args.kedro_args
    try:
        folder = prepare(args.project, args.folder)
    except (OSError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    code = subprocess.call(command(args.images, extra), cwd=folder)
    report = folder / "data/08_reporting/eagle_coco/latest/report.html"
    if code == 0 and report.is_file():
        print(f"demo: the report of {args.images} image(s) is {os.path.relpath(report)} (`make run` does all of them "
              f"in data/)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
