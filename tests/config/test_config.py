import re
import warnings

import pytest
import yaml

from pyro_vae import config as C
from pyro_vae.components.registry import LIKELIHOODS, OPTIMIZERS, PRIORS
from pyro_vae.config.schema import registry_of
from pyro_vae.errors import ConfigError
from tests.conftest import tiny_config, tiny_config_dict


def test_shipped_configs_validate():
    for name in ("aevb_mnist.yaml", "aevb_frey.yaml", "tiny.yaml"):
        cfg = C.load(name)
        assert cfg.model.z_dim > 0
    paper = C.load("aevb_mnist")
    assert paper.model.encoder.options["hidden"] == [500]
    assert paper.optimizer.name == "adagrad" and paper.optimizer.options["lr"] == 0.02
    assert paper.objective.name == "jit_trace_meanfield" and paper.data.binarize == "dynamic"
    assert paper.training.batch_size == 100


def test_unknown_prior_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        tiny_config(model={"z_dim": 2, "prior": {"name": "standard_normall"}})
    msg = str(e.value)
    assert "standard_normal" in msg and "vamp" in msg and "Did you mean" in msg


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="has no option.*'df'.*Its options are: scale"):
        tiny_config(model={"z_dim": 2, "prior": {"name": "laplace", "df": 3}})


@pytest.mark.parametrize(
    "section,value,message",
    [
        ("optimizer", {"name": "adam", "lr": "abc"}, "optimizer 'adam': option 'lr' must be a number, got 'abc'"),
        ("optimizer", {"name": "adam", "betas": [0.9]}, "option 'betas' must be a list of 2 numbers, got [0.9]"),  # was a traceback
        ("model.prior", {"name": "student_t", "df": "abc"}, "prior 'student_t': option 'df' must be a number"),
        ("model.encoder", {"name": "mlp", "hidden": [1.5]}, "option 'hidden' must be a list of whole numbers, got [1.5]"),
        ("model.likelihood", {"name": "gaussian", "variance": "fixd"}, "option 'variance' must be one of 'fixed', 'learned', 'decoder'"),
        ("model.likelihood", {"name": "gaussian", "sigmoid_mean": 1}, "option 'sigmoid_mean' must be true or false, got 1"),
        ("objective", {"name": "rws", "dream_batch_size": 1.5}, "option 'dream_batch_size' must be a whole number or null"),
    ],
)
def test_a_component_option_of_the_wrong_type_is_named_with_the_type_it_needs(section, value, message):
    """Options are checked against their builder's annotations when the config loads, before any
    builder turns them into an obscure error (or, for a one-number betas, a traceback)."""
    d = tiny_config_dict()
    *path, last = section.split(".")
    target = d
    for key in path:
        target = target.setdefault(key, {})
    target[last] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        C.from_dict(d)


def test_a_builder_whose_annotations_cannot_be_resolved_still_loads():
    from pyro_vae.components.priors import StandardNormal
    from pyro_vae.components.registry import PRIORS

    def builder(*, z_dim: int, x_dim: int, spread: "NotImportedHere" = 1.0):  # noqa: F821
        return StandardNormal(z_dim)

    PRIORS.register("test_unresolved")(builder)
    try:
        cfg = tiny_config(model={"z_dim": 2, "prior": {"name": "test_unresolved", "spread": 2.0}})
        assert cfg.model.prior.options == {"spread": 2.0}
    finally:
        PRIORS._entries.pop("test_unresolved")


def test_a_default_no_config_file_can_hold_is_left_to_the_builder(tmp_path):
    """A user's component may default an option to an object (here a torch dtype): config.yaml
    leaves it out rather than writing a string the config would refuse on reload."""
    import torch

    from pyro_vae.components.priors import StandardNormal

    def builder(*, z_dim: int, x_dim: int, dtype: object = torch.float64, spread: float = 2.0):
        return StandardNormal(z_dim)

    PRIORS.register("test_object_default")(builder)
    try:
        C.save(tiny_config(model={"z_dim": 2, "prior": {"name": "test_object_default"}}), tmp_path / "r.yaml")
        saved = yaml.safe_load((tmp_path / "r.yaml").read_text())["model"]["prior"]
        assert saved == {"name": "test_object_default", "spread": 2.0}
        assert C.load(tmp_path / "r.yaml").model.prior.options == {"spread": 2.0}
    finally:
        PRIORS._entries.pop("test_object_default")


def test_options_of_the_right_types_pass_as_written():
    cfg = tiny_config(optimizer={"name": "adam", "lr": 1, "betas": [0.5, 0.9]},  # an int for a float; a list for a tuple
                      objective={"name": "rws", "dream_batch_size": None})
    assert cfg.optimizer.options == {"lr": 1, "betas": [0.5, 0.9]} and cfg.objective.options["dream_batch_size"] is None


