"""Hooks on a stock diffusers pipeline: nothing here copies the sampling loop.

* :mod:`.steps` -- the denoiser-argument parser, the step clock, the CFG half, an evaluation counter;
* :mod:`.processors` -- the stock-equivalent recording attention processor and safe installation;
* :mod:`.attention` -- cross-attention recording, aggregated on the fly (:func:`record_attention`);
* :mod:`.trajectory` -- x_t and x̂0 at every step (:func:`record_trajectory`, :func:`trajectory`);
* :mod:`.kv` -- different text embeddings for the keys and the values of cross-attention;
* :mod:`.cfg` -- the two mechanisms behind the guidance schedules of :mod:`helpers.guidance`.

Every hook is a context manager (or a callback) that restores the pipeline on exit, also
after an exception.
"""
