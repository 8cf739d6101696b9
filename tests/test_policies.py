"""Mixing policies: each one's promised class counts, on count vectors with empty and single-image classes, and the
validation of their config keys."""
import numpy as np
import pytest

from fercore.augment.policies import POLICIES, MixPlan, mix, plan_mix, uses_generator
from fercore.config import COMMON, all_keys, inapplicable, resolve, section_params
from fercore.errors import ConfigError
from fercore.labels import CLASSES

COUNTS = np.array([40, 4, 41, 72, 48, 32, 50])
# FER2013-like, a class with 0 and one with 1 image, all ones, all empty.
COUNT_VECTORS = [COUNTS, np.array([0, 1, 5, 1000, 3, 0, 2]), np.ones(7, np.int64), np.zeros(7, np.int64)]


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


def augment_values(policy: str, **overrides) -> dict:
    """The resolved augment section, as the trial passes it to plan_mix."""
    flat = {"augment.policy": policy, **{f"augment.{k}": v for k, v in overrides.items()}}
    return dict(resolve(flat).augment.values)


@pytest.mark.parametrize("counts", COUNT_VECTORS)
@pytest.mark.parametrize("target", [1, 3, 50, 1000])
def test_per_class_tops_every_class_up_to_n_and_keeps_larger_ones(counts, target):
    plan = plan_mix("per_class", counts, augment_values("per_class", per_class_target=target))
    assert plan.real.tolist() == counts.tolist()
    assert (plan.real + plan.synthetic).tolist() == np.maximum(counts, target).tolist()


@pytest.mark.parametrize("counts", COUNT_VECTORS)
def test_minority_tops_up_only_the_named_classes_to_the_largest_class_by_default(counts):
    plan = plan_mix("minority", counts, augment_values("minority"))
    assert plan.real.tolist() == counts.tolist()
    named = [CLASSES.index(n) for n in ("disgust", "fear", "surprise")]
    for c in range(7):
        assert plan.synthetic[c] == (counts.max() - counts[c] if c in named else 0)


@pytest.mark.parametrize("counts", COUNT_VECTORS)
@pytest.mark.parametrize("target", [1, 4, 60])
def test_minority_target_is_a_floor_for_the_named_classes(counts, target):
    plan = plan_mix("minority", counts, augment_values("minority", minority_classes="angry, Happy",
                                                       minority_target=target))
    expected = [max(n, target) if CLASSES[c] in ("angry", "happy") else n for c, n in enumerate(counts)]
    assert (plan.real + plan.synthetic).tolist() == expected and plan.real.tolist() == counts.tolist()


@pytest.mark.parametrize("counts", COUNT_VECTORS)
@pytest.mark.parametrize("k", [0.0, 0.5, 1.0, 2.5, 20.0])
def test_multiply_adds_k_synthetic_per_real_image_rounded_per_class(counts, k):
    plan = plan_mix("multiply", counts, augment_values("multiply", multiply_k=k))
    assert plan.real.tolist() == counts.tolist()
    assert plan.synthetic.tolist() == [int(np.floor(k * n + 0.5)) for n in counts]


def test_multiply_rounds_halves_up():
    plan = plan_mix("multiply", np.array([1, 3, 5, 0, 2, 7, 9]), {"multiply_k": 0.5})
    assert plan.synthetic.tolist() == [1, 2, 3, 0, 1, 4, 5]


def test_minority_classes_are_normalised_when_resolved():
    assert augment_values("minority", minority_classes=" Surprise,fear ,fear")["minority_classes"] == "fear,surprise"


@pytest.mark.parametrize("bad", ["disgust,joy-ful", "", " , "])
def test_bad_minority_class_names_are_config_errors_naming_the_key_and_the_valid_names(bad):
    with pytest.raises(ConfigError) as err:
        resolve({"augment.policy": "minority", "augment.minority_classes": bad})
    message = str(err.value)
    assert message.startswith("augment.minority_classes:") and all(name in message for name in CLASSES)
    if bad.startswith("disgust"):
        assert "'joy-ful'" in message
    with pytest.raises(ConfigError, match="augment.minority_classes"):  # also when the values skipped resolve()
        plan_mix("minority", COUNTS, {"minority_classes": bad, "minority_target": 0})


def test_a_minority_class_the_data_set_lacks_is_a_config_error_naming_the_key_and_the_data_sets_classes():
    # Resolving knows no data set: a well-formed name passes; the plan, made with the data's classes, refuses it.
    assert resolve({"augment.policy": "minority", "augment.minority_classes": "disgust,joyful"}
                   ).augment.values["minority_classes"] == "disgust,joyful"
    with pytest.raises(ConfigError) as err:
        plan_mix("minority", COUNTS, {"minority_classes": "disgust,joyful", "minority_target": 0})
    message = str(err.value)
    assert message.startswith("augment.minority_classes:") and "'joyful'" in message
    assert all(name in message for name in CLASSES)
    ck = ("angry", "disgust", "fear", "happy", "sad", "surprise", "contempt")
    with pytest.raises(ConfigError, match="augment.minority_classes: unknown class 'neutral': the data set's "
                                          "classes are angry, disgust, fear, happy, sad, surprise, contempt"):
        plan_mix("minority", COUNTS, {"minority_classes": "neutral", "minority_target": 0}, ck)
    plan = plan_mix("minority", COUNTS, {"minority_classes": "Contempt,anger", "minority_target": 0}, ck)
    assert plan.synthetic.tolist() == [COUNTS.max() - COUNTS[0], 0, 0, 0, 0, 0, COUNTS.max() - COUNTS[6]]


