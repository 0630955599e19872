"""examples/work_queue.py (docs/streams.md): a work queue on replicated streams."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "work_queue.py"


async def test_every_job_is_done_once_including_the_crashed_workers() -> None:
    spec = importlib.util.spec_from_file_location("work_queue_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["work_queue_example"] = module
    spec.loader.exec_module(module)
    done = await module.main(jobs=20)
    assert sorted(done) == sorted(b"job-%d" % i for i in range(20))  # each exactly once