def test_unknown_key_and_bad_type_are_named():
    with pytest.raises(ConfigError, match=r"training.epochz: unknown key \(did you mean training.epochs\? training holds epochs, "):
        tiny_config(training={"epochz": 3})
    with pytest.raises(ConfigError, match=r"trainin: unknown key \(did you mean training\? a config holds name, "):
        tiny_config(trainin={"epochs": 3})
    with pytest.raises(ConfigError, match=r"optimizer.schedule.gama: unknown key \(did you mean optimizer.schedule.gamma\?"):
        tiny_config(optimizer={"name": "adam", "schedule": {"gama": 0.5}})
    with pytest.raises(ConfigError, match=r"data: must be a component, \{name: ..., option: value, ...\} \(for the one named "
                                          r"'mnist': \{name: mnist\}, or --set data.name=mnist\), got 'mnist'"):
        tiny_config(data="mnist")
    with pytest.raises(ConfigError, match=r"training: must be a section of keys \(epochs, sample_budget, .*\), got 5"):
        tiny_config(training=5)
    with pytest.raises(ConfigError, match="model.z_dim"):
        tiny_config(model={"z_dim": "twenty"})
    with pytest.raises(ConfigError, match="data.binarize"):
        tiny_config(data={"binarize": "sometimes"})
    for bad in ("tpu", "cudax", "cuda:", "cuda:one"):
        with pytest.raises(ConfigError, match="device"):
            tiny_config(device=bad)
    assert tiny_config(device="cuda:1").device == "cuda:1"  # a valid name; whether it exists is checked at run time


def test_overrides_and_files(tmp_path):
    p = tmp_path / "c.yaml"
    C.save(tiny_config(), p)
    cfg = C.load(p, ["model.z_dim=3", "model.prior.name=student_t", "optimizer.lr=1e-3", "model.encoder.hidden=[4, 4]"])
    assert cfg.model.z_dim == 3 and cfg.model.prior.name == "student_t"
    assert cfg.optimizer.options["lr"] == 1e-3 and cfg.model.encoder.options["hidden"] == [4, 4]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        C.load(p, ["model.z_dim"])
    toml = tmp_path / "c.toml"
    toml.write_text('name = "t"\n[model]\nz_dim = 4\n[data]\nname = "synthetic"\n')
    assert C.load(toml).model.z_dim == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match=r"not valid YAML: .* \(line 1, column 17\)$"):  # one line, with the spot
        C.load(bad)
    with pytest.raises(ConfigError, match=r"--set 'model.z_dim=\[2': value '\[2' is not valid YAML: .* \(line 1, column 3\)$"):
        C.load(p, ["model.z_dim=[2"])
    (tmp_path / "empty.yaml").write_text("# the settings will go here\n")
    with pytest.raises(ConfigError, match="empty.yaml' holds no settings; .* or `{data: {binarize: dynamic}}` for the defaults"):
        C.load(tmp_path / "empty.yaml")
    (tmp_path / "empty.toml").write_text("# the settings will go here\n")
    with pytest.raises(ConfigError, match="empty.toml' holds no settings; .* or a \\[data\\] table with `binarize = \"dynamic\"`"):
        C.load(tmp_path / "empty.toml")
    # what the messages offer is the defaults, and they make a run: data the likelihood supports
    (tmp_path / "defaults.yaml").write_text("{data: {binarize: dynamic}}\n")
    (tmp_path / "defaults.toml").write_text('[data]\nbinarize = "dynamic"\n')
    for offered in ("defaults.yaml", "defaults.toml"):
        cfg = C.load(tmp_path / offered)
        assert cfg.model == C.from_dict({}).model and cfg.data.name == "mnist" and cfg.data.binarize == "dynamic"
    with pytest.raises(ConfigError, match="does not exist"):
        C.load(tmp_path / "missing.yaml")
    (tmp_path / "c.ini").write_text("[model]\n")
    with pytest.raises(ConfigError, match="unknown extension"):
        C.load(tmp_path / "c.ini")


