"""Shipped schedules vs our default rules vs onnxruntime, side by side in one process.

    .venv/bin/python benchmarks/shipped_vs_default.py gpt-neox
"""
import sys; sys.modules['torch']=None
import time, statistics, tvm_autoglm, onnxruntime as ort
from tvm_autoglm import zoo
name=sys.argv[1]
p=zoo.cached(name,"base",128,1,"dynamo"); x=zoo.example_inputs(name,"base",128,1); shp=zoo.input_shapes(name,"base",128,1)
so=ort.SessionOptions(); so.intra_op_num_threads=2; s=ort.InferenceSession(str(p), so)
a=tvm_autoglm.compile(p,opt_level=3,input_shapes=shp,use_shipped_schedules=False)
b=tvm_autoglm.compile(p,opt_level=3,input_shapes=shp)
print("shipped", b.manifest["tuning"])
res={"ort":[], "default":[], "shipped":[]}
for r in range(7):
    t=time.perf_counter(); s.run(None,x); res["ort"].append(time.perf_counter()-t)
    t=time.perf_counter(); a.run(x); res["default"].append(time.perf_counter()-t)
    t=time.perf_counter(); b.run(x); res["shipped"].append(time.perf_counter()-t)
for k,v in res.items(): print(name, k, round(statistics.median(v)*1000,1), "ms")
