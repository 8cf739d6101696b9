import numpy as np
import pytest

from fercore.augment.policies import mix, plan_mix

COUNTS = np.array([40, 4, 41, 72, 48, 32, 50])


def test_none_keeps_real_only():
    plan = plan_mix("none", COUNTS, {})
    assert plan.real.tolist() == COUNTS.tolist() and plan.synthetic.sum() == 0


def test_balance_tops_every_class_up_to_the_largest():
    plan = plan_mix("balance", COUNTS, {})
    assert (plan.real + plan.synthetic).tolist() == [72] * 7
    assert plan.synthetic[3] == 0


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_real_ratio_keeps_size_and_class_proportions(ratio):
    plan = plan_mix("real_ratio", COUNTS, {"real_ratio": ratio})
    assert (plan.real + plan.synthetic).tolist() == COUNTS.tolist()
    assert plan.real.sum() == pytest.approx(ratio * COUNTS.sum(), abs=7)


def test_mix_draws_the_planned_images_and_flags_synthetic_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), COUNTS)
    images = rng.integers(0, 255, (len(labels), 8, 8), dtype=np.uint8)
    plan = plan_mix("real_ratio", COUNTS, {"real_ratio": 0.5})
    pool = {c: np.full((int(n), 8, 8), 255 - c, np.uint8) for c, n in enumerate(plan.synthetic)}
    x, y, synthetic = mix(images, labels, plan, pool, seed=1)
    assert np.bincount(y, minlength=7).tolist() == COUNTS.tolist()
    assert np.bincount(y[synthetic], minlength=7).tolist() == plan.synthetic.tolist()
    assert (x[synthetic] == (255 - y[synthetic])[:, None, None]).all()
    x2, _, _ = mix(images, labels, plan, pool, seed=1)
    assert (x == x2).all()  # seeded
