"""report.html and summary.md: rendered from hand-made records, opened in a real headless browser."""

import json
import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from bench.decide import report, summary
from bench.records import Record
from bench.store import RunDir

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=10000",
]  # fmt: skip


def rec(twin, variant, runtime, energy, loss, *, batch=1, status="ok", steps=None, lineage=()):
    extra = {} if status == "ok" else {"status_reason": "needs a CUDA GPU"}
    return Record(
        run_id="r", suite="smoke", twin=twin, grid="1-LV-rural1--2-sw", variant_id=variant, variant_name=variant,
        lineage=lineage, runtime=runtime, device="cpu", batch_size=batch, status=status,
        quality_metric="crps" if twin == "diffusion-forecaster" else "mae", quality_value=1.0 + loss / 100,
        quality_ref_value=1.0, quality_loss_pct=loss if status == "ok" else None,
        energy_j_per_inference=energy, energy_ci95_low=energy and energy * 0.9,
        energy_ci95_high=energy and energy * 1.1, energy_cv=energy and 0.01,
        energy_source="estimate" if energy else "none", latency_ms_p50=energy and energy * 10,
        latency_ms_p99=energy and energy * 12, model_info={"sampling_steps": steps} if steps else {},
        flags=("short_window",) if status == "ok" else (), **extra,
    )  # fmt: skip


def records():
    d = "diffusion-forecaster"
    return [
        rec("grid-gnn", "reference", "torch-eager", 1.0, 0.0),
        rec("grid-gnn", "reference", "onnxruntime", 0.3, 0.0),
        rec("grid-gnn", "int8", "onnxruntime", 0.2, 35000.0, lineage=({"pass": "quant-dynamic-int8"},)),
        rec("grid-gnn", "fp8", "torch-eager", None, 0.0, status="unsupported"),
        rec(d, "reference", "torch-eager", 2.0, 0.0, steps=10),
        rec(d, "steps5", "torch-eager", 1.0, 3.0, steps=5, lineage=({"pass": "diffusion-steps"},)),
        rec(d, "distilled5", "torch-eager", 1.0, 1.0, steps=5, lineage=({"pass": "diffusion-step-distill"},)),
    ]


@pytest.fixture
def run_dir(tmp_path) -> RunDir:
    run = RunDir.create(tmp_path, "20260101T000000Z-smoke")
    run.write_json("environment.json", {"energy_meter": "estimate: CPU time x 10 W", "cpu_model": "test CPU"})
    run.append(records())
    return run


def test_summary_lists_frontier_ratios_and_reasons(run_dir):
    text = summary.write(run_dir)
    assert (run_dir.path / "summary.md").read_text() == text
    gnn = text[text.index("## grid-gnn") :]  # sections sort by twin name: the GNN's comes last
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in gnn.splitlines() if line.startswith("| ")][1:]
    cells = {(row[0], row[1]): row for row in rows}
    ort = cells[("reference", "onnxruntime")]
    assert ort[2].startswith("E") and ort[6] == "0.30x"  # on the frontier; 0.3 J vs the eager reference's 1 J
    assert cells[("int8", "onnxruntime")][2] == "EL"  # the cheapest point is on both frontiers, however bad
    assert cells[("reference", "torch-eager")][2] == ""  # dominated: dearer at the same loss
    assert "fp8 on torch-eager: unsupported (needs a CUDA GPU)" in gnn


def test_report_is_self_contained_and_complete(run_dir):
    path = report.write(run_dir)
    text = path.read_text()
    assert "<script src=" not in text and "Plotly.newPlot" in text  # plotly's JS embedded, nothing fetched
    assert text.count("Plotly.newPlot") == 3  # gnn bs1, diffusion bs1, diffusion CRPS vs steps
    assert "off the chart" in text and "int8 on onnxruntime" in text  # the +35000 % point is named
    assert (
        "diffusion-forecaster: crps vs sampling steps" in text and "circle-open" in text
    )  # estimated energy: open markers
    assert "fp8" in text and "needs a CUDA GPU" in text and "short_window: 6 cells" in text


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # `make test` installs Debian's chromium; a bare pytest run must say so
        pytest.fail("chromium is not installed: run `make browser` (Debian package chromium)")
    return path


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    """The charts exist in the rendered DOM, no script threw, and a screenshot is taken."""
    path = report.write(run_dir)
    chromium = _chromium()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *profile, "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, env=env,
    ).stdout  # fmt: skip
    assert len(re.findall(r'class="main-svg"', dom)) >= 3  # plotly drew every chart (2 svg layers each)
    assert re.search(r'<pre id="js-errors"[^>]*></pre>', dom), "the page threw JavaScript errors"
    assert dom.count('class="scatterlayer') >= 3 and "<table" in dom
    shot = Path(os.environ.get("TWINBENCH_SCREENSHOT", tmp_path / "report.png"))
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1200,1600", f"--screenshot={shot}", path.as_uri()],
        capture_output=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000  # a blank page compresses to a few KB


