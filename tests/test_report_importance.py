"""The report's fANOVA importance ranks hyperparameters only: the keys that repeat a config (seed, data.fold) are
left out however much the objective moves with them."""
import numpy as np
import pandas as pd

from fercore.report.importance import param_importances
from fercore.report.tables import Results


def test_seed_and_fold_are_not_ranked_as_hyperparameters(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        seed, fold, lr = i % 5, i % 4, [1e-3, 1e-2][i % 2]
        # The seed moves the objective most; the learning rate a little, and it is the only hyperparameter.
        rows.append({"trial_id": f"t{i}", "status": "completed", "seed": seed, "data.fold": fold,
                     "classifier.lr": lr, "classifier.backbone": "cnn3",
                     "val_macro_f1": 0.3 + 0.1 * seed + 0.02 * (lr == 1e-2) + 0.001 * rng.standard_normal()})
    imp = param_importances(Results(tmp_path, pd.DataFrame(rows)))
    assert list(imp.values) == ["classifier.lr"] and imp.values["classifier.lr"] == 1.0
    assert "seed" not in imp.left_out and "data.fold" not in imp.left_out
