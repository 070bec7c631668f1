import re

import pytest
import yaml
from conftest import REPO, params_dict, write_params

from cxr.core.backbones import BACKBONES
from cxr.core.config import ConfigError, from_dict, load
from cxr.data.sources import check_sources, params_of


def test_project_params_load_and_expand_classes():
    config = load(REPO / "params.yaml")
    assert config.class_names() == ["BACTERIA", "COVID", "NORMAL", "VIRAL"]
    binary = from_dict(params_dict({"task": "binary"})).task_classes()
    assert binary["COVID"] == ["COVID"]
    assert set(binary["OTHER"]) == {
        "ARDS",
        "ASPIRATION",
        "BACTERIA",
        "FUNGAL",
        "LIPOID",
        "NORMAL",
        "TUBERCULOSIS",
        "VIRAL",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split": {"sed": 1}}, "unknown key 'split.sed'; allowed: ['seed'"),
        ({"splitting": {}}, "unknown key 'splitting'; allowed: ['seed', 'task', 'positive_class', 'sources'"),
        ({"split": {"train": "most"}}, "split.train: expected float, got 'most'"),
        ({"split": {"seed": True}}, "split.seed: expected int, got True"),
        (
            {"filter": {"missing_view": "maybe"}},
            "filter.missing_view: 'maybe' is not allowed; allowed: ['keep', 'drop']",
        ),
        (
            {"sources": {"origin": "internet"}},
            "sources.origin: 'internet' is not allowed; allowed: ['synthetic', 'upstream']",
        ),
        ({"sources": {"use": ["nih"]}}, "sources.use: 'nih' has no section sources.nih"),
        ({"sources": {"nih": {}}, "synthetic": {"patients": {"nih": 9}}}, "sources.nih: no source module of that name"),
        ({"synthetic": {"patients": {"nih": 9}}}, "synthetic.patients: needs one count per source section"),
        ({"task": "ternary"}, "task: 'ternary' is not a task; allowed: ['binary', 'covid_normal', 'multiclass']"),
        ({"classes": {"multiclass": {"COVID": ["CORONA"]}}}, "classes.multiclass.COVID: label 'CORONA'"),
        ({"split": {"train": 0.7}}, "must be positive and sum to 1"),
        ({"filter": {"views": "PA"}}, "filter.views: expected a list"),
        ({"train": {"epochs": -3}}, "train.epochs: -3 is out of range; it must be >= 1"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate: 0.0 is out of range; it must be > 0"),
        ({"train": {"head": {"dropout": 1.0}}}, "train.head.dropout: 1.0 is out of range; it must be >= 0 and < 1"),
        ({"train": {"image_size": 8}}, "train.image_size: 8 is out of range; it must be >= 32"),
        (
            {"train": {"epochs": 1000000000}},
            "train.epochs: 1000000000 is out of range; it must be >= 1 and <= 10000 "
            "(the study ran 50 epochs; more than 10,000 is a typo)",
        ),
        (
            {"train": {"image_size": 100000}},
            "train.image_size: 100000 is out of range; it must be >= 32 and <= 1024 "
            "(the backbones' native sizes are 224-331 px",
        ),
        ({"train": {"batch_size": 100000}}, "train.batch_size: 100000 is out of range; it must be >= 1 and <= 4096"),
        (
            {"labels": {"SARS": "VIRALL"}},
            "labels: 'VIRALL' (for 'SARS') is named by no class of any task; did you mean "
            "'VIRAL'? Its images would be left out of covid_normal, multiclass",
        ),
        ({"split": {"max_per_class": {"COVID": 0}}}, "split.max_per_class.COVID: 0 is out of range; it must be >= 1"),
        ({"finetune": {"unfreeze": 0}}, "finetune.unfreeze: 0 is out of range"),
        ({"audit": {"lung_box": 1.2}}, "audit.lung_box: 1.2 is out of range; it must be > 0 and < 1"),
        ({"evaluate": {"bootstrap_resamples": 0}}, "evaluate.bootstrap_resamples: 0 is out of range"),
        ({"sources": {"kermany": {"unknown_names": "skip"}}}, "sources.kermany.unknown_names: 'skip' is not allowed"),
        ({"sources": {"actualmed": {"missing_files": "ignore"}}}, "sources.actualmed.missing_files: 'ignore'"),
        ({"positive_class": "CORONA"}, "positive_class: 'CORONA' is not a class of task 'multiclass'"),
        ({"finetune": {"unfreeze": 41}}, "finetune.unfreeze: 41 is more than the 40 layers of xception's base"),
        ({"train": {"image_size": 64}}, "train.image_size: xception needs at least 71 px, got 64"),
    ],
)
def test_bad_params_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        check_sources(from_dict(params_dict(overrides)))
    assert message in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("split: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(tmp_path / "params.yaml")


def test_a_float_in_exponent_form_is_a_float():
    """`dvc exp run -S finetune.learning_rate=0.00003` writes 3e-05, which YAML 1.1 reads as text."""
    raw = params_dict()
    raw["finetune"]["learning_rate"] = "3e-05"
    assert from_dict(raw).finetune.learning_rate == 3e-05
    raw["finetune"]["learning_rate"] = "3e-05x"
    with pytest.raises(ConfigError, match="finetune.learning_rate: expected float, got '3e-05x'"):
        from_dict(raw)


def test_max_per_class_accepts_number_or_mapping():
    assert from_dict(params_dict({"split": {"max_per_class": 200}})).split.max_per_class == 200
    caps = from_dict(params_dict({"split": {"max_per_class": {"COVID": 5}}})).split.max_per_class
    assert caps == {"COVID": 5}


@pytest.mark.parametrize("key", ["seed", "train.head.normalize", "sources.kermany.url", "audit.saliency_seed"])
def test_a_missing_key_is_an_error_naming_it_never_a_default(tmp_path, key):
    raw = params_dict()
    *parents, name = key.split(".")
    section = raw
    for parent in parents:
        section = section[parent]
    del section[name]
    with pytest.raises(ConfigError, match=f"missing key '{re.escape(key)}'"):
        check_sources(from_dict(raw))


def test_the_registry_knows_each_base_s_unfreezable_layers():
    import keras

    from cxr.learn.model import build_base

    for name in ("vgg16", "xception"):
        backbone = BACKBONES[name]
        base = build_base(backbone, backbone.min_size, None)
        layers = [
            layer for layer in base.layers if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
        ]
        assert len(layers) == backbone.unfreezable_layers


def test_a_stage_under_dvc_reads_only_the_params_dvc_yaml_declares(tmp_path, monkeypatch):
    write_params(tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "download": {
                        "foreach": ["kermany"],
                        "do": {
                            "cmd": "python stages/download.py ${item}",
                            "params": ["sources.origin", "sources.${item}", "task", "classes"],
                        },
                    }
                }
            }
        )
    )
    monkeypatch.setenv("DVC_STAGE", "download@kermany")
    config = load(tmp_path / "params.yaml")
    assert config.sources.origin == "synthetic" and params_of("kermany", config).method == "kaggle"
    with pytest.raises(
        ConfigError,
        match="stage download@kermany reads params.yaml key 'sources.covid_chestxray', which dvc.yaml does not declare",
    ):
        params_of("covid_chestxray", config)
    with pytest.raises(ConfigError, match="key 'train'"):
        config.train  # noqa: B018 - reading the attribute is what is tested
    with pytest.raises(ConfigError, match="key 'labels'"):  # methods are checked too: classes need the labels
        config.class_names()
    monkeypatch.delenv("DVC_STAGE")
    assert load(tmp_path / "params.yaml").train.epochs > 0


def test_a_declared_key_templated_from_params_is_filled_as_dvc_fills_it(tmp_path):
    """``sources.${sources.lung_masks.annotates}`` (download_masks) declares the annotated source's section."""
    from cxr.core.declared import declared_params

    write_params(tmp_path)
    stage = {"cmd": "x", "params": ["sources.lung_masks", "sources.${sources.lung_masks.annotates}"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"masks": stage, "bad": {"params": ["${no.key}"]}}}))
    assert declared_params(tmp_path / "dvc.yaml", "masks") == ["sources.lung_masks", "sources.covid_chestxray"]
    with pytest.raises(ConfigError, match=r"stage bad: \$\{no.key\} names no params.yaml key"):
        declared_params(tmp_path / "dvc.yaml", "bad")
