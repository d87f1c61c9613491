"""A temperature chart with a single sample (the first report after the page loads,
or a printer's only one) spans the minutes up to that sample, not a stretch of years
that have not happened: uPlot's guess for a time axis whose ends are equal, which the
dashboard showed for a moment after every load."""

from __future__ import annotations

import time

from tests import test_browser
from tests.test_browser import (  # noqa: F401 - pytestmark skips without Chromium
    open_page,
    printer_ready,
    pytestmark,
    sign_in,
)

browser = test_browser.browser
gateway = test_browser.gateway


async def test_a_chart_of_one_sample_shows_the_minutes_up_to_it(browser, gateway):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    await printer_ready(page)
    now = time.time()
    low, high = await page.evaluate(
        """async (now) => {
          const card = window.hydrogenDashboard.app.cards.get('sim');
          card.chart.seed({samples: [{time: now, heaters: {tool0: {actual: 21, target: 0}}}]});
          await new Promise((drawn) => requestAnimationFrame(() => requestAnimationFrame(drawn)));
          const x = card.plot.scales.x;
          return [x.min, x.max];
        }""",
        now,
    )
    assert now - 3600 < low < high <= now + 1, (low, high, now)
    assert not problems, problems
