"""How long from a firmware's pty appearing to the printer being ``ready``.

For each firmware, N rounds of: start the firmware on a pty, then either

* ``gateway``: open it with Hydrogen's ``Printer`` (the code ``hydrogen serve`` runs)
  and time until its state is ``ready`` (handshake done, M115 read); or
* ``bare``: a bare pyserial loop that writes ``N0 M110 N0*125`` every 50 ms until the
  first ``ok``: when the firmware *first answers*, the earliest any host could know
  it is there.

The difference is what the gateway adds on top of the firmware's own start-up; the
target is under 1 s. Firmwares: our simulator as a board that resets on open (banner
after its bootloader) and as one that does not (silent until asked), and OctoPrint's
virtual printer with and without its ``start`` banner (needs ``.venv/octoprint``, as
.ci/run installs it, or ``--octoprint-python``).

    python bench/ready.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

# bench/serial.py would shadow pyserial for a script run from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
import serial  # noqa: E402

from hydrogen.config import PrinterConfig  # noqa: E402
from hydrogen.hub import Hub  # noqa: E402
from hydrogen.printers.printer import Printer, PrinterState  # noqa: E402
from hydrogen.simulator import SimulatedPrinter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / "tests" / "virtual_octoprint.py"

Firmware = Callable[[], "AsyncIterator[str]"]


def simulator(*, banner: bool, bootloader: float) -> Firmware:
    @asynccontextmanager
    async def run() -> AsyncIterator[str]:
        sim = SimulatedPrinter(seed=1, banner=banner, banner_delay=bootloader)
        try:
            yield await sim.start()
        finally:
            await sim.stop()

    return run


def virtual_octoprint(python: str, *, banner: bool) -> Firmware:
    @asynccontextmanager
    async def run() -> AsyncIterator[str]:
        settings = json.dumps({"simulateReset": banner})
        process = await asyncio.create_subprocess_exec(
            python,
            str(BRIDGE),
            "--record",
            os.devnull,
            "--settings",
            settings,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            hello = json.loads(await process.stdout.readline())
            yield hello["pty"]
        finally:
            process.terminate()
            await process.wait()

    return run


async def gateway_ready(path: str) -> float:
    """Seconds from opening ``path`` to the printer's ``ready``."""
    config = PrinterConfig(name="bench", device=path)
    printer = Printer(config, Hub(), lambda *a, **k: None)
    started = time.perf_counter()
    await printer.start()
    try:
        async with asyncio.timeout(30):
            while printer.state is not PrinterState.READY:
                await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        await printer.stop()


def bare_first_answer(path: str) -> float:
    """Seconds from opening ``path`` to the first ``ok`` to a repeated M110."""
    started = time.perf_counter()
    with serial.Serial(path, 115200, timeout=0.05) as port:
        buffer = b""
        while time.perf_counter() - started < 30:
            port.write(b"N0 M110 N0*125\n")
            buffer += port.read(4096)
            if any(line.strip().startswith(b"ok") for line in buffer.splitlines()):
                return time.perf_counter() - started
    raise TimeoutError("no answer in 30 s")


async def measure(firmware: Firmware, rounds: int) -> tuple[list[float], list[float]]:
    gateway, bare = [], []
    for _ in range(rounds):
        async with firmware() as path:
            gateway.append(await gateway_ready(path))
        async with firmware() as path:
            bare.append(await asyncio.to_thread(bare_first_answer, path))
    return gateway, bare


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--octoprint-python", default=str(ROOT / ".venv/octoprint/bin/python"))
    args = parser.parse_args()
    firmwares: dict[str, Firmware] = {
        "simulator, resets on open (1 s bootloader, banner)": simulator(
            banner=True, bootloader=1.0
        ),
        "simulator, silent until asked": simulator(banner=False, bootloader=0.0),
    }
    if Path(args.octoprint_python).exists():
        firmwares["OctoPrint virtual printer, start banner"] = virtual_octoprint(
            args.octoprint_python, banner=True
        )
        firmwares["OctoPrint virtual printer, no banner"] = virtual_octoprint(
            args.octoprint_python, banner=False
        )
    else:
        print(f"(no {args.octoprint_python}: OctoPrint's virtual printer left out)")
    print(f"{'firmware':<52} {'ready':>8} {'answers':>8} {'added':>8}  (medians, s)")
    for name, firmware in firmwares.items():
        gateway, bare = await measure(firmware, args.rounds)
        g, b = statistics.median(gateway), statistics.median(bare)
        print(f"{name:<52} {g:8.3f} {b:8.3f} {g - b:8.3f}")
        print(f"{'':<52} rounds: ready {', '.join(f'{x:.2f}' for x in gateway)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
