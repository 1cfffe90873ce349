"""Network service descriptors: three formats in, one validated Service out.

    service = load_descriptor("nsds/ping-demo.json", bind={"src": "h1", "dst": "h2"})
    service = resolve_endpoints(service, load_topology("line3"))   # hosts and addresses filled in

Formats (read from the document): the Smart-Orchestrator deployment descriptor (JSON), DESIRE6G
local NSDs (lnsd:), ETSI SOL006 NSDs (nsd: nsd: [...]). Every error is an NSDError naming the
place in the document and what is wrong there.
"""
from controller.nsd.binding import parse_bindings, resolve_endpoints
from controller.nsd.errors import NSDError
from controller.nsd.model import Classifier, Endpoint, ForwardingGraph, NFInstance, Service
from controller.nsd.parse import load_descriptor, parse_descriptor

__all__ = ["Classifier", "Endpoint", "ForwardingGraph", "NFInstance", "NSDError", "Service", "load_descriptor",
           "parse_bindings", "parse_descriptor", "resolve_endpoints"]
