"""The report's leakage section says what the trial's copy audit counts, in that audit's own figures."""
import re

from fercore.metrics import copies
from fercore.report.diagnostics import COPY_RULE


def test_the_leakage_text_matches_the_copy_audit():
    assert f"within {copies.COPY_THRESHOLD} bits" in COPY_RULE
    assert f"shifted by up to {copies.SHIFT} px" in COPY_RULE
    assert "fercore.metrics.copies" in COPY_RULE and "24 bits" not in COPY_RULE
    tones = re.search(r"re-toned by up to (\d+) %", COPY_RULE)
    assert tones and f"+-{tones.group(1)} % brightness or contrast change" in " ".join(copies.__doc__.split())
