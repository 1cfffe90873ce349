"""Logical entries are checked against their table before any target sees them."""
import pytest

from controller.catalog import get_nf
from controller.errors import EntryError
from controller.tables import TableEntry, normalize

ROUTES = get_nf("nfrouter").table("ipv4_routes")


def fwd(prefix="10.0.0.0/8", mac="02:00:00:00:00:01", port="eth0"):
    return TableEntry("ipv4_routes", {"dst_addr": prefix}, "forward",
                      {"egress_port": port, "dst_mac": mac, "src_mac": "02:00:00:00:00:02"})


def test_canonical_form():
    e = normalize(ROUTES, fwd(mac="02-00-00-00-00-AB"))
    assert e.params["dst_mac"] == "02:00:00:00:00:ab"
    assert e.match["dst_addr"] == "10.0.0.0/8"


@pytest.mark.parametrize("prefix, msg", [("10.0.0.1/8", "not a valid ipv4 prefix"),
                                         ("10.0.0.0/33", "not a valid ipv4 prefix"),
                                         ("2001:db8::/32", "is IPv6"), ("banana", "not a valid")])
def test_bad_prefix(prefix, msg):
    with pytest.raises(EntryError, match=msg):
        normalize(ROUTES, fwd(prefix=prefix))


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "zz:00:00:00:00:01", "", None])
def test_bad_mac(mac):
    with pytest.raises(EntryError, match="dst_mac.*not a MAC address"):
        normalize(ROUTES, fwd(mac=mac))


def test_unknown_action_and_params():
    with pytest.raises(EntryError, match="unknown action 'drop'"):
        normalize(ROUTES, TableEntry("ipv4_routes", {"dst_addr": "10.0.0.0/8"}, "drop", {}))
    with pytest.raises(EntryError, match="parameters"):
        normalize(ROUTES, TableEntry("ipv4_routes", {"dst_addr": "10.0.0.0/8"}, "local", {"x": 1}))
    with pytest.raises(EntryError, match="missing \\['dst_addr'\\]"):
        normalize(ROUTES, TableEntry("ipv4_routes", {"dst": "10.0.0.0/8"}, "local", {}))
