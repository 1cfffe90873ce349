"""The status page at / in a real headless browser (Debian's chromium through chromedriver and
selenium), against a real `innet api` process over a real Mininet line3 testbed: it draws
the testbed's nodes and links, lists the deployed service with its path and the top flows
of its cms instances, and the load of the links it shows rises while iperf3 runs across.
The page gets its token from the URL fragment; without one it asks for it.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from controller.api.app import STATIC_DIR
from controller.api.auth import read_token, token_path
from controller.topology import load_topology
from testbed import processes
from apiserver import running_api

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parent.parent
DESCRIPTOR = REPO / "nsds" / "heavy-hitters-sol006.yaml"
SERVICE = "heavy-hitters-ns"
TOPO = load_topology("line3")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
GRAPH_LIBRARY = Path(STATIC_DIR) / "node_modules" / "cytoscape" / "dist" / "cytoscape.esm.min.mjs"

if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no headless browser: install Debian's chromium and chromium-driver (make setup does)",
                allow_module_level=True)
if not GRAPH_LIBRARY.exists():
    pytest.skip(f"the page's graph library is not installed ({GRAPH_LIBRARY}): make setup installs it from npm",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
from selenium.webdriver.common.by import By   # noqa: E402  (after the skips that explain its absence)
from selenium.webdriver.support.ui import WebDriverWait   # noqa: E402


@pytest.fixture(scope="module")
def api(line3):
    """The API's URL and an httpx client with its token."""
    with running_api(line3.controller.scope.name) as url:
        token = read_token(token_path(line3.controller.scope))
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            yield url, token, client


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def rows(driver, table: str) -> list[list[str]]:
    """The table's cells as shown, read in one script: the page redraws its tables every 2 s, so
    elements found one call earlier may be gone ("stale") by the next."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(tr => [...tr.cells].map(td => td.innerText.trim()))",
        f"#{table} tbody tr")


def link_rate(driver, link: str, direction: int) -> tuple[float, str]:
    """The a->b (0) or b->a (1) rate the page shows for `link` (e.g. 'r1-r2'): its number and text."""
    bps, text = driver.execute_script(
        "const td = document.querySelectorAll(arguments[0])[arguments[1]]; return [td.dataset.bps, td.innerText.trim()]",
        f'#links tr[data-link="{link}"] td.rate', direction)
    return float(bps), text


def test_the_page_shows_the_testbed_its_service_flows_and_link_load(api, line3, browser):
    url, token, client = api
    deployed = client.post("/services", content=DESCRIPTOR.read_bytes(), headers={"Content-Type": "application/yaml"})
    assert deployed.status_code == 200, deployed.text
    try:
        browser.get(f"{url}/#token={token}")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: len(rows(d, "links")) == 4 and rows(d, "services")[0][0] == SERVICE
                   and d.execute_script("return window.innetGraph !== undefined"))
        assert "token" not in browser.current_url, "the token leaves the address bar"
        assert browser.find_element(By.ID, "problem").is_displayed() is False

        assert sorted(r[0] for r in rows(browser, "nodes")) == sorted(TOPO.nodes)
        assert {r[0]: r[1] for r in rows(browser, "nodes")} == {n.name: n.role for n in TOPO.nodes.values()}
        drawn_nodes = browser.execute_script("return window.innetGraph.nodes().map(n => n.id()).sort()")
        drawn_links = browser.execute_script(
            "return window.innetGraph.edges().map(e => [e.source().id(), e.target().id()])")
        assert drawn_nodes == sorted(TOPO.nodes)
        assert sorted(map(tuple, drawn_links)) == sorted((link.a.node, link.b.node) for link in TOPO.links)
        assert browser.execute_script("return window.innetGraph.nodes('.service').map(n => n.id()).sort()") == \
            ["r1", "r2", "r3"], "the routers the service crosses are marked"
        assert [r[0] for r in rows(browser, "links")] == [f"{link.a.node} – {link.b.node} ({link.a.name} – "
                                                          f"{link.b.name})" for link in TOPO.links]

        paths = {r[1]: r for r in rows(browser, "services")}
        assert paths["h1-to-h2"][3] == f"r1 [{SERVICE}--sketch] → r2 [{SERVICE}--hh] → r3 [{SERVICE}--tail]"
        assert set(paths) == {"h1-to-h2", "h2-to-h1"}
        spis = {p["graph"]: str(p["spi"]) for p in deployed.json()["paths"]}
        assert {graph: r[2] for graph, r in paths.items()} == spis
        r1_instances = next(r[3] for r in rows(browser, "nodes") if r[0] == "r1")
        assert "nfrouter" in r1_instances and f"{SERVICE}--sketch" in r1_instances

        idle, idle_text = link_rate(browser, "r1-r2", 0)
        assert idle < 1e6, f"no traffic yet, the page shows {idle_text}"
        h1, h2 = line3.host("h1"), line3.host("h2")
        server = h2.popen(["iperf3", "-s", "-1"])
        time.sleep(0.5)
        client_proc = h1.popen(["iperf3", "-c", str(TOPO.nodes["h2"].interfaces[0].ipv4.ip), "-t", "8", "-b", "20M"])
        try:
            wait.until(lambda d: link_rate(d, "r1-r2", 0)[0] > 10e6 and link_rate(d, "r2-r3", 0)[0] > 10e6)
            busy, busy_text = link_rate(browser, "r1-r2", 0)
            assert busy_text != idle_text and busy_text.endswith("Mbit/s"), busy_text
            assert busy < 40e6, "iperf3 sends 20 Mbit/s"
            assert link_rate(browser, "r1-r2", 1)[0] < busy / 5, "the acknowledgements are a fraction of it"
            h2_ip = str(TOPO.nodes["h2"].interfaces[0].ipv4.ip)
            wait.until(lambda d: any(f"-> {h2_ip}:5201 tcp" in text for text in d.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(td => td.innerText)",
                f'#flows [data-instance="r1/{SERVICE}--sketch"] td')))
        finally:
            processes.end(client_proc)
            processes.end(server)
        wait.until(lambda d: link_rate(d, "r1-r2", 0)[0] < 1e6)   # the load falls back when the traffic ends
    finally:
        client.delete(f"/services/{SERVICE}")


def test_without_a_token_the_page_asks_for_it_and_says_when_it_is_wrong(api, browser):
    url, token, _ = api
    browser.get(f"{url}/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    assert not browser.find_element(By.ID, "status").is_displayed()
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait.until(lambda d: "refused that token" in d.find_element(By.ID, "login-why").text)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait.until(lambda d: d.find_element(By.ID, "status").is_displayed() and len(rows(d, "links")) == 4)


def test_the_page_lists_the_path_overrides_and_the_latest_decision(api, line3, browser):
    from controller.stats import Flow as FlowKey
    from controller.store import PathOverrideRow
    from controller.te.live import LiveNetwork, flow_key
    from controller.te.loop import clear_overrides

    url, token, _ = api
    ctl = line3.controller
    flow = FlowKey.of(str(TOPO.nodes["h1"].interfaces[0].ipv4.ip), str(TOPO.nodes["h2"].interfaces[0].ipv4.ip),
                      40001, 5201, 6)
    path = ("h1", "r1", "r2", "r3", "h2")
    pins = LiveNetwork(TOPO, ctl.store).pin_entries(flow, path)
    ctl.store.put_path_override(PathOverrideRow(flow_key(flow), path, [p.as_doc() for p in pins], [], time.time()))
    for pin in pins:
        ctl.write(pin.node, "nfrouter", [pin.entry])
    ctl.store.log_decision("epoch 7: 1 elephant(s); pinned for the page test", {"moves": []})
    try:
        browser.get(f"{url}/#token={token}")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: rows(d, "paths") and rows(d, "paths")[0][0] != "every flow takes its routed path")
        assert rows(browser, "paths")[0][:2] == [str(flow), "h1 → r1 → r2 → r3 → h2"]
        assert "pinned for the page test" in browser.find_element(By.ID, "last-decision").text
    finally:
        clear_overrides(ctl)
    wait.until(lambda d: rows(d, "paths") == [["every flow takes its routed path"]])
