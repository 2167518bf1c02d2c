"""Autoregressive generation for decoder-only models with a KV cache.

* :mod:`.sampling` picks the next token from logits (greedy, temperature, top-k, top-p,
  reproducible with a seed);
* :mod:`.loop` is the model-independent loop: prompt, then one token per step, as a
  streaming iterator;
* :mod:`.reference` runs the same loop with onnxruntime on the ONNX model (the reference
  the compiled generator is tested against);
* :mod:`.runner` runs it on a compiled generator artifact (lean runtime: no compile-side
  imports);
* :mod:`.layout` recognises the cache inputs/outputs of an ONNX model, and
  :mod:`.kv_rewrite` / :mod:`.build` compile one (compile side only).

This package's ``__init__`` imports nothing heavy so that ``tvm_autoglm.runtime`` can use
the loop without TVM's compiler.
"""
