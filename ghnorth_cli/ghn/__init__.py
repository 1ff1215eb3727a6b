"""The GHN-2 and GHN-3 networks, their files (released ``.pt`` and ghnorth safetensors), registry and cache.

Modules: ``config`` (hyperparameters), ``network`` (the GHN interface, :class:`GHN2`), ``ghn3``
(:class:`GHN3`, with ``graphormer``), ``plan`` (nodes to
parameters), ``gnn``/``decoder``/``shape_encoder``/``fit`` (its parts), ``io`` (files; with
``safe_pickle`` and ``ghn3_file`` for the released GHN-3 pickles), ``registry``/``download``/``hub``
(known GHNs, URL and Hugging Face Hub downloads, the cache), ``predict`` (the library entry points).
"""