def test_swapping_a_component_with_set_drops_the_options_the_new_one_does_not_take(tmp_path):
    p = tmp_path / "c.yaml"
    C.save(tiny_config(), p)  # likelihood {name: gaussian, variance: learned}, encoder mlp with hidden [8]
    with pytest.warns(UserWarning, match=r"--set model.likelihood.name=bernoulli: dropped variance=learned, option\(s\) of 'gaussian'"):
        cfg = C.load(p, ["model.likelihood.name=bernoulli"])  # was: "likelihood 'bernoulli' has no option(s) 'variance'"
    assert cfg.model.likelihood.name == "bernoulli" and cfg.model.likelihood.options == {}
    # options the new component takes (by name and type) stay; a list where conv takes a number does not
    laplace = C.load(p, ["model.likelihood.name=laplace"]).model.likelihood.options
    assert laplace["variance"] == "learned" and laplace == {**LIKELIHOODS.options("laplace"), "variance": "learned"}
    with pytest.warns(UserWarning, match=r"dropped hidden=\[8\]"):
        conv = C.load(p, ["model.encoder.name=conv"]).model.encoder
    assert conv.name == "conv" and "hidden" not in conv.options
    # options given with --set are the user's: kept and checked, whatever their order
    with pytest.raises(ConfigError, match="likelihood 'bernoulli' has no option.*'variance'"):
        C.load(p, ["model.likelihood.variance=fixed", "model.likelihood.name=bernoulli"])
    both = C.load(p, ["optimizer.lr=0.5", "optimizer.name=sgd"])
    assert both.optimizer.name == "sgd" and both.optimizer.options == {"lr": 0.5, "weight_decay": 0.0}  # adam's default, sgd's too
    # a section's own settings are not the component's options; z_dim=2, synthetic's own default, goes without a word
    with pytest.warns(UserWarning, match="dropped x_dim=6, option"):
        data = C.load(p, ["data.binarize=static", "data.name=npz", "data.path=x.npz"]).data
    assert data.binarize == "static" and data.n_train == 60 and data.options == {"path": "x.npz"}


