"""The HTML report: built through the real CLI from a real ledger, opened in headless Chromium.

The ledger is built once per module: a small protocol with a model-free ``synthetic`` job is
registered and frozen, run (metered on a GPU rate so the cost table has dollars), given a manual
cost, a journal entry and a run with checkpoint-step metrics; then ``docket report`` writes the
page. The browser test loads ``index.html`` from disk in Debian's chromium, dumps the DOM after
the page's inline script has checked every image, and takes a screenshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import CI, DocketCli

from docketml.ledger.report.html import roc_points
from docketml.ledger.store.db import init_ledger
from docketml.ledger.verdict.stats import auroc

PROTOCOL_ID = "report-demo"
PROTOCOL = """\
docket: 1
id: report-demo
title: Synthetic study <for> the "report" & its figures
seed: 11
hypotheses:
  - id: H1
    statement: The candidate family beats the best baseline in at least 2 of 3 groups <b>bold</b>.
    rule: wins
  - id: H2
    statement: cand_a alone separates the classes (pooled AUROC >= 0.6).
    rule: pooled
primary: H1
signals:
  cand_a: {higher_means: positive, description: a candidate signal}
  cand_b: {higher_means: negative, description: a confidence-like candidate}
  base: {higher_means: positive, role: baseline, description: the output-side baseline}
labels: {source: judged, positive: failure}
groups: [g1, g2, g3]
decision_rules:
  wins:
    kind: regime_wins
    candidates: [cand_a, cand_b]
    baselines: [base]
    margin: 0.02
    job: probe
    ci: {method: paired_bootstrap, level: 0.95, resamples: 1000, seed: 3}
    verdicts:
      PROVEN: {min_wins: 2}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
  pooled:
    kind: threshold
    statistic: auroc
    signal: cand_a
    job: probe
    op: ">="
    bound: 0.6
    ci: {method: paired_bootstrap, level: 0.95, resamples: 1000, seed: 3}
jobs:
  - name: probe
    kind: synthetic
    hardware: rtx4090
    params:
      groups: [g1, g2, g3]
      signals: {cand_a: positive, cand_b: negative, base: positive}
      n_per_class: 40
      effect: 1.2
budget: {usd: 5.00}
"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _ok(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.output


def _freeze(cli: DocketCli) -> None:
    """Sign-check and freeze through the CLI (the sign-check must pass)."""
    result = cli("protocol", "freeze", PROTOCOL_ID)
    _ok(result)
    assert "sign-check passed" in result.output


