"""Every registry entry builds, samples and trains one step with every objective, and works with
the estimators (they reach it only through Pyro traces)."""

import math
import re

import pytest
import torch

from pyro_vae import estimators
from pyro_vae.components.registry import (
    DATASETS,
    GUIDES,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    OPTIMIZERS,
    PRIORS,
)
from pyro_vae.components.likelihoods import Likelihood
from pyro_vae.components.priors import Prior
from pyro_vae.config import Component
from pyro_vae.config.build import vae_from_config
from pyro_vae.data.datasets import Dataset
from pyro_vae.errors import ConfigError
from pyro_vae.runs.load import load_run
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config

PRIOR_CASES = [
    {"name": "standard_normal"},
    {"name": "learned_normal"},
    {"name": "laplace"},
    {"name": "student_t", "df": 4.0},
    {"name": "mixture_of_gaussians", "components": 3},
    {"name": "vamp", "components": 4},
]
LIKELIHOOD_CASES = [
    {"name": "bernoulli"},
    {"name": "continuous_bernoulli"},
    {"name": "gaussian", "variance": "fixed", "fixed_std": 0.3},
    {"name": "gaussian", "variance": "learned"},
    {"name": "gaussian", "variance": "decoder", "sigmoid_mean": True, "min_std": 0.01},
    {"name": "laplace"},
    {"name": "beta"},
]
GUIDE_CASES = [{"name": "diag_normal"}, {"name": "full_normal"}, {"name": "iaf", "num_flows": 2, "hidden_dims": [8], "context_dim": 4}]
NETWORK_CASES = [
    {"name": "mlp", "hidden": [8, 8], "activation": act, "init": init}
    for act, init in (("tanh", "paper"), ("relu", "kaiming"), ("softplus", "xavier"), ("elu", "default"))
] + [{"name": "conv", "channels": 4, "hidden": 16}]
OBJECTIVE_NAMES = ["trace", "trace_meanfield", "jit_trace", "jit_trace_meanfield", "iwae", "wake_sleep", "rws", "mcem"]
# Combinations an objective cannot train, and the words its error must use.
REJECTED = {("wake_sleep", "vamp"): "cannot train a VampPrior", ("rws", "vamp"): "cannot train a VampPrior"}


def test_cases_cover_every_registry_entry():
    assert {c["name"] for c in PRIOR_CASES} == set(PRIORS.names())
    assert {c["name"] for c in LIKELIHOOD_CASES} == set(LIKELIHOODS.names())
    assert {c["name"] for c in GUIDE_CASES} == set(GUIDES.names())
    assert {c["name"] for c in NETWORK_CASES} == set(NETWORKS.names())
    assert set(OBJECTIVE_NAMES) == set(OBJECTIVES.names())


def _image_data(binary: bool) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 64, generator=g)
    if binary:
        x = torch.bernoulli(x, generator=g)
    return Dataset("images", x[:30], x[30:], (1, 8, 8))


