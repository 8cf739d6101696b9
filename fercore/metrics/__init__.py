"""Metrics of a trial: classification figures on a split, named `<split>_<metric>` in result rows."""
from fercore.metrics.classification import classification_metrics, confusion

__all__ = ["classification_metrics", "confusion"]
