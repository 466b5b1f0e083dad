"""Which index the venv install needs for an extra: the rules of arms_venv.py on the smallest pyprojects."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_venv import INDEX_STRATEGY, load_pyproject, plan_for_checkout, plan_indexes
from modtest import run_module

# the shape of nanochat's pyproject at b07604e (its index URLs replaced by stand-ins)
NANOCHAT = """
[project]
name = "nanochat"
dependencies = ["torch==2.9.1", "wandb>=0.21.3"]

[tool.uv.sources]
torch = [
    { index = "pytorch-cpu", extra = "cpu" },
    { index = "pytorch-cu128", extra = "gpu" },
]

[[tool.uv.index]]
name = "pytorch-cpu"
url = "https://torch-index.example/whl/cpu"
explicit = true

[[tool.uv.index]]
name = "pytorch-cu128"
url = "https://torch-index.example/whl/cu128"
explicit = true

[project.optional-dependencies]
cpu = ["torch==2.9.1"]
gpu = ["torch==2.9.1"]
"""


def pyproject(text: str = NANOCHAT) -> dict:
    return tomllib.loads(text)


def test_gpu_extra_needs_the_cu128_index_and_only_it() -> None:
    plan = plan_indexes(pyproject(), "gpu")
    assert [(i.name, i.url, i.packages, i.overridden) for i in plan.indexes] == [
        ("pytorch-cu128", "https://torch-index.example/whl/cu128", ["torch"], False)
    ]
    assert plan.uv_args == [
        "--index",
        "pytorch-cu128=https://torch-index.example/whl/cu128",
        "--index-strategy",
        INDEX_STRATEGY,
    ]


def test_cpu_extra_needs_the_cpu_index() -> None:
    assert [i.name for i in plan_indexes(pyproject(), "cpu").indexes] == ["pytorch-cpu"]


def test_no_extra_adds_no_index_and_no_strategy() -> None:
    plan = plan_indexes(pyproject(), "")
    assert plan.indexes == [] and plan.uv_args == []


def test_the_strategy_is_best_match_because_the_torch_index_carries_old_copies() -> None:
    # under uv's default first-index, filelock/jinja2/markupsafe found on the torch index are taken
    # from there only, at versions other than the lock's: the install of the export fails
    assert INDEX_STRATEGY == "unsafe-best-match"


def test_an_override_replaces_the_url_by_name() -> None:
    plan = plan_indexes(pyproject(), "gpu", {"pytorch-cu128": "file:///srv/cu128/simple"})
    assert plan.indexes[0].url == "file:///srv/cu128/simple" and plan.indexes[0].overridden
    assert plan.uv_args[1] == "pytorch-cu128=file:///srv/cu128/simple"
    assert plan.unused_overrides == []


def test_an_override_for_an_index_the_extra_does_not_use_is_reported_unused() -> None:
    plan = plan_indexes(pyproject(), "gpu", {"pytorch-cpu": "file:///srv/cpu/simple", "pytorch-cu130": "file:///x"})
    assert [i.url for i in plan.indexes] == ["https://torch-index.example/whl/cu128"]
    assert plan.unused_overrides == ["pytorch-cpu", "pytorch-cu130"]


def test_a_source_without_an_extra_applies_to_every_extra() -> None:
    text = NANOCHAT.replace("[tool.uv.sources]\n", '[tool.uv.sources]\ntriton = { index = "pytorch-cu128" }\n').replace(
        '{ index = "pytorch-cu128", extra = "gpu" }', '{ index = "pytorch-cu128", extra = "gpu", marker = "1" }'
    )
    for extra, names in (("", ["pytorch-cu128"]), ("cpu", ["pytorch-cu128", "pytorch-cpu"])):
        assert [i.name for i in plan_indexes(pyproject(text), extra).indexes] == names
    gpu = plan_indexes(pyproject(text), "gpu")
    assert [(i.name, i.packages) for i in gpu.indexes] == [("pytorch-cu128", ["triton", "torch"])]


def test_a_pyproject_without_uv_tables_needs_no_index() -> None:
    assert plan_indexes(pyproject('[project]\nname = "nanochat"\n'), "gpu").indexes == []


def test_an_index_named_but_not_declared_fails_with_the_variable_to_set() -> None:
    text = NANOCHAT.replace('name = "pytorch-cu128"', 'name = "other"')
    with pytest.raises(ArmsError, match=r"pytorch-cu128.*nanochat_venv_index_urls"):
        plan_indexes(pyproject(text), "gpu")
    # ... which an override by that name satisfies
    assert plan_indexes(pyproject(text), "gpu", {"pytorch-cu128": "file:///m"}).indexes[0].url == "file:///m"


@pytest.mark.parametrize(
    "overrides",
    [{"pytorch cu128": "file:///m"}, {"-x": "file:///m"}, {"pytorch-cu128": ""}, {"pytorch-cu128": "file:///a b"}],
)
def test_bad_overrides_are_refused_with_a_sentence(overrides: dict[str, str]) -> None:
    with pytest.raises(ArmsError, match="nanochat_venv_index_urls"):
        plan_indexes(pyproject(), "gpu", overrides)


def test_a_missing_pyproject_names_the_role_to_run(tmp_path: Path) -> None:
    with pytest.raises(ArmsError, match="nanochat_checkout"):
        plan_for_checkout(str(tmp_path), "gpu")
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(ArmsError, match="TOML"):
        load_pyproject(str(tmp_path / "pyproject.toml"))


def test_module_returns_uv_args_and_the_unused_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text(NANOCHAT)
    args = {"checkout": str(tmp_path), "extra": "gpu", "index_urls": {"pytorch-cu130": "file:///x"}}
    out = run_module("nanochat_venv_index", args, capsys)
    assert not out.get("failed") and out["changed"] is False
    assert out["uv_args"][:2] == ["--index", "pytorch-cu128=https://torch-index.example/whl/cu128"]
    assert out["index_strategy"] == INDEX_STRATEGY
    # the warning itself is asserted where Ansible shows it (tests/venv_role): in-process, once another test
    # has loaded controller code, ansible-core sends module warnings to its display instead
    assert out["unused_overrides"] == ["pytorch-cu130"]
    # read-only: check mode gives the same answer
    assert run_module("nanochat_venv_index", args, capsys, check_mode=True)["uv_args"] == out["uv_args"]


def test_module_fails_with_the_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_module("nanochat_venv_index", {"checkout": str(tmp_path), "extra": "gpu"}, capsys)
    assert out["failed"] and "nanochat_checkout" in out["msg"]
