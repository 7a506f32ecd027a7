"""``poe_card`` on the built-in PoE model: a tiny model really trained for a few steps, every
checkpoint probed; the numbers recomputed independently in numpy from the model's own
``forward_stages`` (the beta sweep by scaling a copy's stage-head weights, which is linear in the
delta), and the metrics shown per checkpoint by ``docket trajectory --json`` after ``docket run``.
Bad params fail at ``docket protocol signcheck`` with exit 2 naming the field."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import DocketCli  # noqa: E402

from docketml.runners.context import JobContext, JobResult, KnobAudit  # noqa: E402
from docketml.runners.jobs.poe import JOBS, _corpus_split  # noqa: E402
from docketml.runners.jobs.poe_card import run_card  # noqa: E402
from docketml.runners.models.poe import BOS, load_checkpoint  # noqa: E402
from docketml.runners.registry import job_kinds  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TRAIN = {"model": "tiny", "steps": 40, "checkpoint_every": 20, "batch_size": 8, "seq_len": 64,
         "lr": 5e-3, "warmup_steps": 10}  # fmt: skip
CARD = {"calib_bytes": 2048, "eval_bytes": 2048, "seq_len": 64, "betas": [0, 1, 2]}


def _ctx(kind: str, params: dict[str, Any], tmp: Path, inputs: dict[str, Path] | None = None):
    return JobContext(
        job=kind, kind=kind, params=params, seed=0, artifacts_dir=tmp, inputs=inputs or {},
        knobs=KnobAudit(params),
    )  # fmt: skip


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobResult, JobResult]:
    tmp = tmp_path_factory.mktemp("poe_card")
    train = JOBS["poe_train"](_ctx("poe_train", TRAIN, tmp / "train"))
    ctx = _ctx("poe_card", CARD, tmp / "card", {"train": train.checkpoint})
    result = run_card(ctx)
    assert ctx.knobs.silent_noops(ignore=job_kinds().structural_keys("poe_card")) == []
    return train, result


def _by_step(result: JobResult) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for m in result.metrics:
        if m.step is not None:
            out.setdefault(m.step, {})[m.name] = m.value
    return out


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _stage_logits(model: Any, data: bytes, seq_len: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(K, N, V) float64 logits from the model's own forward_stages, and the (N,) targets."""
    n = len(data) // seq_len
    targets = torch.tensor(list(data[: n * seq_len])).view(n, seq_len)
    inputs = torch.cat([torch.full_like(targets[:, :1], BOS), targets[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model.forward_stages(inputs)
    return logits.double().numpy().reshape(logits.size(0), -1, logits.size(-1)), targets.numpy()


def _np_cum(logits: np.ndarray) -> list[np.ndarray]:
    lp = _np_log_softmax(logits)
    return [_np_log_softmax(lp[: k + 1].mean(0)) for k in range(lp.shape[0])]


def _bpb(lp: np.ndarray, targets: np.ndarray) -> float:
    return float(-lp[np.arange(targets.size), targets.reshape(-1)].mean() / math.log(2))


def test_every_checkpoint_gets_every_probe(card) -> None:
    _, result = card
    rows = _by_step(result)
    assert sorted(rows) == [20, 40]
    names = set(rows[20])
    assert {f"wand_bound{k}" for k in range(3)} <= names and "wand_bound3" not in names
    assert {
        "bpb_full",
        "bpb_deepest",
        "crossover_gap",
        "wand_mean_stages",
        "wand_agreement",
    } <= names
    assert {f"head_cos{i}_{j}" for i in range(4) for j in range(i + 1, 4)} <= names
    assert {f"head_unique{k}" for k in (1, 2, 3)} <= names and "head_unique0" not in names
    for b in ("0", "1", "2"):
        assert {f"bpb_beta{b}_stage{k}" for k in range(4)} | {f"bpb_beta{b}_all"} <= names
    assert {f"ablation_dbpb_stage{k}" for k in range(4)} <= names
    for values in rows.values():
        assert values["crossover_gap"] == pytest.approx(values["bpb_full"] - values["bpb_deepest"])
        for k in range(4):  # beta = 1 is the trained model
            assert values[f"bpb_beta1_stage{k}"] == pytest.approx(values["bpb_full"], rel=1e-6)
        assert 1.0 <= values["wand_mean_stages"] <= 4.0
        assert 0.9 <= values["wand_coverage0"] <= 1.0
    assert rows[40]["bpb_full"] < rows[20]["bpb_full"]  # it trained
    final = {m.name: m.value for m in result.metrics if m.step is None}
    assert final["crossover_sign_changes"] == len(result.extra["crossover_steps"])


def test_numbers_match_an_independent_numpy_computation(card) -> None:
    from sklearn.utils.extmath import svd_flip

    _, result = card
    rows = _by_step(result)
    _, held_out = _corpus_split()
    calib, evaluation = held_out[:2048], held_out[2048:4096]
    for row in result.extra["checkpoints"]:
        model, step = load_checkpoint(row["checkpoint"])
        got = rows[step]
        logits, targets = _stage_logits(model, evaluation)
        cum = _np_cum(logits)
        assert got["bpb_full"] == pytest.approx(_bpb(cum[-1], targets), rel=1e-5)
        deep = _bpb(_np_log_softmax(logits[-1]), targets)
        assert got["bpb_deepest"] == pytest.approx(deep, rel=1e-5)
        # WAND: p99 of the range of c_{k+1} - c_k on the calibration slice, coverage on eval
        cal_cum = _np_cum(_stage_logits(model, calib)[0])
        for k in range(3):
            d = cal_cum[k + 1] - cal_cum[k]
            bound = np.percentile(d.max(-1) - d.min(-1), 99)
            assert got[f"wand_bound{k}"] == pytest.approx(bound, rel=1e-4)
            de = cum[k + 1] - cum[k]
            cover = float(((de.max(-1) - de.min(-1)) <= bound).mean())
            assert got[f"wand_coverage{k}"] == pytest.approx(cover, abs=2 / targets.size)
        # beta sweep: scaling head k's weight by beta scales its delta by beta
        for beta in (0.0, 2.0):
            for k in range(4):
                scaled = copy.deepcopy(model)
                with torch.no_grad():
                    scaled.stage_heads[k].weight.mul_(beta)
                ref = _bpb(_np_cum(_stage_logits(scaled, evaluation)[0])[-1], targets)
                name = f"bpb_beta{beta:g}_stage{k}"
                assert got[name] == pytest.approx(ref, rel=1e-5), name
            assert got[f"ablation_dbpb_stage{k}"] == pytest.approx(
                got[f"bpb_beta0_stage{k}"] - got["bpb_full"]
            )
        # diversity from the checkpoint's head weights: numpy SVD + svd_flip, numpy QR
        heads = [model.stage_heads[k].weight.detach().double().numpy() for k in range(4)]
        us = [svd_flip(*np.linalg.svd(w, full_matrices=False)[::2])[0][:, 0] for w in heads]
        for i in range(4):
            for j in range(i + 1, 4):
                assert got[f"head_cos{i}_{j}"] == pytest.approx(float(us[i] @ us[j]), abs=1e-6)
        a = np.stack([w.reshape(-1) for w in heads], axis=1)
        r = np.linalg.qr(a)[1]
        unique = np.diag(r) ** 2 / (a**2).sum(0)
        for k in (1, 2, 3):
            assert got[f"head_unique{k}"] == pytest.approx(float(unique[k]), rel=1e-6)


def test_one_checkpoint_and_a_subset_of_probes(card, tmp_path: Path) -> None:
    train, _ = card
    path = Path(train.extra["checkpoints"][0]["path"])
    params = {**CARD, "checkpoint": str(path), "probes": ["crossover"]}
    params.pop("betas")
    ctx = _ctx("poe_card", params, tmp_path)
    res = run_card(ctx)
    assert {m.step for m in res.metrics if m.step is not None} == {20}
    assert {m.name for m in res.metrics if m.step is not None} == {
        "bpb_full", "bpb_deepest", "crossover_gap",
    }  # fmt: skip
    assert ctx.knobs.silent_noops(ignore=job_kinds().structural_keys("poe_card")) == []
    # a knob of a probe that does not run is a silent no-op
    ctx = _ctx("poe_card", {**params, "betas": [0, 3]}, tmp_path)
    run_card(ctx)
    assert "betas" in ctx.knobs.silent_noops(ignore=job_kinds().structural_keys("poe_card"))


PROTOCOL = """\
docket: 1
id: card-demo
title: PoE card probes per checkpoint
hypotheses:
  - {id: H1, statement: the p99 WAND bound of boundary 0 covers the evaluation slice, rule: covered}
decision_rules:
  covered: {kind: threshold, statistic: metric, metric: wand_coverage0, op: ">=", bound: 0.9}
jobs:
  - name: train
    kind: poe_train
    params: {model: tiny, steps: 40, checkpoint_every: 20, batch_size: 8, seq_len: 64, lr: 0.005,
             warmup_steps: 10}
  - {name: card, kind: poe_card, after: [train], params: %s}
"""


def _write(cwd: Path, card_params: str) -> None:
    (cwd / "p.yaml").write_text(PROTOCOL % card_params)


def test_run_then_trajectory_shows_every_probe_per_checkpoint(docket: DocketCli) -> None:
    _write(docket.cwd, "{calib_bytes: 2048, eval_bytes: 2048, seq_len: 64, betas: [0, 2]}")
    for args in (("protocol", "register", "p.yaml"), ("protocol", "freeze", "card-demo")):
        result = docket(*args)
        assert result.exit_code == 0, result.output
    result = docket("run", "card-demo", "--no-progress")
    assert result.exit_code == 0, result.output
    result = docket("trajectory", "card-demo", "--job", "card", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["steps"] == [20, 40]
    for name in (
        "wand_bound0",
        "wand_bound2",
        "wand_coverage1",
        "crossover_gap",
        "head_cos0_1",
        "head_unique3",
        "bpb_beta0_stage2",
        "bpb_beta2_all",
        "ablation_dbpb_stage1",
    ):
        assert [p["step"] for p in data["series"][name]] == [20, 40], name  # fmt: skip
    for row in data["rows"]:
        assert row["crossover_gap"] == pytest.approx(row["bpb_full"] - row["bpb_deepest"])


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ("{betas: []}", "'betas'", "non-empty list of finite numbers"),
        ("{beta_stages: [4]}", "'beta_stages'", "0..3"),
        ("{beta_stages: [0, 0]}", "'beta_stages'", "distinct"),
        ("{probes: [wand, nope]}", "'probes'", "'diversity'"),
        ("{wand_quantile: 1.5}", "'wand_quantile'", "(0, 1)"),
        ("{calib_bytes: 0}", "'calib_bytes'", "positive integer"),
    ],
)
def test_bad_params_fail_at_signcheck_with_exit_2(
    docket_sqlite: DocketCli, params: str, field: str, expected: str
) -> None:
    _write(docket_sqlite.cwd, params)
    assert docket_sqlite("protocol", "register", "p.yaml").exit_code == 0
    for cmd in ("signcheck", "freeze"):
        result = docket_sqlite("protocol", cmd, "card-demo")
        assert result.exit_code == 2, result.output
        assert f"job 'card': field {field}" in result.output and expected in result.output
        assert "Traceback" not in result.output
    shown = json.loads(docket_sqlite("protocol", "show", "card-demo", "--json").output)
    assert shown["status"] == "registered" and shown["sign_check"] is None  # nothing stored