def test_setting_an_option_of_a_component_the_file_leaves_out_starts_from_the_default(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: t\ndata: {name: synthetic}\n")
    encoder = C.load(p, ["model.encoder.hidden=[200]"]).model.encoder
    assert encoder.name == "mlp" and encoder.options == {"hidden": [200], "activation": "tanh"}
    with pytest.raises(ConfigError, match="prior 'standard_normal' has no option.*'components'"):  # was "model.prior.name: Field required"
        C.load(p, ["model.prior.components=3"])
    assert C.load(p, ["model.prior.name=vamp", "model.prior.components=3"]).model.prior.options == {"components": 3}


def test_saved_config_round_trips(tmp_path):
    cfg = tiny_config(model={"z_dim": 2, "prior": {"name": "mixture_of_gaussians", "components": 3}})
    C.save(cfg, tmp_path / "r.yaml")
    again = C.load(tmp_path / "r.yaml")
    assert again.to_dict_with_option_defaults() == cfg.to_dict_with_option_defaults()
    assert again.model.prior.options == {"components": 3, "init_spread": 1.0}  # the default spelled out


def test_saved_config_spells_out_every_component_default(tmp_path):
    """config.yaml describes the run in full: a builder default that a later version changes would
    otherwise change the run's meaning silently."""
    cfg = C.from_dict({"name": "t", "model": {"prior": {"name": "vamp"}}, "optimizer": {"name": "adam"},
                       "objective": {"name": "iwae"}, "data": {"name": "synthetic"}})
    C.save(cfg, tmp_path / "r.yaml")
    saved = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert saved["model"]["prior"] == {"name": "vamp", "components": 500}
    assert saved["optimizer"]["betas"] == [0.9, 0.999] and saved["optimizer"]["lr"] == 0.001
    assert saved["objective"]["num_particles"] == 5
    for path in [("model", "likelihood"), ("model", "guide"), ("model", "encoder"), ("model", "decoder"), ("data",)]:
        section = saved
        for part in path:
            section = section[part]
        registry = registry_of(path)
        assert set(registry.options(section["name"])) <= set(section), path


def test_swapping_a_component_in_a_saved_config_gives_the_new_one_its_own_defaults(tmp_path):
    """A saved config.yaml holds the old component's defaults; they are no choice of the user's, so a
    swap does not carry them over (Adam's lr 0.001 would otherwise become Adagrad's), nor warns of them."""
    C.save(C.from_dict({"name": "t", "optimizer": {"name": "adam"}, "model": {"prior": {"name": "vamp"}}}), tmp_path / "r.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing the user chose is dropped
        cfg = C.load(tmp_path / "r.yaml", ["optimizer.name=adagrad", "model.prior.name=mixture_of_gaussians"])
    assert cfg.optimizer.options == {"weight_decay": 0.0}  # the same default in both: kept, harmless
    assert cfg.to_dict_with_option_defaults()["optimizer"]["lr"] == OPTIMIZERS.options("adagrad")["lr"]
    assert cfg.model.prior.options == {}  # vamp's 500 components are not the mixture's 10
    # a value the user set is theirs: kept where the new component takes it
    C.save(C.from_dict({"name": "t", "optimizer": {"name": "adam", "lr": 0.02}}), tmp_path / "s.yaml")
    assert C.load(tmp_path / "s.yaml", ["optimizer.name=adagrad"]).optimizer.options["lr"] == 0.02


def test_registry_options_exclude_context():
    assert "z_dim" not in PRIORS.options("vamp") and "components" in PRIORS.options("vamp")
    assert tiny_config_dict()["model"]["z_dim"] == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=.inf", "option 'lr' must hold finite numbers, got inf"),
        ("optimizer.lr=.nan", "option 'lr' must hold finite numbers, got nan"),
        ("optimizer={name: adam, betas: [.inf, 0.9]}", "option 'betas' must hold finite numbers"),
        ("model.prior={name: student_t, df: .inf}", "prior 'student_t': option 'df'"),
        ("optimizer.schedule={name: exponential, gamma: .inf}", "optimizer.schedule.gamma: Input should be a finite number"),
        ("objective.weight_prior_std=.inf", "objective.weight_prior_std: Input should be a finite number"),
        ("evaluation.memory_gb=.inf", "evaluation.memory_gb: Input should be a finite number"),
    ],
)
def test_infinite_or_nan_numbers_are_rejected_at_load(override, message):
    """An infinite learning rate or scale would only show up later as a NaN loss."""
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        C.load("tiny", [override])


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.z_dim=0", "model.z_dim: Input should be greater than 0, got 0"),
        ("training.epochs=abc", "training.epochs: Input should be a valid integer, got 'abc'"),
        ("data.binarize=sometimes", "data.binarize: Input should be 'none', 'dynamic' or 'static', got 'sometimes'"),
    ],
)
def test_a_rejected_value_is_quoted_in_its_message(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        C.load("tiny", [override])


def test_a_rejected_section_is_not_quoted_whole():
    """A whole mapping in the wrong place is named by its key; quoting it would bury the message."""
    data = tiny_config_dict()
    data["training"]["batch_size"] = {"value": list(range(40))}
    with pytest.raises(ConfigError) as info:
        C.from_dict(data)
    assert "training.batch_size: Input should be a valid integer" in str(info.value)
    assert "got" not in str(info.value)


def test_optimizers_reject_non_finite_settings_from_python_too():
    import torch

    from pyro_vae.optimizers.inplace import SGD, Adagrad, Adam

    params = [torch.nn.Parameter(torch.zeros(2))]
    for make in (lambda: Adagrad(params, lr=float("inf")), lambda: Adam(params, eps=float("nan")), lambda: SGD(params, momentum=float("inf"))):
        with pytest.raises(ValueError, match="must be finite and >= 0"):
            make()


def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `model:` section would drop the first."""
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nmodel:\n  z_dim: 2\ntraining: {epochs: 1}\nmodel:\n  prior: {name: laplace}\n")
    with pytest.raises(ConfigError, match=r"key 'model' appears twice in one mapping \(lines 2 and 5\)"):
        C.load(p)
    with pytest.raises(ConfigError, match=r"--set .*key 'name' appears twice in one mapping \(line 1\)"):
        C.load("tiny", ["optimizer={name: adam, name: sgd}"])
    # YAML merge keys stay usable: keys written out override the merged ones, as YAML says
    p.write_text("data: {name: synthetic}\noptimizer:\n  <<: {name: adam, lr: 0.1}\n  lr: 0.2\n")
    assert C.load(p).optimizer.options == {"lr": 0.2} and C.load(p).optimizer.name == "adam"


def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from pyro_vae.cli import main

    monkeypatch.chdir(tmp_path)
    assert C.config_path("tiny") == C.config_path("tiny.yaml") == C.SHIPPED_CONFIGS / "tiny.yaml"
    assert C.load("aevb_mnist").name == "aevb_mnist"
    (tmp_path / "tiny.yaml").write_text("name: mine\n")  # a file of the user's wins over a shipped name
    assert C.load("tiny.yaml").name == "mine"
    with pytest.raises(ConfigError, match=r"'nope' does not exist and names no shipped config \(aevb_frey, aevb_mnist, tiny\)"):
        C.load("nope")
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[:3]] == ["aevb_frey", "aevb_mnist", "tiny"]
    assert "Bernoulli decoder" in listed[1]


def test_load_takes_a_dict_of_sections_with_overrides_as_a_file():
    """From Python a config is often a dict at hand: ``load`` validates it, with --set's overrides,
    and names the dict as the source of what is wrong."""
    cfg = C.load({"name": "mine", "data": {"name": "synthetic"}}, ["model.z_dim=3"])
    assert (cfg.name, cfg.model.z_dim, cfg.data.name) == ("mine", 3, "synthetic")
    with pytest.raises(ConfigError, match=r"invalid config \(the dict given\) with --set training.lr=1: training.lr: unknown key \(did you mean optimizer.lr\?"):
        C.load({"name": "mine"}, ["training.lr=1"])
    with pytest.raises(TypeError, match="a config is a RunConfig, a config file's path or name, a run folder, or a dict of its sections; got int"):
        C.load(3)
    assert C.load(cfg) is cfg and C.load(cfg, ["seed=5"]).seed == 5
