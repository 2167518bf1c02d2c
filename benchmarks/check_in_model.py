"""In-model check on a tuning database (default: the make-tune database for bert-base), then untuned vs tuned (veto honored) vs onnxruntime, interleaved.

    .venv/bin/python benchmarks/check_in_model.py
"""
import statistics, time, json
import numpy as np
import tvm_autoglm
from tvm_autoglm import zoo
from tvm_autoglm.pipeline import build_relax
from tvm_autoglm.tuning import in_model
from tvm_autoglm.tuning import database as dbmod
from tvm_autoglm.tuning.baseline import is_baseline_trace
from tvm_autoglm.tuning.tasks import extract
p = str(zoo.cached("bert", "base", 128, 1))
shapes = zoo.input_shapes("bert", "base", 128, 1)
db = "out/tuning-cpu"
build = build_relax(p, "cpu", 3, shapes)
keep, _ = extract(build.mod, build.target.tvm_target())
database = dbmod.open_db(__import__("pathlib").Path(db), create=False)
contenders = []
for t in keep:
    top = database.get_top_k(database.commit_workload(t.mod), 1) if database.has_workload(t.mod) else []
    if len(top) and not is_baseline_trace(top[0].trace):
        contenders.append(t.name)
print("contenders", contenders, flush=True)
rows = in_model.check(build, db, contenders)
print(json.dumps(rows), flush=True)
untuned = tvm_autoglm.compile(p, input_shapes=shapes, use_shipped_schedules=False)
tuned = tvm_autoglm.compile(p, input_shapes=shapes, tuning_db=db, use_shipped_schedules=False)
print("tuned manifest tuning", tuned.manifest["tuning"], flush=True)
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 2
sess = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
inp = zoo.example_inputs("bert", "base", 128, 1)
eng = {"untuned": lambda: untuned.run(**inp), "tuned (veto honored)": lambda: tuned.run(**inp), "onnxruntime": lambda: sess.run(None, inp)}
for f in eng.values(): f(); f()
t = {k: [] for k in eng}
for _ in range(5):
    for k, f in eng.items():
        for _ in range(10):
            s = time.perf_counter(); f(); t[k].append(time.perf_counter() - s)
ort_ms = statistics.median(t["onnxruntime"]) * 1e3
for k, v in t.items():
    m = statistics.median(v) * 1e3
    print(f"| {k} | {m:.2f} | {m / ort_ms:.2f} |")
