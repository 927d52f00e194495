"""The aiconfigurator comparison (benchmarks/aiconfigurator_check.py) maps our measured batches
onto its queries as its docstring says, and prices the leave-out roofline from calibration.json."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("aic_check", REPO / "benchmarks" / "aiconfigurator_check.py")
aic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(aic)


def _b(q, c, gpu="h200", model="llama-3.1-8b", tp=1):
    return {"gpu": gpu, "model": model, "tp": tp, "q": q, "c": c}


def test_decode_batch_is_one_step_at_the_mean_context_plus_one():
    query = aic.aic_query(_b([1, 1, 1, 1], [100, 200, 300, 400]))
    assert query == {"model": "meta-llama/Meta-Llama-3.1-8B", "system": "h200_sxm", "tp": 1,
                     "kind": "decode", "bs": 4, "isl": 251}


def test_prefill_and_verify_carry_their_context_as_prefix():
    # two chunks of 512 new tokens over 1024 and 0 cached: isl counts both, prefix the cached part
    query = aic.aic_query(_b([512, 512], [1024, 0], gpu="h100-sxm"))
    assert (query["kind"], query["bs"], query["isl"], query["prefix"], query["system"]) == (
        "prefill", 2, 1024, 512, "h100_sxm")


def test_mixed_batch_is_chunk_tokens_plus_decodes():
    query = aic.aic_query(_b([256, 1, 1, 1], [0, 999, 1999, 2999], model="llama-3.1-70b", tp=4))
    assert (query["kind"], query["ctx_tokens"], query["gen_tokens"], query["isl"], query["tp"]) == (
        "mixed", 256, 3, 2000, 4)


def test_leave_out_roofline_uses_the_other_gpus_fit():
    cal = json.loads((aic.PROFILES_ROOT / "calibration.json").read_text())
    fit = cal["error_by_phase"]["leave_out_h200"]["fitted_params"]
    b = _b([1] * 8, [2048] * 8)
    want = aic.RooflineCostModel(aic.get_model("llama-3.1-8b"), aic.get_gpu("h200"), 1,
                                 aic.RooflineParams(**fit)).batch_time(aic.Batch([1] * 8, [2048] * 8))
    assert aic.roofline_loo(b, cal) == pytest.approx(want, rel=1e-12)
    assert aic.roofline_loo(_b([1], [10], gpu="a100-80gb"), cal) is None
