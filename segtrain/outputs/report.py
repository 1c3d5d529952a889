"""report.html: one self-contained page about a run, for people who will not read a CSV.

Config, dataset summary, curves, the best validation's metrics with a per-class table and its
confusion matrix, the latest visualization tile and, once training ends, the labels to re-check.
Pictures are embedded as data: URIs, so the file can be mailed or copied on its own. Every
user-supplied text is escaped.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from PIL import Image

from segtrain.version import __version__
from segtrain.outputs.atomic import atomic_open

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1150px;
     color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 16px;min-width:110px}
.card b{display:block;font-size:1.5em}
.sw{display:inline-block;width:12px;height:12px;border:1px solid #888;margin-right:6px;vertical-align:middle}
img{max-width:100%;border:1px solid #ddd}
.cfg{columns:2;font-family:ui-monospace,monospace;font-size:.9em}
.cfg div{break-inside:avoid}
.note{color:#666;font-size:.9em}
"""


@dataclass
class Validation:
    iteration: int
    result: dict  # trainer.validate's result: metrics, per-class lists, confusion_matrix


@dataclass
class ReportData:
    run_name: str
    config: dict
    class_names: list[str]
    class_colors: list[list[int]]
    dataset: dict[str, object]  # label -> value, shown in order
    iteration: int
    max_iteration: int
    best: Validation | None
    latest: Validation | None
    curves_png: Path | None = None
    visualization: Path | None = None
    notes: list[str] = field(default_factory=list)
    # the audit's most doubtful pairs (segtrain audit of the best weights at the end of training):
    # rank, split, image, loss, mean_iu, disagree_share, picture (a Path)
    recheck: list[dict] | None = None


