"""A/B variants of a campaign step: stable assignment and a significance test for the winner.

Assignment is a hash, not a random draw, so a contact sees the same variant on every replay of
the workflow, after a worker restart, and when a step is retried; it needs no stored state. The
winner is decided with a two-proportion z-test (normal approximation), which is the textbook test
for comparing reply or meeting rates and needs nothing beyond ``math``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

__all__ = ["assign_variant", "pick_winner", "two_proportion_test"]


def assign_variant(
    campaign_id: str, contact_email: str, step_index: int, variant_names: Sequence[str]
) -> str:
    """The variant a contact gets for a step: the same answer every time, spread uniformly.

    SHA-256 of campaign, normalised e-mail (trimmed, lower-case: the same person must not get two
    variants because an import changed the case) and step index, read as a 64-bit integer, modulo
    the number of variants; the modulo bias at 64 bits is far below anything measurable. Including
    the step index re-draws the split per step, so step 2's test is not confounded with step 1's.
    The order of ``variant_names`` matters, so keep it as the campaign defines it.
    """
    if not variant_names:
        raise ValueError("a step needs at least one variant")
    key = "\x1f".join((campaign_id, contact_email.strip().lower(), str(step_index)))
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return variant_names[int.from_bytes(digest[:8], "big") % len(variant_names)]


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError("need 0 <= successes <= n")


def two_proportion_test(success_a: int, n_a: int, success_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z-test: ``(z, two-sided p-value)``; z > 0 when A's rate is higher.

    Degenerate inputs (an empty arm, or both arms at 0 % or both at 100 %) carry no evidence of a
    difference, so they give ``(0.0, 1.0)`` instead of dividing by zero.
    """
    _check_counts(success_a, n_a)
    _check_counts(success_b, n_b)
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    p_a = success_a / n_a
    p_b = success_b / n_b
    pooled = (success_a + success_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:
        return 0.0, 1.0
    z = (p_a - p_b) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def pick_winner(
    stats: Mapping[str, tuple[int, int]], *, min_sample: int = 100, alpha: float = 0.05
) -> str | None:
    """The variant whose rate is significantly higher than every other's, or None.

    ``stats`` maps variant name to ``(successes, sends)``. No winner until every variant has at
    least ``min_sample`` sends: early results swing widely and stopping on the first significant
    peek inflates false positives. With more than two variants the best one is compared to each
    other one at ``alpha / (k - 1)`` (Bonferroni), so adding variants does not make a false
    winner more likely. A tie for the best rate has no winner.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be between 0 and 1")
    if len(stats) < 2:
        return None
    for successes, n in stats.values():
        _check_counts(successes, n)
    if any(n < min_sample or n == 0 for _, n in stats.values()):
        return None
    ranked = sorted(stats.items(), key=lambda item: item[1][0] / item[1][1], reverse=True)
    best_name, (best_s, best_n) = ranked[0]
    threshold = alpha / (len(stats) - 1)
    for _name, (s, n) in ranked[1:]:
        z, p = two_proportion_test(best_s, best_n, s, n)
        if z <= 0.0 or p >= threshold:
            return None
    return best_name
