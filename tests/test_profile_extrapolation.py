"""Beyond a profile's last measured point the cost keeps rising with the work (profiled.PiecewiseLinear).

Once, a noisy last segment of the H100 linear sweep (16,384 tokens measured faster than 15,024)
was extrapolated downwards: 62 prompts of 1,150 tokens came out cheaper than 7, and a vLLM
prefill-only instance appeared to sustain 300 req/s."""
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.costmodel.profiled import PiecewiseLinear


def test_tail_slope_is_the_secant_over_the_upper_half_and_never_negative():
    f = PiecewiseLinear([1, 2, 4, 8], [1.0, 2.0, 4.0, 7.5])  # last segment noisy-flat
    assert f.tail_slope == pytest.approx((7.5 - 4.0) / 4)  # from x=4 (nearest 8/2) to 8
    assert f(16) == pytest.approx(7.5 + 8 * f.tail_slope)
    assert f(3) == pytest.approx(3.0) and f(0.5) == 1.0  # inside and below: as before
    falling = PiecewiseLinear([1, 2, 4], [3.0, 2.0, 1.0])
    assert falling.tail_slope == 0.0 and falling(100) == 1.0


@pytest.mark.parametrize("gpu", ["h100-sxm", "h200"])
def test_prefill_batches_beyond_the_profile_cost_more_per_prompt_not_less(gpu):
    cm = make_cost_model(get_model("llama-3.1-8b"), get_gpu(gpu), 1, CostModelConfig())
    assert cm.source.startswith("profile:")
    times = [cm.batch_time(Batch([1150] * n, [0] * n)) for n in (7, 14, 28, 62)]
    assert times == sorted(times)
    per_prompt = [t / n for t, n in zip(times, (7, 14, 28, 62), strict=True)]
    assert min(per_prompt) > 0.8 * per_prompt[0]  # GEMM-bound: roughly proportional