def _train_one_step(tmp_path, objective: str, data: Dataset, device: str = "cpu", **model):
    model_cfg = {"z_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}
    model_cfg.update(model)
    cfg = tiny_config(device=device, model=model_cfg, objective={"name": objective},
                      training={"epochs": 1, "batch_size": 30, "log_every": 1})
    trainer = Trainer(cfg, tmp_path / "run", data=data, progress=False)
    before = [p.detach().clone() for p in trainer.vae.parameters()]
    rows = trainer.train()
    assert torch.isfinite(torch.tensor([rows[-1]["train_objective"], rows[-1]["test_elbo"]])).all()
    changed = [not torch.equal(a, b) for a, b in zip(before, trainer.vae.parameters())]
    assert any(changed)
    samples = trainer.vae.sample_means(5)
    assert samples.shape == (5, data.x_dim) and torch.isfinite(samples).all()
    return trainer


@pytest.mark.parametrize("objective", OBJECTIVE_NAMES)
@pytest.mark.parametrize("prior", PRIOR_CASES, ids=lambda c: c["name"])
def test_every_prior_trains_with_every_objective(tmp_path, objective, prior):
    reason = REJECTED.get((objective, prior["name"]))
    if reason:
        with pytest.raises(ConfigError, match=reason):
            _train_one_step(tmp_path, objective, _image_data(False), prior=prior, likelihood={"name": "continuous_bernoulli"})
        return
    _train_one_step(tmp_path, objective, _image_data(False), prior=prior, likelihood={"name": "continuous_bernoulli"})


@pytest.mark.parametrize("objective", OBJECTIVE_NAMES)
@pytest.mark.parametrize("likelihood", LIKELIHOOD_CASES, ids=lambda c: c["name"] + "-" + c.get("variance", ""))
def test_every_likelihood_trains_with_every_objective(tmp_path, objective, likelihood):
    _train_one_step(tmp_path, objective, _image_data(likelihood["name"] == "bernoulli"), likelihood=likelihood)


@pytest.mark.parametrize("objective", OBJECTIVE_NAMES)
@pytest.mark.parametrize("guide", GUIDE_CASES, ids=lambda c: c["name"])
def test_every_guide_trains_with_every_objective(tmp_path, objective, guide):
    _train_one_step(tmp_path, objective, _image_data(False), guide=guide, likelihood={"name": "continuous_bernoulli"})


@pytest.mark.parametrize("objective", ["trace", "iwae", "wake_sleep", "mcem"])
@pytest.mark.parametrize("net", NETWORK_CASES, ids=lambda c: c["name"] + "-" + str(c.get("activation", "")))
def test_every_network_trains(tmp_path, objective, net):
    _train_one_step(tmp_path, objective, _image_data(True), encoder=net, decoder=net, likelihood={"name": "bernoulli"})


@pytest.mark.parametrize("prior", PRIOR_CASES, ids=lambda c: c["name"])
@pytest.mark.parametrize("guide", GUIDE_CASES, ids=lambda c: c["name"])
def test_estimators_work_with_every_prior_and_guide(tmp_path, prior, guide):
    data = _image_data(False)
    cfg = tiny_config(model={"z_dim": 2, "prior": prior, "guide": guide, "likelihood": {"name": "continuous_bernoulli"}})
    vae = vae_from_config(cfg.model, data.x_shape)
    x = data.x_test[:3]
    iw = estimators.iwae(vae, x, k=20)
    el = estimators.elbo(vae, x, num_samples=20)
    a = estimators.ais(vae, x, num_steps=5, num_chains=2, num_leapfrog=2, start="encoder")
    h = estimators.hmc_marginal_likelihood(vae, x, num_samples=4, num_warmup=4, num_chains=2, num_leapfrog=2)
    for est in (iw, el, a, h):
        assert est.per_datapoint.shape == (3,) and torch.isfinite(est.per_datapoint).all(), est.estimator
    assert iw.mean > el.mean - 1.0  # IWAE-20 is not far below the ELBO (it is above in expectation)
    units = estimators.active_units(vae, x, num_samples=10)
    assert units["num_latents"] == 2 and len(units["activity"]) == 2 and all(math.isfinite(a) for a in units["activity"])
    assert units["posterior_mean"] == ("closed form" if guide["name"] != "iaf" else "mean of 10 draws of q(z|x), Monte Carlo noise subtracted")


@pytest.mark.parametrize("likelihood", LIKELIHOOD_CASES, ids=lambda c: c["name"] + "-" + c.get("variance", ""))
def test_estimators_work_with_every_likelihood(likelihood):
    """IWAE, AIS, the paper's HMC estimator and BDMC (which also simulates data from the model)."""
    data = _image_data(likelihood["name"] == "bernoulli")
    vae = vae_from_config(tiny_config(model={"z_dim": 2, "likelihood": likelihood}).model, data.x_shape)
    x = data.x_test[:3]
    found = [
        estimators.iwae(vae, x, k=20),
        estimators.ais(vae, x, num_steps=5, num_chains=2, num_leapfrog=2),
        estimators.hmc_marginal_likelihood(vae, x, num_samples=4, num_warmup=4, num_chains=2, num_leapfrog=2),
    ]
    bdmc = estimators.bdmc(vae, num_points=3, num_steps=10, num_chains=2, num_leapfrog=2)
    found += [bdmc["lower"], bdmc["upper"]]
    for est in found:
        assert est.per_datapoint.shape == (3,) and torch.isfinite(est.per_datapoint).all(), est.estimator
    assert bdmc["x"].shape == (3, data.x_dim) and vae.likelihood.support_violation(bdmc["x"]) is None


@pytest.mark.parametrize("prior", PRIOR_CASES, ids=lambda c: c["name"])
def test_bdmc_works_with_every_prior(prior):
    data = _image_data(False)
    vae = vae_from_config(tiny_config(model={"z_dim": 2, "prior": prior, "likelihood": {"name": "continuous_bernoulli"}}).model, data.x_shape)
    bdmc = estimators.bdmc(vae, num_points=3, num_steps=10, num_chains=2, num_leapfrog=2)
    for est in (bdmc["lower"], bdmc["upper"]):
        assert est.per_datapoint.shape == (3,) and torch.isfinite(est.per_datapoint).all(), est.estimator
    assert abs(bdmc["gap_mean"]) < 5.0  # two estimates of the same log p(x), even with 10 steps on a 2-d latent


def test_unknown_names_fail_with_valid_list():
    with pytest.raises(ConfigError, match="Valid guide names: diag_normal, full_normal, iaf"):
        GUIDES.get("flow")
    with pytest.raises(ConfigError, match="conv, mlp"):
        vae_from_config(tiny_config().model.model_copy(update={"encoder": tiny_config().model.encoder.model_copy(update={"name": "cnn"})}), (6,))


def _guide_component_code() -> str:
    """docs/guide.md's 'Adding a component' snippet, as written."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "docs" / "guide.md").read_text()
    return re.search(r"## Adding a component.*?```python\n(.*?)```", readme, re.S).group(1)


def test_readme_example_component_works_everywhere(tmp_path):
    """docs/guide.md's 'Adding a component' snippet: a new prior trains and evaluates with no wiring."""
    try:
        exec(_guide_component_code(), {})
        trainer = _train_one_step(tmp_path, "trace", _image_data(False), prior={"name": "logistic", "scale": 0.5},
                                  likelihood={"name": "continuous_bernoulli"})
        est = estimators.ais(trainer.vae, trainer.x_test[:2], num_steps=3, num_chains=2, num_leapfrog=2)
        assert torch.isfinite(est.per_datapoint).all()
    finally:
        PRIORS._entries.pop("logistic", None)


def test_a_component_of_ones_own_that_puts_z_off_the_real_line_is_refused_when_built():
    import pyro.distributions as dist

    from pyro_vae.components.priors import Prior

    class GammaPrior(Prior):
        def __init__(self, z_dim: int) -> None:
            super().__init__()
            self.z_dim = z_dim

        def forward(self, encode=None):
            return dist.Gamma(torch.ones(self.z_dim), 1.0).to_event(1)

    PRIORS.register("test_gamma")(lambda *, z_dim, x_dim: GammaPrior(z_dim))
    try:
        model = tiny_config().model.model_copy(update={"prior": Component(name="test_gamma")})
        with pytest.raises(ConfigError, match=r"prior 'test_gamma' puts z on IndependentConstraint\(GreaterThanEq\(lower_bound=0.0\), 1\), "
                                              r"but pyro-vae's z lives on all of R\^D .* sample the latent on R\^D"):
            vae_from_config(model, (6,))
    finally:
        PRIORS._entries.pop("test_gamma", None)


def _guide_component_module(folder, module: str) -> None:
    """docs/guide.md's 'Adding a component' snippet saved as ``folder/<module>.py``."""
    (folder / f"{module}.py").write_text(_guide_component_code())


def _forget(module: str) -> None:
    """As in a new process: the module not imported, its prior not registered."""
    import sys

    sys.modules.pop(module, None)
    PRIORS._entries.pop("logistic", None)


def test_a_component_of_ones_own_works_from_the_command_line_through_imports(tmp_path, monkeypatch, capsys):
    """`imports:` names the module that registers a component; config.yaml keeps it, so evaluating
    the run later (in another process) imports it again."""
    import json
    import sys

    from pyro_vae.cli import main

    tiny = "tiny"  # a shipped config, found by name from any folder
    _guide_component_module(tmp_path, "my_priors")
    monkeypatch.chdir(tmp_path)  # the module lies in the current folder, which `pyro-vae` does not put on the path
    try:
        assert main(["train", tiny, "--run-dir", "run", "--no-progress", "--set", "training.epochs=1",
                     "--set", "imports=[my_priors]", "--set", "model.prior.name=logistic", "--set", "model.prior.scale=0.5"]) == 0
        saved = (tmp_path / "run" / "config.yaml").read_text()
        assert "imports:\n- my_priors" in saved and "name: logistic" in saved and "scale: 0.5" in saved
        _forget("my_priors")
        assert main(["evaluate", "run", "--n", "3", "--k", "5", "--no-progress"]) == 0
        assert "my_priors" in sys.modules and "logistic" in PRIORS
        assert json.loads((tmp_path / "run" / "eval_iwae_k5_test_n3.json").read_text())["n"] == 3
        _forget("my_priors")
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        capsys.readouterr()
        assert main(["evaluate", "../run", "--n", "3", "--k", "5"]) == 2
        err = capsys.readouterr().err
        assert "no module 'my_priors' on the Python path or in the current folder" in err and "PYTHONPATH" in err
    finally:
        _forget("my_priors")


def test_a_data_set_of_ones_own_is_registered_and_trained_on_through_imports(tmp_path, monkeypatch):
    """The data-set builder of docs/guide.md, *Adding a component*: ``root`` and ``download`` from
    the run, its own options from the config, a ``Dataset`` back."""
    import sys

    from pyro_vae.cli import main

    (tmp_path / "my_data.py").write_text(
        "import torch\n"
        "from pyro_vae.components.registry import DATASETS\n"
        "from pyro_vae.data import Dataset\n\n"
        "@DATASETS.register('blobs')\n"
        "def blobs(*, root, download: bool, n: int = 120, seed: int = 0) -> Dataset:\n"
        "    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))\n"
        "    return Dataset('blobs', x[: n - 20], x[n - 20 :], (5,))\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["train", "tiny", "--run-dir", "run", "--no-progress", "--set", "training.epochs=1",
                     "--set", "imports=[my_data]", "--set", "data.name=blobs", "--set", "data.n=60",
                     "--set", "data.n_train=null", "--set", "data.n_test=null", "--set", "training.batch_size=20"]) == 0
        run = load_run(tmp_path / "run")
        assert run.x_train.shape == (40, 5) and run.x_test.shape == (20, 5)
    finally:
        sys.modules.pop("my_data", None)
        DATASETS._entries.pop("blobs", None)


