"""The web console in a real browser against real node processes.

Debian's chromium, driven by Playwright (``executable_path``: nothing
downloads a browser), watches the console of n1 while the test changes the
cluster, each step awaited with a deadline:

* the console asks for the admin token (the nodes run with one), then shows
  the 3 members up and the ring;
* n4 joins: its transfers show up running, with progress bars, and end done,
  with no partition left moving (the senders are throttled so that the
  transfers last a few seconds);
* decommissioning n4 from the console is refused without the admin token
  and accepted with it; n4 hands its partitions over, leaves and exits;
* n3 killed with -9 turns down within the failure detector's bound (plus
  one console interval, the time the news takes to reach the page).

Screenshots of each step go to ``build/console/``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from peer_ring.testing.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-browser-test-admin-token"
RESP = 6379
HTTP = 8080
SHOTS = Path(__file__).resolve().parents[3] / "build" / "console"

#: ``--preset local`` (a --config file replaces the preset) plus handoff settings.
CONFIG = """\
[node]
member_sync_interval = 0.5
discovery_start_timeout = 3.0

[node.failure]
ping_interval = 0.25
ping_timeout = 0.5
failures_to_down = 2

[node.transport_config]
request_timeout = 2.0
connect_timeout = 1.0

[node.handoff]
"""


def _config(tmp_path: Path, name: str, **handoff: object) -> list[str]:
    path = tmp_path / f"{name}.toml"
    path.write_text(CONFIG + "".join(f"{k} = {v!r}\n" for k, v in handoff.items()))
    return ["--config", str(path)]


async def _load(cluster: LocalCluster, keys: int) -> None:
    r = aioredis.Redis(host=cluster["n1"].ip, port=RESP, socket_timeout=5)
    try:
        for start in range(0, keys, 500):
            async with r.pipeline(transaction=False) as p:
                for i in range(start, min(start + 500, keys)):
                    p.set(b"key%05d" % i, b"value-%05d" % i)
                assert all(await p.execute())
    finally:
        await r.aclose()


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no chromium at {CHROMIUM} (Debian package 'chromium'; `make test` installs it)",
)
async def test_console_follows_join_decommission_and_crash_in_a_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    # the old members send at 300 records/s in chunks of 10: a join takes seconds
    slow = _config(tmp_path, "slow", max_records_per_second=300.0, chunk_records=10)
    fast = _config(tmp_path, "fast")
    cluster = LocalCluster(
        4,
        subnet="127.0.70",
        replicas=3,
        partitions=64,
        resp_port=RESP,
        http_port=HTTP,
        extra_args=["--admin-token-file", str(token_file)],
        per_node_args={"n1": slow, "n2": slow, "n3": slow, "n4": fast},
        artefacts=tmp_path,
    )
    try:
        await asyncio.to_thread(cluster.start, ["n1", "n2", "n3"])
        await _load(cluster, 3000)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                await page.goto(f"http://{cluster['n1'].http}/")

                # the nodes run with an admin token: the console asks for it
                await page.wait_for_selector('#conn[data-state="token"]', timeout=10_000)
                await page.fill("#token", TOKEN)
                await page.click('#token-form button[type="submit"]')
                await page.wait_for_selector('#member-count[data-count="3"]', timeout=15_000)
                await page.wait_for_function(
                    "document.querySelectorAll('#members tr[data-state=\"up\"]').length === 3",
                    timeout=15_000,
                )
                assert await page.locator("#ring path[data-partition]").count() == 64
                await page.screenshot(path=str(SHOTS / "1-three-members.png"), full_page=True)

                # n4 joins: its transfers run, then end done
                joining = asyncio.create_task(asyncio.to_thread(cluster.start, ["n4"]))
                await page.wait_for_selector('#member-count[data-count="4"]', timeout=20_000)
                # the summary and the table, read in one tick (one snapshot drew both:
                # a later one may fall between two transfers, with none running)
                await page.wait_for_function(
                    """() => document.querySelector(
                            '#transfer-summary li[data-target="n4"]:not([data-running="0"])')
                        && document.querySelectorAll(
                            '#transfers tr[data-state="running"][data-to="n4"]').length > 0""",
                    timeout=20_000,
                )
                await page.screenshot(path=str(SHOTS / "2-join-transfers.png"), full_page=True)
                await joining
                await page.wait_for_function(
                    """() => {
                        const li = document.querySelector('#transfer-summary li[data-target="n4"]');
                        const moving = document.querySelector('#ring-moving');
                        return li && li.dataset.running === "0" && li.dataset.failed === "0"
                            && Number(li.dataset.done) > 0 && moving.dataset.moving === "0";
                    }""",
                    timeout=30_000,
                )
                await page.screenshot(path=str(SHOTS / "3-join-done.png"), full_page=True)

                # decommission n4: refused without the token, accepted with it
                await page.click('#members button[data-node="n4"]')
                await page.fill("#dialog-token", "")
                await page.click("#dialog-confirm")
                refused = page.locator('#action-result[data-status="refused"]')
                await refused.wait_for(timeout=10_000)
                assert "401" in await refused.inner_text()
                await page.screenshot(path=str(SHOTS / "4-action-refused.png"), full_page=True)
                assert cluster["n4"].running
                await page.fill("#dialog-token", TOKEN)
                await page.click("#dialog-confirm")
                await page.locator('#action-result[data-status="accepted"]').wait_for(
                    timeout=10_000
                )
                await page.click("#dialog-cancel")
                await page.wait_for_selector(
                    '#actions-log li[data-node="n4"][data-state="done"]', timeout=30_000
                )
                await page.wait_for_selector('#member-count[data-count="3"]', timeout=15_000)
                assert await page.locator('#members tr[data-member="n4"]').count() == 0
                proc = cluster["n4"].proc
                assert proc is not None
                assert await asyncio.to_thread(proc.wait, 20) == 0  # it exited by itself

                # kill -9 n3: down within the failure detector's bound
                bound = float(
                    await page.evaluate(
                        """async (t) => (await (await fetch('/console/api/snapshot',
                            {headers: {Authorization: 'Bearer ' + t}})).json()).failure_bound""",
                        TOKEN,
                    )
                )
                deadline = bound + 1.0 + 2.0  # + one console interval + a loaded machine
                killed = time.monotonic()
                cluster.kill("n3")
                await page.wait_for_selector(
                    '#members tr[data-member="n3"][data-state="down"]', timeout=deadline * 1000
                )
                seen_after = time.monotonic() - killed
                await page.screenshot(path=str(SHOTS / "5-node-down.png"), full_page=True)
                assert seen_after <= deadline
            finally:
                await browser.close()
    finally:
        cluster.close()
