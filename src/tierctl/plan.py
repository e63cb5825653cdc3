"""The plan: data, reviewable, serializable, applied exactly.

A saved plan carries its format version, the config fingerprint it was made for, the
clock it was made with, the index it was made from and when it was written, and a
checksum over its content; :meth:`Plan.load` refuses a plan that was altered or written by
another format version (``api.load_plan`` also one made for another config or index, or
too long ago).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tierctl.errors import PlanFileError

FORMAT = "tierctl-plan"
FORMAT_VERSION = 1
OPS = ("copy", "verify", "transition", "restore", "delete")


@dataclass(frozen=True)
class Expect:
    """The state a placement must be in for an action to touch it."""

    size: int
    mtime: float


@dataclass(frozen=True)
class Action:
    """One step on one placement.

    ``size``/``mtime``/``checksum`` describe the object's current content (the version
    every placement should hold). Preconditions, checked live when the action runs:
    - copy: ``source`` holds that content; ``target`` is absent, or is ``expect``
      (a stale copy the plan overwrites).
    - verify: ``source`` and ``target`` both hold that content (then their bytes are
      compared).
    - transition: the object on ``source``'s store holds that content; it changes to
      ``storage_class`` in place and its placement becomes ``target`` (same URL).
    - restore: ``target`` holds that content in an archive class; a temporary readable
      copy is requested for ``restore_days`` at ``restore_speed``. Copies wait for it.
    - delete: ``target`` is ``expect`` (or the content when ``expect`` is None), and,
      unless ``explicit`` (a delete rule), every tier in ``keep`` holds the content.
    ``requires``: ids of actions that must have succeeded first.
    """

    id: int
    op: str
    dataset: str
    key: str
    target: str
    size: int
    mtime: float
    reason: str
    source: str | None = None
    checksum: str | None = None
    expect: Expect | None = None
    keep: tuple[str, ...] = ()
    requires: tuple[int, ...] = ()
    explicit: bool = False
    policy: str = ""
    rule: int | None = None
    storage_class: str | None = None
    restore_days: int | None = None
    restore_speed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["keep"] = list(self.keep)
        doc["requires"] = list(self.requires)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Action:
        doc = dict(doc)
        expect = doc.pop("expect", None)
        return cls(
            **{**doc, "keep": tuple(doc.get("keep", ())), "requires": tuple(doc.get("requires", ()))},
            expect=Expect(**expect) if expect else None,
        )


@dataclass
class Plan:
    created_at: float  # the clock the planner was given
    config_path: str
    config_fingerprint: str
    actions: list[Action] = field(default_factory=list)
    objects_considered: int = 0
    # Set by the api when the plan is made (the planner is pure): the index it was made
    # from, and the wall clock then (``created_at`` may be a chosen ``--as-of`` instant).
    index_path: str | None = None
    written_at: float | None = None
    # Set by the api: monthly storage before/after, the one-time cost and what the cost guard
    # skipped (cost.PlanCost.to_dict()); plain data so a saved plan keeps it.
    cost: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return not self.actions

    def moves(self) -> set[int]:
        """Ids of deletes that, with a copy out of the same tier, make up a move."""
        copies_from: dict[tuple[str, str], set[str]] = defaultdict(set)
        for a in self.actions:
            if a.op == "copy" and a.source:
                copies_from[(a.dataset, a.key)].add(a.source)
        return {
            a.id
            for a in self.actions
            if a.op == "delete" and a.target in copies_from.get((a.dataset, a.key), ())
        }

    def summary(self) -> list[dict[str, Any]]:
        """Objects and bytes per (kind, source, target), kind being copy/move/verify/delete."""
        move_deletes = self.moves()
        moved_from = {(a.dataset, a.key, a.target) for a in self.actions if a.id in move_deletes}
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for a in self.actions:
            if a.id in move_deletes:
                continue
            kind = a.op
            if a.op == "copy" and (a.dataset, a.key, a.source) in moved_from:
                kind = "move"
            row = groups[(kind, a.source or "", a.target)]
            row[0] += 1
            row[1] += a.size
        order = {"restore": 0, "copy": 1, "move": 2, "transition": 3, "verify": 4, "delete": 5}
        return [
            {"action": kind, "source": source or None, "target": target, "objects": n, "bytes": b}
            for (kind, source, target), (n, b) in sorted(
                groups.items(), key=lambda kv: (order[kv[0][0]], kv[0])
            )
        ]

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        body = {
            "created_at": self.created_at,
            "config_path": self.config_path,
            "config_fingerprint": self.config_fingerprint,
            "objects_considered": self.objects_considered,
            "actions": [a.to_dict() for a in self.actions],
        }
        if self.index_path is not None:
            body["index_path"] = self.index_path
        if self.written_at is not None:
            body["written_at"] = self.written_at
        if self.cost is not None:
            body["cost"] = self.cost
        return {"format": FORMAT, "version": FORMAT_VERSION, "checksum": _checksum(body), **body}

    def save(self, path: str) -> None:
        """Write atomically (temp + rename) so a reader never sees half a plan."""
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Plan:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise PlanFileError(
                f"plan file not found: {path}", hint="write one with `tierctl plan -o FILE`"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlanFileError(f"{path}: not a readable plan ({exc})") from None
        return cls.from_dict(doc, path)

    @classmethod
    def from_dict(cls, doc: Any, path: str = "<plan>") -> Plan:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PlanFileError(f"{path}: not a tierctl plan")
        if doc.get("version") != FORMAT_VERSION:
            raise PlanFileError(
                f"{path}: plan format version {doc.get('version')!r}, this tierctl reads {FORMAT_VERSION}",
                hint="make the plan again with this tierctl",
            )
        body = {k: v for k, v in doc.items() if k not in ("format", "version", "checksum")}
        if doc.get("checksum") != _checksum(body):
            raise PlanFileError(
                f"{path}: checksum mismatch: the plan was altered after it was written",
                hint="make a fresh plan with `tierctl plan -o FILE`",
            )
        try:
            actions = [Action.from_dict(a) for a in body["actions"]]
            return cls(
                created_at=float(body["created_at"]),
                config_path=str(body["config_path"]),
                config_fingerprint=str(body["config_fingerprint"]),
                actions=actions,
                objects_considered=int(body.get("objects_considered", 0)),
                index_path=None if body.get("index_path") is None else str(body["index_path"]),
                written_at=None if body.get("written_at") is None else float(body["written_at"]),
                cost=dict(body["cost"]) if isinstance(body.get("cost"), dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanFileError(f"{path}: malformed plan ({exc})") from None


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def group_by_object(actions: Iterable[Action]) -> list[list[Action]]:
    """Actions of one object stay together, in plan order (the planner emits them so)."""
    groups: dict[tuple[str, str], list[Action]] = {}
    for a in actions:
        groups.setdefault((a.dataset, a.key), []).append(a)
    return list(groups.values())