def test_imports_name_modules_and_say_what_went_wrong(tmp_path, monkeypatch):
    from pyro_vae import config as C

    tiny = tiny_config().to_dict()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_priors.py").write_text("raise RuntimeError('half-written module')\n")
    (tmp_path / "needs_missing.py").write_text("import not_installed_anywhere\n")
    cases = [
        (["my_priors.py"], "'my_priors.py' is a file; name its module instead, 'my_priors'"),
        (["my-priors"], "'my-priors' is not a module name"),
        (["broken_priors"], "importing 'broken_priors' failed: RuntimeError: half-written module"),
        (["needs_missing"], "importing 'needs_missing' failed: ModuleNotFoundError: No module named 'not_installed_anywhere'"),
        (["no_such_module_here"], f"no module 'no_such_module_here' on the Python path or in the current folder ({tmp_path})"),
    ]
    for imports, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            C.from_dict({**tiny, "imports": imports})
    with pytest.raises(ConfigError, match=r"A prior of your own: name the module that registers it under `imports:`"):
        C.from_dict({**tiny, "model": {**tiny["model"], "prior": {"name": "logistic"}}})
    _guide_component_module(tmp_path, "one_prior")
    try:
        cfg = C.from_dict({**tiny, "imports": "one_prior", "model": {**tiny["model"], "prior": {"name": "logistic"}}})
        assert cfg.imports == ["one_prior"]  # one module may be written without the list
    finally:
        _forget("one_prior")


