"""What trials share, kept once: the content-addressed store (store.py: keys, locks, checksums) and the entries a
trial keeps in it (entries.py: trained generators, synthetic pools, the reference classifier, real-only baselines).
Importing this package loads the store only; `from fercore.cache import entries` brings the entries' builders."""
from fercore.cache.store import CacheStore, canonical_json, content_key, kind_of, verify_entry

__all__ = ["CacheStore", "canonical_json", "content_key", "kind_of", "verify_entry"]
