"""Traffic engineering: candidate paths, the digital twin and path allocators (issue 11's model).

    network.py     nodes, full-duplex links with a capacity and a technology, flows, instances
    paths.py       candidate paths: k shortest, PHaul's least common
    twin.py        each flow's rate under an allocation (max-min, or PHaul's water-filling), figures
    allocators.py  random, subset-sum, global-first-fit, brute-force, local-search (innet's best)
    generators.py  PHaul's IAB model, leaf-spine and fat-tree fabrics, innet's topologies
    instance_format.py  the JSON instance format

A closed loop calls `allocate(network, flows)` and reads `Allocation.routes()`.
"""
from controller.te.allocators import Allocation, allocate
from controller.te.errors import TeError
from controller.te.network import Flow, Link, Network

__all__ = ["Allocation", "Flow", "Link", "Network", "TeError", "allocate"]
