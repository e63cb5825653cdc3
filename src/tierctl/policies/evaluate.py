"""Which policy and rule decide an object, and what they want. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from tierctl.model import ObjectSnapshot, Placement
from tierctl.policies.expr import Facts
from tierctl.policies.globs import selected
from tierctl.policies.model import Config, Policy, Rule


@dataclass(frozen=True)
class Decision:
    policy: Policy
    rule: Rule
    facts: Facts

    @property
    def delete(self) -> bool:
        return self.rule.delete

    @property
    def desired(self) -> tuple[str, ...]:
        return self.rule.place or ()

    def reason(self) -> str:
        outcome = "delete" if self.delete else f"place [{', '.join(self.desired)}]"
        return f"policy {self.policy.name!r} {self.rule.describe()} -> {outcome}"


def current_version(placements: tuple[Placement, ...], tier_order: dict[str, int]) -> Placement:
    """The placement holding the newest content: latest mtime, then larger size, then the
    tier declared first. Placements with other content are stale copies of the object."""
    return min(placements, key=lambda p: (-p.mtime, -p.size, tier_order.get(p.tier, 1 << 30)))


def facts_for(version: Placement, now: float) -> Facts:
    return Facts(age=max(0.0, now - version.mtime), size=version.size)


def decide(config: Config, obj: ObjectSnapshot, version: Placement, now: float) -> Decision | None:
    """The first rule, of the first policy of the object's dataset that selects it, whose
    condition holds; None when nothing matches (the object is then left alone)."""
    prefix = config.datasets[obj.dataset].prefix
    relative = obj.key[len(prefix) :]
    facts = facts_for(version, now)
    for policy in config.policies_for(obj.dataset):
        if not selected(relative, policy.include, policy.exclude):
            continue
        for rule in policy.rules:
            if rule.condition.evaluate(facts):
                return Decision(policy, rule, facts)
    return None
