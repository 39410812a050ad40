"""Model kinds beyond the plain RBM: presets and variants made of the same parts.

Each module holds a model class (``config()`` / ``from_config`` for safetensors files)
and the parts it brings to the one training loop (a sampler, an objective, what its
rows are), plus ``train_from_config(run)``, which turns a resolved ``boltzkit train``
configuration into those parts.  Which kinds exist, the options each reads and where
its class and builder live is the registry :mod:`boltzkit.kinds`.
"""
