"""The console's per-node table (non-terminal output): a header, then one aligned row per node."""
import io

from samplegraph.runtime.events import NodeFinished, RunStarted
from samplegraph.runtime.progress import ProgressPrinter


def test_table_has_a_header_aligned_with_its_rows():
    out = io.StringIO()
    printer = ProgressPrinter(out, bars=False)
    printer(RunStarted(2))
    printer(NodeFinished("sigmas", "schedule.karras", "disk", 0.0021))
    printer(NodeFinished("sample", "sample", "miss", 12.5))
    header, first, second = out.getvalue().splitlines()
    assert header.split() == ["node", "kind", "cache", "wall", "s"]
    assert first.split() == ["sigmas", "schedule.karras", "disk", "0.002"]
    assert second.split() == ["sample", "sample", "miss", "12.500"]
    assert len({len(header), len(first), len(second)}) == 1  # columns line up
    for word in ("kind", "cache"):
        assert header.index(word) == first.index("schedule.karras" if word == "kind" else "disk")
