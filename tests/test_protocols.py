"""The protocol objects (bench.protocols): each lays out, evaluates and reports as the string comparisons they
replaced did. `protocol_plans_before.json` is what commit 68cc1d0 (before bench.protocols) planned for the toy
world; `python tests/test_protocols.py DATA_ROOT CARDS_ROOT` prints it again."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.grid import Grid, expand

BEFORE = Path(__file__).with_name("protocol_plans_before.json")

# name → (grid fields, with_data): every layout case of every protocol (defaults of source and targets included;
# a default source is ImageNet, which the toy world lacks, so those cases are planned without data)
CASES = {
    "fewshot": ({"protocol": "fewshot", "datasets": ["toy", "toy2"], "shots": [1, 2], "seeds": [1, 2]}, True),
    "base2new": ({"protocol": "base2new", "datasets": ["toy", "toy2"]}, True),
    "xd_source_datasets": ({"protocol": "xd", "source": "toy", "datasets": ["toy", "toy2"]}, True),
    "xd_targets_only": ({"protocol": "xd", "source": "toy", "datasets": [], "targets": ["toy2"]}, True),
    "xd_default_source": ({"protocol": "xd", "datasets": ["toy", "toy2"]}, False),
    "dg_source": ({"protocol": "dg", "source": "toy", "datasets": []}, True),
    "dg_source_targets": ({"protocol": "dg", "source": "toy", "datasets": [], "targets": ["toy2"]}, True),
    "dg_default": ({"protocol": "dg", "datasets": []}, False),
}
REFUSED = {"fewshot": {"protocol": "fewshot", "datasets": []}, "base2new": {"protocol": "base2new", "datasets": []},
           "xd": {"protocol": "xd", "source": "toy", "datasets": []}}


def plans(data: Path) -> dict:
    out = {}
    for name, (fields, with_data) in CASES.items():
        g = Grid(**{"methods": ["clipfit", "zeroshot"], "shots": [2], "seeds": [1], "backbone": "bench-tiny",
                    "pretrained": None, "data_root": str(data), "device": "cpu", **fields})
        out[name] = [{"cell_id": c["cell_id"], "config": c["config"], "manifest_sha256": c["manifest_sha256"]}
                     for c in expand(g, with_data=with_data)]
    for name, fields in REFUSED.items():
        g = Grid(methods=["clipfit"], backbone="bench-tiny", pretrained=None, data_root=str(data), **fields)
        try:
            expand(g, with_data=False)
            out[f"refused_{name}"] = None
        except BenchError as e:
            out[f"refused_{name}"] = str(e)
    return out


def test_every_protocol_plans_the_cells_it_planned_before(toy):
    assert plans(toy) == json.loads(BEFORE.read_text())


if __name__ == "__main__":
    from bench import cards

    os.environ["BENCH_CARDS_PATH"] = sys.argv[2]
    cards.clear_caches()
    print(json.dumps(plans(Path(sys.argv[1])), indent=1, sort_keys=True))


# evaluations each protocol's cells ran at commit 68cc1d0 (result.json `metrics`, in order), by the flags that
# select them on the toy world
RUNS = {"fewshot": (["--datasets", "toy"], ["all"]),
        "base2new": (["--datasets", "toy"], ["base", "new"]),
        "xd": (["--source", "toy", "--datasets", "toy,toy2"], ["source", "toy2"]),
        "dg": (["--source", "toy", "--targets", "toy2"], ["source", "toy2"])}


@pytest.mark.parametrize("name", list(RUNS))
def test_a_cell_runs_the_evaluations_of_its_protocol(name, toy, tmp_path):
    from bench.cli import main
    from bench.protocols import protocol
    from bench.results import ResultStore

    flags, evals = RUNS[name]
    root = tmp_path / "r"
    assert main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(root), "--no-leaderboard",
                 "--methods", "zeroshot", "--seeds", "1", "--protocol", name, *flags]) == 0
    (result,) = [res for _, res in ResultStore(root).iter_results()]
    assert result["status"] == "completed" and list(result["metrics"]) == evals
    assert protocol(name).evals(result["config"]["targets"]) == evals


def test_protocol_objects_answer_for_every_name():
    from bench.cli.aggregate import TABLES
    from bench.protocols import NAMES, Protocol, in_board_order, of_heading, protocol

    assert NAMES == ("fewshot", "base2new", "xd", "dg")                 # --protocol's choices, in this order
    assert [p.name for p in in_board_order()] == ["base2new", "fewshot", "xd", "dg"]
    assert TABLES == ["long", "fewshot", "fewshot_avg", "base2new", "base2new_avg", "xd", "dg", "cost", "summary"]
    assert [of_heading(f"{protocol(n).title} — ViT-B-16/openai") for n in NAMES] == list(NAMES)
    assert of_heading("Cost — ViT-B-16/openai") == ""
    with pytest.raises(BenchError, match="protocol 'fewshoot' is unknown; did you mean 'fewshot'"):
        protocol("fewshoot")
    with pytest.raises(BenchError, match="a transfer protocol one .its source. and a default source"):
        Protocol("xd2", "Transfer", ("source",), ("xd2",), (16,), transfer=True)       # no default source


def test_compare_of_a_transfer_protocol_gives_the_target_average(tmp_path):
    """`bench compare` on xd/dg cells with two targets: a target_avg row, Δ = the mean of the targets' Δ (it raised
    KeyError 'target_avg' before: the image counts were looked up under the average's name)."""
    from result_fixtures import write_result

    from bench.report.collect import load_results
    from bench.report.pairwise import compare_methods

    for seed in (1, 2):
        for method, shift in (("A", 2.0), ("B", 0.0)):
            write_result(tmp_path, method, "imagenet", protocol="xd", seed=seed, targets=["dtd", "eurosat"],
                         metrics={"source": 70 + shift, "dtd": 40 + seed + shift, "eurosat": 50 + 3 * shift})
    table = compare_methods(load_results(tmp_path).frame, "A", "B").set_index("eval")
    assert list(table.index) == ["source", "dtd", "eurosat", "target_avg"]
    assert table.loc["target_avg", "delta"] == pytest.approx((2.0 + 6.0) / 2)
    assert table.loc["target_avg", "images"] == "" and table.loc["dtd", "images"] == 1000
