"""The web dashboard (issue #19) in a real browser: Debian's Chromium driven
by Playwright, against a real coordinator (`[dashboard] listen`) and a real
worker running steps in runc.

One coordinator and one worker serve the whole module; the tests run in
file order and some read what earlier ones built (the cache build's cache
and the failed build). Needs root (runc), /usr/bin/chromium and the
playwright package (deploy/dev/setup.sh, deploy/dev/helm-tools.sh), and the
rbk binary (RBK_BIN).

Screenshots of every page go to a temporary directory, or to docs/dashboard/
with RBK_DASHBOARD_SCREENSHOTS=1 (see docs/dashboard.md).
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from playwright import sync_api as playwright_api

from rbk_under_test import rbk_binary

REPO = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN_A = "dash-tenant-a-0123456789abcdef"
TOKEN_B = "dash-tenant-b-0123456789abcdef"
WORKER_TOKEN = "dash-worker-0123456789abcdef"
OPERATOR_TOKEN = "dash-operator-0123456789abcdef"
# The token file's name for TOKEN_A: shown as who submitted its builds.
TOKEN_A_NAME = "alice-ci"
CACHE_ID = "dash-pip-cache"
# The planner names a Dockerfile's cache ids under "farm/".
CACHE_KEY = "farm/" + CACHE_ID


def shots_dir(tmp: pathlib.Path) -> pathlib.Path:
    d = REPO / "docs" / "dashboard" if os.environ.get("RBK_DASHBOARD_SCREENSHOTS") == "1" else tmp / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


def wait_line(proc: subprocess.Popen, log: pathlib.Path, pattern: str, what: str, timeout: float = 30) -> re.Match:
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(pattern, log.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"{what} did not print {pattern!r} within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def busybox() -> str:
    path = os.environ.get("RBK_TEST_BIN_BUSYBOX") or shutil.which("busybox")
    assert path, "busybox-static is not installed (deploy/dev/setup.sh)"
    return path


def context(root: pathlib.Path, name: str, dockerfile: str) -> pathlib.Path:
    ctx = root / name
    ctx.mkdir(parents=True)
    shutil.copy(busybox(), ctx / "busybox")
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


BASE = 'FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the worker runs steps in runc, which needs root")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: deploy/dev/setup.sh installs Debian's chromium")
    root = tmp_path_factory.mktemp("dashboard")
    (root / "tokens.toml").write_text(
        f'[tenants]\n"{TOKEN_A}" = {{ tenant = "team-a", name = "{TOKEN_A_NAME}" }}\n"{TOKEN_B}" = "team-b"\n'
        f'[workers]\n"{WORKER_TOKEN}" = "pool"\n[pools.pool]\ntenants = ["team-a", "team-b"]\nlabels = {{ zone = "test" }}\n')
    (root / "admin-token").write_text(OPERATOR_TOKEN)
    (root / "coordinator.toml").write_text(
        'listen = "127.0.0.1:0"\ntoken_file = "tokens.toml"\n[store]\ndir = "store"\n'
        '[history]\nbuilds = 50\nlog_bytes_per_build = 33554432\n'
        '[scheduler]\nmax_step_log_bytes = 1048576\n'
        '[admin]\ntoken_file = "admin-token"\n[dashboard]\nlisten = "127.0.0.1:0"\n')
    procs = []
    coordinator_log = root / "coordinator.log"
    coordinator = subprocess.Popen([rbk_binary(), "coordinator", "--config", root / "coordinator.toml"],
                                   stdout=coordinator_log.open("w"), stderr=subprocess.STDOUT)
    procs.append(coordinator)
    try:
        api = wait_line(coordinator, coordinator_log, r"rbk coordinator listening on (\S+)", "the coordinator").group(1)
        dashboard = wait_line(coordinator, coordinator_log, r"rbk dashboard listening on (\S+)", "the coordinator").group(1)
        worker_log = root / "worker.log"
        worker = subprocess.Popen(
            [rbk_binary(), "worker", "--coordinator", f"http://{api}", "--id", "dash-worker",
             "--state-dir", root / "worker", "--max-parallel", "2", "--disk-limit", "3GiB", "--max-layer-bytes", "1GiB"],
            env=dict(os.environ, RBK_WORKER_TOKEN=WORKER_TOKEN), stdout=worker_log.open("w"), stderr=subprocess.STDOUT)
        procs.append(worker)
        time.sleep(1)
        assert worker.poll() is None, worker_log.read_text()
        yield {"api": f"http://{api}", "dashboard": dashboard, "root": root, "shots": shots_dir(root), "builds": {}}
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def submit(farm, token: str, ctx: pathlib.Path, wait: bool = True):
    env = dict(os.environ, RBK_COORDINATOR=farm["api"], RBK_TOKEN=token)
    args = [rbk_binary(), "submit", "--progress=plain", ctx]
    if wait:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rbk_cache_ls(farm, token: str) -> str:
    env = dict(os.environ, RBK_COORDINATOR=farm["api"], RBK_TOKEN=token)
    done = subprocess.run([rbk_binary(), "cache", "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def browser(farm):
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def signed_in(browser, farm, token: str):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(farm["dashboard"] + "/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    return page


def get(url: str, cookie: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def session_cookie(page) -> str:
    c = [c for c in page.context.cookies() if c["name"] == "rbk_session"]
    assert c, "no session cookie"
    return f"rbk_session={c[0]['value']}"


def test_signing_in_with_a_token_sets_an_http_only_strict_cookie_and_a_bad_token_is_refused(browser, farm):
    page = browser.new_context().new_page()
    page.goto(farm["dashboard"] + "/builds")
    assert page.url.endswith("/login"), "an anonymous visitor is sent to sign in"
    page.screenshot(path=farm["shots"] / "login.png")
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert "unknown token" in page.get_by_role("alert").inner_text()
    page.get_by_label("Token").fill(TOKEN_A)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Builds").wait_for()
    [cookie] = [c for c in page.context.cookies() if c["name"] == "rbk_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == "", "scripts cannot read the session"


def test_a_submitted_build_appears_streams_its_log_and_fills_its_timeline(browser, farm):
    ctx = context(farm["root"], "cache-build", BASE + (
        "FROM base\n"
        f"RUN --mount=type=cache,id={CACHE_ID},target=/cache \\\n"
        "    sh -c 'for i in $(seq 1 25); do printf \"\\033[32mwarm line %s\\033[0m\\n\" $i; sleep 0.2; done; date >> /cache/runs'\n"))
    page = signed_in(browser, farm, TOKEN_A)
    page.get_by_role("heading", name="Builds").wait_for()
    proc = submit(farm, TOKEN_A, ctx, wait=False)
    try:
        # The row appears without a reload (the page refreshes its rows).
        row = page.locator("tr.build-row").first
        row.wait_for(timeout=60_000)
        page.screenshot(path=farm["shots"] / "builds.png")
        row.get_by_role("link").click()
        page.get_by_role("heading", name=re.compile("^Build ")).wait_for()
        farm["builds"]["cache"] = page.url.rsplit("/", 1)[1]
        # Lines arrive while the build still runs: streamed, not loaded at the end.
        page.wait_for_function("() => window.rbkLog && window.rbkLog.lines > 0 && !window.rbkLog.ended", timeout=120_000)
        page.locator(".step-row .seg.run").first.wait_for(timeout=60_000)
        page.screenshot(path=farm["shots"] / "build-running.png")
        page.wait_for_function("() => window.rbkLog.ended", timeout=180_000)
        assert proc.wait(timeout=120) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert page.locator("#build-state").inner_text() == "succeeded"
    # Every step has its bar; the cache step's run segment is drawn.
    assert page.locator(".step-row").count() == 3
    assert page.locator(".step-row.state-done .seg.run").count() >= 2
    assert CACHE_ID in page.locator("#timeline").inner_text()
    # The cache step's bar is split into the phases its worker measured,
    # its cache commit drawn after it (captured while the build went on).
    cache_row = page.locator(".step-row", has_text=CACHE_ID)
    for phase in ["restore", "run", "upload", "commit.late"]:
        assert cache_row.locator(f".bar .seg.{phase}").count() == 1, (phase, cache_row.inner_html())
    info = cache_row.locator(".info").inner_text()
    assert "commit after the step" in info and "stored " in info, info
    # ANSI colours are rendered as colours, not escape codes.
    assert page.locator("#log .fg-32").count() == 25
    assert "\x1b" not in page.locator("#log").inner_text()
    assert "warm line 25" in page.locator("#log").inner_text()
    # The builds page says who submitted it (the token's name, never the
    # token) and what its steps stored.
    page.goto(farm["dashboard"] + "/builds")
    row = page.locator(f"tr.build-row:has(a[href='/builds/{farm['builds']['cache']}'])")
    assert row.locator("td.submitter").inner_text() == TOKEN_A_NAME
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB)", row.locator("td.committed").inner_text()), row.inner_text()
    assert TOKEN_A not in page.content()
    page.goto(farm["dashboard"] + f"/builds/{farm['builds']['cache']}")
    page.wait_for_function("() => window.rbkLog && window.rbkLog.ended", timeout=60_000)
    page.screenshot(path=farm["shots"] / "build.png", full_page=True)


def test_a_failed_build_opens_at_its_error_with_the_dockerfile_line(browser, farm):
    ctx = context(farm["root"], "failing-build", BASE + "FROM base\nRUN echo preparing\nRUN echo 'about to fail' && exit 3\n")
    done = submit(farm, TOKEN_A, ctx)
    assert done.returncode != 0, "the build fails"
    page = signed_in(browser, farm, TOKEN_A)
    page.goto(farm["dashboard"] + "/builds?status=failed")
    page.locator("tr.build-row").first.get_by_role("link").click()
    farm["builds"]["failed"] = page.url.rsplit("/", 1)[1]
    error = page.locator("#error-box")
    error.wait_for()
    assert re.search(r"failed at \S*Dockerfile:6\b", error.inner_text()), error.inner_text()
    assert "exit 3" in error.inner_text()
    # The failing step is selected and its log is what the pane shows.
    assert page.locator("button.step[aria-pressed=true]").inner_text().endswith("exit 3")
    page.wait_for_function("() => window.rbkLog.ended")
    assert "about to fail" in page.locator("#log").inner_text()
    assert "preparing" not in page.locator("#log").inner_text()
    page.screenshot(path=farm["shots"] / "build-failed.png", full_page=True)


def test_a_tenant_sees_its_own_cache_and_builds_and_not_another_tenants(browser, farm):
    # The cache build again: every step an action-cache hit.
    again = submit(farm, TOKEN_A, farm["root"] / "cache-build")
    assert again.returncode == 0, again.stderr[-3000:]
    a = signed_in(browser, farm, TOKEN_A)
    a.goto(farm["dashboard"] + "/caches")
    row = a.locator(f"tr.cache-row[data-cache='{CACHE_KEY}']")
    assert row.count() == 1, a.locator("main").inner_text()
    # A chart of its generations' sizes (one generation so far), and the
    # tenant's action-cache hits and misses over time (the first builds ran
    # their steps: misses; the repeated build hit).
    assert row.locator("svg.gen-sizes .bar").count() == 1
    assert "generation 1:" in row.locator("svg.gen-sizes").inner_html()
    hit_miss = a.locator("#hit-miss figcaption").inner_text()
    hits, misses = map(int, re.search(r"(\d+) hits, (\d+) misses", hit_miss).groups())
    assert hits >= 1 and misses >= 1, hit_miss
    assert a.locator("#hit-miss svg rect.hit").count() >= 1 and a.locator("#hit-miss svg rect.miss").count() >= 1
    a.screenshot(path=farm["shots"] / "caches.png", full_page=True)
    a.goto(f"{farm['dashboard']}/caches/{urllib.parse.quote(CACHE_KEY, safe='')}")
    assert a.locator("svg.gen-sizes .bar").count() == 1
    a.screenshot(path=farm["shots"] / "cache.png", full_page=True)
    b = signed_in(browser, farm, TOKEN_B)
    b.goto(farm["dashboard"] + "/caches")
    assert b.locator("tr.cache-row").count() == 0
    assert CACHE_ID not in b.content()
    assert b.locator("svg.gen-sizes").count() == 0
    assert "0 hits, 0 misses" in b.locator("#hit-miss figcaption").inner_text(), "B's chart counts none of A's steps"
    b.goto(farm["dashboard"] + "/builds")
    assert b.locator("tr.build-row").count() == 0
    assert TOKEN_A_NAME not in b.content(), "B never sees the name of A's token"
    cookie = session_cookie(b)
    build = farm["builds"]["cache"]
    assert get(f"{farm['dashboard']}/builds/{build}", cookie) == 404
    assert get(f"{farm['dashboard']}/builds/{build}/events", cookie) == 404
    cache_url = f"{farm['dashboard']}/caches/{urllib.parse.quote(CACHE_KEY, safe='')}"
    assert get(cache_url, cookie) == 404
    assert get(cache_url, session_cookie(a)) == 200
    assert get(f"{farm['dashboard']}/builds/{build}", session_cookie(a)) == 200


def test_pruning_a_cache_asks_first_needs_the_csrf_token_and_rbk_cache_ls_agrees(browser, farm):
    assert CACHE_ID in rbk_cache_ls(farm, TOKEN_A)
    page = signed_in(browser, farm, TOKEN_A)
    page.goto(farm["dashboard"] + "/caches")
    # Without the session's CSRF token the prune is refused.
    refused = page.request.post(farm["dashboard"] + "/caches/prune", form={"csrf": "forged", "id": CACHE_KEY})
    assert refused.status == 403
    assert CACHE_ID in rbk_cache_ls(farm, TOKEN_A)
    # Dismissing the confirmation prunes nothing.
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name=f"Prune cache {CACHE_KEY}").click()
    assert CACHE_ID in rbk_cache_ls(farm, TOKEN_A)
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Prune cache {CACHE_KEY}").click()
    page.get_by_role("status").wait_for()
    assert "Pruned 1 head(s)" in page.get_by_role("status").inner_text()
    assert page.locator("tr.cache-row").count() == 0
    assert CACHE_ID not in rbk_cache_ls(farm, TOKEN_A)


def test_the_operator_sees_workers_and_the_cluster_and_tenants_do_not_see_the_cluster(browser, farm):
    op = signed_in(browser, farm, OPERATOR_TOKEN)
    op.get_by_role("heading", name="Workers").wait_for()
    assert "dash-worker" in op.locator("table.workers").inner_text()
    assert "zone=test" in op.locator("table.workers").inner_text()
    # Its disk against its limits, from its heartbeats (operators only).
    disk = op.locator("table.workers td.disk").first.inner_text()
    assert re.search(r"of 3\.0 GiB", disk) and re.search(r"layers .* of 1\.0 GiB", disk), disk
    op.screenshot(path=farm["shots"] / "workers.png", full_page=True)
    op.goto(farm["dashboard"] + "/cluster")
    assert "team-a" in op.locator("table.tenants").inner_text()
    op.screenshot(path=farm["shots"] / "cluster.png", full_page=True)
    a = signed_in(browser, farm, TOKEN_A)
    a.goto(farm["dashboard"] + "/workers")
    assert "dash-worker" in a.locator("table.workers").inner_text()
    assert a.locator("td.disk").count() == 0 and "of 3.0 GiB" not in a.content(), "disk use is for operators"
    assert get(farm["dashboard"] + "/cluster", session_cookie(a)) == 403
    assert get(farm["dashboard"] + "/builds", session_cookie(op)) == 403


def big_dockerfile(stages: int, steps_per_stage: int, lines: int) -> str:
    text = BASE
    for s in range(stages):
        text += f"FROM base AS s{s}\n"
        for i in range(steps_per_stage):
            # ~100-byte lines, some coloured.
            text += (f"RUN awk 'BEGIN {{ for (i = 0; i < {lines}; i++) printf \"stage {s} step {i} line %05d "
                     f"\\033[33m%s\\033[0m\\n\", i, \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789\" }}'\n")
    text += "FROM base\n" + "".join(f"COPY --from=s{s} /bin/busybox /s{s}\n" for s in range(stages))
    return text


def test_a_200_step_build_with_10_mb_of_log_stays_responsive(browser, farm):
    stages, per_stage, lines = 4, 49, 540  # 196 RUN steps + base + copies: 202 steps, ~10.5 MB of log
    ctx = context(farm["root"], "big-build", big_dockerfile(stages, per_stage, lines))
    started = time.time()
    done = submit(farm, TOKEN_A, ctx)
    assert done.returncode == 0, done.stderr[-3000:]
    build_s = time.time() - started
    page = signed_in(browser, farm, TOKEN_A)
    page.goto(farm["dashboard"] + "/builds")
    page.locator("tr.build-row").first.get_by_role("link").click()
    page.wait_for_function("() => window.rbkLog && window.rbkLog.ended", timeout=300_000)
    steps = page.locator(".step-row").count()
    assert steps >= 200
    total_lines = page.evaluate("window.rbkLog.lines")
    assert total_lines >= stages * per_stage * lines
    paint = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
    full = page.evaluate("window.rbkLog.fullLogMs")
    first_log = page.evaluate("window.rbkLog.firstLogMs")
    # Responsive with the whole log loaded: choosing one step redraws its log.
    t0 = time.time()
    page.locator("button.step").nth(10).click()
    page.wait_for_function("() => document.querySelectorAll('#log .line').length == 540")
    select_ms = (time.time() - t0) * 1000
    log_bytes = page.evaluate("window.rbkLog.lines")  # lines; bytes printed from the server side below
    print(f"\ndashboard 200-step build: {steps} steps, {total_lines} log lines (~{total_lines * 100 / 1e6:.1f} MB), "
          f"built in {build_s:.1f} s; first contentful paint {paint:.0f} ms, first log lines {first_log:.0f} ms, "
          f"full log {full:.0f} ms, selecting one step {select_ms:.0f} ms")
    assert log_bytes == total_lines
    page.screenshot(path=farm["shots"] / "build-200-steps.png")


def openssl(*args, cwd: pathlib.Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def make_test_ca(root: pathlib.Path) -> str:
    """A CA made for this test, and a server certificate it signs for
    127.0.0.1 (tls.crt, tls.key in `root`); returns the base64 SHA-256 of
    the certificate's public key, which the browser is told to trust."""
    root.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=rbk dashboard test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=root)
    openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=127.0.0.1", cwd=root)
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "tls.crt",
            "-days", "2", "-extfile", "ext.cnf", cwd=root)
    pub = openssl("x509", "-in", "tls.crt", "-pubkey", "-noout", cwd=root)
    der = openssl("pkey", "-pubin", "-outform", "der", cwd=root, stdin=pub)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_over_tls_the_dashboard_serves_https_and_its_session_cookie_is_secure(browser, tmp_path):
    # The chart's settings with tls.enabled: the coordinator's [tls]
    # certificate serves the dashboard too, and secure_cookies is left to
    # its default (true with [tls]).
    root = tmp_path / "tls-farm"
    spki = make_test_ca(root / "certs")
    (root / "tokens.toml").write_text(f'[tenants]\n"{TOKEN_A}" = {{ tenant = "team-a", name = "{TOKEN_A_NAME}" }}\n')
    (root / "coordinator.toml").write_text(
        'listen = "127.0.0.1:0"\ntoken_file = "tokens.toml"\n[store]\ndir = "store"\n'
        '[tls]\ncert = "certs/tls.crt"\nkey = "certs/tls.key"\n[dashboard]\nlisten = "127.0.0.1:0"\n')
    log = root / "coordinator.log"
    coordinator = subprocess.Popen([rbk_binary(), "coordinator", "--config", root / "coordinator.toml"],
                                   stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        url = wait_line(coordinator, log, r"rbk dashboard listening on (\S+)", "the TLS coordinator").group(1)
        assert url.startswith("https://"), url
        # Without trusting the test CA's certificate, Chromium refuses it.
        with pytest.raises(playwright_api.Error, match="ERR_CERT"):
            browser.new_page().goto(url + "/login")
        # Trusting exactly this certificate's key, it signs in over TLS.
        trusting = browser.browser_type.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [f"--ignore-certificate-errors-spki-list={spki}"])
        try:
            page = trusting.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(url + "/login")
            page.get_by_label("Token").fill(TOKEN_A)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Builds").wait_for()
            assert page.url.startswith("https://127.0.0.1:")
            assert page.evaluate("window.isSecureContext")
            [cookie] = [c for c in page.context.cookies() if c["name"] == "rbk_session"]
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
            page.goto(url + "/caches")
            page.get_by_role("heading", name="Caches").wait_for()
        finally:
            trusting.close()
        # Plain HTTP to the TLS port is not served.
        with pytest.raises(Exception):
            urllib.request.urlopen(url.replace("https://", "http://") + "/login", timeout=5).read()
    finally:
        coordinator.terminate()
        try:
            coordinator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            coordinator.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_leaders_cluster_page_shows_a_stopped_followers_lag(browser, tmp_path):
    """Three replicated coordinators; one follower stops while builds are
    submitted: the leader's Cluster page shows it falling behind, the
    others in sync."""
    root = tmp_path / "raft-farm"
    root.mkdir()
    (root / "tokens.toml").write_text(f'[tenants]\n"{TOKEN_A}" = "team-a"\n')
    (root / "admin-token").write_text(OPERATOR_TOKEN)
    (root / "cluster.secret").write_text("dashboard-raft-test-secret-0001")
    nodes = {i: {"api": free_port(), "raft": free_port()} for i in (1, 2, 3)}
    peers = "".join(f'{i} = {{ raft = "127.0.0.1:{n["raft"]}", api = "http://127.0.0.1:{n["api"]}" }}\n' for i, n in nodes.items())
    procs = {}
    try:
        for i, n in nodes.items():
            (root / f"node{i}.toml").write_text(
                f'listen = "127.0.0.1:{n["api"]}"\ntoken_file = "tokens.toml"\n[store]\ndir = "store"\n'
                f'[admin]\ntoken_file = "admin-token"\n[dashboard]\nlisten = "127.0.0.1:0"\n'
                f'[raft]\nnode_id = {i}\ndata_dir = "node{i}"\nlisten = "127.0.0.1:{n["raft"]}"\nsecret_file = "cluster.secret"\n'
                f'tick_ms = 50\n[raft.peers]\n{peers}')
            log = root / f"node{i}.log"
            procs[i] = subprocess.Popen([rbk_binary(), "coordinator", "--config", root / f"node{i}.toml"],
                                        stdout=log.open("w"), stderr=subprocess.STDOUT)
        for i in nodes:
            nodes[i]["dashboard"] = wait_line(procs[i], root / f"node{i}.log", r"rbk dashboard listening on (\S+)", f"node {i}").group(1)
        pages = {i: signed_in(browser, {"dashboard": n["dashboard"]}, OPERATOR_TOKEN) for i, n in nodes.items()}

        def leader() -> int | None:
            for i, page in pages.items():
                page.goto(nodes[i]["dashboard"] + "/cluster")
                if "Last index" in page.locator("main").inner_text():
                    return i
            return None

        end = time.time() + 60
        while (lead := leader()) is None:
            assert time.time() < end, "no leader's Cluster page showed replication within 60 s"
            time.sleep(0.2)
        page = pages[lead]
        follower = next(i for i in nodes if i != lead)
        other = next(i for i in nodes if i not in (lead, follower))
        # A follower's page says the lag is known on the leader.
        pages[follower].goto(nodes[follower]["dashboard"] + "/cluster")
        assert "known on the leader" in pages[follower].locator("main").inner_text()
        procs[follower].terminate()
        procs[follower].wait(timeout=20)
        # Builds the farm cannot run (no worker) still write to the log.
        ctx = context(root, "waiting-build", "FROM scratch\nCOPY Dockerfile /x\n")
        env = dict(os.environ, RBK_COORDINATOR=f"http://127.0.0.1:{nodes[lead]['api']}", RBK_TOKEN=TOKEN_A)
        submitter = subprocess.Popen([rbk_binary(), "submit", "--progress=plain", ctx], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lag = page.locator(f"tr.member[data-node='{follower}'] td.lag")
            end = time.time() + 60
            while "behind" not in lag.inner_text():
                assert time.time() < end, page.locator("main").inner_text()
                time.sleep(0.2)
                page.reload()
            assert page.locator(f"tr.member[data-node='{other}'] td.lag").inner_text() == "0 (in sync)"
            assert page.locator(f"tr.member[data-node='{lead}'] td.lag").inner_text() == "0 (in sync)"
            page.screenshot(path=shots_dir(tmp_path) / "cluster-raft.png", full_page=True)
        finally:
            submitter.kill()
            submitter.wait()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
