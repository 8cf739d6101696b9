"""Metrics of a trial, measurement only: classification figures on a split (`<split>_<metric>` in result rows),
bootstrap intervals, synthetic-image quality, embeddings, leakage and uplift. `METRICS` registers the figures a trial
records by name (metric_main); nothing here trains a model."""
from fercore.metrics.classification import classification_metrics, confusion
from fercore.metrics.embedding import embedding_jsd, embedding_jsd_rows
from fercore.metrics.leakage import audit, leakage_rows, phash
from fercore.metrics.metric_main import METRICS, Read, calc_metric, calc_metrics
from fercore.metrics.uplift import uplift_metrics

__all__ = ["METRICS", "Read", "audit", "calc_metric", "calc_metrics", "classification_metrics", "confusion",
           "embedding_jsd", "embedding_jsd_rows", "leakage_rows", "phash", "uplift_metrics"]
