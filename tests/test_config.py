import pytest

from fercore import config
from fercore.errors import ConfigError


def test_defaults_fill_every_section_and_flat_round_trips():
    resolved = config.resolve({})
    flat = resolved.flat()
    assert flat["generator.type"] == "cgan" and flat["classifier.backbone"] == "cnn3" and flat["augment.policy"] == "none"
    assert flat["generator.latent_dim"] == 100  # declared by the cgan entry itself
    assert config.resolve(flat).flat() == flat


def test_strings_from_the_command_line_are_converted():
    resolved = config.resolve({"classifier.epochs": "3", "classifier.lr": "1e-3", "classifier.small_stem": "true",
                            "classifier.backbone": "resnet18", "seed": "7"})
    assert resolved.classifier.epochs == 3 and resolved.classifier.lr == 1e-3
    assert resolved.classifier.small_stem is True and resolved.seed == 7


def test_unknown_key_is_named_with_the_valid_keys():
    with pytest.raises(ConfigError, match=r"classifier\.lrr: unknown key; valid keys: .*classifier\.lr"):
        config.resolve({"classifier.lrr": 0.1})


def test_out_of_range_value_names_key_and_range():
    with pytest.raises(ConfigError, match=r"augment\.real_ratio: expected a float in \[0\.0, 1\.0\], got 1\.5"):
        config.resolve({"augment.policy": "real_ratio", "augment.real_ratio": 1.5})


def test_unknown_choice_lists_registered_names():
    with pytest.raises(ConfigError, match=r"generator\.type: unknown generator type 'vae'; valid: .*cgan"):
        config.resolve({"generator.type": "vae"})


def test_key_of_another_entry_is_an_error_unless_dropped():
    with pytest.raises(ConfigError, match=r"classifier\.small_stem: does not apply to classifier\.backbone=cnn3"):
        config.resolve({"classifier.small_stem": True})
    flat = config.resolve({"classifier.small_stem": True}, drop_inapplicable=True).flat()
    assert "classifier.small_stem" not in flat


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as e:
        config.resolve({"classifier.epochs": 0, "train.flip": "often", "nope": 1})
    text = str(e.value)
    assert "classifier.epochs" in text and "train.flip" in text and "nope" in text


def test_integer_keys_reject_fractions_and_bools():
    with pytest.raises(ConfigError, match="classifier.epochs"):
        config.resolve({"classifier.epochs": 2.5})
    with pytest.raises(ConfigError, match="classifier.epochs"):
        config.resolve({"classifier.epochs": True})


def test_assignments_need_an_equals_sign():
    assert config.parse_assignments(["a.b=1", "seed = 2"]) == {"a.b": "1", "seed": "2"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config.parse_assignments(["classifier.lr"])


@pytest.mark.parametrize("policy", ["none", "oversample_balance"])
def test_a_real_only_trials_row_has_no_generator_values(policy):
    cfg = config.resolve({"augment.policy": policy})
    row = cfg.flat(applicable_only=True)
    generator_keys = [k for k in cfg.flat() if k.startswith("generator.")]
    assert "generator.latent_dim" in generator_keys and "generator.lr_d" in generator_keys
    assert all(row[k] is None for k in generator_keys)  # present, so the table has the column, but empty
    assert row["augment.filter_tau"] is None and row["augment.filter_rounds"] is None  # filter none
    assert row["classifier.plateau_factor"] is None and row["classifier.momentum"] is None  # adam, no plateau
    assert row["data.fold"] is None  # no k-fold (data.folds 0): no fold was tested on
    assert row["classifier.lr"] == cfg.classifier.lr and row.keys() == cfg.flat().keys()
    assert cfg.flat()["generator.latent_dim"] == 100  # the config itself keeps every value


def test_keys_a_trial_uses_keep_their_values():
    cfg = config.resolve({"augment.policy": "balance", "augment.filter": "classifier_confidence",
                   "classifier.schedule": "plateau", "classifier.optimizer": "sgd", "data.folds": 3})
    assert cfg.flat(applicable_only=True) == cfg.flat()
