"""Metrics of a trial: classification figures on a split, named `<split>_<metric>` in result rows."""
from fercore.metrics.classification import classification_metrics, confusion
from fercore.metrics.embedding import embedding_jsd, embedding_jsd_rows
from fercore.metrics.leakage import audit, leakage_rows, phash
from fercore.metrics.uplift import uplift_metrics

__all__ = ["classification_metrics", "confusion", "embedding_jsd", "embedding_jsd_rows", "audit", "leakage_rows",
           "phash", "uplift_metrics"]
