"""What a job spends: wall and CPU seconds and optimizer steps, its own and its shared artifacts'.

Every job runs in its own process, so the runner measures a phase (``fit``, ``predict``) as the
wall clock, the process's CPU time (every thread) and the optimizer steps taken meanwhile; the
steps are counted by one global PyTorch hook, so no method has to count its own.

A shared artifact (the BMN that B-I, EffPrompt and the oracles reuse, cached per split) is built
by whichever job asks first. Its builder measures it and stores the cost beside it; every job that
uses it is charged that cost (:meth:`Ledger.charge`), so a method's training cost is the same
whether it built the artifact or found it cached:

    phase total = the phase as measured + every artifact it used that another job built
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field

_STEPS = [0]  # optimizer steps taken in this process (the hook below counts them)
_HOOKED = [False]


def _count_steps() -> int:
    if not _HOOKED[0]:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(lambda *_: _STEPS.__setitem__(0, _STEPS[0] + 1))
        _HOOKED[0] = True
    return _STEPS[0]


@dataclass
class Cost:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    steps: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.wall_s + other.wall_s, self.cpu_s + other.cpu_s, self.steps + other.steps)

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(self.wall_s - other.wall_s, self.cpu_s - other.cpu_s, self.steps - other.steps)


@contextlib.contextmanager
def measure():
    """``with measure() as cost:`` fills ``cost`` with what the block spent."""
    cost = Cost()
    steps, wall, cpu = _count_steps(), time.perf_counter(), time.process_time()
    try:
        yield cost
    finally:
        cost.wall_s = time.perf_counter() - wall
        cost.cpu_s = time.process_time() - cpu
        cost.steps = _count_steps() - steps


@dataclass
class Ledger:
    """One job's account: measured phases and charged shared artifacts."""

    phases: dict[str, Cost] = field(default_factory=dict)
    shared: dict[str, dict] = field(default_factory=dict)  # name -> cost, phase, built here or not
    training: dict[str, dict] = field(default_factory=dict)  # model -> how it was trained (steps, epochs, why it stopped)
    _phase: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str):
        self._phase = name
        try:
            with measure() as cost:
                yield cost
        finally:
            self.phases[name] = cost
            self._phase = None

    def charge(self, name: str, cost: Cost, built_here: bool) -> None:
        """A shared artifact this job uses (``built_here``: this job built it, inside the current phase).
        Charged once, in the phase that first used it."""
        self.shared.setdefault(name, {**asdict(cost), "phase": self._phase, "built_here": built_here})

    def trained(self, name: str, record: dict) -> None:
        """How model ``name`` was trained (methods.modules.convergence.train's record), for the job record."""
        self.training[name] = record

    def total(self, phase: str) -> Cost:
        """The phase as measured, with every shared artifact it used at its full cost, once."""
        total = self.phases.get(phase, Cost())
        for item in self.shared.values():
            if item["phase"] == phase and not item["built_here"]:
                total = total + Cost(item["wall_s"], item["cpu_s"], item["steps"])
        return total

    def record(self) -> dict:
        """For the job record: each phase measured, each shared artifact, and the totals per phase."""
        return {"phases": {k: asdict(v) for k, v in self.phases.items()}, "shared": self.shared,
                "total": {k: asdict(self.total(k)) for k in self.phases}, "training": self.training}