class _ShapedPrior(Prior):
    """A prior of one's own that gets its shapes wrong in one of the ways a user might."""

    def __init__(self, z_dim: int, kind: str) -> None:
        super().__init__()
        self.z_dim, self.kind = z_dim, kind

    def forward(self, encode=None):
        import pyro.distributions as dist

        return {
            "event": lambda: dist.Normal(torch.zeros(self.z_dim + 1), 1.0).to_event(1),
            "no_event": lambda: dist.Normal(torch.zeros(self.z_dim), 1.0),
            "batch": lambda: dist.Normal(torch.zeros(3, self.z_dim), 1.0).to_event(1),
            "tensor": lambda: torch.zeros(self.z_dim),
            "raises": lambda: 1 / 0,
        }[self.kind]()


class _ShortLikelihood(Likelihood):
    def num_outputs(self) -> int:
        return 2

    def forward(self, raw):
        import pyro.distributions as dist

        return dist.Normal(raw, 1.0).to_event(1)  # (..., 2): not x's 6 dimensions


@pytest.mark.parametrize("part, builder, message", [
    ("prior", lambda *, z_dim, x_dim: _ShapedPrior(z_dim, "event"),
     r"prior 'test_bad' gives a distribution with batch shape \(\) and event shape \(3,\); z needs batch \(\) and event \(2,\)"),
    ("prior", lambda *, z_dim, x_dim: _ShapedPrior(z_dim, "no_event"),
     r"batch shape \(2,\) and event shape \(\); z needs batch \(\) and event \(2,\) \(.to_event\(1\) makes"),
    ("prior", lambda *, z_dim, x_dim: _ShapedPrior(z_dim, "batch"), r"batch shape \(3,\) and event shape \(2,\)"),
    ("prior", lambda *, z_dim, x_dim: _ShapedPrior(z_dim, "tensor"), "prior 'test_bad' returns a Tensor, not a distribution over z"),
    ("prior", lambda *, z_dim, x_dim: _ShapedPrior(z_dim, "raises"),
     "prior 'test_bad' fails when pyro-vae first runs it: ZeroDivisionError: division by zero"),
    ("prior", lambda *, z_dim, x_dim: None,
     "prior 'test_bad': its builder returned None; a prior's builder returns a pyro_vae.components.priors.Prior"),
    ("likelihood", lambda *, x_dim: torch.nn.Identity(),
     "likelihood 'test_bad': its builder returned Identity\(\); a likelihood's builder returns a pyro_vae.components.likelihoods.Likelihood"),
    ("likelihood", lambda *, x_dim: _ShortLikelihood(x_dim),
     r"likelihood 'test_bad' gives a distribution with batch shape \(2,\) and event shape \(2,\); x needs batch \(2,\) and event \(6,\)"),
    ("encoder", lambda *, in_dim, out_dim, x_shape, role: torch.nn.Linear(in_dim, out_dim + 1),
     r"encoder 'test_bad' maps two points to \(2, 5\); guide 'diag_normal' needs \(2, 4\)"),
])
def test_a_component_of_ones_own_with_wrong_shapes_is_named_when_the_model_is_built(part, builder, message):
    """Not a broadcasting error from inside a Pyro trace at the first step: the component, what it
    gave and what is needed."""
    registry = {"prior": PRIORS, "likelihood": LIKELIHOODS, "encoder": NETWORKS}[part]
    registry.register("test_bad")(builder)
    try:
        model = tiny_config().model.model_copy(update={part: Component(name="test_bad")})
        with pytest.raises(ConfigError, match=message):
            vae_from_config(model, (6,))
    finally:
        registry._entries.pop("test_bad", None)


@pytest.mark.parametrize("registry, section, message", [
    (OBJECTIVES, "objective", r"objective 'test_bad': its builder returned None; an objective's builder returns a pyro_vae.objectives.base.Objective"),
    (OPTIMIZERS, "optimizer", r"optimizer 'test_bad': its builder returned None; an optimizer's builder returns a torch.optim"),
])
def test_an_objective_or_optimizer_of_ones_own_that_returns_the_wrong_thing_is_named(tmp_path, registry, section, message):
    registry.register("test_bad")(lambda **_: None)
    try:
        with pytest.raises(ConfigError, match=message):
            Trainer(tiny_config(**{section: {"name": "test_bad"}}), tmp_path / "run", progress=False)
    finally:
        registry._entries.pop("test_bad", None)
