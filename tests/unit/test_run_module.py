"""run_module: the one prologue and epilogue of the modules in library/, tried with a stand-in AnsibleModule."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.module_utils.arms_common import WARNINGS, ArmsError, ModuleFailure, run_module


class _Exited(Exception):
    pass


class FakeModule:
    """Records what run_module asks of AnsibleModule; exit_json and fail_json end the run like Ansible's."""

    last: FakeModule

    def __init__(self, argument_spec: dict[str, Any], supports_check_mode: bool, **options: Any) -> None:
        self.argument_spec, self.supports_check_mode, self.options = argument_spec, supports_check_mode, options
        self.params = {"name": "x"}
        self.check_mode = True
        self.warnings: list[str] = []
        self.exited: dict[str, Any] = {}
        self.failed: dict[str, Any] = {}
        FakeModule.last = self

    def warn(self, warning: str) -> None:
        self.warnings.append(warning)

    def exit_json(self, **result: Any) -> None:
        self.exited = result
        raise _Exited

    def fail_json(self, **result: Any) -> None:
        self.failed = result
        raise _Exited


def run(action: Any, **kwargs: Any) -> FakeModule:
    with pytest.raises(_Exited):
        run_module(FakeModule, {"name": {"type": "str"}}, action, **kwargs)
    return FakeModule.last


def test_result_goes_to_exit_json_and_warnings_are_shown_not_returned() -> None:
    seen: list[Any] = []

    def action(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        seen.append((p, check_mode))
        return {"changed": False, "msg": "done", WARNINGS: ["careful"]}

    module = run(action, required_one_of=[("name",)])
    assert seen == [({"name": "x"}, True)]
    assert module.supports_check_mode and module.options == {"required_one_of": [("name",)]}
    assert module.exited == {"changed": False, "msg": "done"}
    assert module.warnings == ["careful"]


def test_an_arms_error_fails_with_its_sentence_and_a_module_failure_with_its_fields() -> None:
    def refuse(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        raise ArmsError("the data dir is missing; run the prepare step.")

    assert run(refuse, fail_prefix="could not: ").failed == {
        "msg": "could not: the data dir is missing; run the prepare step."
    }

    def refuse_with_fields(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        raise ModuleFailure("2 problems", problems=["a", "b"], **{WARNINGS: ["note"]})

    module = run(refuse_with_fields)
    assert module.failed == {"msg": "2 problems", "problems": ["a", "b"]}
    assert module.warnings == ["note"]


def test_an_error_not_named_is_not_turned_into_a_message() -> None:
    def crash(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        raise OSError("disk")

    with pytest.raises(OSError):
        run_module(FakeModule, {}, crash)
    assert run(crash, errors=(OSError,)).failed == {"msg": "disk"}
