"""The parts every self-contained HTML report shares (eagle_coco's and eagle_repope's): style, run table,
metrics tables, embedded figures and the parameters block."""

from __future__ import annotations

import datetime as dt
import html

import pandas as pd
import yaml

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table.metrics { border-collapse: collapse; font-size: 12px; }
table.metrics th, table.metrics td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }
table.run th { text-align: left; padding-right: 1em; font-weight: 600; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; } figcaption { font-size: 13px; color: #555; }
pre { background: #f6f6f6; padding: 1em; font-size: 12px; } .scroll { overflow-x: auto; }
details { margin: 1em 0; font-size: 13px; } summary { cursor: pointer; color: #555; }
"""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(frame: pd.DataFrame) -> str:
    """A metrics table, 4 decimals, empty cells for missing values, scrolling when wide."""
    body = frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="", classes="metrics", border=0)
    return f'<div class="scroll">{body}</div>'


def run_table(run: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in run.items())
    return f'<table class="run">{rows}</table>'


#: a figure whose PNG is larger than this is embedded in the page with a 256-colour palette (the full PNG is still
#: published beside the page)
PALETTE_ABOVE = 300_000


def image_src(png: bytes | str, palette_above: int = PALETTE_ABOVE) -> str:
    """The PNG data URL of a figure (PNG bytes, or base64 PNG text): the PNG itself, or for a large one (photos in
    a figure compress badly) the figure reduced to 256 colours, dithered: about a quarter of the bytes, and the
    page stays small."""
    import base64
    import io

    blob = base64.b64decode(png) if isinstance(png, str) else png
    if len(blob) > palette_above:
        from PIL import Image

        picture = Image.open(io.BytesIO(blob)).convert("RGB")
        palette = picture.quantize(256, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        picture.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(buf, format="PNG", optimize=True)
        blob = min(blob, buf.getvalue(), key=len)
    return "data:image/png;base64," + base64.b64encode(blob).decode("ascii")


def figures(pngs: dict[str, bytes | str], captions: dict[str, str]) -> str:
    """<figure> elements of the figures (PNG bytes or base64 PNG text), each with its caption (or its name);
    large ones reduced to 256 colours (``image_src``)."""
    return "\n".join(f'<figure id="figure-{html.escape(name)}"><img alt="{html.escape(name)}" '
                     f'src="{image_src(png)}"><figcaption>{captions.get(name, name)}</figcaption></figure>'
                     for name, png in pngs.items())


def document(title: str, run: dict, body: str, params: dict) -> str:
    """The whole page: title, the run's facts, `body` (HTML sections), the parameters."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Run</h2>{run_table(run)}
{body}
<h2>Parameters</h2><pre>{html.escape(yaml.safe_dump(params, sort_keys=False))}</pre>
</body></html>
"""


def git_commit() -> str:
    """The short commit of the code that made a report ("unknown" outside a git checkout)."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