# Records and environment.json come from files people share (baselines, other machines' runs), so
# every string in them is hostile. The attack writes data-pw="PWN" onto <body>: that text appears in
# the DOM only if a payload ran, never as an echo of the payload itself (which spells char codes).
ATTACK = "document.body.setAttribute('data-pw',String.fromCharCode(80,87,78))"
PWNED = 'data-pw="PWN"'
PAYLOADS = [
    f'<img src=x onerror="{ATTACK}">',
    f"</script><script>{ATTACK}</script>",
    f'"><svg onload={ATTACK}>',
    f"'><img src=x onerror={ATTACK}>",
    f'<a href="javascript:{ATTACK}">link</a> javascript:{ATTACK}',
    '<a href="https://pw.invalid/">link</a>',  # plotly's own pseudo-HTML draws this one as a real link
]
INJECTED = re.compile(r"<img src=|<svg onload|<a [^>]*(javascript:|pw\.invalid)")  # dump-dom writes text as &lt;


def _dump_dom(page: Path, tmp_path: Path) -> str:
    profile = tmp_path / f"profile-{page.stem}"
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)}, check=True,
    ).stdout  # fmt: skip


def hostile(payload: str, **overrides) -> Record:
    """A valid Record with the payload in every str field, tuple entry, lineage pass/param and dict."""
    hints = get_type_hints(Record)
    text = {f.name: payload for f in fields(Record) if str in (hints[f.name], *get_args(hints[f.name]))}
    assert len(text) >= 12, "Record's str fields were not found: the test would inject nothing"
    return Record(
        **{
            **text,
            "status": "ok",  # the one str field with a closed set of values
            "lineage": ({"pass": payload, "params": {payload: payload}},),
            "batch_size": 1, "quality_value": 1.02, "quality_ref_value": 1.0, "quality_loss_pct": 2.0,
            "quality_metrics": {payload: 1.02}, "energy_j_per_inference": 0.5, "energy_ci95_low": 0.4,
            "energy_ci95_high": 0.6, "energy_cv": 0.02, "latency_ms_p50": 5.0, "latency_ms_p99": 6.0,
            "model_info": {payload: payload}, "flags": (payload, "short_window"),
            "device_state_before": {payload: payload}, "device_state_after": {payload: payload},
            **overrides,
        }
    )  # fmt: skip


def test_hostile_strings_run_no_script_in_chromium(tmp_path):
    """Script smuggled into any record or environment string stays text; the charts still draw."""
    control = tmp_path / "control.html"  # the detector must see a payload that really runs
    control.write_text("<!DOCTYPE html><html><body>" + "".join(PAYLOADS) + "</body></html>")
    control_dom = _dump_dom(control, tmp_path)
    assert PWNED in control_dom and INJECTED.search(control_dom)

    unmeasured = {"energy_j_per_inference": None, "energy_ci95_low": None, "energy_ci95_high": None}
    steps = {"twin": "diffusion-forecaster", "model_info": {"sampling_steps": 5, PAYLOADS[0]: PAYLOADS[1]}}
    cells = [hostile(p) for p in PAYLOADS]
    cells += [hostile(p, status="unsupported", quality_loss_pct=None, **unmeasured) for p in PAYLOADS]
    # the CRPS-vs-steps chart takes only lineages of diffusion-steps passes: hostile params, then
    cells.append(hostile(PAYLOADS[2], **steps, lineage=({"pass": "diffusion-steps", "params": {"k": PAYLOADS[3]}},)))
    shared = [Record.from_dict(json.loads(r.to_json())) for r in cells]  # as read back from a shared file
    env = {"energy_meter": PAYLOADS[0], PAYLOADS[1]: PAYLOADS[2], "nested": {PAYLOADS[3]: [PAYLOADS[4]]}}
    page = tmp_path / "report.html"
    page.write_text(report.render(shared, env, title=PAYLOADS[4]))

    text = page.read_text()
    assert not [p for p in PAYLOADS if p in text]  # nothing lands raw, in HTML or in plotly's JSON
    dom = _dump_dom(page, tmp_path)
    assert PWNED not in dom, "a payload from a record ran as script"
    assert not INJECTED.search(dom), "a payload became an element"
    assert re.search(r'<pre id="js-errors"[^>]*></pre>', dom), "the page threw JavaScript errors"
    charts = len(PAYLOADS) + 2  # a scatter per hostile twin, the diffusion one, CRPS vs steps
    assert len(re.findall(r'class="main-svg"', dom)) >= 2 * charts  # two svg layers each
    assert "&lt;img src=x onerror=" in dom  # the hostile text is still shown, as text
