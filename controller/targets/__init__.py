"""Data-plane targets behind one interface (see base.Target)."""
from controller.targets.base import Deployment, QueueingTarget, Target

__all__ = ["Deployment", "QueueingTarget", "Target", "make_target"]


def make_target(kind: str, scope, records) -> Target:
    from controller.errors import TargetError
    if kind == "xdp":
        from controller.targets.xdp import XdpTarget
        return XdpTarget(scope, records)
    if kind == "bmv2":
        from controller.targets.bmv2 import Bmv2Target
        return Bmv2Target(scope, records)
    raise TargetError(f"unknown target '{kind}'", hint="targets: xdp, bmv2")
