"""The GHN-2 network, its files (released ``.pt`` and ghnorth safetensors), registry and cache.

Modules: ``config`` (hyperparameters), ``network`` (:class:`GHN2`), ``plan`` (nodes to
parameters), ``gnn``/``decoder``/``shape_encoder``/``fit`` (its parts), ``io`` (files),
``registry``/``download`` (known GHNs and the cache), ``predict`` (the library entry points).
"""
