"""Testbeds and chain services for the tests' fixtures: up for the fixture's life, then gone."""
from contextlib import contextmanager

import pytest

from controller.p4 import switch


@contextmanager
def running_testbed(topology, **options):
    """A Mininet testbed of `topology` (testbed.net.Testbed options as keywords), stopped after;
    the test is skipped with the reason when a router wants BMv2 and there is none here."""
    from testbed.net import Testbed

    if any(r.target == "bmv2" for r in topology.routers) and switch.unavailable():
        pytest.skip(switch.unavailable())
    tb = Testbed(topology, progress=lambda msg: None, **options).start()
    try:
        yield tb
    finally:
        tb.stop()


@contextmanager
def chain_service(tb, *services: str):
    """The testbed's ChainService; the services named are deleted after, wherever the test left them."""
    from controller.sfc import ChainService

    chains = ChainService(tb.controller)
    try:
        yield chains
    finally:
        for name in services:
            chains.delete(name)
