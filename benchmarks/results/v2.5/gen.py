"""gen.py SCENARIO ROOT: make the benchmark's tree SCENARIO (benchmarks/bench.py's syntax,
e.g. flat:100000 or balanced:10x3x100) at ROOT, replacing what is there."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import bench

scenario = bench.Scenario.parse(sys.argv[1])
root = Path(sys.argv[2])
shutil.rmtree(root, ignore_errors=True)
print(scenario.generate(root))
