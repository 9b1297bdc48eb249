import sys, shutil, pathlib
sys.path.insert(0, "/work/main/benchmarks")
import bench
sc = bench.Scenario.parse(sys.argv[1])
root = pathlib.Path(sys.argv[2])
shutil.rmtree(root, ignore_errors=True)
print(sc.generate(root))
