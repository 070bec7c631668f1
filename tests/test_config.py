import pytest

from cxr.config import ConfigError, from_dict, load
from conftest import REPO, params_dict


def test_project_params_load_and_expand_classes():
    config = load(REPO / "params.yaml")
    assert config.class_names() == ["BACTERIA", "COVID", "NORMAL", "VIRAL"]
    binary = from_dict(params_dict({"task": "binary"})).task_classes()
    assert binary["COVID"] == ["COVID"]
    assert set(binary["OTHER"]) == {"ARDS", "BACTERIA", "FUNGAL", "NORMAL", "VIRAL"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split": {"sed": 1}}, "unknown key 'split.sed'; allowed: ['seed'"),
        ({"splitting": {}}, "unknown key 'splitting'; allowed: ['seed', 'task', 'sources'"),
        ({"split": {"train": "most"}}, "split.train: expected float, got 'most'"),
        ({"split": {"seed": True}}, "split.seed: expected int, got True"),
        ({"filter": {"missing_view": "maybe"}}, "filter.missing_view: 'maybe' is not allowed; allowed: ['keep', 'drop']"),
        ({"sources": {"origin": "internet"}}, "sources.origin: 'internet' is not allowed; allowed: ['synthetic', 'upstream']"),
        ({"sources": {"use": ["nih"]}}, "sources.use[0]: 'nih' is not allowed"),
        ({"task": "ternary"}, "task: 'ternary' is not a task; allowed: ['binary', 'multiclass']"),
        ({"classes": {"multiclass": {"COVID": ["CORONA"]}}}, "classes.multiclass.COVID: label 'CORONA'"),
        ({"split": {"train": 0.7}}, "must be positive and sum to 1"),
        ({"filter": {"views": "PA"}}, "filter.views: expected a list"),
        ({"train": {"epochs": -3}}, "train.epochs: -3 is out of range; it must be >= 1"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate: 0.0 is out of range; it must be > 0"),
        ({"train": {"head": {"dropout": 1.0}}}, "train.head.dropout: 1.0 is out of range; it must be >= 0 and < 1"),
        ({"train": {"image_size": 8}}, "train.image_size: 8 is out of range; it must be >= 32"),
        ({"split": {"max_per_class": {"COVID": 0}}}, "split.max_per_class.COVID: 0 is out of range; it must be >= 1"),
        ({"finetune": {"unfreeze": 0}}, "finetune.unfreeze: 0 is out of range"),
        ({"audit": {"lung_box": 1.2}}, "audit.lung_box: 1.2 is out of range; it must be > 0 and < 1"),
        ({"evaluate": {"bootstrap_resamples": 0}}, "evaluate.bootstrap_resamples: 0 is out of range"),
        ({"sources": {"kermany": {"unknown_names": "skip"}}}, "sources.kermany.unknown_names: 'skip' is not allowed"),
        ({"sources": {"actualmed": {"missing_files": "ignore"}}}, "sources.actualmed.missing_files: 'ignore'"),
    ],
)
def test_bad_params_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        from_dict(params_dict(overrides))
    assert message in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("split: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(tmp_path / "params.yaml")


def test_max_per_class_accepts_number_or_mapping():
    assert from_dict(params_dict({"split": {"max_per_class": 200}})).split.max_per_class == 200
    caps = from_dict(params_dict({"split": {"max_per_class": {"COVID": 5}}})).split.max_per_class
    assert caps == {"COVID": 5}