def _record_trajectory_run(url: str) -> None:
    """A run carrying metrics at checkpoint steps, recorded through the ledger's run API (the
    model-free job kinds do not produce stepped metrics)."""
    from docketml.ledger.store import protocols as store
    from docketml.ledger.store.runs import complete_run, create_run, start_run

    led = init_ledger(url)
    metrics = []
    for step in (100, 200, 300, 400):
        metrics.append({"name": "bpb_full", "value": 3.2 - step / 400, "step": step})
        metrics.append({"name": "alpha", "value": 0.6 + step / 1600, "step": step})
        metrics.append(
            {
                "name": "speedup",
                "value": 1.0 + step / 800,
                "step": step,
                "ci_low": 0.95 + step / 800,
                "ci_high": 1.05 + step / 800,
            }
        )
    with led.session() as session:
        row = store.latest_frozen(session, PROTOCOL_ID)
        run = create_run(
            session,
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            job="trajectory",
            kind="poe_trajectory",
            config={},
            source="ingest",
        )
        start_run(session, run.id, worker="test")
        assert complete_run(session, run.id, status="succeeded", metrics=metrics, wall_s=1.0)
    led.engine.dispose()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A ledger with one frozen protocol, runs, costs, a journal entry and a report."""
    return build_site(tmp_path_factory.mktemp("report"))


def build_site(root: Path) -> dict[str, object]:
    """Build the ledger and the report under ``root`` through the CLI."""
    url = f"sqlite:///{root / 'ledger.db'}"
    cli = DocketCli(url, root)
    _ok(cli("init"))
    (root / "protocol.yaml").write_text(PROTOCOL)
    _ok(cli("protocol", "register", "protocol.yaml"))
    _freeze(cli)
    _ok(cli("run", PROTOCOL_ID, "--no-progress"))
    _ok(
        cli(
            "cost",
            "add",
            "--protocol",
            PROTOCOL_ID,
            "--hardware",
            "a40",
            "--seconds",
            "180",
            "--label",
            "v8a <sweep> $1 & $2",
            "--note",
            "manual entry & note",
        )
    )
    _ok(
        cli(
            "journal",
            "add",
            "--protocol",
            PROTOCOL_ID,
            "--title",
            "First look at <the> ROC",
            "--obs",
            "cand_a separates g1",
            "--inf",
            "the effect is real:0.7",
            "--failure",
            "labels leak:0.2",
            "--next",
            "rerun with more samples",
        )
    )
    _record_trajectory_run(url)
    _ok(cli("verdict", PROTOCOL_ID))
    out = root / "site"
    result = cli("report", PROTOCOL_ID, "--out", str(out), "--json")
    _ok(result)
    return {"root": root, "cli": cli, "out": out, "json": json.loads(result.output)}


def test_report_writes_page_and_figures(built: dict[str, object]) -> None:
    out = built["out"]
    assert isinstance(out, Path)
    data = built["json"]
    assert isinstance(data, dict)
    index = out / "index.html"
    assert data["index"] == str(index.resolve())
    page = index.read_text()
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert set(figures) >= {
        "cost_per_run.png",
        "roc_H1_g1.png",
        "roc_H1_g2.png",
        "roc_H1_g3.png",
        "trajectory_alpha.png",
        "trajectory_bpb_full.png",
        "trajectory_speedup.png",
    }
    for name in figures:
        blob = (out / "figures" / name).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5_000, name
        assert f'src="figures/{name}"' in page
    # no network: nothing is loaded from an absolute URL
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "Content-Security-Policy" in page
    # user strings are escaped
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "Synthetic study &lt;for&gt; the &quot;report&quot; &amp; its figures" in page
    assert "v8a &lt;sweep&gt; $1 &amp; $2" in page and "First look at &lt;the&gt; ROC" in page
    # sections
    for heading in (
        "Pre-registration",
        "Results",
        "Checkpoint trajectories",
        "Runs and cost",
        "Journal",
        "Sign-check",
        "Amendment chain",
        "Protocol YAML",
    ):
        assert heading in page, heading
    assert "a40" in page and "rtx4090" in page


def test_report_empty_sections_say_none_recorded(tmp_path: Path, docket_sqlite: DocketCli) -> None:
    (tmp_path / "protocol.yaml").write_text(PROTOCOL)
    _ok(docket_sqlite("protocol", "register", "protocol.yaml"))
    out = tmp_path / "site"
    result = docket_sqlite("report", PROTOCOL_ID, "--out", str(out))
    _ok(result)
    assert "report of report-demo written to" in result.output
    page = (out / "index.html").read_text()
    assert page.count("none recorded") >= 4  # trajectory, runs, costs, journal, ...
    assert "registered (not frozen)" in page
    assert "NOT COMPUTED" in page


def test_report_unknown_protocol_is_exit_2(tmp_path: Path, docket_sqlite: DocketCli) -> None:
    result = docket_sqlite("report", "nope", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "unknown protocol 'nope'" in result.output


def test_report_embed_is_a_single_file(built: dict[str, object], tmp_path: Path) -> None:
    cli = built["cli"]
    assert isinstance(cli, DocketCli)
    out = tmp_path / "embedded"
    _ok(cli("report", PROTOCOL_ID, "--out", str(out), "--embed"))
    page = (out / "index.html").read_text()
    assert 'src="figures/' not in page
    assert page.count('src="data:image/png;base64,') >= 7


# ------------------------------------------------------------------------------------ ROC points


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied", [False, True])
def test_roc_points_match_sklearn(seed: int, tied: bool) -> None:
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.integers(0, 2, n)
    scores = rng.normal(labels * 0.8, 1.0)
    if tied:
        scores = np.round(scores, 1)
    fpr, tpr, thr = roc_points(scores, labels)
    s_fpr, s_tpr, s_thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(thr, s_thr)
    np.testing.assert_allclose(fpr, s_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, s_tpr, rtol=0, atol=1e-15)
    # the area under these points is the verdict engine's AUROC (ties get half credit)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert abs(area - auroc(scores, labels)) < 1e-12


def test_roc_points_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_points([0.1, 0.2], [1, 1])


# ------------------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_in_headless_chromium(built: dict[str, object], tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        if CI:
            pytest.fail("chromium is required under CI=true (scripts/ensure_test_services.sh)")
        pytest.skip("chromium not installed (apt-get install chromium); runs under CI=true")
    out = built["out"]
    assert isinstance(out, Path)
    url = (out / "index.html").resolve().as_uri()
    env = {**os.environ, "HOME": str(tmp_path)}
    common = [exe, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", "--window-size=1280,2000"]
    dom = subprocess.run(
        [
            *common,
            f"--user-data-dir={tmp_path / 'profile-dom'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:2000]
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-ready") == "true", attrs
    assert attrs.get("data-images-ok") == "true", attrs
    assert int(attrs["data-images"]) >= 7, attrs
    assert attrs.get("data-errors") == "", attrs
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console

    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05, "the screenshot is blank"
    keep = os.environ.get("DOCKET_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


# ------------------------------------------------------------------ ROC curves vs the verdict


def _assert_roc_matches_verdict(url: str, protocol_id: str) -> int:
    """Every drawn curve's AUROC equals the verdict engine's number for that group and signal."""
    from docketml.ledger.report.html import collect

    led = init_ledger(url)
    try:
        with led.session() as session:
            report = collect(session, protocol_id)
    finally:
        led.engine.dispose()
    assert report.verdict is not None
    rows = [g for h in report.verdict["hypotheses"] for g in h.get("groups", [])]
    drawn = 0
    for rg in report.roc:
        for curve in rg.curves:
            if curve.role == "candidate":
                want = [
                    r["auroc"]
                    for r in rows
                    if (r["group"], r["candidate"]) == (rg.group, curve.signal)
                ]
            else:
                want = [
                    r["baseline_auroc"]
                    for r in rows
                    if (r["group"], r["baseline"]) == (rg.group, curve.signal)
                ]
            assert want, (rg.group, curve.signal)
            assert abs(curve.auroc - want[0]) < 1e-12
            # the best candidate drawn is the group's highest-AUROC candidate
            if curve.role == "candidate":
                best = max((r for r in rows if r["group"] == rg.group), key=lambda r: r["auroc"])
                assert curve.signal == best["candidate"]
            drawn += 1
    return drawn


def test_roc_curves_agree_with_the_verdict(built: dict[str, object]) -> None:
    cli = built["cli"]
    assert isinstance(cli, DocketCli)
    assert _assert_roc_matches_verdict(cli.url, PROTOCOL_ID) == 6  # 3 groups x (cand + base)


def test_roc_curves_with_regime_labels(tmp_path: Path, docket_sqlite: DocketCli) -> None:
    text = (
        PROTOCOL.replace(
            "labels: {source: judged, positive: failure}",
            "labels: {source: regime, positive: ood, reference: in_domain}",
        )
        .replace("groups: [g1, g2, g3]", "groups: [in_domain, g1, g2]")
        .replace("groups: [g1, g2, g3]", "groups: [in_domain, g1, g2]")
        .replace("hardware: rtx4090", "hardware: cpu")
    )
    assert "groups: [g1" not in text
    (tmp_path / "protocol.yaml").write_text(text)
    _ok(docket_sqlite("protocol", "register", "protocol.yaml"))
    _freeze(docket_sqlite)
    _ok(docket_sqlite("run", PROTOCOL_ID, "--no-progress"))
    assert (
        _assert_roc_matches_verdict(docket_sqlite.url, PROTOCOL_ID) == 4
    )  # in_domain is the reference
    _ok(docket_sqlite("report", PROTOCOL_ID, "--out", str(tmp_path / "site")))
    names = {p.name for p in (tmp_path / "site" / "figures").glob("roc_*.png")}
    assert names == {"roc_H1_g1.png", "roc_H1_g2.png"}


def test_report_shows_the_amendment_chain(tmp_path: Path, docket_sqlite: DocketCli) -> None:
    (tmp_path / "protocol.yaml").write_text(PROTOCOL)
    _ok(docket_sqlite("protocol", "register", "protocol.yaml"))
    _freeze(docket_sqlite)
    (tmp_path / "v2.yaml").write_text(PROTOCOL.replace("margin: 0.02", "margin: 0.05"))
    _ok(docket_sqlite("protocol", "amend", PROTOCOL_ID, "v2.yaml", "--reason", "wider <margin>"))
    _ok(docket_sqlite("report", PROTOCOL_ID, "--out", str(tmp_path / "site")))
    page = (tmp_path / "site" / "index.html").read_text()
    assert "This protocol was amended: 2 versions" in page
    assert "The report uses version 1" in page  # v2 is not frozen: v1 is the one in force
    assert "wider &lt;margin&gt;" in page
    assert "margin: 0.02" in page  # the YAML shown is v1's
