"""Hooks on a stock diffusers pipeline: nothing here copies the sampling loop.

* :mod:`.steps` -- the denoiser-argument parser, the step clocks, the CFG half, an evaluation counter;
* :mod:`.processors` -- the stock-equivalent recording attention processor and safe installation;
* :mod:`.attention` -- cross-attention recording, aggregated on the fly (:func:`record_attention`);
* :mod:`.trace` -- DAAM-style ``with trace(pipe) as tr: pipe(prompts)``, then ``tr.word_map("circle")``;
* :mod:`.trajectory` -- x_t and x̂0 at every step (:func:`record_trajectory`, :func:`trajectory`);
* :mod:`.kv` -- different text embeddings for the keys and the values of cross-attention;
* :mod:`.callbacks` -- guidance schedules as diffusers ``PipelineCallback`` s (``TextOffAfter``, ...);
* :mod:`.cfg` -- the hook mechanism behind them where a pipeline has no step-end callback (PixArt).

Every hook is a context manager (or a callback) that restores the pipeline on exit, also
after an exception.
"""
