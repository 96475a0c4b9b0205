"""Text and generative models in model-serving.

* :mod:`.runtime`: MLflow ``transformers`` models (text2text-generation, text-generation, summarization,
  translation pipelines) and pyfunc models with string inputs, loaded as a
  :class:`~mlplatform.serving.runtimes.LoadedModel` whose one input is ``text_input`` (BYTES) and
  whose one output is ``text_output`` (BYTES), so V2 infer serves them through the usual data plane.
* :mod:`.scheduler`: the per-model generation scheduler: concurrent requests batched (padding, one
  encoder pass, a step-by-step decoder loop with a KV cache, per-request stop and sampling).
* :mod:`.routes`: the Open Inference Protocol generate extension (``/generate``, ``/generate_stream``).
* :mod:`.metrics`: generation metrics (time to first token, tokens/s, token counts, batch size).
"""
