"""One folder per host detector or paper built on the ``recursivedet`` library, installed as
``recursivedet.projects``: its configs (loaded by ``recursivedet.model_zoo.get_config("<Project>/<file>")``),
the modules only it needs, the tools that compare it with its official code, and a README with its results."""
