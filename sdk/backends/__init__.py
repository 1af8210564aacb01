"""One module per inference runtime, all behind ``base.Backend``.

Nothing here imports a runtime; ``sdk.model.load_model`` picks the module by
file type and imports it on first use.
"""
