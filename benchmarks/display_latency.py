"""Display latency of the browser views: from a State sample's push to the browser frame that shows it.

A simulated amplifier (64 channels at 5 kHz in chunks of 5 by default, as ``closedloop bench
latency``) feeds a real ``closedloop run --ui`` on a feedback protocol (``faa-neurofeedback`` with a
short baseline); the participant's page (and, with ``--operator``, the operator's in a second
window) is open in headless Chromium. Each page takes, for every State sample it receives, the time
from the sample's push (its LSL timestamp) to the end of the animation frame that drew it, on the
LSL clock: the page's clock is mapped onto the server's ``local_clock`` by WebSocket round trips
(the one with the smallest delay, typically 0.2-0.5 ms here). Printed: p50, p95, p99 and the frame
rate; ``--json FILE`` writes them.

    python benchmarks/display_latency.py --seconds 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="seconds measured with the page open (default 30)")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--sfreq", type=float, default=5000.0)
    p.add_argument("--chunk-size", type=int, default=5)
    p.add_argument("--operator", action="store_true", help="measure the operator's page too (a second window)")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)

    from closedloop.bench import common

    common.start_lsl()
    from closedloop.bench.common import summarize_ms
    from closedloop.protocol import load_protocol, protocol_to_toml
    from closedloop.ui.browser import headless_chromium

    work = Path(tempfile.mkdtemp(prefix="closedloop-display-latency-"))
    faa = load_protocol("faa-neurofeedback")
    short = dataclasses.replace(faa, trigger=dataclasses.replace(faa.trigger, baseline_s=5.0))
    proto = work / "faa-short.toml"
    proto.write_text(protocol_to_toml(short))
    block, labels = common.amplifier_block(args.channels, args.sfreq, args.chunk_size)
    amp_id = common.fresh_id("eeg")
    amp = common.Amplifier(block, labels, args.sfreq, args.chunk_size, source_id=amp_id, name=amp_id,
                           capacity_s=args.seconds + 120).start()
    log = work / "run.stderr"
    duration = args.seconds + 20.0
    cmd = [sys.executable, "-m", "closedloop", "run", "--protocol", str(proto), "--source-id", amp_id,
           "--duration", f"{duration:g}", "--ui", "--ui-port", "0",
           "--state-source-id", common.fresh_id("state"), "--marker-source-id", common.fresh_id("markers")]
    with open(log, "wb") as fh:
        run = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh)
    driver = None
    try:
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text(errors="replace")
            op, part = re.search(r"operator page\s+(\S+)", text), re.search(r"participant page\s+(\S+)", text)
            if op and part:
                break
            if run.poll() is not None or time.monotonic() > deadline:
                print(f"the run did not serve its pages: {text}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        driver = headless_chromium()
        driver.get(part.group(1))
        windows = {"participant": driver.current_window_handle}
        if args.operator:
            driver.switch_to.new_window("window")
            driver.get(op.group(1))
            windows["operator"] = driver.current_window_handle
        # the baseline passes (feedback values start), then the measured time
        time.sleep(6.0)
        starts = {}
        for name, handle in windows.items():
            driver.switch_to.window(handle)
            starts[name] = driver.execute_script(_READ[name])
        time.sleep(args.seconds)
        result = {"settings": vars(args), "pages": {}}
        for name, handle in windows.items():
            driver.switch_to.window(handle)
            got = driver.execute_script(_READ[name])
            values = got["latencies"][len(starts[name]["latencies"]):]
            frames = got["frames"] - starts[name]["frames"]
            figures = summarize_ms([v / 1e3 for v in values])
            figures["frames_per_s"] = frames / args.seconds
            figures["clock_rtt_ms"] = got["rtt"]
            result["pages"][name] = figures
    finally:
        if driver is not None:
            driver.quit()
        run.terminate()
        run.wait(timeout=30)
        amp.close()
    result["machine"] = common.machine_info()
    for name, f in result["pages"].items():
        print(f"{name} page, State push -> frame that drew it: p50 {f['p50']:.1f} ms, p95 {f['p95']:.1f} ms, "
              f"p99 {f['p99']:.1f} ms, max {f['max']:.1f} ms (n {f['n']}); {f['frames_per_s']:.1f} frames/s; "
              f"clock round trip {f['clock_rtt_ms']:.2f} ms")
    print(f"machine: {result['machine']['cpu_model']}, load {result['machine']['load_average_1_5_15']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x))
    return 0


_READ = {
    "participant": "const v = window.closedloopParticipant; return {frames: v.frames, latencies: v.latencies.values.slice(),"
                   " rtt: feed.clock.rtt};",
    "operator": "const h = window.closedloopOperator; return {frames: h.frames, latencies: h.latencies.values.slice(),"
                " rtt: feed.clock.rtt};",
}

if __name__ == "__main__":
    sys.exit(main())
