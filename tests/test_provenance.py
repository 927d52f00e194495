"""Every run records what made it: version, commit, config hash, trace fingerprint, cost models."""
from __future__ import annotations

import json

import pandas as pd

from goodput.cli import main
from goodput.sim import provenance
from goodput.sim.config import load_config, to_dict
from goodput.sim.run import run_and_report
from tests.conftest import REPO

TINY = str(REPO / "traces" / "sample_tiny.csv")
SHA = "0123456789abcdef0123456789abcdef01234567"
RUN = ["simulate", "--trace", TINY, "--max-requests", "5", "--no-progress", "--no-plots",
       "--cost-model", "roofline"]


def test_git_commit_reads_loose_packed_and_detached_heads(tmp_path):
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert provenance.git_commit(tmp_path / "repo" / "sub") == SHA
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs\n{SHA} refs/heads/main\n")
    assert provenance.git_commit(tmp_path / "repo") == SHA
    (git / "HEAD").write_text(SHA[::-1] + "\n")  # detached
    assert provenance.git_commit(tmp_path / "repo") == SHA[::-1]
    (git / "HEAD").write_text("garbage")
    assert provenance.git_commit(tmp_path / "repo") == "unknown"


def test_git_commit_outside_a_checkout_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_git_dir", lambda start: None)
    assert provenance.git_commit(tmp_path) == "unknown"


def test_trace_hash_is_full_for_small_files_and_sampled_for_large(tmp_path, monkeypatch):
    f = tmp_path / "t.csv"
    f.write_bytes(b"x" * 5000)
    full = provenance.file_fingerprint(f)
    assert full["hash_method"] == "full" and full["bytes"] == 5000 and len(full["sha256"]) == 64
    monkeypatch.setattr(provenance, "FULL_HASH_LIMIT", 100)
    monkeypatch.setattr(provenance, "SAMPLE", 10)
    sampled = provenance.file_fingerprint(f)
    assert sampled["hash_method"] == "size+first+last MiB" and sampled["sha256"] != full["sha256"]
    f.write_bytes(b"x" * 4990 + b"y" * 10)  # the last bytes change: so does the hash
    assert provenance.file_fingerprint(f)["sha256"] != sampled["sha256"]


def test_config_hash_ignores_where_results_go():
    a = to_dict(load_config(overrides={"output.dir": "/tmp/a", "progress": True}))
    b = to_dict(load_config(overrides={"output.dir": "/tmp/b"}))
    c = to_dict(load_config(overrides={"seed": 3}))
    assert provenance.config_hash(a) == provenance.config_hash(b) != provenance.config_hash(c)


def test_summary_json_names_everything_that_made_the_run(tmp_path, capsys):
    out = tmp_path / "res"
    assert main([*RUN, "--out", str(out), "--seed", "7"]) == 0
    head = capsys.readouterr().out.splitlines()[:3]
    assert head[0].startswith("goodput") and "commit" in head[0] and "config" in head[0]
    assert "sample_tiny.csv" in head[1] and "sha256" in head[1]
    assert head[2].startswith("cost model") and "roofline" in head[2]
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    import goodput

    assert prov["goodput_version"] == goodput.__version__
    assert prov["git_commit"] == "unknown" or len(prov["git_commit"]) == 40
    assert prov["seed"] == 7 and prov["config"]["seed"] == 7
    assert prov["config_sha256"] == provenance.config_hash(prov["config"])
    t = prov["trace"]
    assert t["path"].endswith("sample_tiny.csv") and t["requests"] == 5
    assert t["sha256"] == provenance.file_fingerprint(TINY)["sha256"]
    (group, cm), = prov["cost_models"].items()
    assert {"source", "provenance", "error_estimate"} <= set(cm)
    assert prov["cost_sources"] == {group: cm["source"]}


def test_api_runs_record_an_in_memory_table():
    df = pd.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.5], "prompt_tokens": [50, 60],
                       "output_tokens": [4, 5]})
    res = run_and_report(load_config(overrides={"cost_model.kind": "roofline"}), df)
    t = res.summary["provenance"]["trace"]
    assert t["path"] is None and "DataFrame" in t["source"] and t["requests"] == 2


def test_a_synthetic_run_records_its_generator(capsys):
    assert main(["simulate", "--rate", "5", "--num-requests", "4", "--no-progress",
                 "--cost-model", "roofline", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    syn = summary["provenance"]["trace"]["synthetic"]
    assert syn["rate"] == 5 and syn["num_requests"] == 4
