"""The layers of vaelab, bottom to top: a module may import modules of its own layer and of
the layers below, never of a layer above (`tests/test_layers.py` walks every import, lazy
ones inside functions too). Each entry names top-level modules or packages of `vaelab`.

1. foundation     errors, files (atomic writes, JSON), checkpoint (safetensors I/O),
                  registry (name → object), report (Markdown tables), layers (this file)
2. distributions  likelihoods, posteriors, priors, KL, exponential families (contracts in
                  distributions/base.py)
3. networks       encoder/decoder blocks, β-conditioning modules
4. inference      annealed importance sampling, HMC, importance-weight statistics
5. estimators     ELBO gradient estimators by name (reparameterisation, discrete, exact)
6. config         typed configs; validates names against the registries below it
7. data           data sets by name
8. models         the VAE by composition, harmoniums, pPCA, two-stage parts
9. training       the one trainer (training/trainer.py) and `fit` built on it
10. evaluation    measurements of trained models: ELBO terms, likelihood estimates, metrics
11. runs          a run directory end to end
12. sweeps        grids × seeds of runs, on Ray or in-process, and their tables
13. experiments   named recipes (`vaelab run NAME`)
14. interface     cli, __main__, the package's __init__
"""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "files", "checkpoint", "registry", "report", "layers"),
    ("distributions",),
    ("networks",),
    ("inference",),
    ("estimators",),
    ("config",),
    ("data",),
    ("models",),
    ("training",),
    ("evaluation",),
    ("runs",),
    ("sweeps",),
    ("experiments",),
    ("cli", "__main__", "__init__"),
)


def layer_of(module: str) -> int:
    """The layer index of a top-level module or package name of vaelab."""
    for index, names in enumerate(LAYERS):
        if module in names:
            return index
    raise KeyError(f"vaelab.{module} is in no layer of vaelab/layers.py")