def data_uri(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    kind = "image/png" if Path(path).suffix.lower() == ".png" else "image/jpeg"
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _num(value, spec=".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _swatch(color) -> str:
    return f'<span class="sw" style="background:rgb({color[0]},{color[1]},{color[2]})"></span>'


def _cards(result: dict) -> str:
    cards = [("mean IoU", result["mean_iu"]), ("pixel accuracy", result["acc"]),
             ("class accuracy", result["acc_cls"]), ("fw. accuracy", result["fwavacc"]), ("loss", result["loss"])]
    shown = "".join(f'<div class="card">{escape(name)}<b>{_num(value, ".4g" if name == "loss" else ".4f")}</b></div>'
                    for name, value in cards)
    return f'<div class="cards">{shown}</div>'


def per_class_table(data: ReportData, result: dict) -> str:
    total = sum(result["pixels"]) or 1
    rows = ["<tr><th class=l>class</th><th>pixel share</th><th>IoU</th><th>recall</th><th>precision</th>"
            "<th>F1</th></tr>"]
    for k, name in enumerate(data.class_names):
        void = " <small>(void: not in the mean)</small>" if name == data.config.get("void_class") else ""
        rows.append(
            f"<tr><td class=l>{_swatch(data.class_colors[k])}{escape(name)}{void}</td>"
            f"<td>{100 * result['pixels'][k] / total:.1f}%</td><td>{_num(result['iu'][k])}</td>"
            f"<td>{_num(result['recall'][k])}</td><td>{_num(result['precision'][k])}</td>"
            f"<td>{_num(result['f1'][k])}</td></tr>"
        )
    return '<table class="per-class">' + "".join(rows) + "</table>"


def confusion_table(names: list[str], matrix: list[list[int]]) -> str:
    """Counts with each row's share; the shade follows the share so the diagonal stands out."""
    head = "<tr><th class=l>truth \\ prediction</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    rows = [head]
    for name, row in zip(names, matrix):
        total = sum(row) or 1
        cells = "".join(
            f'<td style="background:rgba(31,119,180,{0.75 * v / total:.3f})">{v:,}<br>'
            f'<small>{100 * v / total:.1f}%</small></td>' for v in row
        )
        rows.append(f"<tr><th class=l>{escape(name)}</th>{cells}</tr>")
    return '<table class="confusion">' + "".join(rows) + "</table>"


def _image(path: Path | None, alt: str, missing: str, small_width: int = 600) -> str:
    """Pictures narrower than `small_width` (tiles of small images) are shown at twice their size."""
    uri = data_uri(path)
    if uri is None:
        return f'<p class="note">{escape(missing)}</p>'
    with Image.open(path) as img:
        width = img.width
    size = f' width="{2 * width}" style="image-rendering:pixelated"' if width < small_width else ""
    return f'<img alt="{escape(alt)}"{size} src="{uri}">'


def recheck_section(rows: list[dict]) -> str:
    parts = ['<section id="recheck"><h2>Labels to re-check</h2>',
             '<p class="note">The training and validation pairs whose mask the best model disagrees with most '
             "(highest loss of the mask under the model first), as <code>segtrain audit</code> ranks them; all pairs "
             "are in audit/audit.csv. Per pair: image | mask | model.</p>",
             '<table class="recheck"><tr><th>rank</th><th class=l>split</th><th class=l>image</th><th>loss</th>'
             "<th>mean IoU</th><th>disagreeing pixels</th><th class=l>image | mask | model</th></tr>"]
    for row in rows:
        uri = data_uri(row["picture"])
        picture = f'<img alt="{escape(row["image"])}" src="{uri}">' if uri else "–"
        parts.append(f"<tr><td>{row['rank']}</td><td class=l>{escape(row['split'])}</td>"
                     f"<td class=l>{escape(row['image'])}</td><td>{_num(row['loss'], '.3f')}</td>"
                     f"<td>{_num(row['mean_iu'], '.3f')}</td><td>{_num(row['disagree_share'], '.1%')}</td>"
                     f"<td class=l>{picture}</td></tr>")
    return "".join(parts) + "</table></section>"


def build_report(data: ReportData) -> str:
    finished = data.iteration >= data.max_iteration
    status = "finished" if finished else f"in progress (iteration {data.iteration:,} of {data.max_iteration:,})"
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>segtrain report: {escape(data.run_name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(data.run_name)}</h1>",
        f'<p class="sub">segtrain {escape(__version__)} · {escape(data.config.get("model", ""))} · '
        f"{escape(status)} · written {escape(when)}</p>",
    ]
    parts += [f'<p class="note">{escape(n)}</p>' for n in data.notes]

    parts.append('<section id="best"><h2>Best validation</h2>')
    if data.best is not None:
        result = data.best.result
        parts.append(f"<p>At iteration {data.best.iteration:,} (saved as model_best.pth.tar).</p>")
        parts.append(_cards(result))
        parts.append("<h3>Per class</h3>" + per_class_table(data, result))
        if data.latest is not None and data.latest.iteration != data.best.iteration:
            parts.append(f'<p class="note">Latest validation (iteration {data.latest.iteration:,}): mean IoU '
                         f'{_num(data.latest.result["mean_iu"])}, pixel accuracy {_num(data.latest.result["acc"])}.</p>')
        parts.append('<h3>Confusion matrix</h3><p class="note">Pixels over the validation set at native label '
                     "resolution; rows are the truth, columns the prediction, percentages are of each row.</p>")
        parts.append(confusion_table(data.class_names, result["confusion_matrix"]))
    else:
        parts.append('<p class="note">No validation has finished yet.</p>')
    parts.append("</section>")

    parts.append('<section id="curves"><h2>Curves</h2>')
    parts.append(_image(data.curves_png, "training curves", "curves.png is not written yet."))
    parts.append("</section>")

    parts.append('<section id="visualization"><h2>Latest validation samples</h2>')
    parts.append('<p class="note">Per sample, top: image | ground truth | overlay; bottom: image | prediction | '
                 "overlay.</p>")
    parts.append(_image(data.visualization, "validation samples", "No visualization was written."))
    parts.append("</section>")

    if data.recheck is not None:
        parts.append(recheck_section(data.recheck))

    parts.append('<section id="dataset"><h2>Dataset</h2><table class="dataset">')
    parts += [f"<tr><th class=l>{escape(k)}</th><td class=l>{escape(str(v))}</td></tr>" for k, v in data.dataset.items()]
    parts.append("</table>")
    reference = data.best or data.latest
    if reference is not None:
        pixels = reference.result["pixels"]
        total = sum(pixels) or 1
        parts.append('<table class="class-shares"><tr><th class=l>class</th><th>index</th>'
                     "<th>pixels (validation)</th><th>share</th></tr>")
        parts += [f"<tr><td class=l>{_swatch(data.class_colors[k])}{escape(n)}</td><td>{k}</td><td>{pixels[k]:,}</td>"
                  f"<td>{100 * pixels[k] / total:.1f}%</td></tr>" for k, n in enumerate(data.class_names)]
        parts.append("</table>")
    parts.append("</section>")

    parts.append('<section id="config"><h2>Configuration</h2><div class="cfg">')
    parts += [f"<div>{escape(k)}: {escape(json.dumps(v))}</div>" for k, v in data.config.items()]
    parts.append("</div></section></body></html>")
    return "\n".join(parts)


def write_report(path: Path, data: ReportData) -> Path:
    path = Path(path)
    with atomic_open(path, "w", durable=False) as f:  # a browser reloading the page never sees half a file
        f.write(build_report(data))
    return path