def test_the_minority_default_keeps_the_named_classes_the_data_set_has():
    names = ("angry", "fear", "happy", "sad", "surprise", "neutral")  # disgust dropped
    counts = np.array([10, 4, 20, 9, 3, 12])
    plan = plan_mix("minority", counts, augment_values("minority"), names)
    assert plan.synthetic.tolist() == [0, 16, 0, 0, 17, 0]
    with pytest.raises(ConfigError, match="augment.minority_classes: unknown class 'disgust', 'fear', 'surprise'"):
        plan_mix("minority", np.array([5, 6]), augment_values("minority"), ("happy", "neutral"))


@pytest.mark.parametrize("key, value", [("per_class_target", 0), ("minority_target", -1), ("multiply_k", 21.0),
                                        ("multiply_k", "many")])
def test_out_of_range_policy_params_are_config_errors_naming_the_key(key, value):
    policy = {"per_class_target": "per_class", "minority_target": "minority", "multiply_k": "multiply"}[key]
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        resolve({"augment.policy": policy, f"augment.{key}": value})


def test_a_policys_key_does_not_apply_to_another_policy():
    with pytest.raises(ConfigError, match="augment.multiply_k: does not apply to augment.policy=balance"):
        resolve({"augment.policy": "balance", "augment.multiply_k": 2})
    # oversample_minority reaches minority's counts, so it reads minority's keys; no other policy does.
    assert all_keys()["augment.minority_classes"] == ["minority", "oversample_minority"]


def test_augment_param_names_are_unique_across_the_section():
    """All policies' params share one section: a name declared twice would mean different things per policy, unless
    it is the very same Param (oversample_per_class's per_class_target is per_class's)."""
    declared: dict[str, object] = {p.name: p for p in COMMON["augment"]}
    for _, entry in POLICIES.items():
        for p in entry.params:
            assert declared.setdefault(p.name, p) is p, p.name
    for name, _ in POLICIES.items():
        assert {"filter", "filter_tau", "filter_rounds"} <= {p.name for p in section_params("augment", name)}


@pytest.mark.parametrize("counts", COUNT_VECTORS)
@pytest.mark.parametrize("target, values", [("balance", {}), ("per_class", {"per_class_target": 50}),
                                            ("minority", {"minority_classes": "disgust,fear", "minority_target": 0})])
def test_oversample_reaches_its_targets_counts_with_real_images_drawn_again(counts, target, values):
    plan = plan_mix(f"oversample_{target}", counts, values)
    wanted = plan_mix(target, counts, values)
    assert plan.synthetic.sum() == 0 and plan.real.tolist() == counts.tolist()
    # The target's counts, except a class with no real image to draw from, which stays empty.
    assert plan.total.tolist() == np.where(counts > 0, wanted.total, 0).tolist()
    assert not uses_generator(f"oversample_{target}") and uses_generator(target) and not uses_generator("none")


def test_mix_draws_duplicates_from_the_kept_images_evenly_and_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), COUNTS)
    images = rng.integers(0, 255, (len(labels), 8, 8), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256  # ids
    ids = lambda x: x[:, 0, 0].astype(int) + 256 * x[:, 0, 1].astype(int)  # noqa: E731
    plan = MixPlan(np.array([20, 2, 41, 72, 48, 32, 50]), np.zeros(7, np.int64), np.array([50, 9, 0, 0, 1, 0, 0]))
    x, y, synthetic = mix(images, labels, plan, {}, seed=4)
    assert not synthetic.any() and np.bincount(y, minlength=7).tolist() == plan.total.tolist()
    kept = ids(x[:plan.real.sum()])
    plain, _, _ = mix(images, labels, MixPlan(plan.real, plan.synthetic), {}, seed=4)
    assert (ids(plain) == kept).all()  # duplicates do not change which real images are kept
    for c in range(7):
        drawn = ids(x[plan.real.sum():][y[plan.real.sum():] == c])
        assert set(drawn) <= set(kept[labels[kept] == c])  # drawn again from the kept images of the class only
        times = np.bincount(drawn, minlength=len(labels))[kept[labels[kept] == c]] if len(drawn) else np.zeros(1)
        assert max(times) - min(times) <= 1  # as evenly as the count allows: 50 of 20 images is 2 or 3 each
    again, _, _ = mix(images, labels, plan, {}, seed=4)
    other, _, _ = mix(images, labels, plan, {}, seed=5)
    assert (again == x).all() and not (other == x).all()


def test_oversample_names_no_key_of_its_own_but_its_targets():
    assert [p.name for p in POLICIES.get("oversample_per_class").params] == ["per_class_target"]
    flat = resolve({"augment.policy": "oversample_minority", "augment.minority_classes": "fear"}).flat()
    assert flat["augment.minority_classes"] == "fear" and "augment.per_class_target" not in flat


def test_generator_keys_take_no_part_where_the_policy_adds_no_synthetic_image():
    """real_ratio 1.0 and multiply_k 0 train on real images only: their generator keys are inapplicable (empty in
    the row), so such trials are one real-only config whatever generator they name."""
    def generator_keys(flat):
        return [k for k in inapplicable(resolve(flat)) if k.startswith("generator.")]

    for flat in ({"augment.policy": "real_ratio", "augment.real_ratio": 1.0},
                 {"augment.policy": "multiply", "augment.multiply_k": 0.0}):
        for gtype in ("cgan", "diffusion"):
            cfg = resolve({**flat, "generator.type": gtype})
            assert "generator.type" in generator_keys({**flat, "generator.type": gtype})
            assert cfg.flat(applicable_only=True).get("generator.type") is None
        assert not uses_generator(flat["augment.policy"], {k.split(".")[1]: v for k, v in flat.items()})
    assert generator_keys({"augment.policy": "real_ratio", "augment.real_ratio": 0.99}) == []
    assert generator_keys({"augment.policy": "multiply", "augment.multiply_k": 0.5}) == []
